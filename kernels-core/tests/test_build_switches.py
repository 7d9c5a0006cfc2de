"""KC_CUDA=OFF builds a CPU-only module that imports and explains the missing CUDA kernels."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1]


def _cmake_args() -> list[str]:
    pybind11 = pytest.importorskip("pybind11")
    return [f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"]


@pytest.mark.slow
def test_cpu_only_build_reports_no_cuda(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    build = tmp_path / "build"
    env = dict(os.environ, KC_CUDA="OFF")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = subprocess.run(
        ["cmake", "-S", str(SOURCE), "-B", str(build), *generator, *_cmake_args()],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    assert "KC_CUDA=OFF, building CPU kernels only" in configure.stdout
    compile_ = subprocess.run(
        ["cmake", "--build", str(build), "--parallel", "2"], capture_output=True, text=True, timeout=900
    )
    assert compile_.returncode == 0, compile_.stdout + compile_.stderr
    module = next(build.glob("_C*.so"))
    # Register the CPU-only module as kernels_core._C before the package loads it.
    code = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("kernels_core._C", MODULE_PATH)
sys.modules["kernels_core._C"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sys.modules["kernels_core._C"])
import kernels_core, torch
from kernels_core._library import library
info = kernels_core.info()
assert info['compiled'] and info['build']['with_cuda'] is False, info
assert info['build']['cuda_architectures'] == []
assert info['ops']['block_sparse_attention'] == {'cpu': True, 'cuda': False}
q = torch.randn(1, 1, 8, 8); mask = torch.ones(1, 1, 1, 1, dtype=torch.bool)
expected = kernels_core.reference.block_sparse_attention(q, q, q, mask)
torch.testing.assert_close(kernels_core.block_sparse_attention(q, q, q, mask), expected)
try:
    library().block_sparse_attention_forward_cuda(library().BlockSparseAttentionParams(), 0, 0)
except RuntimeError as exc:
    assert 'built without CUDA' in str(exc), exc
else:
    raise AssertionError('expected a RuntimeError')
print('ok')
""".replace("MODULE_PATH", repr(str(module)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr
