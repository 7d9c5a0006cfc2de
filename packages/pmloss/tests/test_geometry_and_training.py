"""Geometry metrics, the PM-Loss training term, and the CLI end to end on tiny data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from accel_shared.gs.data import MultiViewDataset, generate_dataset
from accel_shared.gs.evaluation import evaluate
from accel_shared.gs.gaussians import Gaussians
from accel_shared.gs.model import FeedForwardGS, GSModelConfig, GSModelOutput
from pmloss.cli import main
from pmloss.experiment import psnr_with_true_centres, scene_psnr
from pmloss.geometry_metrics import geometry_metrics, surface_distance
from pmloss.loss import PMLoss
from pmloss.teacher import PointmapTeacher
from pmloss.training import PMLossTerm


def test_surface_distance_is_the_euclidean_distance_to_the_nearest_sample() -> None:
    surface = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
    points = torch.tensor([[[0.0, 2, 0], [0.9, 0, 0]]])
    torch.testing.assert_close(surface_distance(points, surface), torch.tensor([[2.0, 0.1]]))


def test_geometry_metrics_count_floaters_at_a_depth_step() -> None:
    # one view, 8x8: left half at depth 2, right half at depth 4 (a vertical step)
    depth = torch.full((1, 1, 8, 8), 2.0)
    depth[..., 4:] = 4.0
    surface_map = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij"), -1)
    surface_map = torch.cat([surface_map, depth[0, 0, ..., None]], -1)[None, None]  # [1, 1, 8, 8, 3]
    means = surface_map.clone()
    assert float(geometry_metrics(means, depth, surface_map.flatten(1, 3))["centre_distance"]) == 0
    # smear the two columns next to the step halfway between foreground and background
    means[..., 3:5, 2] = 3.0
    metrics = geometry_metrics(means, depth, surface_map.flatten(1, 3))
    assert metrics["boundary_floaters"].item() == pytest.approx(0.5)  # 16 of the 32 boundary pixels
    assert metrics["floaters"].item() == pytest.approx(16 / 64)
    assert metrics["centre_distance"].item() == pytest.approx(16 * 1.0 / 64)


def _output(means_per_pixel: torch.Tensor, index: torch.Tensor) -> GSModelOutput:
    b, v, h, w, _ = means_per_pixel.shape
    g = v * h * w
    gaussians = Gaussians(
        means_per_pixel.reshape(b, g, 3),
        torch.ones(b, g, 3),
        torch.tensor([1.0, 0, 0, 0]).expand(b, g, 4),
        torch.ones(b, g),
        torch.ones(b, g, 3),
    )
    return GSModelOutput(gaussians, means_per_pixel[..., 2], means_per_pixel, index)


def test_pm_term_uses_the_views_the_gaussians_come_from(make_batch) -> None:
    batch = make_batch(b=1, v=3, h=4, w=5)
    term = PMLossTerm(PointmapTeacher.from_ground_truth())
    pointmaps = batch["context"]["pointmap"]
    # Gaussians predicted exactly on views 2 and 0 (as after a view compressor): zero loss
    index = torch.tensor([[2, 0]])
    exact = pointmaps[:, [2, 0]].clone().requires_grad_()
    loss, logs = term(batch, _output(exact, index))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # the same Gaussians against the wrong views give a positive loss with a gradient
    loss, logs = term(batch, _output(exact, torch.tensor([[0, 1]])))
    loss.backward()
    assert loss.item() > 0 and logs["pm_chamfer"] > 0 and exact.grad.abs().sum() > 0


@pytest.mark.slow
def test_cli_train_resume_and_eval(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    data, run = tmp_path / "scenes", tmp_path / "run"
    tiny = tmp_path / "model.json"
    tiny.write_text(json.dumps({"feature_dim": 16, "transformer_layers": 1, "num_depth_candidates": 8}))
    common = ["--data", str(data), "--num-target", "2", "--json"]
    args = [
        "train",
        *common,
        "--generate",
        "5",
        "--image-size",
        "32",
        "--views-per-scene",
        "4",
        "--out",
        str(run),
    ]
    args += [
        "--steps",
        "4",
        "--ckpt-every",
        "2",
        "--warmup",
        "1",
        "--model-config",
        str(tiny),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    first = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert first["steps"] == 4 and first["resumed_from"] is None
    assert {"psnr", "centre_distance", "boundary_floaters"} <= first.keys()
    more = [*args[: args.index("--steps") + 1], "6", *args[args.index("--steps") + 2 :]]
    assert main([*more, "--no-align"]) == 0
    second = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert second["resumed_from"] == 4 and second["steps"] == 6 and second["align"] is False
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(run / "model"), *common, "--out", str(out), "--images", "1"]) == 0
    evaluated = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert Path(evaluated["images"][0]).read_bytes()[:4] == b"\x89PNG"
    assert evaluated["psnr"] == pytest.approx(second["psnr"], rel=1e-4)
    assert evaluated["test_targets"] == "inside"
    # the extrapolation protocol: context views 1 and 2 of 4, targets 0 and 3
    assert (
        main(["eval", "--model", str(run / "model"), *common, "--out", str(out), "--test-targets", "outside"])
        == 0
    )
    extrapolated = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    outside = MultiViewDataset(
        data,
        num_context=2,
        num_target=2,
        split="test",
        test_fraction=0.2,
        view_sampler="fixed",
        targets="outside",
    )
    expected = evaluate(FeedForwardGS.from_pretrained(run / "model"), outside, show_progress=False)["psnr"]
    assert extrapolated["test_targets"] == "outside"
    assert (
        extrapolated["psnr"] == pytest.approx(expected, rel=1e-4)
        and extrapolated["psnr"] != evaluated["psnr"]
    )

    # fine-tuning from the saved model: a vanishing learning rate leaves its weights as they were
    tuned = tmp_path / "tuned"
    fine_tune = [*args[: args.index("--out")], "--out", str(tuned), "--steps", "1", "--warmup", "1"]
    fine_tune += ["--lr", "1e-12", "--init-model", str(run / "model"), "--device", "cpu"]
    assert main(fine_tune) == 0
    assert json.loads(capfd.readouterr().out.strip().splitlines()[-1])["init_model"] == str(run / "model")
    start = FeedForwardGS.from_pretrained(run / "model").state_dict()
    after = FeedForwardGS.from_pretrained(tuned / "model").state_dict()
    assert all(torch.allclose(start[name], after[name], atol=1e-6) for name in start)
    assert main([*fine_tune, "--model-config", str(tiny)]) == 2
    assert "drop --model-config" in capfd.readouterr().err
    # a fine-tune into a folder holding another run's checkpoint would silently resume that run
    assert (
        main(
            [
                *fine_tune[: fine_tune.index("--out")],
                "--out",
                str(run),
                *fine_tune[fine_tune.index("--out") + 2 :],
            ]
        )
        == 2
    )
    assert "trained from scratch" in capfd.readouterr().err
    assert main(fine_tune) == 0  # its own checkpoint resumes
    assert json.loads(capfd.readouterr().out.strip().splitlines()[-1])["resumed_from"] == 1


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert "pass --generate N" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--pm-weight", "-1"]) == 2
    assert "--pm-weight must be >= 0" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "missing"), "--data", str(tmp_path)]) == 2
    assert "no saved model folder" in capsys.readouterr().err


def test_pm_term_decays_linearly_to_zero_from_decay_start(make_batch) -> None:
    batch = make_batch(b=1, v=2, h=4, w=5)
    index = torch.tensor([[0, 1]])
    shifted = batch["context"]["pointmap"] + 0.1  # a constant offset: a positive loss
    constant = PMLossTerm(PointmapTeacher.from_ground_truth(), PMLoss(weight=1.0, align=False))
    decayed = PMLossTerm(
        PointmapTeacher.from_ground_truth(), PMLoss(weight=1.0, align=False), decay_start=0.5
    )
    full, _ = constant(batch, _output(shifted, index))
    for fraction, expected in [(0.0, 1.0), (0.49, 1.0), (0.5, 1.0), (0.75, 0.5), (0.99, 0.02)]:
        decayed.set_progress(fraction)
        constant.set_progress(fraction)
        loss, logs = decayed(batch, _output(shifted, index))
        assert loss.item() == pytest.approx(expected * full.item(), rel=1e-5)
        assert logs["pm_factor"] == pytest.approx(expected)
        assert constant(batch, _output(shifted, index))[0].item() == pytest.approx(full.item())
    with pytest.raises(ValueError, match="decay_start"):
        PMLossTerm(PointmapTeacher.from_ground_truth(), decay_start=1.0)


class _ShiftedCentres(FeedForwardGS):
    """A FeedForwardGS whose Gaussian centres are all moved by a constant vector."""

    def forward(self, context, **kwargs):  # type: ignore[no-untyped-def]
        output = super().forward(context, **kwargs)
        shift = torch.tensor([0.3, -0.2, 0.5])
        gaussians = dataclasses.replace(output.gaussians, means=output.gaussians.means + shift)
        return dataclasses.replace(
            output, gaussians=gaussians, means_per_pixel=output.means_per_pixel + shift
        )


class _CentresOnTheSurface(FeedForwardGS):
    """A FeedForwardGS whose Gaussian centres are the context views' ground-truth pointmaps."""

    def forward(self, context, **kwargs):  # type: ignore[no-untyped-def]
        output = super().forward(context, **kwargs)
        surface = context["pointmap"]
        gaussians = dataclasses.replace(output.gaussians, means=surface.flatten(1, 3))
        return dataclasses.replace(output, gaussians=gaussians, means_per_pixel=surface)


