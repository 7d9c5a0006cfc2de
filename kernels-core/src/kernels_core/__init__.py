"""kernels-core: compiled CPU and CUDA kernels behind ``torch.library`` custom ops.

Public API::

    kernels_core.block_sparse_attention(q, k, v, block_mask, block_size=(64, 64), causal=False,
                                        scale=None, return_lse=False)
    kernels_core.block_sparse_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, ...)
    kernels_core.decode_attention(q, k_cache, v_cache, kv_indices=..., cache_seqlens=...)
    kernels_core.predict_block_indices(q, k, gamma=0.9)   # the mask predictor, or step by step:
    kernels_core.block_scores / recall_block_counts / select_top_blocks
    kernels_core.chamfer_distance(x, y, single_directional=False)  # point sets [B, N, 3]
    kernels_core.rasterize_gaussians(means, quats, scales, opacities, colors, viewmats, Ks, W, H)
    kernels_core.project_gaussians / intersect_tiles / rasterize_to_pixels   # its three stages
    kernels_core.quantize_fp8_e4m3(x, scale)      # float8_e4m3fn, saturating at ±448
    kernels_core.fp8_block_sparse_attention(q, k, v, block_mask, block_size=(64, 64))
    kernels_core.tile_reorder / tile_restore / sliding_tile_block_indices   # 3D video tiles
    kernels_core.reference        # pure-torch reference of every op
    kernels_core.masks            # block-mask helpers
    kernels_core.info()           # build and device report (also: python -m kernels_core info)
    kernels_core.check_compatibility("my-package")   # for packages built on kernels-core
"""

from kernels_core import masks, reference
from kernels_core._library import KernelsCoreBuildError
from kernels_core._version import __version__
from kernels_core.compat import check_compatibility, version_satisfies
from kernels_core.cpu import cpu_isa, set_cpu_isa, supported_cpu_isas, use_cpu_isa
from kernels_core.ops import (
    E4M3_MAX,
    Fp8AttentionInputs,
    block_scores,
    block_sparse_attention,
    block_sparse_attention_varlen,
    chamfer_distance,
    channel_scales,
    decode_attention,
    dequantize_fp8,
    fake_quantize_fp8_e4m3,
    fp8_block_sparse_attention,
    group_scales,
    intersect_tiles,
    nearest_neighbor,
    predict_block_indices,
    project_gaussians,
    quantize_attention_inputs,
    quantize_fp8_e4m3,
    rasterize_gaussians,
    rasterize_to_pixels,
    recall_block_counts,
    select_top_blocks,
    sliding_tile_block_indices,
    tile_grid,
    tile_key_valid,
    tile_reorder,
    tile_restore,
    tiled_length,
)
from kernels_core.system_info import info

__all__ = [
    "E4M3_MAX",
    "Fp8AttentionInputs",
    "KernelsCoreBuildError",
    "__version__",
    "block_scores",
    "block_sparse_attention",
    "block_sparse_attention_varlen",
    "chamfer_distance",
    "channel_scales",
    "check_compatibility",
    "cpu_isa",
    "decode_attention",
    "dequantize_fp8",
    "fake_quantize_fp8_e4m3",
    "fp8_block_sparse_attention",
    "group_scales",
    "info",
    "intersect_tiles",
    "masks",
    "nearest_neighbor",
    "predict_block_indices",
    "project_gaussians",
    "quantize_attention_inputs",
    "quantize_fp8_e4m3",
    "rasterize_gaussians",
    "rasterize_to_pixels",
    "recall_block_counts",
    "reference",
    "select_top_blocks",
    "set_cpu_isa",
    "sliding_tile_block_indices",
    "supported_cpu_isas",
    "tile_grid",
    "tile_key_valid",
    "tile_reorder",
    "tile_restore",
    "tiled_length",
    "use_cpu_isa",
    "version_satisfies",
]
