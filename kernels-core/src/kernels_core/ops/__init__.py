"""The kernels-core ops: torch.library custom ops in the ``kernels_core`` namespace."""

from kernels_core.ops.attention import block_sparse_attention, block_sparse_attention_varlen

__all__ = ["block_sparse_attention", "block_sparse_attention_varlen"]
