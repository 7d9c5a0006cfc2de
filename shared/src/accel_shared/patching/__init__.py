"""Attention patching: one input type, one layout, adapters for transformers and diffusers.

Every hook receives an :class:`AttentionInputs` (head-major ``[B, H, S, D]`` tensors, grouped-query
key/value heads not repeated, bottom-right causal alignment) and returns ``[B, Hq, Sq, Dv]``.

- :mod:`accel_shared.patching.transformers`: ``register_attention`` / ``set_attention`` /
  ``restore_attention`` / ``use_attention`` (needs the ``transformers`` extra).
- :mod:`accel_shared.patching.diffusers`: ``RoutedAttnProcessor`` / ``route_attention`` /
  ``restore_processors`` (needs the ``diffusers`` extra).

Neither library is imported until one of those functions runs.
"""

from accel_shared.patching.inputs import AttentionInputs, AttentionMath, causal_mask, sdpa_math

__all__ = ["AttentionInputs", "AttentionMath", "causal_mask", "sdpa_math"]
