"""The baselines R-Stitch is compared with, in the same harness and the same output type.

- :func:`decode_alone`: one model decodes everything (SLM alone, LLM alone), with the same runner
  and per-step work as the stitched decoder, so the latency comparison is like for like.
- :func:`transformers_generate`: ``model.generate`` greedy, and with ``assistant_model`` transformers'
  assisted generation, i.e. speculative decoding (the LLM verifies SLM drafts; its output is the LLM's
  greedy output). The plain call is in the table too, so the overhead of transformers' generation loop
  is not mistaken for the cost of speculation.
- Per-token routing (R2R-style: the LLM produces one token, then the SLM resumes) is
  ``StitchedGenerator(..., switch_back="always")``.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from rstitch.generator import StitchOutput
from rstitch.runner import ModelRunner

__all__ = ["decode_alone", "transformers_generate"]


def _eos_set(eos_token_id: int | list[int] | None) -> set[int]:
    if eos_token_id is None:
        return set()
    return {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(e) for e in eos_token_id}


def decode_alone(
    model: Any,
    input_ids: torch.Tensor,
    *,
    label: str,
    max_new_tokens: int = 256,
    eos_token_id: int | list[int] | None = None,
    vocab_size: int | None = None,
) -> StitchOutput:
    """Greedy decoding of ``input_ids`` [1, P] by ``model`` alone; every source is ``label``.

    ``vocab_size`` limits the argmax to the tokenizer's tokens (models may pad their embedding table),
    as :class:`~rstitch.generator.StitchedGenerator` does."""
    if input_ids.ndim != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"decode_alone: input_ids must be [1, P], got {tuple(input_ids.shape)}")
    eos = _eos_set(eos_token_id)
    started = time.perf_counter()
    out = StitchOutput(sequences=input_ids, sources=[])
    runner = ModelRunner(model, label, calls=out.calls)
    p = input_ids.shape[1]
    sequence = torch.empty((1, p + max_new_tokens), dtype=torch.long)
    sequence[:, :p] = input_ids.cpu()
    n = p
    while n < p + max_new_tokens:
        token = int(runner.next_logits(sequence[:, :n])[:vocab_size].argmax())
        sequence[0, n] = token
        n += 1
        out.sources.append(label)
        if token in eos:
            break
    out.sequences = sequence[:, :n].clone()
    out.latency_s = time.perf_counter() - started
    return out


@torch.inference_mode()
def transformers_generate(
    model: Any,
    input_ids: torch.Tensor,
    *,
    assistant_model: Any = None,
    max_new_tokens: int = 256,
    eos_token_id: int | list[int] | None = None,
) -> StitchOutput:
    """Greedy ``model.generate`` of ``input_ids`` [1, P]; speculative decoding with ``assistant_model``.

    The generation config is built here, not taken from the model, so settings a checkpoint ships
    (repetition penalty, sampling) cannot make it differ from plain greedy decoding. ``sources`` are
    all ``"llm"``: every token is ``model``'s (drafts are only proposals)."""
    from transformers import GenerationConfig

    eos = sorted(_eos_set(eos_token_id))
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        # without an EOS, transformers falls back to the model's: force the full length instead
        min_new_tokens=0 if eos else max_new_tokens,
        eos_token_id=eos or None,
        pad_token_id=eos[0] if eos else None,
    )
    kwargs: dict[str, Any] = {"generation_config": config}
    if assistant_model is not None:
        kwargs["assistant_model"] = assistant_model
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    started = time.perf_counter()
    sequences = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs).cpu()  # .cpu() syncs
    latency = time.perf_counter() - started
    new = sequences.shape[1] - input_ids.shape[1]
    return StitchOutput(sequences=sequences, sources=["llm"] * new, latency_s=latency)
