"""The kernels-core ops: torch.library custom ops in the ``kernels_core`` namespace."""

from kernels_core.ops.attention import block_sparse_attention, block_sparse_attention_varlen
from kernels_core.ops.block_selection import (
    block_scores,
    predict_block_indices,
    recall_block_counts,
    select_top_blocks,
)
from kernels_core.ops.decode import decode_attention
from kernels_core.ops.gaussian_projection import intersect_tiles, project_gaussians
from kernels_core.ops.geometry import ChamferDistance, chamfer_distance, nearest_neighbor
from kernels_core.ops.rasterize import RasterizeOutput, rasterize_gaussians, rasterize_to_pixels

__all__ = [
    "ChamferDistance",
    "RasterizeOutput",
    "block_scores",
    "block_sparse_attention",
    "block_sparse_attention_varlen",
    "chamfer_distance",
    "decode_attention",
    "intersect_tiles",
    "nearest_neighbor",
    "predict_block_indices",
    "project_gaussians",
    "rasterize_gaussians",
    "rasterize_to_pixels",
    "recall_block_counts",
    "select_top_blocks",
]
