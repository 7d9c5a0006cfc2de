"""One causal LM with its own KV cache, kept in step with a shared token sequence.

R-Stitch runs two of these. A runner only feeds tokens when it is asked for the next-token distribution:
:meth:`ModelRunner.next_logits` crops its cache when it holds tokens the sequence no longer has (a
rollback) and runs the missing suffix in one forward pass when it is behind (a partial prefill; one
token is an ordinary decode step). Every forward pass is recorded as ``(tokens fed, cached length)``
so latency can be attributed and a cost model fitted.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ForwardCall", "ModelRunner", "cache_keyword", "make_cache"]


@dataclass(frozen=True)
class ForwardCall:
    """One forward pass: ``new_tokens`` fed on top of ``cached`` tokens already in the KV cache."""

    model: str
    new_tokens: int
    cached: int


def make_cache(model: Any) -> Any:
    """An empty ``DynamicCache`` for ``model`` (the ``config=`` argument exists from transformers 4.56)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # pragma: no cover - older transformers
        return DynamicCache()


def cache_keyword(model: Any) -> str:
    """The forward keyword for the cache: ``cache`` in transformers ≥ 5.2x, ``past_key_values`` before."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


@dataclass
class ModelRunner:
    """``model`` plus its KV cache; ``length`` tokens of the shared sequence are in the cache.

    Attributes:
        name: a label for the records (``"slm"`` / ``"llm"``).
        output_hidden: also keep the last layer's hidden state of the last position (for a router).
        calls: every forward pass run so far.
    """

    model: Any
    name: str
    output_hidden: bool = False
    calls: list[ForwardCall] = field(default_factory=list)
    length: int = 0
    hidden: torch.Tensor | None = None  # [hidden_size], of the last position fed

    def __post_init__(self) -> None:
        self.cache = make_cache(self.model)
        self._cache_kw = cache_keyword(self.model)
        self.device = next(self.model.parameters()).device

    def rollback(self, length: int) -> None:
        """Drop every cached token from position ``length`` on."""
        if length < self.length:
            # crop(-n) drops the last n tokens in every transformers version (the meaning of a positive
            # argument changed in 5.x).
            self.cache.crop(length - self.length)
            self.length = length

    @torch.inference_mode()
    def next_logits(self, sequence: torch.Tensor) -> torch.Tensor:
        """Next-token logits [vocab] (float32) after ``sequence`` [1, S] (S > cached length after any
        rollback: the last token is always fed, since the cache keeps no logits)."""
        if sequence.ndim != 2 or sequence.shape[0] != 1:
            raise ValueError(f"{self.name}: expected a sequence of shape [1, S], got {tuple(sequence.shape)}")
        total = sequence.shape[1]
        # A runner that has seen the whole sequence holds no logits for it: re-feed the last token.
        self.rollback(min(self.length, total - 1))
        suffix = sequence[:, self.length :].to(self.device)
        kwargs: dict[str, Any] = {self._cache_kw: self.cache, "use_cache": True, "logits_to_keep": 1}
        positions = torch.arange(self.length, total, device=self.device)
        out = self.model(
            input_ids=suffix,
            position_ids=positions[None],
            output_hidden_states=self.output_hidden,
            **kwargs,
        )
        self.calls.append(ForwardCall(self.name, suffix.shape[1], self.length))
        self.length = total
        if self.output_hidden:
            self.hidden = out.hidden_states[-1][0, -1].float()
        return out.logits[0, -1].float()
