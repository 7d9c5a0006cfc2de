"""Code only imports downward: kernels_core <- accel_shared <- packages/<name>."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.name for p in (ROOT / "packages").glob("*/") if (p / "pyproject.toml").is_file())
PACKAGE_IMPORTS = {name.replace("-", "_") for name in PACKAGES}
LAYERS = {
    "kernels-core/src/kernels_core": {"accel_shared", *PACKAGE_IMPORTS},
    "shared/src/accel_shared": PACKAGE_IMPORTS,
}
LAYERS.update({f"packages/{name}/src": PACKAGE_IMPORTS - {name.replace("-", "_")} for name in PACKAGES})


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_no_upward_or_sideways_imports(layer):
    forbidden = LAYERS[layer]
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_roots(path) & forbidden)
        for path in (ROOT / layer).rglob("*.py")
        if _imported_roots(path) & forbidden
    }
    assert not offenders, f"{layer} may not import {sorted(forbidden)}: {offenders}"


def test_accel_shared_declares_its_kernels_core_range():
    """The range in shared/pyproject.toml is what accel_shared checks at import."""
    import importlib.metadata

    import kernels_core
    from kernels_core.compat import required_range

    try:
        importlib.metadata.version("accel-shared")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("accel-shared is not installed (source checkout)")
    specifier = required_range("accel-shared")
    assert specifier is not None
    assert kernels_core.version_satisfies(kernels_core.__version__, specifier)
    with pytest.raises(ImportError, match="accel-shared requires kernels-core"):
        kernels_core.check_compatibility("accel-shared", kernels_core_version="99.0.0")
