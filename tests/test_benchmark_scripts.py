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


def test_rasterize_benchmark_writes_report(tmp_path):
    bench = _load(ROOT / "kernels-core" / "benchmarks" / "bench_rasterize.py")
    args = ["--scenes", "24x64", "32x100", "--reference-limit", "40000", "--warmup", "0", "--repeats", "1"]
    assert bench.main([*args, "--reference-repeats", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "rasterize_cpu.json").read_text())["rows"]
    assert [row["Gaussians"] for row in rows] == [64, 100]
    assert rows[0]["grad rel. error"] < 1e-3 and rows[0]["speed-up"] > 0
    assert (
        "speed-up" not in rows[1] and rows[1]["kernels-core ms"] > 0 and rows[1]["kernels-core peak MiB"] >= 0
    )


def test_pmloss_benchmark_writes_report(tmp_path):
    bench = _load(ROOT / "packages" / "pmloss" / "benchmarks" / "bench_pmloss.py")
    args = ["--steps", "2", "--scenes", "5", "--image-size", "32", "--images", str(tmp_path / "images")]
    args += ["--pm-weights", "0.005", "--unaligned-weights", "0.05"]  # the defaults, spelled out
    args += ["--decayed-weights", "0.05", "--decay-start", "0.5"]
    assert bench.main([*args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "pmloss_cpu.json").read_text())
    rows = report["rows"]
    assert [row["variant"] for row in rows] == [
        "without PM-Loss",
        "PM-Loss 0.005, Sim(3)",
        "PM-Loss 0.05, no alignment",
        "PM-Loss 0.05, no alignment, decayed from 50%",
    ]
    assert "--decayed-weights 0.05 --decay-start 0.5" in report["command"]
    assert all(row["PSNR dB ↑"] > 0 and row["centre dist. ↓"] > 0 for row in rows)
    assert len(list((tmp_path / "images").rglob("*.png"))) == 4  # one held-out scene, four variants


def test_zpressor_benchmark_writes_reports(tmp_path):
    bench = _load(ROOT / "packages" / "zpressor" / "benchmarks" / "bench_zpressor.py")
    tiny = tmp_path / "model.json"
    tiny.write_text(
        json.dumps({"feature_dim": 16, "num_heads": 2, "transformer_layers": 1, "head_hidden": 8})
    )
    args = ["--model-config", str(tiny), "--image-size", "16", "--anchors", "2", "--zpressor-layers", "1"]
    args += ["--views", "3", "5", "--repeats", "1", "--steps", "1", "--scenes", "5", "--eval-views", "3", "4"]
    args += ["--train-context", "3", "--min-anchors", "2", "--max-anchors", "2", "--num-target", "1"]
    assert bench.main([*args, "--out", str(tmp_path), "--images", str(tmp_path / "images")]) == 0
    scaling = json.loads((tmp_path / "zpressor_scaling_cpu.json").read_text())["rows"]
    assert [row["views"] for row in scaling] == [3, 5]
    assert all(
        row["uncompressed ms"] > 0 and row["ZPressor ms"] > 0 and row["uncompressed MiB"] >= 0
        for row in scaling
    )
    assert scaling[0]["ZPressor ms/view"] is None and scaling[1]["ZPressor ms/view"] is not None
    assert (tmp_path / "images" / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    quality = json.loads((tmp_path / "zpressor_quality_cpu.json").read_text())["rows"]
    assert [row["views"] for row in quality] == [3, 4]
    assert all(row["ZPressor PSNR"] > 0 and row["uncompressed PSNR"] > 0 for row in quality)
    assert "| views | uncompressed ms | ZPressor ms |" in (tmp_path / "zpressor_scaling_cpu.md").read_text()


def _save_tiny_lm(path: Path, tokenizer, *, layers: int, seed: int) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        eos_token_id=tokenizer.eos_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_rstitch_benchmark_writes_report(tmp_path):
    from rstitch.router import Router
    from rstitch.tokenizer import build_tokenizer

    bench = _load(ROOT / "packages" / "rstitch" / "benchmarks" / "bench_rstitch.py")
    tokenizer = build_tokenizer()
    slm = _save_tiny_lm(tmp_path / "slm", tokenizer, layers=1, seed=0)
    llm = _save_tiny_lm(tmp_path / "llm", tokenizer, layers=2, seed=1)
    router = Router(32).save(tmp_path / "router.pt")
    args = ["--slm", str(slm), "--llm", str(llm), "--router", str(router), "--problems", "2"]
    args += [
        "--tau",
        "0.5",
        "0.9",
        "--max-new-tokens",
        "6",
        "--out",
        str(tmp_path),
        "--images",
        str(tmp_path),
    ]
    assert bench.main(args) == 0
    rows = json.loads((tmp_path / "rstitch_cpu.json").read_text())["rows"]
    methods = [row["method"] for row in rows]
    assert methods[:4] == ["llm", "slm", "llm-generate", "speculative"]
    assert {"per-token τ=0.5", "r-stitch τ=0.9", "r-stitch+ τ=0.005"} <= set(methods)
    llm_row = rows[0]
    assert llm_row["speed-up vs LLM"] == 1.0 and llm_row["LLM token share (%)"] == 100.0
    assert next(r for r in rows if r["method"] == "slm")["LLM token share (%)"] == 0.0
    assert (tmp_path / "accuracy_latency_cpu.png").read_bytes()[:4] == b"\x89PNG"
