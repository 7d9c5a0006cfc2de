"""The tiny Qwen2-VL we train on the long-video QA benchmark: word-level tokenizer, config, prompts.

It is a stock ``Qwen2VLForConditionalGeneration`` (M-RoPE, the Qwen2-VL vision tower with 2x2 patch
merging, grouped-query attention) at a size that trains on a CPU in minutes: a 4-layer, 128-wide text
model with 4 query and 2 key/value heads, and a 2-layer, 64-wide vision tower. The tokenizer is a
``tokenizers`` word-level model wrapped as ``PreTrainedTokenizerFast`` and saved next to the weights,
so the folder loads with ``from_pretrained`` like any Qwen2-VL checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from omnisparse.longvideo_qa import COLORS, SHAPES

__all__ = [
    "ANSWER_TOKEN",
    "SPECIAL_TOKENS",
    "build_tiny_vlm",
    "build_tokenizer",
    "load_vlm",
    "mrope_section",
    "prompt_text",
    "tiny_vlm_config",
]

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<|unk|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
ANSWER_TOKEN = "<|answer|>"
SPECIAL_TOKENS = (PAD, EOS, UNK, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, ANSWER_TOKEN)
_WORDS = (
    "what", "color", "colour", "shape", "is", "the", "one", "a", "an", "of", "in", "this", "that", "video",
    "frame", "which", "does", "contain", "there", "image", "yes", "no", "?", ".", ",",
    *SHAPES, *COLORS,
)  # fmt: skip


def build_tokenizer() -> Any:
    """The word-level tokenizer: special tokens first (ids 0..7), then the benchmark's words."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *_WORDS))}
    backend = Tokenizer(WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    from tokenizers import decoders

    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, unk_token=UNK, model_max_length=1 << 20
    )


def prompt_text(question: str, *, num_video_tokens: int) -> str:
    """The tiny model's prompt: the question, the video's tokens, the question again, the answer marker.

    Asking before the video lets each frame's tokens check themselves against the question as they are
    read (a 4-layer model does not learn to search 32 frames from a question that only follows them);
    asking again after it gives decoding its usual "question after the video" queries.
    """
    return f"{question} {VISION_START}{VIDEO_PAD * num_video_tokens}{VISION_END} {question} {ANSWER_TOKEN}"


def mrope_section(head_dim: int) -> list[int]:
    """M-RoPE's split of the head_dim / 2 frequency pairs into (time, height, width): [16, 24, 24] at 128,
    Qwen2-VL's own split."""
    half = head_dim // 2
    return [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]


def tiny_vlm_config(tokenizer: Any, *, num_layers: int = 4, hidden: int = 128) -> Any:
    """A Qwen2VLConfig for the benchmark model (token ids taken from ``tokenizer``)."""
    from transformers import Qwen2VLConfig

    ids = tokenizer.convert_tokens_to_ids
    heads, kv_heads = 4, 2
    text = {
        "vocab_size": 64 * ((len(tokenizer) + 63) // 64),
        "hidden_size": hidden,
        "intermediate_size": 3 * hidden,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": mrope_section(hidden // heads),
        },
        "tie_word_embeddings": True,
        "bos_token_id": ids(EOS),
        "eos_token_id": ids(EOS),
        "pad_token_id": ids(PAD),
    }
    vision = {
        "depth": 2,
        "embed_dim": 64,
        "hidden_size": hidden,  # the merger projects to the text width
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids(IMAGE_PAD),
        video_token_id=ids(VIDEO_PAD),
        vision_start_token_id=ids(VISION_START),
        vision_end_token_id=ids(VISION_END),
        tie_word_embeddings=True,
    )


def build_tiny_vlm(tokenizer: Any | None = None, *, seed: int = 0, **config_kwargs: Any) -> tuple[Any, Any]:
    """A freshly initialised tiny Qwen2-VL and its tokenizer."""
    from transformers import Qwen2VLForConditionalGeneration

    tokenizer = tokenizer or build_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(tiny_vlm_config(tokenizer, **config_kwargs))
    return model.eval(), tokenizer


def load_vlm(
    path: str | Path, *, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"
) -> tuple[Any, Any]:
    """A Qwen2-VL / Qwen2.5-VL model and its tokenizer from a local folder (``from_pretrained``)."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--model {path} has no config.json (expected a from_pretrained folder)")
    config = AutoConfig.from_pretrained(path)
    if config.model_type not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"--model {path} is a {config.model_type!r} model; expected qwen2_vl or qwen2_5_vl")
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=dtype, attn_implementation=attn_implementation
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer
