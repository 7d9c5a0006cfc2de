"""umeyama_sim3: exact recovery, reflections, batching, weights, degenerate inputs and gradients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from pmloss import Sim3, umeyama_sim3


def _transform(
    points: torch.Tensor, rotations: Callable[..., torch.Tensor], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    b = points.shape[0]
    rotation = rotations(b, generator=generator, dtype=points.dtype)
    scale = (0.2 + 3.0 * torch.rand(b, generator=generator, dtype=torch.float64)).to(points.dtype)
    translation = torch.randn(b, 3, generator=generator, dtype=torch.float64).to(points.dtype)
    dst = scale[:, None, None] * points @ rotation.transpose(-1, -2) + translation[:, None]
    return dst, scale, rotation, translation


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_recovers_a_known_sim3(dtype: torch.dtype, rotations: Callable, generator: torch.Generator) -> None:
    src = torch.randn(4, 200, 3, generator=generator, dtype=torch.float64).to(dtype)
    dst, scale, rotation, translation = _transform(src, rotations, generator)
    sim3 = umeyama_sim3(src, dst)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert sim3.scale.dtype == dtype and sim3.rotation.shape == (4, 3, 3) and sim3.translation.shape == (4, 3)
    torch.testing.assert_close(sim3.scale, scale, atol=tol, rtol=tol)
    torch.testing.assert_close(sim3.rotation, rotation, atol=tol, rtol=tol)
    torch.testing.assert_close(sim3.translation, translation, atol=tol * 10, rtol=tol)
    torch.testing.assert_close(sim3.apply(src), dst, atol=tol * 10, rtol=tol)


def test_planar_points_give_a_rotation_not_a_reflection(
    rotations: Callable, generator: torch.Generator
) -> None:
    # With planar points the smallest singular value is 0 and the SVD alone may return a reflection:
    # the S = diag(1, 1, -1) correction must recover the true rotation in every item.
    src = torch.randn(16, 50, 3, generator=generator, dtype=torch.float64)
    src[..., 2] = 0.0
    dst, scale, rotation, _ = _transform(src, rotations, generator)
    sim3 = umeyama_sim3(src, dst)
    torch.testing.assert_close(torch.linalg.det(sim3.rotation), torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(sim3.rotation, rotation)
    torch.testing.assert_close(sim3.scale, scale)
    torch.testing.assert_close(sim3.apply(src), dst)


def test_mirrored_target_gets_the_best_proper_rotation(generator: torch.Generator) -> None:
    src = torch.randn(3, 100, 3, generator=generator, dtype=torch.float64)
    dst = src * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    sim3 = umeyama_sim3(src, dst)
    torch.testing.assert_close(torch.linalg.det(sim3.rotation), torch.ones(3, dtype=torch.float64))
    best = ((sim3.apply(src) - dst) ** 2).sum()
    # No small perturbation of the rotation does better (it is the constrained optimum).
    for axis in torch.eye(3, dtype=torch.float64):
        skew = torch.linalg.cross(axis.expand(3, 3), torch.eye(3, dtype=torch.float64), dim=-1).T * 1e-3
        rotated = torch.linalg.matrix_exp(skew) @ sim3.rotation
        other = Sim3(sim3.scale, rotated, sim3.translation)
        assert ((other.apply(src) - dst) ** 2).sum() >= best


def test_batch_items_are_independent(rotations: Callable, generator: torch.Generator) -> None:
    src = torch.randn(3, 40, 3, generator=generator)
    dst = _transform(src, rotations, generator)[0] + 0.05 * torch.randn(3, 40, 3, generator=generator)
    together = umeyama_sim3(src, dst)
    for i in range(3):
        alone = umeyama_sim3(src[i : i + 1], dst[i : i + 1])
        for a, b in zip(alone, together, strict=True):
            torch.testing.assert_close(a[0], b[i])


def test_gradcheck_float64(generator: torch.Generator) -> None:
    src = torch.randn(2, 6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    dst = torch.randn(2, 6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(2, 6, generator=generator, dtype=torch.float64) + 0.1
    assert torch.autograd.gradcheck(lambda x, y: tuple(umeyama_sim3(x, y)), (src, dst))
    assert torch.autograd.gradcheck(lambda x, y: tuple(umeyama_sim3(x, y, weights)), (src, dst))


def test_gradcheck_with_a_reflection(generator: torch.Generator) -> None:
    src = torch.randn(2, 8, 3, generator=generator, dtype=torch.float64)
    dst = (src * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)).requires_grad_()
    dst.data += 0.1 * torch.randn(2, 8, 3, generator=generator, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda y: tuple(umeyama_sim3(src, y)), (dst,))


def test_gradient_is_finite_at_repeated_singular_values(generator: torch.Generator) -> None:
    # A square grid on a plane: the covariance has d1 = d2 and d3 = 0. torch.linalg.svd's own backward
    # is NaN here; R is smooth and our gradient matches finite differences.
    u, v = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    src = torch.stack([u, v, torch.zeros_like(u)], dim=-1).reshape(1, 16, 3).double()
    dst = src.clone().requires_grad_()
    sim3 = umeyama_sim3(src, dst)
    (sim3.rotation.sum() + sim3.scale.sum() + sim3.translation.sum()).backward()
    assert dst.grad is not None and torch.isfinite(dst.grad).all()
    assert torch.autograd.gradcheck(lambda y: tuple(umeyama_sim3(src, y)), (src.clone().requires_grad_(),))


def test_collapsed_source_is_finite() -> None:
    src = torch.ones(2, 5, 3, requires_grad=True)
    dst = torch.randn(2, 5, 3, requires_grad=True)
    sim3 = umeyama_sim3(src, dst)
    assert torch.equal(sim3.scale, torch.zeros(2))
    torch.testing.assert_close(
        sim3.apply(src.detach()), dst.detach().mean(dim=1, keepdim=True).expand(2, 5, 3)
    )
    (sim3.scale.sum() + sim3.rotation.sum() + sim3.translation.sum()).backward()
    assert src.grad is not None and dst.grad is not None
    assert torch.isfinite(src.grad).all() and torch.isfinite(dst.grad).all()


def test_zero_weights_equal_dropping_points(rotations: Callable, generator: torch.Generator) -> None:
    src = torch.randn(2, 30, 3, generator=generator, dtype=torch.float64)
    dst = _transform(src, rotations, generator)[0] + 0.1 * torch.randn(
        2, 30, 3, generator=generator, dtype=torch.float64
    )
    keep = torch.rand(2, 30, generator=generator) > 0.3
    keep[:, :5] = True
    src_masked, dst_masked = src.clone(), dst.clone()
    src_masked[~keep] = float("nan")  # ignored: zero weight
    dst_masked[~keep] = float("inf")
    for weights in (keep, keep.double() * 2.5):
        masked = umeyama_sim3(src_masked, dst_masked, weights)
        for i in range(2):
            dropped = umeyama_sim3(src[i, keep[i]][None], dst[i, keep[i]][None])
            for a, b in zip(masked, dropped, strict=True):
                torch.testing.assert_close(a[i], b[0])


def test_all_zero_weights_are_finite() -> None:
    src, dst = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    sim3 = umeyama_sim3(src, dst, torch.zeros(1, 4, dtype=torch.bool))
    assert all(torch.isfinite(t).all() for t in sim3) and sim3.scale.item() == 0.0


def test_non_finite_input_without_weights_gives_nan_not_an_error() -> None:
    src, dst = torch.randn(2, 6, 3), torch.randn(2, 6, 3, requires_grad=True)
    src[0, 0, 0] = float("nan")
    sim3 = umeyama_sim3(src, dst)
    assert torch.isnan(sim3.rotation[0]).all() and torch.isfinite(sim3.rotation[1]).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype: torch.dtype, rotations: Callable, generator: torch.Generator) -> None:
    src = torch.randn(2, 64, 3, generator=generator)
    dst = _transform(src, rotations, generator)[0]
    low = umeyama_sim3(src.to(dtype), dst.to(dtype))
    full = umeyama_sim3(src.to(dtype).float(), dst.to(dtype).float())
    assert low.rotation.dtype == dtype
    for a, b in zip(low, full, strict=True):
        torch.testing.assert_close(a.float(), b.to(dtype).float())


def test_mixed_dtypes_promote() -> None:
    sim3 = umeyama_sim3(torch.randn(1, 5, 3), torch.randn(1, 5, 3, dtype=torch.float64))
    assert sim3.scale.dtype == torch.float64


@pytest.mark.parametrize(
    ("src", "dst", "weights", "error", "match"),
    [
        ([[0.0, 0.0, 0.0]], torch.zeros(1, 1, 3), None, TypeError, "src must be a torch.Tensor"),
        (torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), None, ValueError, r"src must have shape \[B, N, 3\]"),
        (torch.zeros(1, 4, 3), torch.zeros(1, 5, 3), None, ValueError, "same shape"),
        (torch.zeros(1, 4, 3, dtype=torch.int64), torch.zeros(1, 4, 3), None, TypeError, "floating-point"),
        (torch.zeros(1, 0, 3), torch.zeros(1, 0, 3), None, ValueError, "at least one point"),
        (
            torch.zeros(1, 4, 3),
            torch.zeros(1, 4, 3),
            torch.ones(4),
            ValueError,
            r"weights must have shape \[B, N\]",
        ),
        (
            torch.zeros(1, 4, 3),
            torch.zeros(1, 4, 3),
            torch.ones(1, 4, dtype=torch.int64),
            TypeError,
            "bool or float",
        ),
        (torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), -torch.ones(1, 4), ValueError, "non-negative"),
        (
            torch.zeros(1, 4, 3),
            torch.zeros(1, 4, 3),
            torch.full((1, 4), float("nan")),
            ValueError,
            "non-negative",
        ),
    ],
)
def test_argument_errors(src: object, dst: object, weights: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        umeyama_sim3(src, dst, weights)  # type: ignore[arg-type]


def test_apply_checks_its_points() -> None:
    sim3 = umeyama_sim3(torch.randn(2, 5, 3), torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="batch size 2"):
        sim3.apply(torch.randn(3, 5, 3))
    with pytest.raises(ValueError, match=r"\[B, N, 3\]"):
        sim3.apply(torch.randn(2, 5))
