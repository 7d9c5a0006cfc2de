"""Describe the machine a benchmark ran on (CPU, memory, OS, Python, torch, GPUs)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from kernels_core.system_info import cpu_model

__all__ = ["describe_machine", "machine_summary"]


def _memory_gib() -> float | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)  # kB -> GiB
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "name": props.name,
                "compute_capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 1024**3, 1),
            }
        )
    return gpus


def describe_machine() -> dict[str, Any]:
    """A JSON-serialisable description of this machine.

    Keys: ``cpu``, ``logical_cores``, ``torch_threads``, ``memory_gib``, ``os``, ``python``, ``torch``,
    ``cuda`` (torch's CUDA version or ``"none"``), ``gpus`` (list of ``{name, compute_capability,
    memory_gib}``) and ``gpu`` (the GPU names joined, or ``"none"``).
    """
    gpus = _gpus()
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "gpus": gpus,
        "gpu": ", ".join(f"{g['name']} (sm_{g['compute_capability'].replace('.', '')})" for g in gpus)
        or "none",
    }


def machine_summary(info: dict[str, Any]) -> str:
    """One line from :func:`describe_machine`'s dict, e.g.
    ``"<cpu> (2 cores, 2 torch threads, 7.8 GiB) | GPU: none | Linux 6.1 | Python 3.11.9 | torch 2.13.0"``.
    """
    memory = f", {info['memory_gib']} GiB" if info.get("memory_gib") is not None else ""
    return (
        f"{info.get('cpu', 'unknown CPU')} ({info.get('logical_cores')} cores, "
        f"{info.get('torch_threads')} torch threads{memory}) | GPU: {info.get('gpu', 'none')} | "
        f"{info.get('os', '?')} | Python {info.get('python', '?')} | torch {info.get('torch', '?')}"
    )
