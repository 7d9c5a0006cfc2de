"""CLI conventions and the accel-shared command."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import accel_shared
from accel_shared.__main__ import main
from accel_shared.cli import (
    CLIError,
    DemoResult,
    add_command,
    add_common_args,
    emit,
    make_parser,
    progress,
    resolve_device,
    resolve_dtype,
    run_cli,
    seed_everything,
)

SRC = str(Path(accel_shared.__file__).resolve().parents[1])


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "accel_shared", *args], capture_output=True, text=True, env=env, timeout=120
    )


def parser():
    return add_common_args(make_parser("demo", "A demo.", epilog="example:\n  demo --seed 1"))


def failing(exc: BaseException):
    def main(args):
        raise exc

    return main


@pytest.mark.parametrize(
    "exc", [CLIError("bad input\nsecond line"), ValueError("bad input"), ImportError("x")]
)
def test_run_cli_one_line_error(exc, capsys):
    assert run_cli(failing(exc), parser(), []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("demo: error: ")
    if not isinstance(exc, ImportError):
        assert err.startswith("demo: error: bad input")


def test_run_cli_debug_reraises():
    with pytest.raises(CLIError, match="boom"):
        run_cli(failing(CLIError("boom")), parser(), ["--debug"])


def test_run_cli_other_errors_propagate():
    with pytest.raises(RuntimeError):
        run_cli(failing(RuntimeError("bug")), parser(), [])


def test_run_cli_interrupt_and_return_codes(capsys):
    assert run_cli(failing(KeyboardInterrupt()), parser(), []) == 130
    assert capsys.readouterr().err == "demo: interrupted\n"
    assert run_cli(lambda args: None, parser(), []) == 0
    assert run_cli(lambda args: 3, parser(), []) == 3
    assert run_cli(lambda args: 0, parser(), ["--device", "tpu"]) == 2  # argparse usage error


def test_common_args_defaults():
    args = parser().parse_args([])
    assert (args.device, args.dtype, args.seed, args.json, args.debug) == ("auto", "float32", 0, False, False)
    only_debug = add_common_args(make_parser("x", "x"), device=False, dtype=False, seed=False, json=False)
    assert vars(only_debug.parse_args([])) == {"debug": False}
    assert "example:\n  demo --seed 1" in parser().format_help()


def test_add_command_keeps_examples_and_help_line():
    parser = make_parser("tool", "A tool.")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = add_command(
        commands, "run", help="run it", description="Runs it.", epilog="example:\n  tool run --x"
    )
    sub.add_argument("--x", action="store_true")
    assert "run it" in parser.format_help()
    assert "example:\n  tool run --x" in sub.format_help()  # line breaks survive
    assert parser.parse_args(["run", "--x"]).x is True


def test_resolve_device_and_dtype():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CLIError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(CLIError, match="--dtype"):
        resolve_dtype("int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_resolve_device_cuda_without_gpu():
    with pytest.raises(CLIError, match="CUDA is not available"):
        resolve_device("cuda")


def test_seed_everything():
    seed_everything(7)
    a = (random.random(), torch.rand(2))
    seed_everything(7)
    b = (random.random(), torch.rand(2))
    assert a[0] == b[0]
    assert torch.equal(a[1], b[1])
    with pytest.raises(CLIError, match="--seed"):
        seed_everything(-1)


def test_progress_passes_items_through():
    assert list(progress(range(4), desc="x", enabled=False)) == [0, 1, 2, 3]
    assert list(progress(iter("ab"), desc="x", total=2)) == ["a", "b"]


def test_emit_json_and_text(capsys):
    result = DemoResult("m", "sdpa", "ours", 2.0, 0.5, 4.0, "max_abs_err", 1e-6, notes="cpu")
    emit(result, as_json=True)
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    assert list(json.loads(line)) == [
        "method",
        "baseline",
        "accelerated",
        "baseline_time_s",
        "accelerated_time_s",
        "speed_ratio",
        "quality_metric",
        "quality_value",
        "notes",
    ]
    emit(result, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9
    assert len({line.index(" : ") for line in lines}) == 1
    assert "speed_ratio        : 4" in lines


def test_main_in_process(tmp_path, capsys):
    assert main(["tiny-models", "list", "--json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)][:2] == ["qwen2", "llama"]
    assert main(["tiny-models", "save", "nope", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "accel-shared: error: unknown tiny model 'nope'; "
        "known: qwen2, llama, qwen2-vl, qwen2.5-vl, flux, wan\n"
    )
    assert not any(tmp_path.iterdir())
    assert main(["machine", "--json"]) == 0
    assert "torch_threads" in json.loads(capsys.readouterr().out)


def test_module_help_list_and_errors():
    result = run_module("--help")
    assert result.returncode == 0
    assert "tiny-models" in result.stdout
    assert "examples:" in result.stdout
    result = run_module("tiny-models", "list", "--json")
    assert result.returncode == 0
    assert {row["name"] for row in json.loads(result.stdout)} >= {"qwen2", "qwen2-vl", "flux", "wan"}
    result = run_module("tiny-models", "save", "gpt5", "out")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("accel-shared: error: unknown tiny model 'gpt5'")


def test_module_save_then_load(tmp_path):
    pytest.importorskip("transformers")
    from accel_shared.tiny_models import build_tiny_model, load_model

    result = run_module("tiny-models", "save", "qwen2", str(tmp_path / "q"), "--seed", "5", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "qwen2", "path": str(tmp_path / "q"), "seed": 5}
    loaded = load_model("qwen2", tmp_path / "q").state_dict()
    expected = build_tiny_model("qwen2", seed=5).state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
