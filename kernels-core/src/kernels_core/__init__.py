"""kernels-core: compiled CPU and CUDA kernels behind ``torch.library`` custom ops.

Public API::

    kernels_core.block_sparse_attention(q, k, v, block_mask, block_size=(64, 64), causal=False,
                                        scale=None, return_lse=False)
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
from kernels_core.ops import block_sparse_attention, block_sparse_attention_varlen
from kernels_core.system_info import info

__all__ = [
    "KernelsCoreBuildError",
    "__version__",
    "block_sparse_attention",
    "block_sparse_attention_varlen",
    "check_compatibility",
    "cpu_isa",
    "info",
    "masks",
    "reference",
    "set_cpu_isa",
    "supported_cpu_isas",
    "use_cpu_isa",
    "version_satisfies",
]
