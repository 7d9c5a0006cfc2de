"""QAT and base training: the loss goes down, a resumed run equals an uninterrupted one, torchrun works."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accel_shared.distributed import setup_distributed
from fpsattention.adapters import AdapterConfig
from fpsattention.pipeline import TINY_SCHEDULE, VideoSize, build_tiny_pipeline
from fpsattention.training import (
    TrainConfig,
    VideoLatents,
    encode_dataset,
    render_dataset,
    set_latent_statistics,
    teacher_trajectories,
    train_base,
    train_qat,
    train_vae,
)

SMALL = VideoSize(32, 32, 5)


def _data(cfg: TrainConfig) -> tuple:
    pipe = build_tiny_pipeline()
    videos, prompts = render_dataset(cfg, size=SMALL)
    return pipe, encode_dataset(pipe.vae, 32, videos, prompts)


def test_dataset_shapes() -> None:
    cfg = TrainConfig(videos_per_prompt=1)
    _, data = _data(cfg)
    assert isinstance(data, VideoLatents)
    assert data.latents.shape == (32, 4, 3, 16, 16) and data.prompt_embeds.shape == (32, 16, 32)


def test_base_training_reduces_loss(tmp_path) -> None:
    cfg = TrainConfig(steps=40, lr=2e-3, batch_size=4, videos_per_prompt=1, log_every=10)
    pipe, data = _data(cfg)
    history = train_base(pipe.transformer, data, cfg, tmp_path, ctx=setup_distributed("cpu"))
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]


def test_vae_training_reduces_reconstruction_error(tmp_path) -> None:
    cfg = TrainConfig(steps=12, lr=2e-3, batch_size=2, videos_per_prompt=1, log_every=4)
    videos, _ = render_dataset(cfg, size=SMALL)
    vae = build_tiny_pipeline().vae
    history = train_vae(vae, videos, cfg, tmp_path, ctx=setup_distributed("cpu"))
    assert history[-1]["mse"] < 0.5 * history[0]["mse"]
    # The latent statistics go into the VAE's config: the encoded set is then standardised per channel.
    set_latent_statistics(vae, videos)
    data = encode_dataset(vae, 32, videos, ["a red circle moving right"] * videos.shape[0])
    torch.testing.assert_close(data.latents.mean(dim=(0, 2, 3, 4)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(data.latents.std(dim=(0, 2, 3, 4)), torch.ones(4), atol=1e-3, rtol=0)


def test_teacher_trajectories() -> None:
    pipe = build_tiny_pipeline()
    data = teacher_trajectories(pipe, ["a red circle moving right", "a blue square moving up"], [0], num_steps=3,
                                size=SMALL)  # fmt: skip
    assert data.states.shape == (2, 3, 4, 3, 16, 16) and data.timesteps.shape == (3,)
    assert data.timesteps[0] > data.timesteps[1] > data.timesteps[2]  # from noise towards data
    assert data.prompt_embeds.shape == (2, 16, 32)
    # The first state is the initial noise; the next ones differ from it (denoising happened).
    assert abs(float(data.states[:, 0].std()) - 1.0) < 0.2
    assert not torch.allclose(data.states[:, 1], data.states[:, 0])


@pytest.fixture
def one_thread():
    """The CPU attention backward adds dQ in thread-timing order: one thread makes runs bit-identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("adapters", [None, AdapterConfig(rank=4)], ids=["all-weights", "phase-adapters"])
def test_qat_reduces_distillation_loss_and_resumes_exactly(tmp_path, one_thread, adapters) -> None:
    lr = 1e-3 if adapters is None else 1e-2
    cfg = TrainConfig(steps=24, lr=lr, batch_size=2, num_steps=4, log_every=4, checkpoint_every=12,
                      relative_loss=adapters is None)  # fmt: skip
    pipe = build_tiny_pipeline()
    data = teacher_trajectories(pipe, ["a red circle moving right", "a green square moving down"], [0, 1],
                                num_steps=4, size=SMALL)  # fmt: skip
    ctx = setup_distributed("cpu")
    full = copy.deepcopy(pipe.transformer)
    history = train_qat(full, TINY_SCHEDULE, data, cfg, tmp_path / "full", ctx=ctx, adapters=adapters)
    assert sum(h["loss"] for h in history[-2:]) < 0.8 * sum(h["loss"] for h in history[:2])
    if adapters is not None:
        # Only the adapters trained (and were checkpointed); the transformer's own weights are the base's.
        base = pipe.transformer.state_dict()
        trained = {k: v for k, v in full.state_dict().items() if not k.startswith("fps_adapters.")}
        assert trained.keys() == base.keys()
        assert all(torch.equal(trained[k], base[k]) for k in base)
        checkpoint = torch.load(tmp_path / "full" / "checkpoints" / "step-00000024.pt", weights_only=False)
        assert all(k.startswith("deltas.") for k in checkpoint["model"])
        assert any(p.detach().abs().max() > 0 for n, p in full.fps_adapters.named_parameters() if ".up" in n)
    # Interrupted during step 13 (after the checkpoint of step 12), then resumed: the same weights as the
    # uninterrupted run.
    interrupted = copy.deepcopy(pipe.transformer)
    calls = {"n": 0}
    original_step = torch.optim.AdamW.step

    def failing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt
        return original_step(self, *args, **kwargs)

    torch.optim.AdamW.step = failing_step  # type: ignore[method-assign]
    try:
        train_qat(interrupted, TINY_SCHEDULE, data, cfg, tmp_path / "resumed", ctx=ctx, adapters=adapters)
    except KeyboardInterrupt:
        pass
    finally:
        torch.optim.AdamW.step = original_step  # type: ignore[method-assign]
    assert calls["n"] == 13
    resumed = copy.deepcopy(pipe.transformer)
    train_qat(resumed, TINY_SCHEDULE, data, cfg, tmp_path / "resumed", ctx=ctx, adapters=adapters)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_torchrun_two_processes(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "fpsattention", "train",
        "--model", "random", "--out", str(tmp_path / "run"), "--steps", "4", "--batch-size", "1",
        "--eval-prompts", "0", "--checkpoint-every", "2", "--videos-per-prompt", "1", "--json",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = torch.load(Path(tmp_path / "run" / "checkpoints" / "step-00000004.pt"), weights_only=False)
    assert checkpoint["settings"]["world_size"] == 2 and len(checkpoint["rng"]) == 2
    assert (tmp_path / "run" / "final" / "transformer").is_dir()
    assert (tmp_path / "run" / "final" / "adapters" / "adapters.safetensors").is_file()  # the default QAT


def test_relative_loss_weights_favour_the_nearly_exact_dense_phase() -> None:
    from fpsattention.models import get_pipeline
    from fpsattention.processor import apply
    from fpsattention.training import _step_weights

    pipe = get_pipeline("tiny-wan")  # trained: its attention matters, so the windows cost accuracy
    data = teacher_trajectories(pipe, ["a red circle moving right"], [0], num_steps=4)
    teacher = copy.deepcopy(pipe.transformer)
    student = pipe.transformer
    state = apply(student, TINY_SCHEDULE)  # steps 0 (early, sparse), 1-2 (dense), 3 (late, sparse)
    weights = _step_weights(student, teacher, state, data, 3.0)
    assert sum(weights) / len(weights) == pytest.approx(1.0)
    assert min(weights[1], weights[2]) > max(weights[0], weights[3])
