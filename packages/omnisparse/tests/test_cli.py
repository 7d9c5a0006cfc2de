"""The ``omnisparse`` command: help, one-line errors, generate / bench / finetune on a small saved model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from omnisparse import OmniSparseConfig
from omnisparse.cli import main

pytest.importorskip("easy_vqa")

SMALL_CONFIG = {"block_size": 4, "min_seq_len": 8}


def _last_json(capfd: pytest.CaptureFixture[str]) -> dict[str, Any]:
    out = capfd.readouterr().out
    return json.loads(out.strip().splitlines()[-1])


def _error(capfd: pytest.CaptureFixture[str]) -> str:
    """The one error line (run_cli's format), the last line on stderr; transformers' "Loading weights"
    progress bar may come before it."""
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "Loading weights" not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("omnisparse: error: ") and err.endswith(lines[0] + "\n"), err
    return lines[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide random tiny VLM and its tokenizer, saved with save_pretrained."""
    from omnisparse.tiny_vlm import build_tiny_vlm

    model, tokenizer = build_tiny_vlm(num_layers=2, hidden=64)
    folder = tmp_path_factory.mktemp("small-vlm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 easy-vqa frames (64x64 PNG)."""
    from PIL import Image

    from omnisparse.longvideo_qa import video_at

    folder = tmp_path_factory.mktemp("frames")
    for i, frame in enumerate(video_at("test", 0, num_frames=4).frames()):
        Image.fromarray(frame).save(folder / f"frame-{i:02d}.png")
    return folder


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return OmniSparseConfig(**SMALL_CONFIG).save(tmp_path / "omnisparse.json")


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------
# help
# ---------------------------------------------------------------------------------------------
HELP = {
    "generate": ["--model", "--video", "--prompt", "--num-frames", "--dense", "--config", "--max-new-tokens"],
    "bench": ["--items", "--seq-len", "--layers", "--budget-ratios", "--repeats", "--skip-speed", "--out"],
    "finetune": [
        "--out",
        "--steps",
        "--batch-size",
        "--distill-weight",
        "--answer-weight",
        "--checkpoint-every",
    ],
    "train-base": ["--out", "--steps", "--single-frame-steps", "--curriculum-steps", "--frame-size"],
    "demo": ["--items", "--seq-len", "--json"],
}


def test_help(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capfd.readouterr().out
    assert out.startswith("usage: omnisparse")
    assert all(command in out for command in HELP)
    assert "torchrun --nproc_per_node 2 -m omnisparse finetune" in out  # the epilog keeps its lines
    for command, options in HELP.items():
        assert main([command, "--help"]) == 0, command
        text = capfd.readouterr().out
        assert text.startswith(f"usage: omnisparse {command}")
        missing = [o for o in options if o not in text]
        assert not missing, (command, missing)
        assert "--seed" in text and "--debug" in text


def test_no_command_is_a_usage_error(capfd: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "required: COMMAND" in capfd.readouterr().err


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_errors_are_one_line(
    tmp_path: Path, model_dir: Path, frames_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    gen = ["generate", "--model", str(model_dir), "--prompt", "what color is the circle?"]

    assert main([*gen, "--video", str(tmp_path / "missing")]) == 2
    line = _error(capfd)
    assert "--video" in line and "missing" in line and "neither a folder" in line

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*gen, "--video", str(empty)]) == 2
    assert "holds no image frames" in _error(capfd)

    assert main([*gen, "--video", str(frames_dir), "--num-frames", "0"]) == 2
    assert "--num-frames must be >= 1, got 0" in _error(capfd)

    assert main(["generate", "--model", str(tmp_path), "--video", str(frames_dir), "--prompt", "q"]) == 2
    assert "--model" in _error(capfd)  # a folder without config.json

    assert main(["bench", "--repeats", "0"]) == 2
    assert "--repeats >= 1" in _error(capfd)
    assert main(["bench", "--seq-len", "128"]) == 2
    assert "--seq-len >= 256" in _error(capfd)
    assert main(["bench", "--items", "-1"]) == 2
    assert "--items >= 0" in _error(capfd)

    out = ["finetune", "--model", str(model_dir), "--out", str(tmp_path / "run")]
    assert main([*out, "--config", str(tmp_path / "nope.json")]) == 2
    line = _error(capfd)
    assert "--config" in line and "nope.json" in line and "does not exist" in line

    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"block_size": 4, "blok_size": 8}))
    assert main([*out, "--config", str(unknown)]) == 2
    assert "unknown keys ['blok_size']" in _error(capfd)

    bad_value = tmp_path / "bad.json"
    bad_value.write_text(json.dumps({"block_size": 0}))
    assert main([*out, "--config", str(bad_value)]) == 2
    assert "OmniSparseConfig.block_size must be an int >= 1" in _error(capfd)

    not_json = tmp_path / "broken.json"
    not_json.write_text("{block_size: 4")
    assert main([*out, "--config", str(not_json)]) == 2
    assert "is not valid JSON" in _error(capfd)

    assert main([*out, "--steps", "0"]) == 2
    assert "steps and batch_size must be >= 1" in _error(capfd)

    assert not (tmp_path / "run").exists()  # nothing was written on the way to any of these errors


