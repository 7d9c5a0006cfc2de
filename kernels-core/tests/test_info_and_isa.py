"""Build/device report, the CLI, and run-time CPU instruction-set selection."""

import json
import os
import subprocess
import sys

import pytest
import torch

import kernels_core
from kernels_core.system_info import arch_runs_on


def test_info_reports_build_and_ops():
    data = kernels_core.info()
    assert data["compiled"] and data["version"] == kernels_core.__version__
    assert data["build"]["cpu_isas"][0] == "generic"
    assert data["cpu"]["isa_active"] in data["cpu"]["isas_supported"]
    assert data["ops"]["block_sparse_attention"]["cpu"] is True
    if data["build"]["with_cuda"]:
        assert {"80-real", "90a-real"} <= set(data["build"]["cuda_architectures"])
    if not torch.cuda.is_available():
        assert data["cuda"]["gpus"] == []
        assert data["ops"]["block_sparse_attention"]["cuda"] is False


@pytest.mark.parametrize(
    ("arch", "capability", "runs"),
    [
        ("80-real", (8, 0), True),
        ("80-real", (8, 6), True),
        ("80-real", (9, 0), False),
        ("90a-real", (9, 0), True),
        ("90a-real", (10, 0), False),
        ("90-virtual", (10, 0), True),
        ("90-virtual", (8, 9), False),
    ],
)
def test_arch_runs_on(arch, capability, runs):
    assert arch_runs_on(arch, capability) is runs


def _run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kernels_core", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_info_json():
    result = _run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["version"] == kernels_core.__version__


def test_cli_help_and_bad_command():
    assert "info" in _run_cli("--help").stdout
    result = _run_cli("nonsense")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_set_cpu_isa_errors_and_restores():
    before = kernels_core.cpu_isa()
    with pytest.raises(ValueError, match="unknown CPU instruction set 'sse9'"):
        kernels_core.set_cpu_isa("sse9")
    with kernels_core.use_cpu_isa("generic"):
        assert kernels_core.cpu_isa() == "generic"
    assert kernels_core.cpu_isa() == before


def test_env_var_selects_isa():
    env = dict(os.environ, KC_CPU_ISA="generic")
    code = "import kernels_core; print(kernels_core.cpu_isa())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.stdout.strip().splitlines()[-1] == "generic"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU driver")
def test_cuda_entry_point_without_driver_raises_clearly():
    lib = kernels_core._library.library()
    if not lib.build_info()["with_cuda"]:
        pytest.skip("CPU-only build: covered by test_cpu_only_build_reports_no_cuda")
    q = torch.randn(1, 1, 8, 8)
    out, lse = torch.empty_like(q), torch.empty(1, 1, 8)
    mask = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    geometry = kernels_core.ops.attention_checks.AttentionGeometry(1, 1, 1, 8, 8, 8, 64, 64)
    params = kernels_core.ops.attention._fill_params(
        lib.BlockSparseAttentionParams(),
        geometry,
        q,
        q,
        q,
        out,
        lse,
        mask,
        None,
        None,
        None,
        None,
        False,
        1.0,
    )
    with pytest.raises(RuntimeError, match=r"block_sparse_attention \(CUDA\): selecting the device"):
        lib.block_sparse_attention_forward_cuda(params, 0, 0)
