"""The benchmark scripts run end to end on tiny shapes and write their reports (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_benchmark_writes_report(tmp_path):
    bench = _load(ROOT / "kernels-core" / "benchmarks" / "bench_attention.py")
    args = ["--seq-len", "256", "--heads", "2", "--head-dims", "32", "--dtypes", "float32", "bfloat16"]
    args += ["--densities", "1.0", "0.5", "--warmup", "0", "--repeats", "1", "--out", str(tmp_path)]
    args += ["--predictor-seq-len", "512"]
    assert bench.main(args) == 0
    report = json.loads((tmp_path / "attention_cpu.json").read_text())
    assert len(report["rows"]) == 8
    assert {row["pass"] for row in report["rows"]} == {"forward", "backward"}
    assert report["machine"]["cpu"]
    assert "bench_attention.py" in report["command"]
    for row in report["rows"]:
        assert row["SDPA ms"] > 0 and row["block-sparse ms"] > 0
        assert abs(row["speed-up vs SDPA"] - row["SDPA ms"] / row["block-sparse ms"]) < 1e-6
    markdown = (tmp_path / "attention_cpu.md").read_text()
    assert "| pass | dtype | D | density |" in markdown and "Machine:" in markdown
    predictor = json.loads((tmp_path / "mask_predictor_cpu.json").read_text())
    assert len(predictor["rows"]) == 2 and all(row["predictor ms"] > 0 for row in predictor["rows"])
    page = (tmp_path / "attention.md").read_text()
    assert "## Block-sparse attention vs dense SDPA (CPU)" in page and "## attention_cuda" in page
    decode = json.loads((tmp_path / "decode_cpu.json").read_text())
    assert [row["kept per head"] for row in decode["rows"]] == ["all", "25%"] * 2


def test_chamfer_benchmark_writes_report(tmp_path):
    bench = _load(ROOT / "kernels-core" / "benchmarks" / "bench_chamfer.py")
    args = ["--sizes", "300", "--batch", "1", "--warmup", "0", "--repeats", "1", "--out", str(tmp_path)]
    assert bench.main(args) == 0
    report = json.loads((tmp_path / "chamfer_cpu.json").read_text())
    assert [row["direction"] for row in report["rows"]] == ["single", "both"]
    assert all(row["max |loss diff|"] < 1e-4 and row["kernels-core ms"] > 0 for row in report["rows"])
