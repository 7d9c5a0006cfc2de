"""The shipped models, the demo and the benchmark script, end to end on small settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnisparse.cli import main
from omnisparse.config import OmniSparseConfig
from omnisparse.models import SHIPPED_MODELS, load_model, shipped_model_path

pytest.importorskip("easy_vqa")


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_shipped_models_load(name: str) -> None:
    model, tokenizer = load_model(name)
    assert model.config.model_type == "qwen2_vl"
    assert model.config.text_config.num_hidden_layers == 4
    assert tokenizer.convert_tokens_to_ids("<|video_pad|>") == model.config.video_token_id


def test_finetuned_model_ships_its_config() -> None:
    config = OmniSparseConfig.load(shipped_model_path("tiny-vlm-omnisparse") / "omnisparse.json")
    assert config.block_size == 16


def test_unknown_shipped_model() -> None:
    with pytest.raises(ValueError, match="unknown shipped model"):
        shipped_model_path("nope")


def test_demo_runs_offline(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--items", "2", "--seq-len", "512", "--json"]) == 0
    result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert result["method"] == "omnisparse"
    assert result["speed_ratio"] > 0 and 0.0 <= result["quality_value"] <= 1.0
    assert "KV cache" in result["notes"]


@pytest.mark.slow
def test_benchmark_script_writes_its_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_omnisparse.py"
    spec = importlib.util.spec_from_file_location("bench_omnisparse", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(tmp_path)
    args = ["--out", str(tmp_path), "--items", "2", "--seq-len", "512", "--layers", "1", "--repeats", "1"]
    assert module.main([*args, "--budget-ratios", "0.5"]) == 0
    report = json.loads((tmp_path / "omnisparse_cpu.json").read_text())
    measures = [row["measure"] for row in report["rows"]]
    assert "accuracy" in measures and "KV cache after decoding" in measures
    assert any(m.startswith("prefill attention") for m in measures)
    assert any(m.startswith("LM prefill") for m in measures)
    assert (tmp_path / "omnisparse_cpu.md").read_text().startswith("# omnisparse")
