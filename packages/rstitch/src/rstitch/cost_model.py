"""A latency cost model of the two models' forward passes, fitted to measured prefill and decode times.

A forward pass of ``n`` new tokens on top of ``c`` cached ones costs, per model,

    t(n, c) = fixed + per_token · n + per_context · n · (c + n) / 1000

(launch and Python overhead; the linear layers; attention over the context). The R-Stitch+ router is
trained against this estimate rather than the measured wall clock: the same decisions always get the
same latency, so the policy-gradient signal carries no timing noise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rstitch.runner import ForwardCall, cache_keyword, make_cache

__all__ = ["CostModel", "LinearCost"]


def _features(new_tokens: int, cached: int) -> list[float]:
    return [1.0, float(new_tokens), new_tokens * (cached + new_tokens) / 1000.0]


@dataclass(frozen=True)
class LinearCost:
    """Seconds of one forward pass of one model (see the module docstring)."""

    fixed: float
    per_token: float
    per_context: float

    def __call__(self, new_tokens: int, cached: int) -> float:
        f = _features(new_tokens, cached)
        return self.fixed * f[0] + self.per_token * f[1] + self.per_context * f[2]


@dataclass
class CostModel:
    """Per-model :class:`LinearCost` (keys ``"slm"`` and ``"llm"``)."""

    costs: dict[str, LinearCost]

    def cost(self, calls: Iterable[ForwardCall]) -> float:
        """Estimated seconds of a sequence of forward passes."""
        return sum(self.costs[c.model](c.new_tokens, c.cached) for c in calls)

    def decode_cost(self, model: str, prompt_length: int, new_tokens: int) -> float:
        """Estimated seconds for ``model`` alone: a prompt prefill, then one decode step per further token."""
        if new_tokens < 1:
            return 0.0
        cost = self.costs[model]
        steps = sum(cost(1, prompt_length + i) for i in range(new_tokens - 1))
        return cost(prompt_length, 0) + steps

    @classmethod
    def fit(
        cls,
        models: Mapping[str, Any],
        *,
        vocab_size: int,
        new_tokens: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
        cached: Sequence[int] = (0, 32, 128, 256),
        repeats: int = 5,
    ) -> CostModel:
        """Time every (new tokens, cached) pair ``repeats`` times per model (median) and fit least squares."""
        costs = {}
        for name, model in models.items():
            rows, times = [], []
            for c in cached:
                for n in new_tokens:
                    rows.append(_features(n, c))
                    times.append(_median_forward_time(model, n, c, vocab_size, repeats))
            a, b = torch.tensor(rows, dtype=torch.float64), torch.tensor(times, dtype=torch.float64)
            costs[name] = LinearCost(*(float(x) for x in _nonnegative_least_squares(a, b)))
        return cls(costs)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {name: vars(cost) for name, cost in self.costs.items()}
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        try:
            payload = json.loads(Path(path).read_text())
            if not isinstance(payload, dict) or not {"slm", "llm"} <= payload.keys():
                raise TypeError("expected a JSON object with the keys 'slm' and 'llm'")
            return cls({name: LinearCost(**values) for name, values in payload.items()})
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"CostModel.load: {path} is not a cost model file ({e})") from None


def _nonnegative_least_squares(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """argmin ||a x − b|| subject to x ≥ 0, for a few columns: refit without the columns a free fit
    makes negative until none is (an active-set method; exact for these 3-column fits in practice)."""
    active = list(range(a.shape[1]))
    x = torch.zeros(a.shape[1], dtype=a.dtype)
    while active:
        fit = torch.linalg.lstsq(a[:, active], b[:, None]).solution[:, 0]
        if (fit >= 0).all():
            x[active] = fit
            break
        active = [column for column, value in zip(active, fit.tolist(), strict=True) if value > 0]
    return x


@torch.inference_mode()
def _median_forward_time(model: Any, new_tokens: int, cached: int, vocab_size: int, repeats: int) -> float:
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    context = torch.randint(0, vocab_size, (1, cached + new_tokens), generator=g).to(device)
    cache_kw = cache_keyword(model)
    times = []
    for _ in range(repeats + 1):  # the first run warms up
        cache = make_cache(model)
        if cached:
            model(input_ids=context[:, :cached], use_cache=True, **{cache_kw: cache})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(input_ids=context[:, cached:], use_cache=True, logits_to_keep=1, **{cache_kw: cache})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]
