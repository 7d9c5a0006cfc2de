"""Training: TrainConfig (validation, curriculum, learning rate), the answer and distillation losses,
OmniSparse in the loop, exact resume from checkpoints, and a 2-process torchrun run on gloo."""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import accel_shared.training as training_loop
import omnisparse
import omnisparse.training as training
from accel_shared.checkpoint import latest_checkpoint, load_checkpoint
from accel_shared.distributed import DistContext
from omnisparse import OmniSparseConfig
from omnisparse.tiny_vlm import build_tiny_vlm
from omnisparse.training import TrainConfig, example_inputs, example_loss, train

pytest.importorskip("easy_vqa")

CTX = DistContext(0, 1, 0, torch.device("cpu"))
SMALL: dict[str, Any] = {"num_frames": 2, "frame_size": 56}


def small_model(seed: int = 0) -> tuple[Any, Any]:
    return build_tiny_vlm(num_layers=2, hidden=64, seed=seed)


def run(model: Any, tokenizer: Any, out: Path, **kwargs: Any) -> list[dict[str, float]]:
    return train(model, tokenizer, TrainConfig(**{**SMALL, **kwargs}), out, ctx=CTX, show_progress=False)


# ---------------------------------------------------------------------------------------------
# TrainConfig
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps and batch_size must be >= 1"),
        ({"batch_size": 0}, "steps and batch_size must be >= 1"),
        ({"answer_weight": -1.0}, "answer_weight and distill_weight"),
        ({"distill_weight": -0.5}, "answer_weight and distill_weight"),
        ({"answer_weight": 0.0, "distill_weight": 0.0}, "not both 0"),
        ({"temperature": 0.0}, "temperature must be > 0"),
    ],
)
def test_train_config_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_train_config_accepts_distillation_only() -> None:
    cfg = TrainConfig(answer_weight=0.0, distill_weight=1.0)
    assert cfg.answer_weight == 0.0 and cfg.distill_weight == 1.0


def test_frames_curriculum() -> None:
    cfg = TrainConfig(num_frames=9, single_frame_steps=3, curriculum_steps=4)
    assert [cfg.frames_at(s) for s in range(10)] == [1, 1, 1, 1, 3, 5, 7, 9, 9, 9]
    assert cfg.frames_at(10_000) == 9
    assert TrainConfig(num_frames=9).frames_at(0) == 9  # no curriculum: full videos from the start
    only_single = TrainConfig(num_frames=5, single_frame_steps=2)
    assert [only_single.frames_at(s) for s in range(4)] == [1, 1, 5, 5]
    grow = TrainConfig(num_frames=32, curriculum_steps=100)
    frames = [grow.frames_at(s) for s in range(120)]
    assert frames[0] == 1 and frames[-1] == 32 and frames == sorted(frames)
    assert all(1 <= f <= 32 for f in frames)


def test_mixed_lengths_draw_up_to_the_curriculum_length() -> None:
    cfg = TrainConfig(num_frames=16, curriculum_steps=100, mixed_lengths=True)
    early = [cfg.frames_at(10, index) for index in range(200)]
    late = [cfg.frames_at(500, index) for index in range(200)]
    assert max(early) <= TrainConfig(num_frames=16, curriculum_steps=100).frames_at(10)
    assert min(late) == 1 and max(late) == 16 and len(set(late)) > 8
    assert [cfg.frames_at(500, i) for i in range(20)] == [cfg.frames_at(500, i) for i in range(20)]  # seeded