class _ViewsReversed(FeedForwardGS):
    """A FeedForwardGS that lists its Gaussians view by view in reverse order, with context_index
    saying so (as a view compressor reorders them): the same Gaussians, another order."""

    def forward(self, context, **kwargs):  # type: ignore[no-untyped-def]
        output = super().forward(context, **kwargs)
        b, v = output.depth.shape[:2]

        def flip(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, v, -1, *x.shape[2:]).flip(1).flatten(1, 2)

        g = output.gaussians
        gaussians = dataclasses.replace(
            g,
            means=flip(g.means),
            scales=flip(g.scales),
            rotations=flip(g.rotations),
            opacities=flip(g.opacities),
            colors=flip(g.colors),
        )
        return dataclasses.replace(
            output,
            gaussians=gaussians,
            depth=output.depth.flip(1),
            means_per_pixel=output.means_per_pixel.flip(1),
            context_index=output.context_index.flip(1),
        )


def test_true_centre_psnr_ignores_the_predicted_centres_and_scene_psnr_averages_to_evaluate(
    tmp_path: Path,
) -> None:
    root = generate_dataset(tmp_path / "scenes", 3, views_per_scene=4, image_size=16, progress=False)
    dataset = MultiViewDataset(root, num_context=2, num_target=2, split="all", view_sampler="fixed")
    config = GSModelConfig(feature_dim=16, transformer_layers=1, num_depth_candidates=8)
    torch.manual_seed(0)
    model = FeedForwardGS(config).eval()
    shifted = _ShiftedCentres(config).eval()
    shifted.load_state_dict(model.state_dict())

    plain_psnr = evaluate(model, dataset, show_progress=False)["psnr"]
    assert evaluate(shifted, dataset, show_progress=False)["psnr"] != pytest.approx(plain_psnr, abs=1e-3)
    true_centres = psnr_with_true_centres(model, dataset)
    assert psnr_with_true_centres(shifted, dataset) == pytest.approx(true_centres, abs=1e-5)
    assert true_centres != pytest.approx(plain_psnr, abs=1e-3)

    per_scene = scene_psnr(model, dataset)
    assert len(per_scene) == 3
    assert sum(per_scene) / 3 == pytest.approx(plain_psnr, rel=1e-5)  # 2 targets per scene: equal weights

    # a model whose centres already are the true surface renders to exactly that PSNR
    on_surface = _CentresOnTheSurface(config).eval()
    on_surface.load_state_dict(model.state_dict())
    assert evaluate(on_surface, dataset, show_progress=False)["psnr"] == pytest.approx(true_centres, abs=1e-4)
    # the true points follow the views the Gaussians come from (context_index), whatever their order
    reversed_views = _ViewsReversed(config).eval()
    reversed_views.load_state_dict(model.state_dict())
    assert evaluate(reversed_views, dataset, show_progress=False)["psnr"] == pytest.approx(
        plain_psnr, abs=1e-4
    )
    assert psnr_with_true_centres(reversed_views, dataset) == pytest.approx(true_centres, abs=1e-4)
