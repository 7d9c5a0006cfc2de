"""OmniSparse: training-aware query and KV sparse attention, and decode KV slimming, for Qwen-VL models.

import omnisparse
omnisparse.apply(model)                       # Qwen2-VL / Qwen2.5-VL / any registry decoder
out = model.generate(**inputs)                # sparse prefill, slimmed per-head KV cache
omnisparse.remove(model)                      # exactly the original model again

omnisparse.OmniSparseConfig(gamma=0.9, lazy_keep_ratio=0.1, decode_gamma=0.9, ...)
omnisparse.SlimKVCache(config=model.config)   # the slimmed cache, passed explicitly
"""

from omnisparse._version import __version__
from omnisparse.config import OmniSparseConfig
from omnisparse.patch import OmniSparseState, apply, get_state, is_applied, remove
from omnisparse.selection import PrefillSelection, select_prefill_blocks
from omnisparse.slim_cache import SlimKVCache, SlimLayer

__all__ = [
    "OmniSparseConfig",
    "OmniSparseState",
    "PrefillSelection",
    "SlimKVCache",
    "SlimLayer",
    "__version__",
    "apply",
    "get_state",
    "is_applied",
    "remove",
    "select_prefill_blocks",
]