def test_learning_rate_warmup_and_cosine() -> None:
    cfg = TrainConfig(steps=14, lr=2.0, warmup=4, min_lr_ratio=0.1)
    assert [cfg.lr_at(s) for s in range(4)] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert cfg.lr_at(4) == pytest.approx(2.0)  # the peak, then cosine
    assert cfg.lr_at(9) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # half way: the mean of peak and floor
    assert cfg.lr_at(14) == pytest.approx(0.2)  # the floor at the end
    decay = [cfg.lr_at(s) for s in range(4, 15)]
    assert all(a > b for a, b in itertools.pairwise(decay))
    assert TrainConfig(steps=10, lr=1.0, warmup=0).lr_at(0) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def test_example_inputs_append_the_answer() -> None:
    model, tokenizer = small_model()
    cfg = TrainConfig(**SMALL)
    inputs, start = example_inputs(model.config, tokenizer, 0, cfg)
    ids = inputs["input_ids"][0]
    item = training.video_at("train", 0, num_frames=2, seed=0)
    answer = tokenizer.convert_ids_to_tokens(ids[start:].tolist())
    assert answer == [item.answer, tokenizer.eos_token]
    assert tokenizer.convert_ids_to_tokens(int(ids[start - 1])) == "<|answer|>"
    assert inputs["attention_mask"].shape == ids[None].shape and bool(inputs["attention_mask"].all())
    assert int(inputs["mm_token_type_ids"][0, start:].abs().sum()) == 0
    # 2 frames, each held for one temporal patch, 56x56 = 2x2 merged tokens per frame
    assert int((ids == model.config.video_token_id).sum()) == 8
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 4]]


def test_answer_loss_decreases(tmp_path: Path) -> None:
    model, tokenizer = small_model()
    history = run(
        model,
        tokenizer,
        tmp_path,
        steps=30,
        batch_size=2,
        lr=3e-3,
        warmup=5,
        log_every=10,
        checkpoint_every=100,
    )
    assert [h["step"] for h in history] == [10, 20, 30]
    losses = [h["answer_loss"] for h in history]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.75 * losses[0], losses
    assert "distill_kl" not in history[0]
    assert json.loads((tmp_path / "history.json").read_text()) == history
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-00000030.pt"
    assert not model.training  # train() leaves the model in eval mode


def test_distillation_starts_at_zero_kl(tmp_path: Path) -> None:
    student, tokenizer = small_model()
    teacher = copy.deepcopy(student)
    cfg = TrainConfig(**SMALL, steps=1, batch_size=2, distill_weight=1.0, temperature=2.0, log_every=1)
    history = train(student, tokenizer, cfg, tmp_path, ctx=CTX, teacher=teacher, show_progress=False)
    assert abs(history[0]["distill_kl"]) < 1e-6
    assert history[0]["answer_loss"] > 1.0
    assert not any(p.requires_grad for p in teacher.parameters())  # the teacher is frozen


def test_distillation_towards_another_model(tmp_path: Path) -> None:
    student, tokenizer = small_model(seed=0)
    teacher, _ = small_model(seed=1)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    history = train(
        student,
        tokenizer,
        TrainConfig(
            **SMALL,
            steps=20,
            batch_size=1,
            lr=3e-3,
            warmup=2,
            answer_weight=0.0,
            distill_weight=1.0,
            log_every=5,
            checkpoint_every=100,
        ),
        tmp_path,
        ctx=CTX,
        teacher=teacher,
        show_progress=False,
    )
    kls = [h["distill_kl"] for h in history]
    assert "answer_loss" not in history[0]
    assert kls[0] > 0.01 and kls[-1] < 0.5 * kls[0], kls
    assert all(torch.equal(v, frozen[k]) for k, v in teacher.state_dict().items())


def test_distillation_needs_a_teacher() -> None:
    model, tokenizer = small_model()
    cfg = TrainConfig(**SMALL, distill_weight=1.0)
    inputs, start = example_inputs(model.config, tokenizer, 0, cfg)
    with pytest.raises(ValueError, match="needs a teacher"):
        example_loss(model, inputs, start, cfg, None, video_token_id=model.config.video_token_id)


