"""Shared fixtures: two tiny random Qwen2 models sharing a vocabulary, with sharpened distributions.

Random models have nearly flat next-token distributions (normalised entropy close to 1). Scaling the
output projection makes the entropies vary from position to position, so that a mid-range τ exercises
switching in both directions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from rstitch.generator import StitchedGenerator

VOCAB = 64
PROMPT_LENGTH = 6
NEW_TOKENS = 16
LOGIT_SCALE = 30.0


def make_model(
    *,
    hidden: int,
    layers: int,
    seed: int,
    vocab: int = VOCAB,
    scale: float = LOGIT_SCALE,
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A random ``Qwen2ForCausalLM`` in eval mode whose ``lm_head`` is multiplied by ``scale``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model.to(dtype)


def make_slm(**kwargs: Any) -> Any:
    return make_model(hidden=32, layers=1, seed=0, **kwargs)


def make_llm(**kwargs: Any) -> Any:
    return make_model(hidden=48, layers=2, seed=1, **kwargs)


@pytest.fixture(scope="session")
def slm() -> Any:
    return make_slm()


@pytest.fixture(scope="session")
def llm() -> Any:
    return make_llm()


@pytest.fixture(scope="session")
def prompt() -> torch.Tensor:
    """[1, P] random token ids."""
    return torch.randint(0, VOCAB, (1, PROMPT_LENGTH), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def mid_tau(slm: Any, llm: Any, prompt: torch.Tensor) -> float:
    """The median of the SLM's uncertainties along its own greedy output: a τ that switches both ways."""
    out = StitchedGenerator(slm, llm, tau=1.0).generate(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=None)
    return float(torch.tensor(out.uncertainties).median())


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    from rstitch.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture
def model_factory() -> Callable[..., Any]:
    return make_model


@pytest.fixture(scope="session")
def vocab_pair(tokenizer: Any) -> tuple[Any, Any]:
    """(slm, llm) like ``slm``/``llm`` but with the real tokenizer's vocabulary (for text prompts)."""
    return make_slm(vocab=len(tokenizer)), make_llm(vocab=len(tokenizer))


@pytest.fixture(scope="session")
def saved_pair(
    tmp_path_factory: pytest.TempPathFactory, vocab_pair: tuple[Any, Any], tokenizer: Any
) -> tuple[Path, Path]:
    """(slm folder, llm folder): ``vocab_pair`` saved with ``save_pretrained`` next to the tokenizer, as
    ``rstitch train-lm`` writes its model folders (what ``--slm`` / ``--llm`` take)."""
    root = tmp_path_factory.mktemp("saved-pair")
    folders = []
    for name, model in zip(("slm", "llm"), vocab_pair, strict=True):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        folders.append(root / name)
    return folders[0], folders[1]
