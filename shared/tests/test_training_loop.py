"""accel_shared.training: the loop trains, resumes exactly, and refuses a folder of another run."""

import itertools

import pytest
import torch

from accel_shared.distributed import setup_distributed
from accel_shared.training import LoopConfig, run_training


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    target = torch.tensor([[1.0, -2.0, 0.5, 3.0]])

    def loss_fn(step: int) -> dict[str, float]:
        x = torch.randn(16, 4)  # the global RNG, restored on resume
        loss = (model(x) - x @ target.T).square().mean()
        loss.backward()
        return {"loss": loss.item()}

    return model, optimizer, loss_fn


def test_loss_goes_down_and_history_is_logged(tmp_path) -> None:
    model, optimizer, loss_fn = _problem()
    cfg = LoopConfig(steps=60, lr=0.3, log_every=10, checkpoint_every=30)
    history = run_training(
        model, optimizer, loss_fn, cfg, tmp_path, ctx=setup_distributed("cpu"), settings={"a": 1}
    )
    assert len(history) == 6 and history[-1]["step"] == 60
    assert history[-1]["loss"] < 0.1 * history[0]["loss"]
    assert (tmp_path / "history.json").is_file()


def test_resume_matches_an_uninterrupted_run(tmp_path) -> None:
    cfg = LoopConfig(steps=20, lr=0.05, log_every=5, checkpoint_every=10)
    ctx = setup_distributed("cpu")
    model, optimizer, loss_fn = _problem()
    run_training(model, optimizer, loss_fn, cfg, tmp_path / "full", ctx=ctx, settings={})

    model2, optimizer2, loss_fn2 = _problem()
    calls = {"n": 0}

    def interrupted(step: int) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt
        return loss_fn2(step)

    with pytest.raises(KeyboardInterrupt):
        run_training(model2, optimizer2, interrupted, cfg, tmp_path / "cut", ctx=ctx, settings={})
    model3, optimizer3, loss_fn3 = _problem(seed=1)  # other initial weights: the checkpoint must win
    run_training(model3, optimizer3, loss_fn3, cfg, tmp_path / "cut", ctx=ctx, settings={})
    torch.testing.assert_close(model3.weight, model.weight)
    torch.testing.assert_close(model3.bias, model.bias)


def test_refuses_other_settings_and_bad_config(tmp_path) -> None:
    model, optimizer, loss_fn = _problem()
    cfg = LoopConfig(steps=2, lr=0.05, checkpoint_every=1)
    run_training(model, optimizer, loss_fn, cfg, tmp_path, ctx=setup_distributed("cpu"), settings={"lr": 1})
    with pytest.raises(ValueError, match="other settings"):
        run_training(
            model, optimizer, loss_fn, cfg, tmp_path, ctx=setup_distributed("cpu"), settings={"lr": 2}
        )
    with pytest.raises(ValueError, match="steps must be a positive int"):
        LoopConfig(steps=0, lr=0.1)
    assert LoopConfig(steps=100, lr=1.0, warmup_steps=10).lr_at(0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        LoopConfig(steps=2, lr=0.1, min_lr_ratio=1.5)


def test_learning_rate_schedule() -> None:
    cfg = LoopConfig(steps=14, lr=2.0, warmup_steps=4, min_lr_ratio=0.25)
    assert [cfg.lr_at(s) for s in range(4)] == pytest.approx([0.5, 1.0, 1.5, 2.0])  # linear warm-up
    assert cfg.lr_at(4) == pytest.approx(2.0)  # the peak, then cosine
    assert cfg.lr_at(9) == pytest.approx(2.0 * (0.25 + 0.75 * 0.5))  # half way
    assert cfg.lr_at(14) == pytest.approx(0.5)  # the floor: lr * min_lr_ratio
    decay = [cfg.lr_at(s) for s in range(4, 15)]
    assert all(a > b for a, b in itertools.pairwise(decay))