# ---------------------------------------------------------------------------------------------
# OmniSparse in the loop
# ---------------------------------------------------------------------------------------------
def _grads(model: Any, tokenizer: Any, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    inputs, start = example_inputs(model.config, tokenizer, 3, cfg)
    loss, _ = example_loss(model, inputs, start, cfg, video_token_id=model.config.video_token_id)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def test_gradients_go_through_the_sparse_attention() -> None:
    model, tokenizer = small_model()
    cfg = TrainConfig(num_frames=4, frame_size=56)
    dense = _grads(model, tokenizer, cfg)
    q_proj = [n for n in dense if "language_model" in n and "q_proj.weight" in n]
    assert len(q_proj) == 2

    keep_all = OmniSparseConfig(
        block_size=4, min_seq_len=8, gamma=1.0, lazy_keep_ratio=1.0, slim_decode=False
    )
    state = omnisparse.apply(model, keep_all)
    state.record = True
    try:
        exact = _grads(model, tokenizer, cfg)
        assert state.stats  # the sparse path ran
    finally:
        omnisparse.remove(model)
    for name in q_proj:
        torch.testing.assert_close(exact[name], dense[name], atol=1e-5, rtol=1e-4)

    sparse_cfg = OmniSparseConfig(
        block_size=4, min_seq_len=8, gamma=0.3, lazy_keep_ratio=0.0, lazy_mode="skip", slim_decode=False
    )
    state = omnisparse.apply(model, sparse_cfg)
    state.record = True
    try:
        sparse = _grads(model, tokenizer, cfg)
        assert min(s.density for s in state.stats) < 1.0
    finally:
        omnisparse.remove(model)
    for name in q_proj:
        assert bool(sparse[name].abs().sum() > 0) and bool(sparse[name].isfinite().all())
    assert any(not torch.allclose(sparse[n], dense[n], atol=1e-5, rtol=1e-4) for n in q_proj)


def test_finetune_with_omnisparse_applied(tmp_path: Path) -> None:
    student, tokenizer = small_model()
    teacher = copy.deepcopy(student)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    state = omnisparse.apply(student, OmniSparseConfig(block_size=4, min_seq_len=8, slim_decode=False))
    state.record = True
    try:
        cfg = TrainConfig(**SMALL, steps=3, batch_size=1, lr=1e-3, warmup=1, distill_weight=1.0, log_every=1)
        history = train(
            student,
            tokenizer,
            cfg,
            tmp_path,
            ctx=CTX,
            teacher=teacher,
            run_info={"omnisparse": state.config.to_dict()},
            show_progress=False,
        )
        stats = list(omnisparse.get_state(student).stats)
    finally:
        omnisparse.remove(student)
    assert [h["step"] for h in history] == [1, 2, 3]
    assert all(math.isfinite(h["answer_loss"]) and math.isfinite(h["distill_kl"]) for h in history)
    assert history[0]["distill_kl"] < 1e-3  # the student starts as the dense teacher
    assert stats and {s.layer for s in stats} == {0, 1}
    assert all(s.seq_len >= 8 and 0 < s.density <= 1 for s in stats)
    # only the language model's attention went sparse: the stats come from 2 layers x 3 steps
    assert len(stats) == 2 * 3
    after = student.state_dict()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    for layer in (0, 1):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            name = f"model.language_model.layers.{layer}.self_attn.{proj}.weight"
            assert name in changed, name
    assert any(k.startswith("model.visual.") for k in changed)
    saved = load_checkpoint(latest_checkpoint(tmp_path))  # type: ignore[arg-type]
    assert saved["settings"]["omnisparse"]["block_size"] == 4


# ---------------------------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------------------------
RESUME: dict[str, Any] = {"batch_size": 1, "lr": 3e-3, "warmup": 1, "checkpoint_every": 2, "log_every": 1}


def _weights(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """4 steps in one go (checkpoints at 2 and 4): the reference for the resumed runs."""
    model, tokenizer = small_model()
    start = _weights(model)
    history = run(model, tokenizer, tmp_path_factory.mktemp("straight"), steps=4, **RESUME)
    final = _weights(model)
    assert any(not torch.equal(final[k], start[k]) for k in final)
    return final, history


def test_resume_after_an_interruption_is_exact(
    tmp_path: Path, straight_run: tuple[dict, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    final, history = straight_run
    real_save = training_loop.save_checkpoint

    def save_then_die(out_dir: Any, step: int, state: dict[str, Any], **kw: Any) -> Path:
        path = real_save(out_dir, step, state, **kw)
        if step == 2:
            raise KeyboardInterrupt  # the process is killed right after the step-2 checkpoint
        return path

    model, tokenizer = small_model()
    monkeypatch.setattr(training_loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(model, tokenizer, tmp_path, steps=4, **RESUME)
    monkeypatch.undo()
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 2  # type: ignore[arg-type]

    fresh, tokenizer = small_model()  # a new process: the same initial weights
    resumed = run(fresh, tokenizer, tmp_path, steps=4, **RESUME)
    _assert_same(_weights(fresh), final)
    assert resumed == [{**h, "seconds": r["seconds"]} for h, r in zip(history, resumed, strict=True)]


def test_resume_with_more_steps_is_exact(tmp_path: Path) -> None:
    """2 steps, then the same command with --steps 4. Extending the run changes the cosine schedule
    (it depends on ``steps``), so this holds while the steps run are inside the warm-up."""
    settings = {**RESUME, "warmup": 4}
    model, tokenizer = small_model()
    reference = run(model, tokenizer, tmp_path / "ref", steps=4, **settings)
    reference_weights = _weights(model)

    model, tokenizer = small_model()
    first = run(model, tokenizer, tmp_path / "run", steps=2, **settings)
    assert [h["step"] for h in first] == [1, 2]
    fresh, tokenizer = small_model()
    second = run(fresh, tokenizer, tmp_path / "run", steps=4, **settings)
    assert [h["step"] for h in second] == [1, 2, 3, 4]
    assert second[:2] == first
    _assert_same(_weights(fresh), reference_weights)
    assert [h["answer_loss"] for h in second] == [h["answer_loss"] for h in reference]
    # and a finished run resumed with the same steps trains no further
    again, tokenizer = small_model()
    assert run(again, tokenizer, tmp_path / "run", steps=4, **settings) == second
    _assert_same(_weights(again), reference_weights)


def test_resume_with_other_settings_raises(tmp_path: Path) -> None:
    model, tokenizer = small_model()
    run(model, tokenizer, tmp_path, steps=1, **RESUME)
    for change in ({"lr": 1e-2}, {"num_frames": 1}, {"seed": 1}, {"distill_weight": 1.0}):
        with pytest.raises(ValueError, match="other settings"):
            run(model, tokenizer, tmp_path, steps=2, **{**RESUME, **change})
    with pytest.raises(ValueError, match="other settings"):
        train(
            model,
            tokenizer,
            TrainConfig(**SMALL, steps=2, **RESUME),
            tmp_path,
            ctx=CTX,
            run_info={"model": "other"},
            show_progress=False,
        )
    # steps, checkpoint_every and log_every may change
    history = run(model, tokenizer, tmp_path, steps=2, **{**RESUME, "checkpoint_every": 5, "log_every": 2})
    assert history[-1]["step"] == 2


# ---------------------------------------------------------------------------------------------
# torchrun
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_torchrun_finetune_two_processes(tmp_path: Path) -> None:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is unavailable")
    pytest.importorskip("torch.distributed.run")
    model, tokenizer = small_model()
    model_dir = tmp_path / "small"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    config = tmp_path / "omnisparse.json"
    OmniSparseConfig(block_size=4, min_seq_len=8).save(config)
    out = tmp_path / "run"

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "omnisparse", "finetune", "--model", str(model_dir), "--out", str(out)]
    command += ["--steps", "2", "--batch-size", "1", "--num-frames", "1", "--frame-size", "56"]
    command += ["--config", str(config), "--device", "cpu", "--json", "--checkpoint-every", "1"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 alone reports
    result = json.loads(lines[0])
    assert result["steps"] == 2 and Path(result["out"]) == out / "model"
    assert math.isfinite(result["answer_loss"]) and math.isfinite(result["distill_kl"])
    assert (out / "model" / "config.json").is_file() and (out / "model" / "omnisparse.json").is_file()
    assert OmniSparseConfig.load(out / "model" / "omnisparse.json").block_size == 4
    checkpoint = load_checkpoint(latest_checkpoint(out))  # type: ignore[arg-type]
    assert checkpoint["step"] == 2 and len(checkpoint["rng"]) == 2  # every rank's RNG state
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [2]

    from omnisparse.models import load_model

    tuned, _ = load_model(out / "model")
    weights = tuned.state_dict()
    assert weights.keys() == checkpoint["model"].keys()
    assert all(torch.equal(weights[k], checkpoint["model"][k]) for k in weights)
    initial = model.state_dict()
    assert any(not torch.equal(weights[k], initial[k]) for k in weights)
