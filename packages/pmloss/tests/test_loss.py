"""PMLoss: the paper's steps, stabilisation, masks, gradients and argument errors."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch

from pmloss import PMLoss, PMLossOutput, pointmaps_to_points


def _reference(
    pred: torch.Tensor, teacher: torch.Tensor, weight: float = 0.005, large: float = 100.0
) -> torch.Tensor:
    """The paper's loss in plain torch, one item at a time (torch.linalg.svd, torch.cdist)."""
    losses = []
    for y, x in zip(pred.double(), teacher.double(), strict=True):
        mu_x, mu_y = x.mean(0), y.mean(0)
        xc, yc = x - mu_x, y - mu_y
        var = (xc**2).sum(-1).mean()
        u, d, vh = torch.linalg.svd(yc.T @ xc / x.shape[0])
        s = torch.ones(3, dtype=torch.float64)
        if torch.det(u) * torch.det(vh) < 0:
            s[-1] = -1
        c = (d * s).sum() / var
        r = u @ torch.diag(s) @ vh
        aligned = c * x @ r.T + (mu_y - c * r @ mu_x)
        losses.append(torch.cdist(y, aligned).min(dim=1).values.square().mean())
    loss = torch.nan_to_num(torch.stack(losses), nan=0.0)
    loss = torch.where(loss > large, loss * 1e-5, loss)
    return weight * loss.mean()


