"""Benchmark harness: timing, machine description, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from accel_shared.bench import (
    BenchmarkReport,
    Timing,
    compose_page,
    describe_machine,
    machine_summary,
    paired_difference,
    ratio,
    time_callable,
)


def test_time_callable_counts_calls_and_orders_stats():
    calls = []
    timing = time_callable(lambda: calls.append(1), warmup=3, repeats=7)
    assert len(calls) == 10
    assert timing.repeats == 7
    assert timing.warmup == 3
    assert len(timing.samples) == 7
    assert timing.min_s <= timing.median_s <= timing.max_s
    assert timing.min_s <= timing.mean_s <= timing.max_s


def test_time_callable_measures_time():
    import time

    timing = time_callable(lambda: time.sleep(0.01), warmup=0, repeats=3)
    assert 0.009 <= timing.median_s < 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"warmup": -1}, "warmup must be an int >= 0"),
        ({"repeats": 0}, "repeats must be an int >= 1"),
        ({"repeats": 2.5}, "repeats must be an int >= 1"),
        ({"device": "bogus"}, "device must be"),
    ],
)
def test_time_callable_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_callable(lambda: None, **kwargs)


def test_time_callable_rejects_non_callable():
    with pytest.raises(TypeError, match="fn must be callable"):
        time_callable(3)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_time_callable_cuda_without_gpu():
    with pytest.raises(ValueError, match="CUDA is not available"):
        time_callable(lambda: None, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_time_callable_cuda_events():
    x = torch.randn(1024, 1024, device="cuda")
    timing = time_callable(lambda: x @ x, warmup=1, repeats=5, device="cuda")
    assert timing.repeats == 5
    assert 0 < timing.min_s <= timing.median_s


def test_from_samples_and_ratio():
    t = Timing.from_samples([3.0, 1.0, 2.0], warmup=0)
    assert (t.median_s, t.min_s, t.max_s, t.mean_s) == (2.0, 1.0, 3.0, 2.0)
    fast = Timing.from_samples([0.5], warmup=0)
    assert ratio(t, fast) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="candidate median"):
        ratio(t, Timing.from_samples([0.0], warmup=0))


def test_describe_machine():
    info = describe_machine()
    for key in ("cpu", "logical_cores", "torch_threads", "memory_gib", "os", "python", "torch", "gpu"):
        assert key in info
    assert info["torch"] == torch.__version__
    if not torch.cuda.is_available():
        assert info["gpu"] == "none"
        assert info["gpus"] == []
    line = machine_summary(info)
    assert "\n" not in line
    assert info["cpu"] in line
    assert f"torch {torch.__version__}" in line
    json.dumps(info)  # serialisable


def test_report_writes_json_and_markdown(tmp_path):
    machine = describe_machine()
    report = BenchmarkReport(
        title="Attention speed",
        description="Median of 10 runs.",
        columns=["seq_len", "baseline_ms", "ours_ms", "speedup"],
        machine=machine,
        command="python -m pkg.bench --seq 128",
        notes=["fp32 on CPU"],
    )
    report.add_row({"seq_len": 128, "baseline_ms": 1.5}, ours_ms=0.75, speedup=2.0)
    report.add_row(seq_len=256, baseline_ms=6.0, ours_ms=2.0, speedup=3.0)
    with pytest.raises(ValueError, match="unknown columns \\['bogus'\\]"):
        report.add_row(bogus=1)

    json_path, md_path = report.write(tmp_path / "out", "attention")
    assert json_path.name == "attention.json"
    assert md_path.name == "attention.md"
    data = json.loads(json_path.read_text())
    assert data["rows"][1] == {"seq_len": 256, "baseline_ms": 6.0, "ours_ms": 2.0, "speedup": 3.0}
    assert data["command"] == "python -m pkg.bench --seq 128"
    assert data["machine"] == machine

    md = md_path.read_text()
    assert md.startswith("# Attention speed\n")
    assert f"Machine: {machine_summary(machine)}" in md
    assert "Reproduce:" in md
    assert "python -m pkg.bench --seq 128" in md
    assert "| seq_len | baseline_ms | ours_ms | speedup |" in md
    assert "| 128 | 1.5 | 0.75 | 2 |" in md
    assert "- fp32 on CPU" in md
    with pytest.raises(ValueError, match="stem"):
        report.write(tmp_path, "a/b")


def test_compose_page_includes_reports_and_placeholders(tmp_path):
    report = BenchmarkReport(title="CPU table", description="d", columns=["a"], command="run it")
    report.add_row(a=1)
    report.write(tmp_path, "part_cpu")
    page = compose_page(
        tmp_path, "page", "All", "intro text", [("part_cpu", "x"), ("part_cuda", "no GPU yet")]
    )
    text = page.read_text()
    assert text.startswith("# All\n\nintro text")
    assert "## CPU table" in text and "| 1 |" in text  # heading moved one level down
    assert "## part_cuda\n\nno GPU yet" in text


# ------------------------------------------------------------------------------------- paired stats


def test_paired_difference_centres_on_the_mean_and_covers_it():
    rng = np.random.default_rng(1)
    baseline = rng.normal(26.0, 1.0, size=40)
    shifted = paired_difference(baseline + 0.5 + rng.normal(0, 0.05, size=40), baseline)
    assert shifted.mean == pytest.approx(0.5, abs=0.03) and shifted.count == 40
    assert 0.0 < shifted.low < 0.5 < shifted.high < 1.0  # a clear shift: the interval excludes 0
    noise = paired_difference(baseline + rng.normal(0, 0.3, size=40), baseline)
    assert noise.low < 0.0 < noise.high  # pure noise: the interval contains 0
    # pairing matters: the scene-to-scene spread (std 1) cancels, so the interval is narrow
    assert shifted.high - shifted.low < 0.1
    assert str(shifted) == f"{shifted.mean:+.3f} [{shifted.low:+.3f}, {shifted.high:+.3f}]"
    assert paired_difference([1.0, 2.0], [0.0, 0.0]) == paired_difference([1.0, 2.0], [0.0, 0.0])  # seeded


def test_paired_difference_interval_has_the_asked_coverage_width():
    rng = np.random.default_rng(2)
    baseline = rng.normal(26.0, 1.0, size=200)
    candidate = baseline + rng.normal(0.1, 0.5, size=200)
    widths = [
        (d.high - d.low)
        for d in (paired_difference(candidate, baseline, confidence=c) for c in (0.5, 0.9, 0.95, 0.99))
    ]
    assert widths == sorted(widths) and widths[0] < widths[-1] / 2
    # with 200 pairs the bootstrap agrees with the normal approximation: ±1.96 standard errors
    standard_error = np.std(candidate - baseline, ddof=1) / np.sqrt(200)
    assert widths[2] == pytest.approx(2 * 1.96 * standard_error, rel=0.1)
    tiny_loss = paired_difference([1.0, 0.9992], [1.0, 1.0])  # a mean of -0.0004 prints as +0.000
    assert tiny_loss.mean < 0 and str(tiny_loss).startswith("+0.000 [-0.001, ")


def test_paired_difference_rejects_bad_input():
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([float("inf"), 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_difference([1.0], [0.0], confidence=1.5)
    with pytest.raises(ValueError, match="resamples"):
        paired_difference([1.0], [0.0], resamples=0)
