"""Which CPU instruction set the kernels use.

Every CPU kernel is compiled for several instruction sets (generic x86-64 or the host's
baseline, AVX2 + FMA, AVX-512) and the best one the CPU supports is chosen at run time. The
environment variable ``KC_CPU_ISA`` (generic, avx2, avx512) or :func:`set_cpu_isa` selects a
lower one, e.g. to test every code path on one machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from kernels_core._library import library


def supported_cpu_isas() -> list[str]:
    """Instruction sets compiled in and usable on this CPU, lowest first."""
    return list(library().supported_cpu_isas())


def cpu_isa() -> str:
    """The instruction set the CPU kernels use now."""
    return str(library().active_cpu_isa())


def set_cpu_isa(name: str) -> None:
    """Use the ``name`` build of the CPU kernels; ValueError if it is unknown or unsupported here."""
    library().set_cpu_isa(name)


@contextlib.contextmanager
def use_cpu_isa(name: str) -> Iterator[None]:
    """Run the enclosed code with the ``name`` build of the CPU kernels."""
    previous = cpu_isa()
    set_cpu_isa(name)
    try:
        yield
    finally:
        set_cpu_isa(previous)
