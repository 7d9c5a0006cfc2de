"""Pure-torch references for every kernels-core op.

Each function here has the same signature and semantics as the op of the same name in
:mod:`kernels_core`, is written for clarity rather than speed (it materialises full score
matrices), and is what the tests compare the compiled kernels against.
"""

from kernels_core.reference.attention import (
    attention_mask_from_blocks,
    block_sparse_attention,
    block_sparse_attention_backward,
    block_sparse_attention_varlen,
)
from kernels_core.reference.block_selection import block_scores, recall_block_counts, select_top_blocks
from kernels_core.reference.decode import decode_attention
from kernels_core.reference.fp8 import fp8_attention, quantize_fp8_e4m3
from kernels_core.reference.geometry import chamfer_distance, nearest_neighbor
from kernels_core.reference.rasterize import rasterize_gaussians, rasterize_to_pixels
from kernels_core.reference.tiles import sliding_tile_token_mask, tile_reorder, tile_restore

__all__ = [
    "attention_mask_from_blocks",
    "block_scores",
    "block_sparse_attention",
    "block_sparse_attention_backward",
    "block_sparse_attention_varlen",
    "chamfer_distance",
    "decode_attention",
    "fp8_attention",
    "nearest_neighbor",
    "quantize_fp8_e4m3",
    "rasterize_gaussians",
    "rasterize_to_pixels",
    "recall_block_counts",
    "select_top_blocks",
    "sliding_tile_token_mask",
    "tile_reorder",
    "tile_restore",
]
