"""The benchmark's tokenizer: byte-level BPE with every digit its own token, built with ``tokenizers``.

Byte-level BPE decodes any text exactly (spaces included) like the Qwen tokenizers; splitting digits
keeps arithmetic digit by digit, so the models compute rather than memorise number tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rstitch.arithmetic import vocabulary_text

__all__ = ["BOS", "EOS", "PAD", "build_tokenizer", "load_tokenizer"]

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
_GENERIC_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def build_tokenizer(vocab_size: int = 512) -> Any:
    """A ``PreTrainedTokenizerFast`` trained on the generator's texts (deterministic)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # " 34" -> " 3", "4": one token per digit, the first carrying the space before it.
            pre_tokenizers.Split(Regex(r" ?\d"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(vocabulary_text(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS)


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved at ``path`` (a folder or a cached model id), with a clear error when absent.

    A folder whose ``tokenizer_config.json`` names the generic fast tokenizer (as this package's do)
    is loaded as exactly that: transformers' ``AutoTokenizer`` would otherwise pick the model type's
    own class from ``config.json`` (Qwen2's, for our Qwen2 models) and add that class's special tokens.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(path)
    if folder.is_dir():
        if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise FileNotFoundError(f"load_tokenizer: no tokenizer files in {folder}")
        config_file = folder / "tokenizer_config.json"
        declared = (
            json.loads(config_file.read_text()).get("tokenizer_class") if config_file.is_file() else None
        )
        if declared in _GENERIC_CLASSES and (folder / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast.from_pretrained(str(folder))
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except OSError as e:
        raise FileNotFoundError(f"load_tokenizer: cannot load a tokenizer from {path}: {e}") from None
