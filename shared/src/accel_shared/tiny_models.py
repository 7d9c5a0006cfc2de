"""Tiny, documented configs of the model classes the packages target.

No model hub is needed: a tiny model is built from its config with seeded weights, and round-trips
through the libraries' real ``save_pretrained`` / ``from_pretrained`` code, so tests exercise the same
loading path users take with real checkpoints. Every config runs a forward pass in well under a second
on a CPU.

    >>> model = build_tiny_model("qwen2")
    >>> out = model(**tiny_inputs("qwen2", model))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = [
    "TinyModelSpec",
    "build_tiny_model",
    "get_spec",
    "list_tiny_models",
    "load_model",
    "save_tiny_model",
    "tiny_config",
    "tiny_inputs",
]


@dataclass(frozen=True)
class TinyModelSpec:
    """One tiny model.

    Attributes:
        name: registry key, e.g. ``"qwen2"``.
        library: ``"transformers"`` or ``"diffusers"``.
        model_class: import path of the model class, e.g. ``"transformers.Qwen2ForCausalLM"``.
        make_config: builds the config: a ``PreTrainedConfig`` (transformers) or a dict of constructor
            arguments (diffusers).
        description: one line for listings.
    """

    name: str
    library: Literal["transformers", "diffusers"]
    model_class: str
    make_config: Callable[[], Any]
    description: str

    def load_class(self) -> Any:
        """Import and return the model class."""
        module_name, _, class_name = self.model_class.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            extra = "diffusers" if self.library == "diffusers" else "transformers"
            raise ImportError(
                f"tiny model {self.name!r} needs {self.library}: pip install 'accel-shared[{extra}]'"
            ) from e
        return getattr(module, class_name)


# Text token ids of the tiny vision-language models; they live inside the tiny vocabulary (128).
_VL_IMAGE_TOKEN, _VL_VIDEO_TOKEN, _VL_START_TOKEN, _VL_END_TOKEN = 120, 121, 122, 123
_TEXT_TOKENS = 100  # ordinary text tokens are drawn from [0, 100)


def _llm_kwargs() -> dict[str, Any]:
    # 4 query heads, 2 key/value heads: grouped-query attention is exercised. head_dim = 64 / 4 = 16.
    return {
        "vocab_size": 128,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 2,
    }


def _qwen2_config() -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(**_llm_kwargs())


def _llama_config() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(**_llm_kwargs())


def _vl_text_kwargs() -> dict[str, Any]:
    # M-RoPE splits head_dim / 2 = 8 frequency pairs into (temporal, height, width) = (2, 3, 3).
    kwargs = _llm_kwargs()
    kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    return kwargs


_VL_TOKENS: dict[str, Any] = {
    "image_token_id": _VL_IMAGE_TOKEN,
    "video_token_id": _VL_VIDEO_TOKEN,
    "vision_start_token_id": _VL_START_TOKEN,
    "vision_end_token_id": _VL_END_TOKEN,
}


def _qwen2_vl_config() -> Any:
    from transformers import Qwen2VLConfig

    vision = {
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 64,  # the merger projects to the text hidden size
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    return Qwen2VLConfig(text_config=_vl_text_kwargs(), vision_config=vision, **_VL_TOKENS)


def _qwen2_5_vl_config() -> Any:
    from transformers import Qwen2_5_VLConfig

    vision = {
        "depth": 2,
        "hidden_size": 32,  # the vision embed dim in Qwen2.5-VL's naming
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 28,  # one merged 2x2 patch group per window: 4 windows on a 4x4 grid
        "fullatt_block_indexes": [1],
    }
    return Qwen2_5_VLConfig(text_config=_vl_text_kwargs(), vision_config=vision, **_VL_TOKENS)


def _flux_config() -> dict[str, Any]:
    # head_dim 16 = sum(axes_dims_rope); guidance_embeds as in FLUX.1-dev.
    return {
        "patch_size": 1,
        "in_channels": 16,
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 32,
        "pooled_projection_dim": 32,
        "guidance_embeds": True,
        "axes_dims_rope": (4, 6, 6),
    }


def _wan_config() -> dict[str, Any]:
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": 4,
        "out_channels": 4,
        "text_dim": 32,
        "freq_dim": 32,
        "ffn_dim": 64,
        "num_layers": 2,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 32,
    }


_SPECS: dict[str, TinyModelSpec] = {
    s.name: s
    for s in (
        TinyModelSpec(
            "qwen2",
            "transformers",
            "transformers.Qwen2ForCausalLM",
            _qwen2_config,
            "Qwen2 causal LM: hidden 64, 2 layers, 4 heads / 2 KV heads (GQA), vocab 128",
        ),
        TinyModelSpec(
            "llama",
            "transformers",
            "transformers.LlamaForCausalLM",
            _llama_config,
            "LLaMA causal LM: hidden 64, 2 layers, 4 heads / 2 KV heads (GQA), vocab 128",
        ),
        TinyModelSpec(
            "qwen2-vl",
            "transformers",
            "transformers.Qwen2VLForConditionalGeneration",
            _qwen2_vl_config,
            "Qwen2-VL: tiny text model with M-RoPE [2,3,3]; vision depth 2, embed 32, patch 14, merge 2",
        ),
        TinyModelSpec(
            "qwen2.5-vl",
            "transformers",
            "transformers.Qwen2_5_VLForConditionalGeneration",
            _qwen2_5_vl_config,
            "Qwen2.5-VL: tiny text model with M-RoPE [2,3,3]; windowed vision depth 2, embed 32, patch 14",
        ),
        TinyModelSpec(
            "flux",
            "diffusers",
            "diffusers.FluxTransformer2DModel",
            _flux_config,
            "Flux MMDiT: 1 double + 1 single block, 2 heads of 16 (RoPE axes 4+6+6), guidance embeds",
        ),
        TinyModelSpec(
            "wan",
            "diffusers",
            "diffusers.WanTransformer3DModel",
            _wan_config,
            "Wan video DiT: 2 blocks (attn1 self, attn2 cross), 2 heads of 16, patch (1,2,2)",
        ),
    )
}


def list_tiny_models() -> list[TinyModelSpec]:
    """All tiny model specs, in registry order."""
    return list(_SPECS.values())


def get_spec(name: str) -> TinyModelSpec:
    """The spec called ``name``; ``ValueError`` listing the known names otherwise."""
    spec = _SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(_SPECS)}")
    return spec


def tiny_config(name: str) -> Any:
    """A fresh config for ``name`` (``PreTrainedConfig`` for transformers, a kwargs dict for diffusers)."""
    return get_spec(name).make_config()


def build_tiny_model(name: str, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """Build tiny model ``name`` with weights drawn from ``seed`` (same seed -> identical weights).

    The global RNG state of the caller is left as it was. The model is returned in eval mode.
    """
    spec = get_spec(name)
    cls = spec.load_class()
    config = spec.make_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls.from_config(config) if spec.library == "diffusers" else cls(config)
    if dtype != torch.float32:  # (diffusers warns on any .to(dtype) of models with fp32-pinned modules)
        model = model.to(dtype)
    return model.eval()


def save_tiny_model(name: str, path: str | Path, *, seed: int = 0) -> Path:
    """Build tiny model ``name`` and ``save_pretrained`` it into the folder ``path``; returns the folder."""
    model = build_tiny_model(name, seed=seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    return path


def load_model(name_or_class: str | type, path: str | Path) -> Any:
    """``from_pretrained(path)`` of a tiny model's class (by spec name) or of any model class; eval mode.

    Args:
        name_or_class: a tiny model name (``"qwen2"``) or a class with ``from_pretrained``.
        path: a folder written by ``save_pretrained`` (or a hub id when a hub is reachable).
    """
    cls = get_spec(name_or_class).load_class() if isinstance(name_or_class, str) else name_or_class
    if not hasattr(cls, "from_pretrained"):
        raise TypeError(
            f"load_model: name_or_class must be a tiny model name or a class with from_pretrained, "
            f"got {name_or_class!r}"
        )
    text = str(path)
    # "org/name" may be a hub id; anything else must be an existing local folder.
    looks_local = (
        isinstance(path, Path) or Path(text).is_absolute() or text.startswith(".") or text.count("/") != 1
    )
    if looks_local and not Path(text).is_dir():
        raise FileNotFoundError(f"load_model: no model folder at {text!r}")
    return cls.from_pretrained(path).eval()


def _text_ids(gen: torch.Generator, batch: int, length: int) -> torch.Tensor:
    # avoid the special ids 0-2 (bos/eos/pad) so that no row ends early in generate()
    return torch.randint(3, _TEXT_TOKENS, (batch, length), generator=gen)


def tiny_inputs(name: str, model: Any, *, batch_size: int = 1, seed: int = 0) -> dict[str, Any]:
    """Forward keyword arguments that exercise tiny model ``name`` (on ``model``'s device and dtype).

    - ``qwen2`` / ``llama``: ``input_ids`` [B, 8], ``attention_mask`` [B, 8].
    - ``qwen2-vl`` / ``qwen2.5-vl``: one 56x56 image (grid [1, 4, 4] -> 4 image tokens) per row:
      ``input_ids`` [B, 12], ``attention_mask``, ``mm_token_type_ids`` (0 text, 1 image), ``pixel_values``
      [B*16, 1176], ``image_grid_thw`` [B, 3].
    - ``flux``: ``hidden_states`` [B, 16, C] (a 4x4 latent grid), ``encoder_hidden_states`` [B, 6, 32],
      ``pooled_projections`` [B, 32], ``timestep`` [B], ``img_ids`` [16, 3], ``txt_ids`` [6, 3], and
      ``guidance`` [B] when the config has guidance embeds.
    - ``wan``: ``hidden_states`` [B, C, 2, 4, 4], ``timestep`` [B], ``encoder_hidden_states`` [B, 6, 32].
    """
    spec = get_spec(name)
    if batch_size < 1:
        raise ValueError(f"tiny_inputs: batch_size must be >= 1, got {batch_size}")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    gen = torch.Generator().manual_seed(seed)
    b = batch_size

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    if spec.name in ("qwen2", "llama"):
        ids = _text_ids(gen, b, 8)
        return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids, device=device)}

    if spec.name in ("qwen2-vl", "qwen2.5-vl"):
        vision = model.config.vision_config
        grid_t, grid_h, grid_w = 1, 4, 4
        n_patches = grid_t * grid_h * grid_w
        n_image_tokens = n_patches // vision.spatial_merge_size**2
        patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        prefix = _text_ids(gen, b, 2)
        suffix = _text_ids(gen, b, 4)
        image = torch.tensor([_VL_START_TOKEN] + [_VL_IMAGE_TOKEN] * n_image_tokens + [_VL_END_TOKEN])
        ids = torch.cat([prefix, image.expand(b, -1), suffix], dim=1)
        mm_types = (ids == _VL_IMAGE_TOKEN).long()
        return {
            "input_ids": ids.to(device),
            "attention_mask": torch.ones_like(ids, device=device),
            "mm_token_type_ids": mm_types.to(device),
            "pixel_values": randn(b * n_patches, patch_dim),
            "image_grid_thw": torch.tensor([[grid_t, grid_h, grid_w]] * b, device=device),
        }

    if spec.name == "flux":
        config = model.config
        side, n_txt = 4, 6
        img_ids = torch.zeros(side, side, 3)
        img_ids[..., 1] = torch.arange(side)[:, None]
        img_ids[..., 2] = torch.arange(side)[None, :]
        inputs = {
            "hidden_states": randn(b, side * side, config.in_channels),
            "encoder_hidden_states": randn(b, n_txt, config.joint_attention_dim),
            "pooled_projections": randn(b, config.pooled_projection_dim),
            "timestep": torch.full((b,), 0.5, device=device, dtype=dtype),
            "img_ids": img_ids.reshape(-1, 3).to(device=device, dtype=dtype),
            "txt_ids": torch.zeros(n_txt, 3, device=device, dtype=dtype),
        }
        if config.guidance_embeds:
            inputs["guidance"] = torch.full((b,), 3.5, device=device, dtype=dtype)
        return inputs

    # wan
    config = model.config
    return {
        "hidden_states": randn(b, config.in_channels, 2, 4, 4),
        "timestep": torch.full((b,), 500, device=device, dtype=torch.long),
        "encoder_hidden_states": randn(b, 6, config.text_dim),
    }