def test_matches_a_plain_torch_implementation(generator: torch.Generator) -> None:
    pred = torch.randn(3, 50, 3, generator=generator)
    teacher = 2.0 * pred.flip(-1) + 0.3 * torch.randn(3, 50, 3, generator=generator) + 1.0
    out = PMLoss()(pred, teacher)
    assert isinstance(out, PMLossOutput) and out.loss.shape == () and out.per_item.shape == (3,)
    torch.testing.assert_close(out.loss.double(), _reference(pred, teacher), rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(
        PMLoss(weight=1.0)(pred.double(), teacher.double()).loss, _reference(pred, teacher, 1.0)
    )


def test_zero_when_prediction_is_a_similarity_of_the_teacher(
    rotations: Callable, generator: torch.Generator
) -> None:
    teacher = torch.randn(2, 300, 3, generator=generator)
    rotation = rotations(2, generator=generator, dtype=torch.float32)
    pred = 0.4 * teacher @ rotation.transpose(-1, -2) + torch.tensor([1.0, -2.0, 0.5])
    out = PMLoss(weight=1.0)(pred, teacher)
    assert out.loss.item() < 1e-10
    torch.testing.assert_close(out.aligned_teacher, pred, atol=1e-5, rtol=1e-5)
    assert out.sim3 is not None
    torch.testing.assert_close(out.sim3.scale, torch.full((2,), 0.4))


def test_sgd_on_the_predictions_reduces_the_loss(generator: torch.Generator) -> None:
    teacher = torch.randn(2, 200, 3, generator=generator)
    pred = (teacher + 0.3 * torch.randn(2, 200, 3, generator=generator)).requires_grad_()
    loss_fn = PMLoss(weight=1.0)
    optimizer = torch.optim.SGD([pred], lr=20.0)
    history = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = loss_fn(pred, teacher).loss
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert all(b < a for a, b in itertools.pairwise(history)), history
    assert history[-1] < 0.5 * history[0]


def test_gradient_flows_through_the_alignment(generator: torch.Generator) -> None:
    teacher = torch.randn(1, 20, 3, generator=generator, dtype=torch.float64)
    pred = torch.randn(1, 20, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    grad = torch.autograd.grad(PMLoss(weight=1.0)(pred, teacher).loss, pred)[0]
    detached = PMLoss(weight=1.0, align=False)
    sim3 = PMLoss(weight=1.0)(pred, teacher).sim3
    assert sim3 is not None
    fixed = sim3.apply(teacher).detach()
    grad_fixed = torch.autograd.grad(detached(pred, fixed).loss, pred)[0]
    assert not torch.allclose(grad, grad_fixed)  # the alignment contributes
    assert torch.autograd.gradcheck(lambda p: PMLoss(weight=1.0)(p, teacher).loss, (pred,))


def test_nan_predictions_give_zero_loss_and_zero_gradient(generator: torch.Generator) -> None:
    teacher = torch.randn(2, 30, 3, generator=generator)
    pred = torch.randn(2, 30, 3, generator=generator)
    pred[0, 3, 1] = float("nan")
    pred.requires_grad_()
    out = PMLoss(weight=1.0)(pred, teacher)
    single = PMLoss(weight=1.0)(pred[1:].detach(), teacher[1:])
    torch.testing.assert_close(out.loss, single.loss / 2)
    assert torch.isnan(out.per_item[0]) and torch.isfinite(out.per_item[1])
    out.loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and (pred.grad[0] == 0).all()


def test_non_finite_teacher_points_are_dropped(generator: torch.Generator) -> None:
    teacher = torch.randn(1, 40, 3, generator=generator)
    pred = teacher + 0.1 * torch.randn(1, 40, 3, generator=generator)
    broken = teacher.clone()
    broken[0, :4] = float("nan")
    broken[0, 4] = float("inf")
    out = PMLoss()(pred, broken)
    keep = torch.ones(1, 40, dtype=torch.bool)
    keep[0, :5] = False
    torch.testing.assert_close(out.loss, PMLoss()(pred, teacher, valid=keep).loss)
    assert torch.isfinite(out.loss)


def test_valid_mask_equals_dropping_teacher_points(generator: torch.Generator) -> None:
    teacher = torch.randn(2, 60, 3, generator=generator, dtype=torch.float64)
    pred = 1.5 * teacher + 0.2 * torch.randn(2, 60, 3, generator=generator, dtype=torch.float64)
    valid = torch.rand(2, 60, generator=generator) > 0.4
    out = PMLoss(weight=1.0)(pred, teacher, valid=valid)
    expected = []
    for i in range(2):
        keep = valid[i]
        sim3 = PMLoss(weight=1.0)(pred[i, keep][None], teacher[i, keep][None]).sim3
        assert sim3 is not None
        targets = sim3.apply(teacher[i, keep][None])[0]
        expected.append(torch.cdist(pred[i], targets).min(dim=1).values.square().mean())
    torch.testing.assert_close(out.per_item, torch.stack(expected))
    torch.testing.assert_close(out.loss, torch.stack(expected).mean())


def test_item_without_valid_teacher_points_contributes_zero(generator: torch.Generator) -> None:
    teacher = torch.randn(2, 10, 3, generator=generator)
    pred = torch.randn(2, 10, 3, generator=generator, requires_grad=True)
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[1] = False
    out = PMLoss(weight=1.0)(pred, teacher, valid=valid)
    torch.testing.assert_close(out.loss, out.per_item[0] / 2)
    assert torch.isnan(out.per_item[1])
    out.loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and (pred.grad[1] == 0).all()


def test_large_losses_are_damped(generator: torch.Generator) -> None:
    teacher = torch.randn(2, 20, 3, generator=generator)
    pred = torch.randn(2, 20, 3, generator=generator)
    pred[0] *= 1000.0  # far from any target without alignment
    out = PMLoss(weight=1.0, align=False)(pred, teacher)
    raw = out.per_item
    assert raw[0] > 100.0 and raw[1] < 100.0
    torch.testing.assert_close(out.loss, (raw[0] * 1e-5 + raw[1]) / 2)
    undamped = PMLoss(weight=1.0, align=False, ignore_large_loss=float("inf"))(pred, teacher)
    torch.testing.assert_close(undamped.loss, raw.mean())


def test_unaligned_mode_accepts_unpaired_sets(generator: torch.Generator) -> None:
    pred = torch.randn(2, 30, 3, generator=generator)
    teacher = torch.randn(2, 17, 3, generator=generator)
    out = PMLoss(weight=1.0, align=False)(pred, teacher)
    expected = torch.stack(
        [torch.cdist(p, t).min(dim=1).values.square().mean() for p, t in zip(pred, teacher, strict=True)]
    )
    torch.testing.assert_close(out.per_item, expected)
    assert out.sim3 is None and out.aligned_teacher.shape == (2, 17, 3)


def test_euclidean_distance_option(generator: torch.Generator) -> None:
    pred = torch.randn(2, 30, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 17, 3, generator=generator, dtype=torch.float64)
    out = PMLoss(weight=0.5, align=False, distance="euclidean")(pred, teacher)
    expected = torch.stack(
        [torch.cdist(p, t).min(dim=1).values.mean() for p, t in zip(pred, teacher, strict=True)]
    )
    torch.testing.assert_close(out.per_item, expected.detach())
    torch.testing.assert_close(out.loss, 0.5 * expected.mean())
    # Each centre is pulled toward its nearest teacher point with the same strength, whatever its distance.
    (grad,) = torch.autograd.grad(out.loss, pred)
    torch.testing.assert_close(grad.norm(dim=-1), torch.full((2, 30), 0.5 / 60, dtype=torch.float64))
    (reference_grad,) = torch.autograd.grad(0.5 * expected.mean(), pred)
    torch.testing.assert_close(grad, reference_grad)
    # With the alignment, gradients also reach the predictions through the Sim(3); they stay finite when a
    # centre sits exactly on its target (distance 0).
    aligned = PMLoss(distance="euclidean")(pred, pred.detach() * 2.0)
    assert aligned.loss.item() < 1e-5
    (grad,) = torch.autograd.grad(aligned.loss, pred)
    assert torch.isfinite(grad).all()


def test_low_precision_predictions(generator: torch.Generator) -> None:
    pred = torch.randn(2, 30, 3, generator=generator)
    teacher = pred + 0.1 * torch.randn(2, 30, 3, generator=generator)
    low = PMLoss()(pred.bfloat16().requires_grad_(), teacher.half())
    assert low.loss.dtype == torch.float32
    torch.testing.assert_close(low.loss, PMLoss()(pred.bfloat16().float(), teacher.half().float()).loss)


def test_pointmaps_to_points_order() -> None:
    pointmaps = torch.randn(2, 3, 4, 5, 3)
    points = pointmaps_to_points(pointmaps)
    assert points.shape == (2, 60, 3)
    torch.testing.assert_close(points[1, 2 * 20 + 3 * 5 + 4], pointmaps[1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"\[B, V, H, W, 3\]"):
        pointmaps_to_points(torch.randn(2, 4, 5, 3))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        pointmaps_to_points([1.0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pred", "teacher", "valid", "error", "match"),
    [
        (torch.zeros(2, 5, 3), torch.zeros(2, 6, 3), None, ValueError, "one point per predicted centre"),
        (torch.zeros(2, 5, 3), torch.zeros(3, 5, 3), None, ValueError, "batch size"),
        (
            torch.zeros(2, 5),
            torch.zeros(2, 5, 3),
            None,
            ValueError,
            r"pred_points must have shape \[B, P, 3\]",
        ),
        (torch.zeros(2, 5, 3), "points", None, TypeError, "teacher_points must be a torch.Tensor"),
        (torch.zeros(2, 5, 3, dtype=torch.int32), torch.zeros(2, 5, 3), None, TypeError, "floating-point"),
        (torch.zeros(2, 0, 3), torch.zeros(2, 0, 3), None, ValueError, "at least one point"),
        (torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), torch.ones(2, 5), TypeError, "valid must be a bool"),
        (
            torch.zeros(2, 5, 3),
            torch.zeros(2, 5, 3),
            torch.ones(2, 4, dtype=torch.bool),
            ValueError,
            "valid must have",
        ),
    ],
)
def test_forward_errors(pred: object, teacher: object, valid: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PMLoss()(pred, teacher, valid)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"weight": -1.0}, ValueError, "weight"),
        ({"weight": float("nan")}, ValueError, "weight"),
        ({"weight": "0.1"}, TypeError, "weight"),
        ({"ignore_large_loss": 0.0}, ValueError, "ignore_large_loss"),
        ({"align": 1}, TypeError, "align"),
        ({"distance": "l1"}, ValueError, "distance must be one of"),
    ],
)
def test_constructor_errors(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PMLoss(**kwargs)


def test_module_has_no_state() -> None:
    loss_fn = PMLoss(weight=0.01)
    assert loss_fn.state_dict() == {} and "weight=0.01" in repr(loss_fn)
