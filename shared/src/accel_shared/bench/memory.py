"""Peak CPU memory of one call, from the kernel's own counters (Linux).

``getrusage``'s ``ru_maxrss`` is a lifetime maximum that a child process even inherits from its
parent across fork and exec, so it can report the parent's size instead of the call's. Here the
peak is reset first (``/proc/self/clear_refs``, Linux 4.0+) and read back as ``VmHWM``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["peak_rss_mib"]

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is missing from {_STATUS}")


def peak_rss_mib(fn: Callable[[], object]) -> float:
    """Peak resident memory (MiB) while ``fn()`` runs, above the resident size just before it.

    Memory the allocator keeps cached from earlier work is reused first and not counted; run the
    call in a fresh process (after a small warm-up) for a number that means "what this call needs".
    Raises RuntimeError where the peak cannot be reset (not Linux, or a kernel before 4.0).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
    except OSError as error:
        raise RuntimeError(f"cannot reset the peak resident size here ({error})") from error
    before = _status_kib("VmRSS")
    fn()
    return max(_status_kib("VmHWM") - before, 0) / 1024
