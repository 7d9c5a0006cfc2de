"""Point-set ops: ``kernels_core::nearest_neighbor`` and the Chamfer distance built on it."""

from __future__ import annotations

from typing import NamedTuple

import torch

from kernels_core import _checks
from kernels_core._library import library


def _check_points(name: str, points: object) -> torch.Tensor:
    layout = "[B, N, 3]" if name == "x" else "[B, M, 3]"
    _checks.check_tensor(name, points, 3, layout)
    assert isinstance(points, torch.Tensor)
    if points.shape[-1] != 3:
        raise ValueError(f"{name} must hold 3-D points {layout}, got shape {list(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {points.dtype}")
    return points


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    _check_points("x", x)
    _check_points("y", y)
    _checks.check_same_device("x", x, y=y)
    _checks.check_dim("y", y.shape[0], x.shape[0], "the batch size (dim 0) of y, as in x,")


def _outputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dist = torch.empty(x.shape[:2], dtype=torch.float32, device=x.device)
    index = torch.empty(x.shape[:2], dtype=torch.int64, device=x.device)
    return dist, index


def _run(x: torch.Tensor, y: torch.Tensor, on_cuda: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_pair(x, y)
    dist, index = _outputs(x)
    if x.shape[1] == 0:
        return dist, index
    if y.shape[1] == 0:
        raise ValueError("y must hold at least one point (dim 1 > 0) to find nearest neighbours in")
    x, y = x.float(), y.float()
    lib = library()
    p = lib.NearestNeighborParams()
    p.x, p.y, p.dist, p.index = x.data_ptr(), y.data_ptr(), dist.data_ptr(), index.data_ptr()
    p.batch, p.n, p.m = x.shape[0], x.shape[1], y.shape[1]
    p.x_stride, p.y_stride = x.stride(), y.stride()
    if on_cuda:
        lib.nearest_neighbor_cuda(p, torch.cuda.current_stream(x.device).cuda_stream, x.device.index)
    else:
        lib.nearest_neighbor_cpu(p, torch.get_num_threads())
    return dist, index


@torch.library.custom_op("kernels_core::nearest_neighbor", mutates_args=(), device_types="cpu")
def _nearest_neighbor_op(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _run(x, y, on_cuda=False)


@_nearest_neighbor_op.register_kernel("cuda")
def _nearest_neighbor_cuda(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _run(x, y, on_cuda=True)


@_nearest_neighbor_op.register_fake
def _nearest_neighbor_fake(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_pair(x, y)
    return _outputs(x)


def nearest_neighbor(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every point of ``x``, its nearest point in ``y`` (squared Euclidean distance).

    Args:
        x: [B, N, 3] floating point (computed in float32).
        y: [B, M, 3], same device, M > 0.

    Returns:
        dist [B, N] float32 (squared distance) and index [B, N] int64 into y's dim 1; on ties
        the lowest index. Not differentiable: use :func:`chamfer_distance` for a loss.
    """
    return torch.ops.kernels_core.nearest_neighbor(x, y)


class ChamferDistance(NamedTuple):
    """Result of :func:`chamfer_distance`.

    Attributes:
        loss: [B], per-item Chamfer distance.
        index_xy: [B, N] int64, nearest y for every x point.
        index_yx: [B, M] int64, nearest x for every y point (None when single-directional).
    """

    loss: torch.Tensor
    index_xy: torch.Tensor
    index_yx: torch.Tensor | None


SQRT_EPS = 1e-12
"""Added under the square root of ``squared=False`` distances: a finite gradient at distance 0."""


def _directed(source: torch.Tensor, target: torch.Tensor, squared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (squared) distance from each source point to its nearest target, and the indices."""
    _, index = nearest_neighbor(source.detach(), target.detach())
    nearest = torch.gather(target, 1, index.unsqueeze(-1).expand(-1, -1, target.shape[-1]))
    distance = ((source - nearest) ** 2).sum(-1)
    if not squared:
        distance = (distance + SQRT_EPS).sqrt()
    return distance.mean(-1), index


def chamfer_distance(
    x: torch.Tensor, y: torch.Tensor, *, single_directional: bool = False, squared: bool = True
) -> ChamferDistance:
    """Chamfer distance between batched point sets, differentiable in x and y.

    loss[b] = mean_i min_j |x_bi - y_bj|^2  (+ mean_j min_i |y_bj - x_bi|^2 unless
    ``single_directional``). PM-Loss uses the single-directional form from predicted Gaussian
    centres (x) to the teacher's pointmap (y). ``squared=False`` averages the distances
    |x_bi - y_bj| themselves (sqrt(d² + 1e-12)), so every point's gradient has the same size.

    The nearest-neighbour search, the O(N M) part, runs in the compiled kernels; the loss and its
    gradient are then computed from the found pairs with torch ops in O(N + M). That gradient is
    exact: the assignment is piecewise constant, so d loss / dx_i = 2 (x_i - y_nn(i)) / N and the
    matching terms scatter to y.

    Args:
        x: [B, N, 3]; y: [B, M, 3], same device; N, M > 0.
        single_directional: only the x -> y term.
        squared: average squared distances (default) or distances.

    Returns:
        :class:`ChamferDistance` (loss [B], index_xy [B, N], index_yx [B, M] or None).
    """
    _check_pair(x, y)
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(f"x and y must hold at least one point each, got {x.shape[1]} and {y.shape[1]}")
    loss, index_xy = _directed(x, y, squared)
    if single_directional:
        return ChamferDistance(loss, index_xy, None)
    back, index_yx = _directed(y, x, squared)
    return ChamferDistance(loss + back, index_xy, index_yx)
