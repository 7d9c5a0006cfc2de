import json

import pytest

from fpsattention.cli import main


def test_help(capfd) -> None:
    assert main(["--help"]) == 0
    out = capfd.readouterr().out
    for command in ("bench", "generate", "train", "train-base", "demo"):
        assert command in out
    assert main(["train", "--help"]) == 0
    assert "torchrun" in capfd.readouterr().out


def test_bench_json(capfd) -> None:
    args = [
        "bench",
        "--video",
        "2",
        "16",
        "16",
        "--tile",
        "1",
        "8",
        "8",
        "--window",
        "1",
        "1",
        "1",
        "--repeats",
        "1",
    ]
    assert main([*args, "--head-dim", "32", "--json"]) == 0
    result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"dense SDPA", "FP8 dense", "tile-sparse", "FP8 + tile-sparse"}
    assert rows["tile-sparse"]["density"] == pytest.approx(0.125)
    assert rows["tile-sparse"]["rel_l2"] < 0.01  # full precision under the same mask
    assert 0.01 < rows["FP8 + tile-sparse"]["rel_l2"] < 0.1


def test_generate_saves_videos_and_scores_them(tmp_path, capfd) -> None:
    args = [
        "generate",
        "--model",
        "random",
        "--steps",
        "2",
        "--height",
        "32",
        "--width",
        "32",
        "--frames",
        "5",
    ]
    assert main([*args, "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "dense.gif").is_file() and (tmp_path / "fpsattention.gif").is_file()
    assert result["psnr_db"] > 20 and 0 < result["ssim"] <= 1


def test_bad_input_is_one_line(tmp_path, capfd) -> None:
    assert main(["generate", "--model", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "not a shipped model" in capfd.readouterr().err
    (tmp_path / "s.json").write_text("[]")
    assert (
        main(
            ["generate", "--model", "random", "--schedule", str(tmp_path / "s.json"), "--out", str(tmp_path)]
        )
        == 2
    )
    assert "JSON object" in capfd.readouterr().err
    assert main(["train", "--model", "tiny-wan-qat", "--out", str(tmp_path / "run")]) == 2
    assert "carries phase adapters" in capfd.readouterr().err
    assert main(["train", "--adapter-rank", "0", "--eval-prompts", "0", "--out", str(tmp_path / "run")]) == 2
    assert "rank must be a positive int" in capfd.readouterr().err
