"""evaluate(): dense vs OmniSparse on long-video QA with a small tiny VLM; cache_nbytes."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from transformers.cache_utils import DynamicCache

import omnisparse
from accel_shared.distributed import DistContext
from omnisparse import OmniSparseConfig, SlimKVCache
from omnisparse.evaluation import FidelityReport, cache_nbytes, evaluate
from omnisparse.inputs import video_inputs
from omnisparse.longvideo_qa import make_videos
from omnisparse.tiny_vlm import build_tiny_vlm
from omnisparse.training import TrainConfig, train

pytest.importorskip("easy_vqa")

LAYERS, HIDDEN, KV_HEADS, HEAD_DIM = 2, 64, 2, 16  # build_tiny_vlm: 4 query / 2 key-value heads
# every block, every query row and every cached token kept: OmniSparse computes exactly dense
KEEP_ALL = OmniSparseConfig(
    block_size=4,
    min_seq_len=8,
    gamma=1.0,
    lazy_keep_ratio=1.0,
    decode_gamma=1.0,
    head_visual_threshold=0.0,
)
DEFAULTS_SMALL = OmniSparseConfig(block_size=4, min_seq_len=8)
SPARSE = OmniSparseConfig(
    block_size=4, min_seq_len=8, gamma=0.3, lazy_keep_ratio=0.0, lazy_mode="skip", decode_gamma=0.3
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """A 2-layer, 64-wide tiny VLM trained briefly on 1-frame videos, so that its greedy answers are
    words (a random one answers with a special token, which decodes to an empty string)."""
    model, tokenizer = build_tiny_vlm(num_layers=LAYERS, hidden=HIDDEN)
    cfg = TrainConfig(
        steps=100,
        batch_size=2,
        lr=5e-3,
        warmup=5,
        num_frames=1,
        frame_size=56,
        log_every=100,
        checkpoint_every=100,
    )
    ctx = DistContext(0, 1, 0, torch.device("cpu"))
    train(model, tokenizer, cfg, tmp_path_factory.mktemp("train"), ctx=ctx, show_progress=False)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def items() -> list[Any]:
    return make_videos("test", 3, num_frames=8, seed=0)


@pytest.fixture(autouse=True)
def _unpatch(request: pytest.FixtureRequest) -> Any:
    yield
    if "trained" in request.fixturenames:
        model = request.getfixturevalue("trained")[0]
        if omnisparse.is_applied(model):
            omnisparse.remove(model)


def _logits(model: Any, tokenizer: Any, item: Any) -> torch.Tensor:
    inputs = video_inputs(
        item.frames(), item.question, tokenizer, model.config, frame_pixels=(112 * 112,) * 2, repeat_frames=2
    )
    with torch.no_grad():
        return model(**inputs).logits


def test_keep_all_config_matches_dense(trained: tuple[Any, Any], items: list[Any]) -> None:
    model, tokenizer = trained
    before = _logits(model, tokenizer, items[0])
    report = evaluate(model, tokenizer, items, KEEP_ALL, show_progress=False)

    assert not omnisparse.is_applied(model)
    assert torch.equal(_logits(model, tokenizer, items[0]), before)  # the model is left as it was

    assert report.items == len(report.per_item) == 3
    assert all(row["dense"] for row in report.per_item)  # real answers, not empty strings
    assert [row["omnisparse"] for row in report.per_item] == [row["dense"] for row in report.per_item]
    assert report.answer_agreement == 1.0 and report.top1_agreement == 1.0
    assert report.answer_top1_agreement == 1.0
    assert report.logit_cosine == pytest.approx(1.0, abs=1e-5)
    assert report.prefill_density == pytest.approx(1.0) and report.active_query_share == pytest.approx(1.0)
    # the whole cache is kept: the same keys and values plus one int32 index per (layer, head, token)
    # and one count per (layer, head)
    assert report.slim_kv_bytes == pytest.approx(
        report.dense_kv_bytes * (1 + 1 / (2 * HEAD_DIM)) + LAYERS * KV_HEADS * 4
    )
    accuracy = sum(row["dense"] == row["answer"] for row in report.per_item) / 3
    assert report.dense_accuracy == pytest.approx(accuracy)
    assert report.sparse_accuracy == pytest.approx(accuracy)


def test_sparse_settings_shrink_the_cache(trained: tuple[Any, Any], items: list[Any]) -> None:
    model, tokenizer = trained
    report = evaluate(model, tokenizer, items, DEFAULTS_SMALL, show_progress=False)
    assert not omnisparse.is_applied(model)
    assert 0 < report.slim_kv_bytes < report.dense_kv_bytes
    assert report.kv_memory_ratio == pytest.approx(report.dense_kv_bytes / report.slim_kv_bytes)
    assert report.kv_memory_ratio > 1
    assert 0 < report.prefill_density <= 1 and 0 < report.active_query_share < 1

    sparse = evaluate(model, tokenizer, items, SPARSE, show_progress=False)
    assert sparse.kv_memory_ratio > 1.5
    assert sparse.prefill_density < 0.9
    assert 0 <= sparse.top1_agreement <= 1 and 0 <= sparse.answer_agreement <= 1
    assert 0 <= sparse.answer_top1_agreement <= 1
    assert 0 <= sparse.top1_agreement <= 1 and 0 <= sparse.answer_agreement <= 1

    summary = report.summary()
    assert "per_item" not in summary and summary["kv_memory_ratio"] == report.kv_memory_ratio
    assert set(summary) >= {"items", "answer_agreement", "top1_agreement", "logit_cosine", "slim_kv_bytes"}


def test_model_unpatched_after_a_failure(
    trained: tuple[Any, Any], items: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import omnisparse.evaluation as evaluation

    model, tokenizer = trained
    real = evaluation._generate
    calls = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(omnisparse.is_applied(model))
        if len(calls) == 2:  # the slimmed-decode generate, with OmniSparse applied
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_generate", failing)
    with pytest.raises(RuntimeError, match="boom"):
        evaluate(model, tokenizer, items[:1], DEFAULTS_SMALL, show_progress=False)
    assert calls == [False, True]
    assert not omnisparse.is_applied(model)


def test_no_items() -> None:
    report = FidelityReport()
    assert report.items == 0 and math.isnan(report.kv_memory_ratio)


def test_cache_nbytes(trained: tuple[Any, Any], items: list[Any]) -> None:
    model, tokenizer = trained
    item = items[0]
    inputs = video_inputs(
        item.frames(), item.question, tokenizer, model.config, frame_pixels=(112 * 112,) * 2, repeat_frames=2
    )
    seq = inputs["input_ids"].shape[1]
    cache = DynamicCache(config=model.config)
    assert cache_nbytes(cache) == 0
    with torch.no_grad():
        model(**inputs, past_key_values=cache, use_cache=True)
    assert cache.get_seq_length() == seq
    assert cache_nbytes(cache) == 2 * LAYERS * KV_HEADS * seq * HEAD_DIM * 4

    half = DynamicCache(config=model.config)
    with torch.no_grad():
        model.to(torch.float16)
        try:
            model(
                **{k: v.half() if v.is_floating_point() else v for k, v in inputs.items()},
                past_key_values=half,
            )
        finally:
            model.to(torch.float32)
    assert cache_nbytes(half) == 2 * LAYERS * KV_HEADS * seq * HEAD_DIM * 2

    slim = SlimKVCache(config=model.config)
    omnisparse.apply(model, DEFAULTS_SMALL)
    try:
        with torch.no_grad():
            model(**inputs, past_key_values=slim, use_cache=True)
    finally:
        omnisparse.remove(model)
    assert cache_nbytes(slim) == slim.nbytes() < cache_nbytes(cache)
    kept = sum(int(k.sum()) for k in slim.kept_tokens())
    assert cache_nbytes(slim) >= kept * 2 * HEAD_DIM * 4