def test_usage_errors_name_the_option(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--prompt", "q"]) == 2
    assert "the following arguments are required: --video" in capfd.readouterr().err
    assert main(["bench", "--repeats", "three"]) == 2
    assert "argument --repeats: invalid int value: 'three'" in capfd.readouterr().err
    assert main(["finetune", "--out", "x", "--device", "tpu"]) == 2
    assert "argument --device" in capfd.readouterr().err
    assert main(["bench", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capfd.readouterr().err


# ---------------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------------
def test_generate_sparse_and_dense(
    model_dir: Path, frames_dir: Path, config_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    common = ["generate", "--model", str(model_dir), "--video", str(frames_dir)]
    common += ["--prompt", "what color is the circle?", "--max-new-tokens", "3", "--config", str(config_file)]

    assert main([*common, "--json"]) == 0
    sparse = _last_json(capfd)
    assert sparse["attention"] == "omnisparse"
    # 4 frames of 64x64 resized to 112x112: 2 temporal patches of 4x4 merged tokens
    assert sparse["visual_tokens"] == 32
    # the question before and after the video (6 words each), vision start/end, the answer marker
    assert sparse["prompt_tokens"] == 6 + 32 + 2 + 6 + 1
    assert isinstance(sparse["answer"], str)
    assert sparse["kv_cache_mib"] > 0 and sparse["seconds"] > 0
    assert 0 < sparse["prefill_density"] <= 1

    assert main([*common, "--dense", "--json"]) == 0
    dense = _last_json(capfd)
    assert dense["attention"] == "dense" and "prefill_density" not in dense
    assert dense["visual_tokens"] == 32 and dense["prompt_tokens"] == sparse["prompt_tokens"]
    # the dense cache holds prompt + 2 of the 3 new tokens for 2 layers x 2 key/value heads x 16 dims
    assert dense["kv_cache_mib"] * 2**20 == pytest.approx(2 * 2 * 2 * (dense["prompt_tokens"] + 2) * 16 * 4)

    assert main(common) == 0  # the text form
    out = capfd.readouterr().out
    assert any(line.startswith("answer ") for line in out.splitlines())
    assert "kv_cache_mib" in out and "attention" in out and "omnisparse" in out


def test_generate_with_sampled_frames(
    model_dir: Path, frames_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = [
        "generate",
        "--model",
        str(model_dir),
        "--video",
        str(frames_dir),
        "--prompt",
        "what shape is it?",
    ]
    assert main([*args, "--num-frames", "2", "--max-new-tokens", "1", "--dense", "--json"]) == 0
    assert _last_json(capfd)["visual_tokens"] == 16  # 2 frames: one temporal patch


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------
FIDELITY_KEYS = {
    "items",
    "dense_accuracy",
    "sparse_accuracy",
    "answer_agreement",
    "top1_agreement",
    "answer_top1_agreement",
    "logit_cosine",
    "prefill_density",
    "active_query_share",
    "dense_kv_bytes",
    "slim_kv_bytes",
    "kv_memory_ratio",
    "model",
}


def test_bench_fidelity(
    tmp_path: Path, model_dir: Path, config_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "--model", str(model_dir), "--items", "2", "--num-frames", "4", "--skip-speed"]
    args += ["--config", str(config_file), "--out", str(tmp_path / "bench")]
    assert main([*args, "--json"]) == 0
    results = _last_json(capfd)
    assert set(results) == {"fidelity"}
    fidelity = results["fidelity"]
    assert set(fidelity) == FIDELITY_KEYS
    assert fidelity["items"] == 2 and fidelity["model"] == str(model_dir)
    assert 0.9 < fidelity["logit_cosine"] <= 1.0 + 1e-6
    assert 0 <= fidelity["top1_agreement"] <= 1 and 0 <= fidelity["answer_agreement"] <= 1
    assert fidelity["dense_kv_bytes"] > 0 and fidelity["slim_kv_bytes"] > 0
    saved = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert saved == results

    assert main(args) == 0
    out = capfd.readouterr().out
    assert "fidelity on long-video QA" in out and "answer_agreement" in out


def test_bench_speed(capfd: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--items", "0", "--seq-len", "256", "--layers", "0", "--repeats", "1"]
    assert main([*args, "--budget-ratios", "0.5", "--json"]) == 0
    results = _last_json(capfd)
    assert set(results) == {"speed"}
    (row,) = results["speed"]
    assert row["measure"] == "attention (1 layer)" and row["setting"] == "budget cap 0.5"
    assert row["tokens"] == 256
    assert 0 < row["density"] <= 1
    assert row["dense_s"] > 0 and row["omnisparse_s"] > 0
    assert row["speedup"] > 0
    assert row["speedup"] == pytest.approx(row["dense_s"] / row["omnisparse_s"], rel=1e-6)

    assert main([*args, "--budget-ratios", "0.5", "0.25"]) == 0
    lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith("attention")]
    assert len(lines) == 2 and "budget cap 0.25" in lines[1] and "S=256" in lines[0]


# ---------------------------------------------------------------------------------------------
# finetune
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_finetune_writes_the_model_and_resumes(
    tmp_path: Path, model_dir: Path, config_file: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ft"
    args = ["finetune", "--model", str(model_dir), "--out", str(out), "--batch-size", "1"]
    args += ["--num-frames", "1", "--frame-size", "56", "--config", str(config_file), "--device", "cpu"]
    assert main([*args, "--steps", "2", "--json"]) == 0
    first = _last_json(capfd)
    assert first["out"] == str(out / "model") and first["steps"] == 2
    assert first["answer_loss"] > 0 and first["distill_kl"] >= 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "omnisparse.json"):
        assert (out / "model" / name).is_file(), name
    assert OmniSparseConfig.load(out / "model" / "omnisparse.json") == OmniSparseConfig(**SMALL_CONFIG)
    run = json.loads((out / "run.json").read_text())
    assert run["base_model"] == str(model_dir) and run["train"]["steps"] == 2
    assert run["omnisparse"]["block_size"] == 4
    checkpoint = out / "checkpoints" / "step-00000002.pt"
    stamp = checkpoint.stat().st_mtime_ns

    # the same command again: the run is complete, it resumes without training
    assert main([*args, "--steps", "2", "--json"]) == 0
    assert _last_json(capfd) == first
    assert checkpoint.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-00000002.pt"]

    # one step more resumes from step 2
    assert main([*args, "--steps", "3", "--json"]) == 0
    third = _last_json(capfd)
    assert third["steps"] == 3
    assert [h["step"] for h in json.loads((out / "history.json").read_text())] == [2, 3]

    # other settings on the same folder are refused
    assert main([*args, "--steps", "4", "--lr", "0.01"]) == 2
    assert "holds a run with other settings" in _error(capfd)

    # the fine-tuned folder loads as a model
    from omnisparse.models import load_model

    model, tokenizer = load_model(out / "model")
    assert model.config.text_config.num_hidden_layers == 2 and tokenizer.eos_token == "<|endoftext|>"


def test_train_base_continues_from_an_earlier_stage(
    tmp_path: Path, model_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """``train-base --init`` starts from a saved stage (no vision pretraining) and trains it further."""
    from safetensors.torch import load_file

    out = tmp_path / "stage2"
    args = ["train-base", "--init", str(model_dir), "--out", str(out), "--vision-steps", "0"]
    args += ["--single-frame-steps", "0", "--curriculum-steps", "0", "--steps", "2", "--batch-size", "1"]
    args += ["--num-frames", "2", "--frame-size", "56", "--device", "cpu", "--json"]
    assert main(args) == 0
    assert _last_json(capfd)["steps"] == 2
    before = load_file(model_dir / "model.safetensors")
    after = load_file(out / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    run = json.loads((out / "run.json").read_text())
    assert run["train"]["num_frames"] == 2
