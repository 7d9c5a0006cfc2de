"""Prefill speed at Qwen2.5-VL-7B attention shapes: dense SDPA against OmniSparse.

Speed depends on the shapes and on how many blocks the selection keeps, not on what the weights
mean, so the model here has the 7B language model's shapes (hidden 3584, 28 query heads, 4 key/value
heads, head dim 128, MLP 18944) at reduced depth with random weights. Random weights make attention
flat: every head then needs almost every block to reach recall gamma, so the budget share sits at its
cap (``max_budget_ratio``) and no query block is lazy. Each run therefore states the density it
computed; the densities OmniSparse picks on a trained model come from the fidelity benchmark.

Two measurements, each against dense SDPA in the same process:

- attention: one layer's q/k/v ([1, 28, S, 128] and [1, 4, S, 128]); OmniSparse's time includes the
  whole selection (block scores, recall counts, top-k) and the block-sparse kernel;
- prefill: the language model's full forward over S tokens (embeddings in, last-token logits out), the
  vision tower excluded (it is the same for both).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

import kernels_core
from accel_shared.bench.timing import Timing, time_callable
from omnisparse.config import OmniSparseConfig
from omnisparse.patch import apply, get_state, remove
from omnisparse.selection import select_prefill_blocks
from omnisparse.tiny_vlm import mrope_section

__all__ = ["SEVEN_B", "AttentionShape", "bench_attention", "bench_prefill", "prefill_inputs", "seven_b_model"]


@dataclass(frozen=True)
class AttentionShape:
    """The language model's attention shapes."""

    hidden: int = 3584
    heads: int = 28
    kv_heads: int = 4
    head_dim: int = 128
    intermediate: int = 18944


SEVEN_B = AttentionShape()


def seven_b_model(
    num_layers: int = 2, *, shape: AttentionShape = SEVEN_B, vocab_size: int = 1024, seed: int = 0
) -> Any:
    """A Qwen2.5-VL model with the 7B language model's shapes, ``num_layers`` deep, random weights.

    The vocabulary is cut to ``vocab_size`` (inputs come as embeddings, and only the last token's logits
    are computed) and the vision tower is tiny (it is not timed).
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = {
        "vocab_size": vocab_size,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": num_layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "max_position_embeddings": 131072,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": mrope_section(shape.head_dim),
        },
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }
    vision = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": shape.hidden,
        "num_heads": 2,
        "fullatt_block_indexes": [0],
    }
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=vocab_size - 1,
        video_token_id=vocab_size - 2,
        vision_start_token_id=vocab_size - 3,
        vision_end_token_id=vocab_size - 4,
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def prefill_inputs(
    seq_len: int, hidden: int, *, text_before: int = 64, text_after: int = 64, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Embeddings [1, S, hidden] with ``S - text_before - text_after`` video tokens in the middle."""
    if seq_len <= text_before + text_after:
        raise ValueError(f"seq_len ({seq_len}) must exceed the {text_before + text_after} text tokens")
    gen = torch.Generator().manual_seed(seed)
    types = torch.zeros(1, seq_len, dtype=torch.long)
    types[:, text_before : seq_len - text_after] = 2
    return {
        "inputs_embeds": torch.randn(1, seq_len, hidden, generator=gen) * 0.02,
        "mm_token_type_ids": types,
    }


def bench_attention(
    seq_len: int,
    configs: dict[str, OmniSparseConfig],
    *,
    shape: AttentionShape = SEVEN_B,
    repeats: int = 3,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Timing, dict[str, tuple[Timing, float]]]:
    """Dense causal SDPA vs OmniSparse (selection + kernel) on one layer's random q/k/v.

    Returns the dense timing and, per config name, (timing, density).
    """
    gen = torch.Generator().manual_seed(0)

    def randn(heads: int) -> torch.Tensor:
        return torch.randn(1, heads, seq_len, shape.head_dim, generator=gen).to(device, dtype)

    q, k, v = randn(shape.heads), randn(shape.kv_heads), randn(shape.kv_heads)
    text = torch.ones(1, seq_len, dtype=torch.bool, device=device)
    text[:, 64 : seq_len - 64] = False

    def dense() -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    with torch.no_grad():
        dense_time = time_callable(dense, warmup=warmup, repeats=repeats, device=device)
        results = {}
        for name, config in configs.items():
            block = config.block_size

            def sparse(config: OmniSparseConfig = config, block: int = block) -> torch.Tensor:
                selection = select_prefill_blocks(q, k, config, text_tokens=text)
                out = kernels_core.block_sparse_attention(
                    q, k, v, selection.indices, block_size=(block, block), causal=True, check_indices=False
                )
                assert isinstance(out, torch.Tensor)
                return out

            density = select_prefill_blocks(q, k, config, text_tokens=text).density
            results[name] = (time_callable(sparse, warmup=warmup, repeats=repeats, device=device), density)
    return dense_time, results


def bench_prefill(
    model: Any,
    inputs: dict[str, torch.Tensor],
    config: OmniSparseConfig,
    *,
    repeats: int = 2,
    warmup: int = 1,
) -> tuple[Timing, Timing, float]:
    """The language model's prefill, dense then with OmniSparse; returns both timings and the mean density."""

    def run() -> None:
        model(**inputs, logits_to_keep=1, use_cache=False)

    with torch.no_grad():
        dense = time_callable(run, warmup=warmup, repeats=repeats)
        state = apply(model, replace(config, slim_decode=False))
        try:
            state.record = True
            sparse = time_callable(run, warmup=warmup, repeats=repeats)
            stats = get_state(model).stats
            density = sum(s.density for s in stats) / max(1, len(stats))
        finally:
            remove(model)
    return dense, sparse, density
