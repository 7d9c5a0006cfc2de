"""Training: the loss goes down, interrupted + resumed == uninterrupted, checkpoints, logs, evaluation."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from _gs_model_fixtures import PlaneScenes, TakeViews, tiny_config

from accel_shared.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from accel_shared.gs.evaluation import evaluate
from accel_shared.gs.model import FeedForwardGS, GSModelOutput
from accel_shared.gs.sampler import ResumableSampler
from accel_shared.gs.train import TrainConfig, lr_factor, train


def new_model(**overrides: object) -> FeedForwardGS:
    torch.manual_seed(0)
    return FeedForwardGS(tiny_config(**overrides))


def config(out_dir: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "steps": 6,
        "lr": 2e-3,
        "warmup_steps": 2,
        "ckpt_every": 3,
        "log_every": 1,
        "out_dir": out_dir,
        "show_progress": False,
        "lambda_lpips": 0.0,
    }
    values.update(overrides)
    return TrainConfig(**values)


def read_log(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_reduces_the_photometric_loss(tmp_path: Path) -> None:
    model = new_model()
    result = train(
        model, PlaneScenes(count=1), config(tmp_path, steps=15, lr=5e-4, ckpt_every=0, log_every=5)
    )
    assert len(result.losses) == 15 and all(math.isfinite(x) for x in result.losses)
    assert sum(result.losses[-3:]) / 3 < 0.6 * result.losses[0]
    log = read_log(tmp_path)
    assert [r["step"] for r in log] == [5, 10, 15]
    assert {"loss", "photometric", "mse", "ssim", "grad_norm", "lr", "time_s"} <= set(log[0])
    assert log[-1]["photometric"] < log[0]["photometric"]
    reloaded = FeedForwardGS.from_pretrained(tmp_path / "model")
    for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b)


class CountingLoss:
    """An extra loss (a tiny depth prior) that raises on call number ``fail_at`` (1-based) and records
    the training progress the loop reports."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.progress: list[float] = []

    def set_progress(self, fraction: float) -> None:
        self.progress.append(fraction)

    def __call__(
        self, batch: Mapping[str, Any], output: GSModelOutput
    ) -> tuple[torch.Tensor, dict[str, float]]:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        value = 1e-3 * (output.depth - 2.0).abs().mean()
        return value, {"depth_prior": float(value.detach())}


@pytest.mark.slow
def test_resume_reaches_exactly_the_uninterrupted_weights(tmp_path: Path) -> None:
    # 3 scenes, batch 2 per step with drop_last: one batch per epoch, so the run crosses epochs; the
    # checkpoint at step 3 is then resumed from.
    data = PlaneScenes(count=5)
    steps = dict(steps=6, batch_size=2, ckpt_every=3)
    full = new_model()
    full_loss = CountingLoss()
    full_result = train(full, data, config(tmp_path / "full", **steps), extra_loss=full_loss)
    assert full_loss.progress == [step / 6 for step in range(6)]

    interrupted = new_model()
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, data, config(tmp_path / "cut", **steps), extra_loss=CountingLoss(fail_at=5))
    checkpoint = latest_checkpoint(tmp_path / "cut")
    assert checkpoint is not None and checkpoint.name == "step-00000003.pt"
    assert [r["step"] for r in read_log(tmp_path / "cut")] == [1, 2, 3, 4]

    resumed = new_model()
    torch.manual_seed(1234)  # the RNG state must come from the checkpoint, not from here
    resumed_loss = CountingLoss()
    result = train(resumed, data, config(tmp_path / "cut", **steps), extra_loss=resumed_loss)
    assert resumed_loss.progress == [step / 6 for step in range(3, 6)]
    assert result.resumed_from == 3 and result.step == 6 and len(result.losses) == 3
    assert result.losses == full_result.losses[3:]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    log = read_log(tmp_path / "cut")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]  # the pre-interruption step 4 was replaced
    assert [r["loss"] for r in log] == [r["loss"] for r in read_log(tmp_path / "full")]
    assert "depth_prior" in log[0]

    # A finished run resumes to a no-op.
    again = train(new_model(), data, config(tmp_path / "cut", **steps))
    assert again.resumed_from == 6 and again.losses == []


def test_training_with_a_compressor_draws_k_per_step(tmp_path: Path) -> None:
    model = new_model()
    compressor = TakeViews([2, 0, 1])
    model.set_compressor(compressor)
    data = PlaneScenes(count=2, context_xs=(0.0, 0.15, 0.3))
    cfg = config(tmp_path, steps=4, ckpt_every=0, min_anchors=1, max_anchors=3, eval_num_anchors=2)
    train(model, data, cfg, eval_dataset=PlaneScenes(count=1, context_xs=(0.0, 0.15, 0.3)))
    log = read_log(tmp_path)
    ks = [r["num_anchors"] for r in log if "num_anchors" in r]
    assert len(ks) == 4 and set(ks) <= {1, 2, 3}
    assert compressor.scale.grad is not None
    assert "eval/psnr" in log[-1]


@torch.no_grad()
def test_evaluate_reports_finite_metrics() -> None:
    model = new_model()
    metrics = evaluate(model, PlaneScenes(count=3), batch_size=2, show_progress=False, use_lpips=False)
    assert metrics["num_scenes"] == 3
    for key in ("psnr", "ssim", "depth_abs_rel", "depth_rmse", "depth_delta1"):
        assert math.isfinite(metrics[key]), key
    assert 0 < metrics["ssim"] <= 1 and metrics["psnr"] > 5
    assert model.training  # mode restored


def test_lr_schedule() -> None:
    factors = [lr_factor(s, warmup_steps=4, total_steps=14) for s in range(14)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[9] == pytest.approx(0.5)
    assert all(a >= b for a, b in itertools.pairwise(factors[4:])) and factors[-1] > 0


def test_sampler_resumes_mid_epoch() -> None:
    data = PlaneScenes(count=10)  # the sampler only needs len()
    full = ResumableSampler(data, num_replicas=2, rank=1, seed=3)
    full.set_state(epoch=2, start=0)
    order = list(full)
    part = ResumableSampler(data, num_replicas=2, rank=1, seed=3)
    part.set_state(epoch=2, start=2)
    assert list(part) == order[2:] and len(part) == 3
    other = ResumableSampler(data, num_replicas=2, rank=1, seed=3)
    other.set_state(epoch=3, start=0)
    assert list(other) != order


def test_checkpoints_are_atomic_and_pruned(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"step": step, "x": torch.arange(step)}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step-00000002.pt", "step-00000003.pt"]
    path = latest_checkpoint(tmp_path)
    assert path is not None and load_checkpoint(path)["step"] == 3


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="together"):
        TrainConfig(min_anchors=2)
    with pytest.raises(ValueError, match="min_anchors <= max_anchors"):
        TrainConfig(min_anchors=3, max_anchors=2)
