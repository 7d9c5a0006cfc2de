"""The kernels-core ops: torch.library custom ops in the ``kernels_core`` namespace."""

from kernels_core.ops.attention import block_sparse_attention, block_sparse_attention_varlen
from kernels_core.ops.block_selection import (
    block_scores,
    predict_block_indices,
    recall_block_counts,
    select_top_blocks,
)
from kernels_core.ops.decode import decode_attention
from kernels_core.ops.fp8 import (
    E4M3_MAX,
    Fp8AttentionInputs,
    channel_scales,
    dequantize_fp8,
    fake_quantize_fp8_e4m3,
    fp8_block_sparse_attention,
    group_scales,
    quantize_attention_inputs,
    quantize_fp8_e4m3,
)
from kernels_core.ops.gaussian_projection import intersect_tiles, project_gaussians
from kernels_core.ops.geometry import ChamferDistance, chamfer_distance, nearest_neighbor
from kernels_core.ops.rasterize import RasterizeOutput, rasterize_gaussians, rasterize_to_pixels
from kernels_core.ops.tiles import (
    sliding_tile_block_indices,
    tile_grid,
    tile_key_valid,
    tile_reorder,
    tile_restore,
    tiled_length,
)

__all__ = [
    "E4M3_MAX",
    "ChamferDistance",
    "Fp8AttentionInputs",
    "RasterizeOutput",
    "block_scores",
    "block_sparse_attention",
    "block_sparse_attention_varlen",
    "chamfer_distance",
    "channel_scales",
    "decode_attention",
    "dequantize_fp8",
    "fake_quantize_fp8_e4m3",
    "fp8_block_sparse_attention",
    "group_scales",
    "intersect_tiles",
    "nearest_neighbor",
    "predict_block_indices",
    "project_gaussians",
    "quantize_attention_inputs",
    "quantize_fp8_e4m3",
    "rasterize_gaussians",
    "rasterize_to_pixels",
    "recall_block_counts",
    "select_top_blocks",
    "sliding_tile_block_indices",
    "tile_grid",
    "tile_key_valid",
    "tile_reorder",
    "tile_restore",
    "tiled_length",
]
