"""Loads the compiled module ``kernels_core._C`` once, on first use.

Importing :mod:`kernels_core` never fails because of the compiled part: :func:`info` reports
why it is missing, and calling an op raises a :class:`RuntimeError` that says how to build it.
There is no silent fallback to the pure-torch reference (it is orders of magnitude slower and
needs memory quadratic in the sequence length); call :mod:`kernels_core.reference` explicitly
for that.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

from kernels_core._version import __version__


class KernelsCoreBuildError(RuntimeError):
    """The compiled module is missing, broken, or from another kernels-core version."""


@functools.cache
def _load() -> tuple[ModuleType | None, str | None]:
    try:
        module = importlib.import_module("kernels_core._C")
    except ImportError as exc:
        return None, (
            f"the compiled module kernels_core._C could not be imported ({exc}); install kernels-core from a "
            "wheel or build it with `pip install ./kernels-core` (needs CMake and a C++17 compiler)"
        )
    built = getattr(module, "__version__", "unknown")
    if built != __version__:
        return None, (
            f"the compiled module kernels_core._C is version {built} but the Python package is {__version__}: "
            "a stale build; reinstall kernels-core"
        )
    return module, None


def library() -> ModuleType:
    """The compiled module; raises :class:`KernelsCoreBuildError` with the reason if unavailable."""
    module, error = _load()
    if module is None:
        raise KernelsCoreBuildError(error)
    return module


def load_error() -> str | None:
    """Why the compiled module is unavailable, or None when it loaded."""
    return _load()[1]
