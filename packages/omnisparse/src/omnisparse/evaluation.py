"""Fidelity and accuracy of OmniSparse against dense attention on video QA.

For every (video, question, answer) item, with the same model:

- dense: teacher-forced logits, the greedy answer, and the KV-cache size after generation;
- OmniSparse prefill (cache not slimmed): logit cosine and top-1 agreement with dense over the text
  after the video (question, answer marker and the teacher-forced answer), and top-1 agreement at the
  answer positions only (those predicting the answer and its EOS: the only positions the benchmark
  model was trained on);
- OmniSparse prefill + slimmed decode cache: the greedy answer (agreement with dense, accuracy) and the
  cache size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers.cache_utils import DynamicCache

from omnisparse.config import OmniSparseConfig
from omnisparse.inputs import answer_ids, video_inputs
from omnisparse.longvideo_qa import VideoQA
from omnisparse.patch import apply, get_state, remove
from omnisparse.slim_cache import SlimKVCache

__all__ = ["TINY_MODEL_CONFIG", "FidelityReport", "cache_nbytes", "evaluate"]

# The tiny benchmark model sees ~530 tokens, so blocks are 16 tokens (33 blocks, about the block count of a
# 2k-token prompt with the default 64-token blocks) and every call is long enough to go sparse.
TINY_MODEL_CONFIG = OmniSparseConfig(block_size=16, min_seq_len=128, recent_window=8, observation_window=16)


@dataclass
class FidelityReport:
    """Averages over the evaluated items (accuracies and agreements in [0, 1])."""

    items: int = 0
    dense_accuracy: float = 0.0
    sparse_accuracy: float = 0.0
    answer_agreement: float = 0.0
    top1_agreement: float = 0.0
    answer_top1_agreement: float = 0.0
    logit_cosine: float = 0.0
    prefill_density: float = 0.0
    active_query_share: float = 0.0
    dense_kv_bytes: float = 0.0
    slim_kv_bytes: float = 0.0
    per_item: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kv_memory_ratio(self) -> float:
        return self.dense_kv_bytes / self.slim_kv_bytes if self.slim_kv_bytes else float("nan")

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("per_item")
        data["kv_memory_ratio"] = self.kv_memory_ratio
        return data


def cache_nbytes(cache: Any) -> int:
    """Bytes of keys and values held by a transformers cache (index lists too, for a SlimKVCache)."""
    if isinstance(cache, SlimKVCache):
        return cache.nbytes()
    return sum(
        t.numel() * t.element_size()
        for layer in cache.layers
        for t in (layer.keys, layer.values)
        if t is not None
    )


def _generate(
    model: Any, inputs: dict[str, torch.Tensor], cache: Any, max_new_tokens: int
) -> tuple[list[int], Any]:
    out = model.generate(
        **inputs,
        cache=cache,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        return_dict_in_generate=True,
    )
    new = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    return new, out.past_key_values


def _answer_text(tokenizer: Any, ids: list[int]) -> str:
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


@torch.no_grad()
def evaluate(
    model: Any,
    tokenizer: Any,
    items: Iterable[VideoQA],
    config: OmniSparseConfig = TINY_MODEL_CONFIG,
    *,
    frame_pixels: tuple[int, int] = (112 * 112, 112 * 112),
    repeat_frames: int = 2,
    max_new_tokens: int = 4,
    show_progress: bool = True,
    reference: Any | None = None,
) -> FidelityReport:
    """Run the dense model and OmniSparse on ``items``; ``model`` is left as it was.

    ``reference``: the dense model to compare with (default: ``model`` itself), e.g. the base model a
    fine-tuned ``model`` was distilled from; it must share the tokenizer.
    """
    dense_model = model if reference is None else reference
    items = list(items)
    report = FidelityReport()
    video_id = model.config.video_token_id
    for item in tqdm(items, desc="evaluate", disable=not show_progress, dynamic_ncols=True):
        inputs = video_inputs(
            item.frames(),
            item.question,
            tokenizer,
            model.config,
            frame_pixels=frame_pixels,
            repeat_frames=repeat_frames,
        )
        forced = dict(inputs)
        answer = answer_ids(tokenizer, item.answer)[None]
        forced["input_ids"] = torch.cat([inputs["input_ids"], answer], 1)
        forced["attention_mask"] = torch.ones_like(forced["input_ids"])
        forced["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(answer)], 1)
        first_text = int((forced["input_ids"][0] == video_id).nonzero().max()) + 1

        dense_logits = dense_model(**forced).logits[0, first_text:].float()
        dense_answer, dense_cache = _generate(
            dense_model, inputs, DynamicCache(config=dense_model.config), max_new_tokens
        )

        state = apply(model, replace(config, slim_decode=False))
        try:
            state.record = True
            sparse_logits = model(**forced).logits[0, first_text:].float()
            stats = list(state.stats)
        finally:
            remove(model)
        apply(model, replace(config, slim_decode=True))
        try:
            sparse_answer, slim_cache = _generate(
                model, inputs, SlimKVCache(config=model.config), max_new_tokens
            )
            assert get_state(model).config.slim_decode
        finally:
            remove(model)

        dense_text, sparse_text = (
            _answer_text(tokenizer, dense_answer),
            _answer_text(tokenizer, sparse_answer),
        )
        row = {
            "question": item.question,
            "answer": item.answer,
            "dense": dense_text,
            "omnisparse": sparse_text,
            "top1": float((dense_logits.argmax(-1) == sparse_logits.argmax(-1)).float().mean()),
            # the positions that predict the answer and its EOS (the rest predict the prompt's own text)
            "answer_top1": float(
                (
                    dense_logits[-answer.shape[1] - 1 : -1].argmax(-1)
                    == sparse_logits[-answer.shape[1] - 1 : -1].argmax(-1)
                )
                .float()
                .mean()
            ),
            "cosine": float(F.cosine_similarity(dense_logits, sparse_logits, dim=-1).mean()),
            "density": sum(s.density for s in stats) / max(1, len(stats)),
            "active": sum(s.active_share for s in stats) / max(1, len(stats)),
            "dense_kv_bytes": cache_nbytes(dense_cache),
            "slim_kv_bytes": cache_nbytes(slim_cache),
        }
        report.per_item.append(row)
    n = len(report.per_item)
    report.items = n
    if n:
        rows = report.per_item
        report.dense_accuracy = sum(r["dense"] == r["answer"] for r in rows) / n
        report.sparse_accuracy = sum(r["omnisparse"] == r["answer"] for r in rows) / n
        report.answer_agreement = sum(r["omnisparse"] == r["dense"] for r in rows) / n
        report.top1_agreement = sum(r["top1"] for r in rows) / n
        report.answer_top1_agreement = sum(r["answer_top1"] for r in rows) / n
        report.logit_cosine = sum(r["cosine"] for r in rows) / n
        report.prefill_density = sum(r["density"] for r in rows) / n
        report.active_query_share = sum(r["active"] for r in rows) / n
        report.dense_kv_bytes = sum(r["dense_kv_bytes"] for r in rows) / n
        report.slim_kv_bytes = sum(r["slim_kv_bytes"] for r in rows) / n
    return report
