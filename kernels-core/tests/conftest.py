import pytest
import torch

import kernels_core

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
