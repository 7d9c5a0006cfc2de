"""FeedForwardGS: context views -> one 3D Gaussian per pixel (the DepthSplat / MVSplat design).

Pipeline, for B scenes of V context views of H×W pixels (H and W multiples of 4·attention_stride):

1. per-view CNN features at 1/4 resolution + a 2D positional encoding (:mod:`~accel_shared.gs.encoder`);
2. **extension point**: an optional :class:`ViewCompressor` reduces the V views to K anchor views; the
   images, cameras and depth ranges are gathered to the anchors and the rest of the model sees K views;
3. a cross-view transformer (:mod:`~accel_shared.gs.transformer`);
4. a plane-sweep cost volume (:mod:`~accel_shared.gs.cost_volume`) -> coarse depth by soft-argmax in
   inverse depth, refined at full resolution with the image (:mod:`~accel_shared.gs.depth`);
5. Gaussian heads at full resolution (:mod:`~accel_shared.gs.heads`); the means are the depths unprojected
   through the (offset) pixel centres with :func:`~accel_shared.gs.cameras.unproject_depth`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from accel_shared.gs.cameras import unproject_depth
from accel_shared.gs.cost_volume import candidate_t, plane_sweep_cost_volume, t_to_depth
from accel_shared.gs.depth import CoarseDepth, DepthRefiner, DepthUpsampler
from accel_shared.gs.encoder import ViewEncoder
from accel_shared.gs.gaussians import Gaussians
from accel_shared.gs.heads import GaussianHead, OffsetMode
from accel_shared.gs.transformer import CrossViewTransformer

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "FeedForwardGS", "GSModelConfig", "GSModelOutput", "ViewCompressor"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_FORMAT = "accel_shared.gs.FeedForwardGS"
_CONTEXT_KEYS = ("image", "extrinsics", "intrinsics", "near", "far")


@runtime_checkable
class ViewCompressor(Protocol):
    """What the model calls at the extension point after the per-view features.

    ``compressor(features, extrinsics, num_anchors=K) -> (features, anchor_index)`` with
    features [b, v, C, h, w] (1/4 resolution, positional encoding added), extrinsics [b, v, 4, 4]
    camera-to-world; it returns features [b, K, C, h, w] for the K anchor views and anchor_index [b, K]
    int64 (positions in 0..v−1, the order of the returned features). The model gathers the context
    images, intrinsics, extrinsics and near/far with anchor_index and predicts Gaussians from the anchors
    only. It is called only when K < v (with K >= v there is nothing to compress and all views go on).
    A compressor that is an ``nn.Module`` becomes a submodule: trained, saved and loaded with the model.
    """

    def __call__(
        self, features: torch.Tensor, extrinsics: torch.Tensor, *, num_anchors: int
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class GSModelConfig:
    """Sizes of :class:`FeedForwardGS`. The defaults are sized for CPU work on 64×64 images.

    Attributes:
        feature_dim: channels C of the 1/4-resolution features (the encoder's first stage has C/2);
            a multiple of 4 (positional encoding) and of ``num_heads``.
        encoder_blocks: residual blocks per encoder stage.
        transformer_layers: cross-view transformer layers (0 disables the transformer).
        num_heads: attention heads.
        mlp_ratio: transformer MLP width / C.
        attention_stride: the transformer runs on features pooled by this factor (1: 1/4 resolution,
            2: 1/8, which cuts the attention cost 16× for large images or many views).
        num_depth_candidates: D, the planes of the cost volume (uniform in inverse depth).
        cost_volume_views: correlate each view with this many nearest other views; None for all.
        depth_hidden: channels of the CNN that turns the cost volume into depth logits.
        head_hidden: channels of the full-resolution refinement and Gaussian heads.
        depth_upsampler: how the 1/4-resolution depth reaches full resolution before the refinement:
            "bilinear", or "convex" (learned 3×3 convex combinations that keep depth edges sharp; see
            :class:`~accel_shared.gs.depth.ConvexUpsampler`).
        offset_mode: "free" (unbounded xy offsets, the PM-Loss recipe), "tanh" (bounded by
            ``offset_max_pixels``) or "none" (Gaussians on the pixel rays).
        offset_max_pixels: the bound of the "tanh" mode, in pixels.
        num_anchors: K when a compressor is set and ``forward`` gets no ``num_anchors``.
    """

    feature_dim: int = 64
    encoder_blocks: int = 1
    transformer_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    attention_stride: int = 1
    num_depth_candidates: int = 32
    cost_volume_views: int | None = None
    depth_hidden: int = 64
    head_hidden: int = 32
    depth_upsampler: DepthUpsampler = "bilinear"
    offset_mode: OffsetMode = "free"
    offset_max_pixels: float = 1.0
    num_anchors: int | None = None

    def __post_init__(self) -> None:
        positive = ("feature_dim", "num_heads", "attention_stride", "depth_hidden", "head_hidden")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GSModelConfig.{name} must be a positive integer, got {value!r}")
        for name in ("encoder_blocks", "transformer_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(
                    f"GSModelConfig.{name} must be a non-negative integer, got {getattr(self, name)!r}"
                )
        if self.feature_dim % 4 or self.feature_dim % self.num_heads:
            raise ValueError(
                f"GSModelConfig.feature_dim must be a multiple of 4 and of num_heads ({self.num_heads}), "
                f"got {self.feature_dim}"
            )
        if self.num_depth_candidates < 2:
            raise ValueError(
                f"GSModelConfig.num_depth_candidates must be >= 2, got {self.num_depth_candidates}"
            )
        if self.cost_volume_views is not None and self.cost_volume_views < 1:
            raise ValueError(
                f"GSModelConfig.cost_volume_views must be >= 1 or None, got {self.cost_volume_views}"
            )
        if self.depth_upsampler not in ("bilinear", "convex"):
            raise ValueError(
                f"GSModelConfig.depth_upsampler must be 'bilinear' or 'convex', got {self.depth_upsampler!r}"
            )
        if self.offset_mode not in ("free", "tanh", "none"):
            raise ValueError(
                f"GSModelConfig.offset_mode must be 'free', 'tanh' or 'none', got {self.offset_mode!r}"
            )
        if self.num_anchors is not None and self.num_anchors < 1:
            raise ValueError(f"GSModelConfig.num_anchors must be >= 1 or None, got {self.num_anchors}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GSModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"GSModelConfig: unknown keys {unknown}")
        return cls(**dict(data))


@dataclass
class GSModelOutput:
    """What :meth:`FeedForwardGS.forward` returns; V' = V, or K when a compressor selected anchors.

    Attributes:
        gaussians: B sets of V'·H·W Gaussians, ordered (view, row, column): Gaussian
            ``(v·H + i)·W + j`` comes from pixel (i, j) of view ``context_index[b, v]``, the order of the
            context pointmaps [B, V', H, W, 3] flattened.
        depth: [B, V', H, W] predicted z-depth, inside [near, far] of its view.
        means_per_pixel: [B, V', H, W, 3] the Gaussian means before flattening (same tensor data).
        context_index: [B, V'] int64, the context views the Gaussians come from (arange(V) or anchors).
    """

    gaussians: Gaussians
    depth: torch.Tensor
    means_per_pixel: torch.Tensor
    context_index: torch.Tensor


def _gather_views(value: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """value [B, V, *S], index [B, K] -> [B, K, *S]."""
    expanded = index.reshape(*index.shape, *([1] * (value.dim() - 2))).expand(-1, -1, *value.shape[2:])
    return torch.gather(value, 1, expanded)


class FeedForwardGS(nn.Module):
    """Feed-forward 3D Gaussian Splatting from posed context views (see the module docstring).

    Args:
        config: sizes; :class:`GSModelConfig` defaults if None.
        compressor: optional :class:`ViewCompressor` called at the extension point (or set later with
            :meth:`set_compressor`).
    """

    def __init__(self, config: GSModelConfig | None = None, compressor: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config = config or GSModelConfig()
        c = config.feature_dim
        self.encoder = ViewEncoder(c, config.encoder_blocks)
        self.transformer = CrossViewTransformer(
            c, config.transformer_layers, config.num_heads, config.mlp_ratio, config.attention_stride
        )
        self.coarse_depth = CoarseDepth(config.num_depth_candidates, c, config.depth_hidden)
        self.refiner = DepthRefiner(c, config.head_hidden, config.depth_upsampler)
        self.head = GaussianHead(config.head_hidden, config.offset_mode, config.offset_max_pixels)
        self.compressor: nn.Module | None = None
        if compressor is not None:
            self.set_compressor(compressor)

    def set_compressor(self, compressor: nn.Module | None) -> None:
        """Install (or with None remove) the :class:`ViewCompressor` of the extension point."""
        if compressor is not None and not callable(compressor):
            raise TypeError(f"set_compressor: compressor must be callable, got {type(compressor).__name__}")
        self.compressor = compressor

    def _check_context(self, context: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        missing = [k for k in _CONTEXT_KEYS if k not in context]
        if missing:
            raise ValueError(f"FeedForwardGS: context is missing {missing} (needs {list(_CONTEXT_KEYS)})")
        image, extrinsics, intrinsics, near, far = (context[k] for k in _CONTEXT_KEYS)
        if image.dim() != 5 or image.shape[2] != 3:
            raise ValueError(
                f"FeedForwardGS: context['image'] must be [B, V, 3, H, W], got {list(image.shape)}"
            )
        b, v, _, h, w = image.shape
        expected = {"extrinsics": (b, v, 4, 4), "intrinsics": (b, v, 3, 3), "near": (b, v), "far": (b, v)}
        for name, shape in expected.items():
            if tuple(context[name].shape) != shape:
                raise ValueError(
                    f"FeedForwardGS: context[{name!r}] must have shape {list(shape)}, got {list(context[name].shape)}"
                )
        multiple = 4 * self.config.attention_stride
        if h % multiple or w % multiple:
            raise ValueError(
                f"FeedForwardGS: image height and width must be multiples of {multiple}, got {h}×{w}"
            )
        if not bool(((near > 0) & (far > near)).all()):
            raise ValueError("FeedForwardGS: context needs 0 < near < far for every view")
        return image, extrinsics, intrinsics, near, far

    def _compress(
        self, features: torch.Tensor, extrinsics: torch.Tensor, num_anchors: int | None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Run the compressor; None when there is none or K >= V."""
        if self.compressor is None:
            if num_anchors is not None:
                raise ValueError("FeedForwardGS: num_anchors was given but no compressor is set")
            return None
        k = num_anchors if num_anchors is not None else self.config.num_anchors
        if k is None:
            raise ValueError(
                "FeedForwardGS: a compressor is set but K is unknown: pass num_anchors= or set "
                "GSModelConfig.num_anchors"
            )
        if k < 1:
            raise ValueError(f"FeedForwardGS: num_anchors must be >= 1, got {k}")
        b, v, c, h, w = features.shape
        if k >= v:
            return None
        out, index = self.compressor(features, extrinsics, num_anchors=k)
        if tuple(out.shape) != (b, k, c, h, w):
            raise ValueError(
                f"FeedForwardGS: the compressor returned features {list(out.shape)}, expected {[b, k, c, h, w]}"
            )
        if tuple(index.shape) != (b, k) or index.dtype != torch.int64:
            raise ValueError(
                f"FeedForwardGS: the compressor returned anchor_index {list(index.shape)} {index.dtype}, "
                f"expected [{b}, {k}] torch.int64"
            )
        if bool(((index < 0) | (index >= v)).any()):
            raise ValueError(f"FeedForwardGS: the compressor returned anchor indices outside [0, {v})")
        return out, index

    def forward(
        self, context: Mapping[str, torch.Tensor], *, num_anchors: int | None = None
    ) -> GSModelOutput:
        """Predict Gaussians from the context views.

        Args:
            context: dict with "image" [B, V, 3, H, W] in [0, 1], "extrinsics" [B, V, 4, 4]
                camera-to-world, "intrinsics" [B, V, 3, 3] normalised, "near" and "far" [B, V]
                (other keys are ignored).
            num_anchors: K for the compressor (default ``config.num_anchors``); only with a compressor.
        """
        image, extrinsics, intrinsics, near, far = self._check_context(context)
        b, v, _, height, width = image.shape
        features = self.encoder(image.flatten(0, 1)).unflatten(0, (b, v))
        context_index = torch.arange(v, device=image.device).expand(b, v)

        compressed = self._compress(features, extrinsics, num_anchors)
        if compressed is not None:
            features, context_index = compressed
            image, extrinsics, intrinsics, near, far = (
                _gather_views(x, context_index) for x in (image, extrinsics, intrinsics, near, far)
            )
            v = context_index.shape[1]

        features = self.transformer(features)
        candidates = candidate_t(self.config.num_depth_candidates, device=image.device, dtype=image.dtype)
        cost = plane_sweep_cost_volume(
            features,
            extrinsics,
            intrinsics,
            t_to_depth(candidates.expand(b, v, -1), near, far),
            num_source_views=self.config.cost_volume_views,
        )
        flat_images = image.flatten(0, 1)
        flat_features = features.flatten(0, 1)
        t_coarse = self.coarse_depth(cost.flatten(0, 1), flat_features, candidates)
        t_fine, hidden = self.refiner(flat_images, flat_features, t_coarse)
        depth = t_to_depth(t_fine.view(b, v, height, width), near, far)

        pixels = self.head(hidden, t_fine, flat_images, depth.flatten(0, 1), intrinsics.flatten(0, 1))
        offsets = pixels.offsets.view(b, v, height, width, 2)
        means = unproject_depth(depth, extrinsics, intrinsics, offsets)
        count = v * height * width
        gaussians = Gaussians(
            means=means.reshape(b, count, 3),
            scales=pixels.scales.reshape(b, count, 3),
            rotations=pixels.rotations.reshape(b, count, 4),
            opacities=pixels.opacities.reshape(b, count),
            colors=pixels.colors.reshape(b, count, 3),
        )
        return GSModelOutput(
            gaussians=gaussians, depth=depth, means_per_pixel=means, context_index=context_index
        )

    # -- persistence -------------------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (compressor weights included) into ``path``."""
        from safetensors.torch import save_file

        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": _FORMAT, "config": self.config.to_dict()}
        if self.compressor is not None:
            meta["compressor"] = type(self.compressor).__name__
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": _FORMAT})
        return directory

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        compressor: nn.Module | None = None,
        map_location: str | torch.device = "cpu",
    ) -> FeedForwardGS:
        """Load a model written by :meth:`save_pretrained`.

        Args:
            path: the directory.
            compressor: the compressor to install. Saved compressor weights require one (of the same
                architecture) and are loaded into it; a compressor given for weights saved without one
                keeps its own initialisation (adding a fresh compressor to a pretrained base).
            map_location: device of the loaded weights.
        """
        from safetensors.torch import load_file

        directory = Path(path)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for file in (config_path, weights_path):
            if not file.is_file():
                raise FileNotFoundError(
                    f"from_pretrained: {file} not found (path must come from save_pretrained)"
                )
        meta = json.loads(config_path.read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"from_pretrained: {config_path} is not a {_FORMAT} config")
        model = cls(GSModelConfig.from_dict(meta["config"]), compressor=compressor)
        state = load_file(str(weights_path), device=str(map_location))
        has_compressor_weights = any(k.startswith("compressor.") for k in state)
        if has_compressor_weights and compressor is None:
            raise ValueError(
                f"from_pretrained: {weights_path} holds compressor weights ({meta.get('compressor')}); "
                "pass compressor= to load them"
            )
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # a shape mismatch
            raise ValueError(f"from_pretrained: {weights_path} does not match its config: {e}") from None
        if not has_compressor_weights:
            missing = [k for k in missing if not k.startswith("compressor.")]
        if missing or unexpected:
            raise ValueError(
                f"from_pretrained: {weights_path} does not match the model: missing {missing[:8]}, "
                f"unexpected {unexpected[:8]}"
            )
        if compressor is not None and not has_compressor_weights:
            logger.info(
                "from_pretrained: %s has no compressor weights; the compressor keeps its initialisation", path
            )
        return model.to(map_location)

    def num_parameters(self, *, include_compressor: bool = True) -> int:
        """Number of parameters (optionally without the compressor's)."""
        return sum(
            p.numel()
            for name, p in self.named_parameters()
            if include_compressor or not name.startswith("compressor.")
        )
