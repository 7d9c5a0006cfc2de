"""R-Stitch: token-level stitching between a small (SLM) and a large (LLM) language model.

- :class:`StitchedGenerator`: Algorithm 1 of the paper (two KV caches, partial prefill of the missing
  suffix on a switch, escalation when the SLM's uncertainty exceeds τ, back to the SLM when the LLM's
  is at most τ); greedy or sampling, EOS and stop strings, streaming.
- :class:`Router` / :func:`train_router`: R-Stitch+, a policy-gradient router on the SLM's hidden state.
- :func:`decode_alone`, :func:`transformers_generate`: the baselines (one model alone; transformers'
  generate and its speculative decoding).
- :func:`load_pair`: two ``from_pretrained`` models with a checked shared tokenizer (default: the pair
  shipped with the package, trained on the synthetic arithmetic benchmark).
"""

import accel_shared  # noqa: F401  (checks its own kernels-core range at import)
import kernels_core
from rstitch._version import __version__
from rstitch.answers import answers_match, extract_answer
from rstitch.baselines import decode_alone, transformers_generate
from rstitch.cost_model import CostModel
from rstitch.generator import StitchedGenerator, StitchOutput, check_same_tokenizer
from rstitch.models import ModelPair, load_pair
from rstitch.router import Router, RouterTrainConfig, train_router
from rstitch.uncertainty import uncertainty

kernels_core.check_compatibility("rstitch")

__all__ = [
    "CostModel",
    "ModelPair",
    "Router",
    "RouterTrainConfig",
    "StitchOutput",
    "StitchedGenerator",
    "__version__",
    "answers_match",
    "check_same_tokenizer",
    "decode_alone",
    "extract_answer",
    "load_pair",
    "train_router",
    "transformers_generate",
    "uncertainty",
]
