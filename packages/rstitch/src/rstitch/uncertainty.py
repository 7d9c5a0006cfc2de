"""Token-level uncertainty of a next-token distribution, in [0, 1] for both measures.

- ``"entropy"``: normalised entropy H = −Σ p log p / log V (R-Stitch's final version).
- ``"max_prob"``: 1 − max p (the first version's confidence, with τ = 1 − confidence threshold).
"""

from __future__ import annotations

import math

import torch

__all__ = ["UNCERTAINTY_MEASURES", "uncertainty"]

UNCERTAINTY_MEASURES = ("entropy", "max_prob")


def uncertainty(logits: torch.Tensor, measure: str = "entropy") -> float:
    """Uncertainty of the distribution ``softmax(logits)``; ``logits`` is [V] (any float dtype)."""
    if logits.ndim != 1 or logits.numel() < 2:
        raise ValueError(f"uncertainty: expected logits of shape [V] with V >= 2, got {tuple(logits.shape)}")
    # float64: an entropy of exactly 0 (which τ = 0 lets through) then needs logit gaps above ~700.
    log_p = torch.log_softmax(logits.double(), dim=-1)
    if measure == "entropy":
        # p log p with p = 0 contributes 0 (exp(-inf) * -inf would be nan).
        entropy = -(log_p.exp() * log_p.nan_to_num(neginf=0.0)).sum()
        return min(1.0, float(entropy) / math.log(logits.numel()))  # rounding can exceed 1 by an ulp
    if measure == "max_prob":
        # 1 - max p as the mass of the other tokens: stays > 0 when max p rounds to 1 (a top-2 logit gap
        # above ~37), where 1 - p would be 0 and τ = 0 would let the SLM's token through
        top = int(log_p.argmax())
        rest = torch.cat([log_p[:top], log_p[top + 1 :]])
        return min(1.0, float(torch.logsumexp(rest, dim=0).exp()))
    raise ValueError(f"uncertainty: measure must be one of {UNCERTAINTY_MEASURES}, got {measure!r}")
