import pytest
import torch

import kernels_core
from kernels_core import masks

TOLERANCES = {
    torch.float32: {"atol": 2e-5, "rtol": 2e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 1.6e-2, "rtol": 1.6e-2},
}


@pytest.fixture(params=kernels_core.supported_cpu_isas())
def cpu_isa(request: pytest.FixtureRequest):
    """Runs the test once per CPU instruction-set build usable on this machine."""
    with kernels_core.use_cpu_isa(request.param):
        yield request.param


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# (batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, block_size): odd head dims, lengths that
# are not multiples of the block, unequal block sizes, grouped-query attention, Sq != Sk.
SHAPES = [
    (1, 1, 1, 64, 64, 64, (64, 64)),
    (2, 4, 2, 100, 130, 33, (64, 64)),
    (1, 2, 1, 200, 150, 64, (32, 48)),
    (1, 3, 3, 65, 65, 128, (64, 64)),
    (1, 2, 2, 7, 300, 17, (16, 128)),
    (2, 8, 1, 129, 257, 80, (128, 64)),
    (1, 4, 4, 300, 90, 1, (64, 32)),
    (1, 2, 1, 31, 31, 255, (8, 8)),
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def shape_id(shape) -> str:
    return "x".join(map(str, shape[:6])) + f"-b{shape[6][0]}x{shape[6][1]}"


def attention_inputs(shape, dtype, generator, density=0.5, requires_grad=False):
    """q, k, v (in ``dtype``), a random block mask of ``density`` and the block size for ``shape``."""
    b, hq, hkv, sq, sk, d, block = shape
    q = torch.randn(b, hq, sq, d, generator=generator).to(dtype).requires_grad_(requires_grad)
    k = torch.randn(b, hkv, sk, d, generator=generator).to(dtype).requires_grad_(requires_grad)
    v = torch.randn(b, hkv, sk, d, generator=generator).to(dtype).requires_grad_(requires_grad)
    mask = masks.random_block_mask(b, hq, sq, sk, density, block, generator=generator)
    return q, k, v, mask, block
