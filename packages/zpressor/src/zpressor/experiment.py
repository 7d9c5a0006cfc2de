"""Training, evaluating and measuring feed-forward 3DGS with and without ZPressor on the same data.

Everything here stands on :mod:`accel_shared.gs` (model, training loop, renderer, data); this module adds
the ZPressor variant of the model, its persistence next to the model folder, the novel-view evaluation at
several context-view counts, and the forward time / peak memory curve over the number of input views.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from accel_shared.cli import progress
from accel_shared.gs.data import DataConfig, MultiViewDataset, check_views, load_datasets
from accel_shared.gs.evaluation import evaluate
from accel_shared.gs.model import CONFIG_NAME, FeedForwardGS, GSModelConfig
from accel_shared.gs.train import MODEL_DIR, TrainConfig, TrainResult, train
from zpressor.module import ZPressor

__all__ = [
    "COMPRESSOR_NAME",
    "CompressorConfig",
    "DataConfig",
    "build_model",
    "check_views",
    "evaluate_views",
    "load_datasets",
    "load_model",
    "measure_scaling",
    "save_compressor_config",
    "synthetic_context",
    "train_model",
]

COMPRESSOR_NAME = "zpressor.json"  # written next to config.json / model.safetensors of a saved model


@dataclass
class CompressorConfig:
    """The ZPressor hyper-parameters of a model, and the anchor counts it was trained and is evaluated with.

    Attributes:
        num_layers, num_heads, mlp_ratio, self_attention: :class:`~zpressor.ZPressor` arguments
            (``embed_dim`` is always the model's ``feature_dim``).
        min_anchors, max_anchors: the range of the K drawn per training step (None when unknown).
        num_anchors: K at evaluation (also the model's ``config.num_anchors``).
    """

    num_layers: int = 6
    num_heads: int = 1
    mlp_ratio: float = 4.0
    self_attention: bool = True
    min_anchors: int | None = None
    max_anchors: int | None = None
    num_anchors: int = 6

    def build(self, embed_dim: int) -> ZPressor:
        return ZPressor(
            embed_dim,
            num_heads=self.num_heads,
            num_layers=self.num_layers,
            mlp_ratio=self.mlp_ratio,
            self_attention=self.self_attention,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"CompressorConfig: unknown keys {unknown}")
        return cls(**data)


def build_model(
    model_config: GSModelConfig,
    *,
    compress: bool,
    num_layers: int = 6,
    num_heads: int = 1,
    mlp_ratio: float = 4.0,
    self_attention: bool = True,
    num_anchors: int | None = None,
    seed: int | None = None,
) -> FeedForwardGS:
    """FeedForwardGS, with ``ZPressor(model_config.feature_dim, num_heads, num_layers, mlp_ratio,
    self_attention=...)`` at its extension point when ``compress``.

    With ``seed`` the RNG is seeded first. The base model is built before the compressor, so the same
    seed gives the compressed and the uncompressed model the same base weights. ``num_anchors`` becomes
    the compressed model's ``config.num_anchors`` (its default K).
    """
    if seed is not None:
        torch.manual_seed(seed)
    if not compress:
        return FeedForwardGS(dataclasses.replace(model_config, num_anchors=None))
    config = dataclasses.replace(model_config, num_anchors=num_anchors or model_config.num_anchors)
    model = FeedForwardGS(config)
    model.set_compressor(
        ZPressor(
            config.feature_dim,
            num_heads=num_heads,
            num_layers=num_layers,
            mlp_ratio=mlp_ratio,
            self_attention=self_attention,
        )
    )
    return model


def save_compressor_config(model_dir: str | Path, config: CompressorConfig) -> Path:
    """Write ``zpressor.json`` (the compressor's hyper-parameters) into a saved model folder."""
    path = Path(model_dir) / COMPRESSOR_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return path


def load_model(model_dir: str | Path, *, map_location: str | torch.device = "cpu") -> FeedForwardGS:
    """A model saved by :func:`train_model` (``zpressor train``), with its ZPressor when it has one.

    The folder's ``config.json`` names the compressor class (written by ``save_pretrained``) and
    ``zpressor.json`` holds its hyper-parameters, so the right :class:`~zpressor.ZPressor` is built and
    handed to :meth:`FeedForwardGS.from_pretrained`.
    """
    directory = Path(model_dir)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"--model: no saved model folder at {directory} ({CONFIG_NAME} missing)")
    meta = json.loads(config_path.read_text())
    name = meta.get("compressor")
    if name is None:
        return FeedForwardGS.from_pretrained(directory, map_location=map_location)
    if name != ZPressor.__name__:
        raise ValueError(f"{directory}: the model's compressor is {name!r}, not ZPressor")
    settings_path = directory / COMPRESSOR_NAME
    if not settings_path.is_file():
        raise FileNotFoundError(
            f"{directory} holds ZPressor weights but no {COMPRESSOR_NAME} with its hyper-parameters "
            "(save it with zpressor.experiment.save_compressor_config)"
        )
    settings = CompressorConfig.from_dict(json.loads(settings_path.read_text()))
    embed_dim = int(meta["config"]["feature_dim"])
    return FeedForwardGS.from_pretrained(
        directory, compressor=settings.build(embed_dim), map_location=map_location
    )


def train_model(
    model_config: GSModelConfig,
    train_set: Dataset,
    train_config: TrainConfig,
    *,
    compressor: CompressorConfig | None,
    eval_set: Dataset | None = None,
) -> tuple[FeedForwardGS, TrainResult]:
    """Build the model (seeded by ``train_config.seed``) and train it.

    With ``compressor`` the model has a ZPressor, K is drawn per step from
    [``min_anchors``, ``max_anchors``] (fixed ``num_anchors`` when they are None) and evaluation uses
    ``num_anchors``; ``zpressor.json`` is written into ``out_dir/model``. Without, the same base model
    (same seed, data order and steps) is trained on all context views.
    """
    settings = compressor or CompressorConfig()
    model = build_model(
        model_config,
        compress=compressor is not None,
        num_layers=settings.num_layers,
        num_heads=settings.num_heads,
        mlp_ratio=settings.mlp_ratio,
        self_attention=settings.self_attention,
        num_anchors=settings.num_anchors,
        seed=train_config.seed,
    )
    if compressor is not None:
        train_config = dataclasses.replace(
            train_config,
            min_anchors=compressor.min_anchors,
            max_anchors=compressor.max_anchors,
            eval_num_anchors=compressor.num_anchors,
        )
    else:
        train_config = dataclasses.replace(
            train_config, min_anchors=None, max_anchors=None, eval_num_anchors=None
        )
    result = train(model, train_set, train_config, eval_dataset=eval_set)
    if compressor is not None:
        save_compressor_config(Path(train_config.out_dir) / MODEL_DIR, compressor)
    return model, result


@torch.no_grad()
def evaluate_views(
    model: FeedForwardGS,
    root: str | Path,
    views: Sequence[int],
    *,
    num_anchors: int | None,
    num_target: int = 4,
    test_fraction: float = 0.2,
    test_targets: Literal["inside", "outside"] = "inside",
    scenes: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    show_progress: bool = True,
) -> dict[int, dict[str, float]]:
    """Novel-view metrics of ``model`` for each number of context views in ``views``.

    For every count V a held-out :class:`MultiViewDataset` (fixed view sampler, seed ``seed``) gives V
    context and ``num_target`` target views per scene, the targets inside the context span or outside it
    (``test_targets``); :func:`accel_shared.gs.evaluation.evaluate` renders the targets. ``num_anchors``
    is the K of a model with a compressor (ignored without one; with V <= K all views are used).
    Returns ``{V: {"psnr", "ssim", ["lpips"], "depth_*", "num_scenes", "seconds"}}``.
    """
    counts = [int(v) for v in views]
    if not counts:
        raise ValueError("--views: give at least one number of context views")
    for v in counts:
        check_views(root, v, num_target, what="--views")
    model = model.to(device).eval()
    k = num_anchors if model.compressor is not None else None
    results: dict[int, dict[str, float]] = {}
    for v in counts:
        dataset = MultiViewDataset(
            root,
            num_context=v,
            num_target=num_target,
            split="test" if scenes is None else "all",
            test_fraction=test_fraction,
            scenes=list(scenes) if scenes is not None else None,
            view_sampler="fixed",
            seed=seed,
            targets=test_targets,
        )
        start = time.perf_counter()
        metrics = evaluate(model, dataset, batch_size=batch_size, num_anchors=k, show_progress=show_progress)
        metrics["seconds"] = time.perf_counter() - start
        results[v] = metrics
    return results


# ------------------------------------------------------------------------------------- scaling curve


def _look_at(position: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Camera-to-world [V, 4, 4] (OpenCV axes, world y down) of cameras at ``position`` [V, 3]."""
    forward = target - position
    forward = forward / forward.norm(dim=-1, keepdim=True)
    down = torch.tensor([0.0, 1.0, 0.0]).expand_as(forward)
    right = torch.cross(down, forward, dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.cross(forward, right, dim=-1)
    c2w = torch.eye(4).repeat(position.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, down, forward, position
    return c2w


def synthetic_context(
    num_views: int,
    image_size: int,
    *,
    batch: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """A context batch for speed and memory measurements: random images seen by ``num_views`` cameras
    on a forward-facing arc (an orbit segment of ±35° around a point 4 units ahead, radius 4, with a
    small random jitter), 60° field of view, near 0.5 and far 10."""
    g = torch.Generator().manual_seed(seed)
    angle = torch.linspace(-math.radians(35), math.radians(35), num_views)
    centre = torch.tensor([0.0, 0.0, 4.0])
    position = torch.stack(
        [4.0 * torch.sin(angle), torch.zeros_like(angle), 4.0 - 4.0 * torch.cos(angle)], -1
    )
    position = position + 0.02 * torch.randn(num_views, 3, generator=g)
    extrinsics = _look_at(position, centre.expand_as(position))
    f = 0.5 / math.tan(math.radians(30))
    intrinsics = torch.tensor([[f, 0.0, 0.5], [0.0, f, 0.5], [0.0, 0.0, 1.0]]).expand(num_views, 3, 3)
    context = {
        "image": torch.rand(batch, num_views, 3, image_size, image_size, generator=g),
        "extrinsics": extrinsics.expand(batch, -1, -1, -1),
        "intrinsics": intrinsics.expand(batch, -1, -1, -1),
        "near": torch.full((batch, num_views), 0.5),
        "far": torch.full((batch, num_views), 10.0),
    }
    return {k: v.contiguous().to(device) for k, v in context.items()}


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_MMAP_EXACT = 128 * 1024  # every block of 128 KiB or more is mapped on its own and unmapped when freed
_MMAP_STEADY = 32 * 1024 * 1024  # glibc's dynamic threshold settles at most here


def _set_mmap_threshold(nbytes: int) -> bool:
    """glibc ``mallopt(M_MMAP_THRESHOLD, nbytes)``; False where there is no glibc."""
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, nbytes))
    except (OSError, AttributeError):
        return False


def measure_point(spec: dict[str, Any]) -> dict[str, float]:
    """Forward time and peak memory of one (model, view count), in this process.

    ``spec``: ``model_config`` (dict), ``compress``, ``num_layers``, ``num_heads``, ``num_anchors``,
    ``views``, ``image_size``, ``warmup``, ``repeats``, ``device``, ``seed``, ``memory``. Random weights:
    the cost of a forward does not depend on their values. Memory is measured first, on the first
    forward at ``views`` after a warm-up forward on tiny images (that first forward is never
    timed; ``warmup`` more run before the ``repeats`` timed ones): on CUDA the peak of
    ``torch.cuda.max_memory_allocated`` above what was allocated before; on the CPU the peak resident
    set size (:func:`accel_shared.bench.peak_rss_mib`) above the resident size before, in a fresh process, with
    glibc's mmap threshold fixed at 128 KiB during that forward (see below), then 32 MiB for the timing.
    """
    from accel_shared.bench import peak_rss_mib, time_callable

    device = torch.device(spec["device"])
    cpu_memory = device.type == "cpu" and spec.get("memory", True)
    # With glibc's default dynamic threshold, memory freed by one tensor may stay in the heap and be reused
    # by the next, so the resident size lags the live memory by a varying amount (±5 MiB run to run at
    # 48×48). With a fixed 128 KiB threshold every large block is returned when freed: the resident size
    # then follows the live memory and the peak repeats to within about 0.5 MiB.
    exact = cpu_memory and _set_mmap_threshold(_MMAP_EXACT)
    model = build_model(
        GSModelConfig.from_dict(spec["model_config"]),
        compress=spec["compress"],
        num_layers=spec["num_layers"],
        num_heads=spec["num_heads"],
        seed=spec["seed"],
    )
    model = model.to(device).eval()
    views, size, k = int(spec["views"]), int(spec["image_size"]), int(spec["num_anchors"])
    anchors = k if spec["compress"] else None
    context = synthetic_context(views, size, seed=spec["seed"], device=device)
    # Warm-up (library initialisation, thread pools, kernels) on a tiny input that still runs every part
    # (the compressor needs V > K), small enough that the memory it leaves cached does not matter.
    tiny = min(size, 8 * model.config.attention_stride)
    warm = synthetic_context(min(views, k + 1), tiny, seed=spec["seed"], device=device)

    def forward(batch: dict[str, torch.Tensor] = context) -> None:
        with torch.no_grad():
            model(batch, num_anchors=anchors)

    forward(warm)
    peak_mib = math.nan
    if not spec.get("memory", True):
        forward()  # the first forward at this view count is never timed
    elif device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        forward()
        torch.cuda.synchronize(device)
        peak_mib = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    else:
        peak_mib = peak_rss_mib(forward)
    if exact:  # time in the regime the default allocator reaches after a few forwards
        _set_mmap_threshold(_MMAP_STEADY)
    timing = time_callable(forward, warmup=int(spec["warmup"]), repeats=int(spec["repeats"]), device=device)
    return {"forward_ms": timing.median_s * 1e3, "peak_mib": peak_mib, "repeats": timing.repeats}


_CHILD = (
    "import json, sys\n"
    "from zpressor.experiment import measure_point\n"
    "print(json.dumps(measure_point(json.loads(sys.argv[1]))))\n"
)


def measure_scaling(
    model_config: GSModelConfig,
    views_list: Sequence[int],
    *,
    num_anchors: int = 6,
    image_size: int = 48,
    num_layers: int = 6,
    num_heads: int = 1,
    warmup: int = 0,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    memory: bool = True,
    isolate: bool | None = None,
    seed: int = 0,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Forward time (inference, no grad, median of ``repeats``) and peak memory per number of input views,
    for the uncompressed model and the model with ZPressor (K = ``num_anchors``), on one scene of
    :func:`synthetic_context` at ``image_size``² with random weights.

    Each point runs in a fresh Python process when ``isolate`` (default: on the CPU, where peak memory
    is the process's peak resident size); on CUDA in this process.

    Returns:
        one dict per (views, model): ``views``, ``model`` ("uncompressed" or "zpressor"), ``forward_ms``,
        ``peak_mib``, in the order of ``views_list``, uncompressed first.
    """
    device = torch.device(device)
    if isolate is None:
        isolate = device.type == "cpu"
    counts = [int(v) for v in views_list]
    if not counts or min(counts) < 1:
        raise ValueError(f"--views: need positive view counts, got {list(views_list)}")
    points = [(v, compress) for v in counts for compress in (False, True)]
    rows: list[dict[str, Any]] = []
    for views, compress in progress(points, desc="scaling", total=len(points), enabled=show_progress):
        spec = {
            "model_config": model_config.to_dict(),
            "compress": compress,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "num_anchors": num_anchors,
            "views": views,
            "image_size": image_size,
            "warmup": warmup,
            "repeats": repeats,
            "device": str(device),
            "seed": seed,
            "memory": memory,
        }
        if isolate:
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True
            )
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
                raise RuntimeError(f"measuring {views} views (compress={compress}) failed: {tail[0]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            result = measure_point(spec)
        rows.append({"views": views, "model": "zpressor" if compress else "uncompressed", **result})
    return rows
