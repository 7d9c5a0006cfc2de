"""What this kernels-core build contains and what it can run here.

``kernels_core.info()`` returns a dict; ``python -m kernels_core info`` prints it.
"""

from __future__ import annotations

import platform
import re
from typing import Any

import torch

from kernels_core._library import library, load_error
from kernels_core._version import __version__

# Ops and the devices their compiled kernels exist for.
OPS: dict[str, tuple[str, ...]] = {
    "block_sparse_attention": ("cpu", "cuda"),
    "block_sparse_attention_backward": ("cpu", "cuda"),
    "block_sparse_attention_varlen": ("cpu", "cuda"),
    "decode_attention": ("cpu", "cuda"),
    "block_scores": ("cpu", "cuda"),
    "nearest_neighbor": ("cpu", "cuda"),
    "rasterize_to_pixels": ("cpu",),  # on CUDA, gsplat (see accel_shared.gs.render)
}


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus_from_cuda_python() -> list[dict[str, Any]] | None:
    """Visible GPUs through cuda-python, or None when cuda-python is not installed."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        return []
    gpus = []
    for index in range(count):
        err, prop = cudart.cudaGetDeviceProperties(index)
        if err != cudart.cudaError_t.cudaSuccess:
            continue
        name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        gpus.append({"index": index, "name": name.rstrip("\x00"), "capability": (prop.major, prop.minor)})
    return gpus


def _gpus_from_torch() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    return [
        {"index": i, "name": torch.cuda.get_device_name(i), "capability": torch.cuda.get_device_capability(i)}
        for i in range(torch.cuda.device_count())
    ]


def arch_runs_on(arch: str, capability: tuple[int, int]) -> bool:
    """Whether code built for CMake CUDA architecture ``arch`` (e.g. "80-real", "90a-real",
    "90-virtual") runs on a GPU of compute ``capability``.

    SASS runs on the same major version with an equal or higher minor ("a" variants only on the
    exact chip); PTX is JIT-compiled on any equal or newer GPU.
    """
    match = re.fullmatch(r"(\d+)(\d)(a|f)?(?:-(real|virtual))?", arch)
    if match is None:
        return False
    major, minor, variant, kind = int(match.group(1)), int(match.group(2)), match.group(3), match.group(4)
    if variant == "a":
        return capability == (major, minor)
    if kind == "virtual":
        return capability >= (major, minor)
    return capability[0] == major and capability[1] >= minor


def info() -> dict[str, Any]:
    """Version, compiler, CUDA version and architectures compiled in, CPU instruction sets, visible
    GPUs with compute capability, and which ops run on which device here."""
    error = load_error()
    result: dict[str, Any] = {"version": __version__, "torch": torch.__version__, "compiled": error is None}
    if error is not None:
        result["error"] = error
        result["ops"] = {op: {"cpu": False, "cuda": False} for op in OPS}
        return result

    lib = library()
    build = dict(lib.build_info())
    runtime = dict(lib.cuda_runtime_info())
    gpus = _gpus_from_cuda_python()
    gpu_source = "cuda-python"
    if gpus is None:
        gpus, gpu_source = _gpus_from_torch(), "torch"
    for gpu in gpus:
        gpu["supported"] = any(arch_runs_on(a, tuple(gpu["capability"])) for a in build["cuda_architectures"])

    result["build"] = build
    result["cpu"] = {
        "model": cpu_model(),
        "isas_supported": list(lib.supported_cpu_isas()),
        "isa_active": str(lib.active_cpu_isa()),
        "threads": torch.get_num_threads(),
    }
    result["cuda"] = {
        "runtime_version": runtime["runtime_version"],
        "driver_version": runtime["driver_version"],
        "status": runtime["status"],
        "gpus": gpus,
        "gpus_listed_by": gpu_source,
    }
    cuda_usable = build["with_cuda"] and any(g["supported"] for g in gpus)
    result["ops"] = {
        op: {"cpu": "cpu" in devices, "cuda": "cuda" in devices and cuda_usable}
        for op, devices in OPS.items()
    }
    return result


def format_info(data: dict[str, Any]) -> str:
    """Human-readable rendering of :func:`info`."""
    lines = [f"kernels-core {data['version']} (torch {data['torch']})"]
    if not data["compiled"]:
        lines.append(f"  compiled module: MISSING - {data['error']}")
        return "\n".join(lines)
    build, cpu, cuda = data["build"], data["cpu"], data["cuda"]
    lines.append(f"  C++ compiler:      {build['cxx_compiler']}")
    if build["with_cuda"]:
        lines.append(f"  CUDA:              {build['cuda_version']} ({build['cuda_compiler']})")
        lines.append(f"  CUDA architectures: {', '.join(build['cuda_architectures'])}")
    else:
        lines.append("  CUDA:              not built (CPU-only build)")
    lines.append(f"  CPU:               {cpu['model']}")
    lines.append(
        f"  CPU ISA:           {cpu['isa_active']} (supported: {', '.join(cpu['isas_supported'])}; "
        f"compiled: {', '.join(build['cpu_isas'])}), {cpu['threads']} threads"
    )
    if cuda["gpus"]:
        for gpu in cuda["gpus"]:
            cc = "{}.{}".format(*gpu["capability"])
            ok = "supported" if gpu["supported"] else "NOT covered by the compiled architectures"
            lines.append(f"  GPU {gpu['index']}:             {gpu['name']} (compute {cc}, {ok})")
    else:
        lines.append(f"  GPUs:              none visible ({cuda['status']})")
    lines.append("  ops:")
    for op, devices in data["ops"].items():
        where = ", ".join(d for d, ok in devices.items() if ok) or "nowhere"
        lines.append(f"    {op:<28} {where}")
    return "\n".join(lines)
