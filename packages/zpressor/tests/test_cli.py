"""The ``zpressor`` command: help, train (with and without ZPressor) + resume + eval on tiny data, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zpressor.cli import main

TINY_MODEL = {
    "feature_dim": 16,
    "num_heads": 2,
    "transformer_layers": 1,
    "num_depth_candidates": 8,
    "depth_hidden": 16,
    "head_hidden": 8,
}


def _last_json(capfd: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capfd.readouterr().out.strip().splitlines()[-1])


def test_help(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capfd.readouterr().out
    assert all(command in out for command in ("train", "eval", "demo"))
    assert main(["train", "--help"]) == 0
    out = capfd.readouterr().out
    assert "--min-anchors" in out and "--no-compress" in out and "--num-context" in out
    assert main(["eval", "--help"]) == 0
    assert "--views" in capfd.readouterr().out


@pytest.mark.slow
def test_train_resume_and_eval(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    data, zp_run, base_run = tmp_path / "scenes", tmp_path / "zp", tmp_path / "base"
    tiny = tmp_path / "model.json"
    tiny.write_text(json.dumps(TINY_MODEL))
    common = ["--data", str(data), "--num-target", "2", "--device", "cpu", "--json"]
    train = ["train", *common, "--generate", "5", "--image-size", "16", "--views-per-scene", "8"]
    train += ["--num-context", "4", "--model-config", str(tiny), "--warmup", "1", "--ckpt-every", "1"]
    zp = [*train, "--min-anchors", "2", "--max-anchors", "3", "--anchors", "2", "--zpressor-layers", "1"]

    assert main([*zp, "--out", str(zp_run), "--steps", "2"]) == 0
    first = _last_json(capfd)
    assert (
        first["compressed"] is True
        and first["anchors"] == 2
        and (first["min_anchors"], first["max_anchors"]) == (2, 3)
    )
    assert first["steps"] == 2 and first["resumed_from"] is None and first["psnr"] > 0
    saved = json.loads((zp_run / "model" / "zpressor.json").read_text())
    assert saved["num_layers"] == 1 and saved["num_anchors"] == 2
    assert json.loads((zp_run / "metrics.json").read_text())["psnr"] == first["psnr"]

    assert main([*zp, "--out", str(zp_run), "--steps", "3"]) == 0
    second = _last_json(capfd)
    assert second["resumed_from"] == 2 and second["steps"] == 3

    assert main([*train, "--no-compress", "--out", str(base_run), "--steps", "2"]) == 0
    base = _last_json(capfd)
    assert base["compressed"] is False and base["anchors"] is None and base["steps"] == 2

    # resuming a run folder as the other variant is refused in one line
    assert main([*train, "--no-compress", "--out", str(zp_run), "--steps", "4"]) == 2
    assert "holds a run with other settings" in capfd.readouterr().err

    evaluate = ["eval", *common, "--views", "3", "4", "6"]
    assert main([*evaluate, "--model", str(zp_run / "model"), "--out", str(tmp_path / "eval")]) == 0
    evaluated = _last_json(capfd)
    assert evaluated["compressed"] is True and evaluated["anchors"] == 2
    assert [row["views"] for row in evaluated["results"]] == [3, 4, 6]
    at_four = evaluated["results"][1]
    assert at_four["psnr"] == pytest.approx(second["psnr"], rel=1e-4)  # the same held-out views and K
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["results"] == evaluated["results"]

    assert main(["eval", *common, "--views", "4", "--model", str(base_run / "model")]) == 0
    evaluated = _last_json(capfd)
    assert evaluated["compressed"] is False and evaluated["results"][0]["psnr"] == pytest.approx(
        base["psnr"], rel=1e-4
    )

    # a table without --json
    assert main(["eval", *common[:-1], "--views", "4", "6", "--model", str(zp_run / "model")]) == 0
    out = capfd.readouterr().out
    assert "K = 2 anchors" in out and "psnr" in out

    # more views than the scenes hold (8 = 6 context + 2 targets at most)
    assert main([*evaluate[:-3], "7", "--model", str(zp_run / "model")]) == 2
    assert "--views 7 needs 7 + 2 target views" in capfd.readouterr().err


def test_errors_are_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert "pass --generate N" in capfd.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--min-anchors", "5", "--max-anchors", "3"]) == 2
    assert "need 1 <= --min-anchors <= --max-anchors" in capfd.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--num-context", "6", "--max-anchors", "6"]) == 2
    assert "must be smaller than --num-context" in capfd.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "missing"), "--data", str(tmp_path)]) == 2
    assert "no saved model folder" in capfd.readouterr().err
    assert main(["eval", "--model", str(tmp_path), "--data", str(tmp_path), "--views", "0"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("zpressor: error: --views must be positive") and err.count("\n") == 1
