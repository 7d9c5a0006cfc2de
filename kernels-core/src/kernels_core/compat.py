"""Version compatibility between kernels-core and the packages built on it.

Each package declares the kernels-core range it was built against in its own ``pyproject.toml``
(for example ``kernels-core>=0.1,<0.2``) and calls :func:`check_compatibility` at import. The
range is read back from the installed package metadata, so it has one source of truth.
"""

from __future__ import annotations

import importlib.metadata
import re

from kernels_core._version import __version__

_REQUIREMENT = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*\(?\s*([^;)]*?)\s*\)?\s*(;.*)?$"
)
_CLAUSE = re.compile(r"^(~=|==|!=|<=|>=|<|>)\s*([0-9][0-9A-Za-z.*+!-]*)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _release(version: str) -> tuple[int, ...]:
    """The numeric release part of a version: '0.1.0rc1+cpu' -> (0, 1, 0)."""
    match = re.match(r"^\s*v?(\d+(?:\.\d+)*)", version)
    if match is None:
        raise ValueError(f"cannot parse version {version!r}")
    return tuple(int(p) for p in match.group(1).split("."))


def _compare(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    width = max(len(a), len(b))
    a = a + (0,) * (width - len(a))
    b = b + (0,) * (width - len(b))
    return (a > b) - (a < b)


def version_satisfies(version: str, specifier: str) -> bool:
    """Whether ``version`` meets a comma-separated PEP 440 style specifier such as ``>=0.1,<0.2``.

    Supports ``== != < <= > >= ~=`` on release numbers and ``==X.Y.*`` prefixes; pre-release and
    local suffixes are ignored. An empty specifier accepts everything.
    """
    have = _release(version)
    for clause in filter(None, (c.strip() for c in specifier.split(","))):
        match = _CLAUSE.match(clause)
        if match is None:
            raise ValueError(f"unsupported version specifier {clause!r} in {specifier!r}")
        op, target = match.groups()
        if op in ("==", "!=") and target.endswith(".*"):
            prefix = _release(target[:-2])
            padded = have + (0,) * max(0, len(prefix) - len(have))
            equal = padded[: len(prefix)] == prefix
            ok = equal if op == "==" else not equal
        elif op == "~=":
            want = _release(target)
            if len(want) < 2:
                raise ValueError(f"'~=' needs at least two release numbers, got {clause!r}")
            upper = (*want[:-2], want[-2] + 1)  # ~=1.4.5 means >=1.4.5, <1.5
            ok = _compare(have, want) >= 0 and _compare(have, upper) < 0
        else:
            cmp = _compare(have, _release(target))
            ok = {"==": cmp == 0, "!=": cmp != 0, "<": cmp < 0, "<=": cmp <= 0, ">": cmp > 0, ">=": cmp >= 0}[
                op
            ]
        if not ok:
            return False
    return True


def required_range(distribution: str) -> str | None:
    """The kernels-core specifier that the installed ``distribution`` declares, or None."""
    try:
        requirements = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None or _canonical(match.group(1)) != "kernels-core":
            continue
        if match.group(3) and "extra" in match.group(3):
            continue
        return match.group(2).replace(" ", "")
    return None


def check_compatibility(distribution: str, kernels_core_version: str = __version__) -> None:
    """Raise ImportError when ``distribution`` was built for another kernels-core version.

    Call it at the top of a package's ``__init__``. Running from a source tree without installed
    metadata skips the check.

    Raises:
        ImportError: with the declared range, the installed version and the fix.
    """
    specifier = required_range(distribution)
    if specifier is None or version_satisfies(kernels_core_version, specifier):
        return
    raise ImportError(
        f"{distribution} requires kernels-core{specifier}, but kernels-core {kernels_core_version} is installed. "
        f"Install a matching version: pip install 'kernels-core{specifier}'"
    )
