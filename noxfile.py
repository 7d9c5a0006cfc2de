"""Every workflow of the monorepo. ``nox -l`` lists the sessions; README.md documents each.

    nox -s tests                       CPU tests of every distribution
    nox -s tests -- kernels-core       one distribution (names: see DISTRIBUTIONS), or `repo`
    nox -s tests -- kernels-core -- -k causal     extra pytest arguments after a second `--`
    nox -s lint                        ruff, and mypy on every distribution's package
    nox -s build                       wheels and sdists of every distribution into dist/
    nox -s install [-- NAME]           a fresh venv installs NAME from dist/ with no index
    nox -s demo                        every package's demo, one summary table
    nox -s bench                       the benchmarks, written to docs/benchmarks/
    nox -s gpu                         CUDA build, gpu tests and GPU benchmarks (scripts/gpu_check.sh)

Test environments pin torch and the other tools through constraints.txt; the distributions
themselves declare ranges. kernels-core is compiled once per session into build/<session>/ and
rebuilt incrementally on later runs.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nox

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
DIST_DIR = ROOT / "dist"
BENCH_DIR = ROOT / "docs" / "benchmarks"
# Third-party packages the tests, demos and benchmarks need beyond each distribution's own requirements.
TEST_TOOLS = (
    "pytest",
    "transformers",
    "diffusers",
    "accelerate",
    "safetensors",
    "cuda-python",
    "gsplat",
    "matplotlib",  # the plots of the benchmark pages (their scripts are tested end to end)
)
# Build requirements of kernels-core, installed into the session so its build can be incremental.
BUILD_TOOLS = ("scikit-build-core", "pybind11", "ninja")


@dataclass(frozen=True)
class Distribution:
    """One installable distribution of the repo."""

    name: str  # as on PyPI: kernels-core, accel-shared, omnisparse, ...
    path: Path  # folder with its pyproject.toml
    import_name: str
    cli: str | None  # console script, if any
    has_demo: bool

    @property
    def tests(self) -> Path:
        return self.path / "tests"


def _discover() -> list[Distribution]:
    """kernels-core, accel-shared, then every packages/<name> that has a pyproject.toml (bottom up)."""
    folders = [ROOT / "kernels-core", ROOT / "shared", *sorted((ROOT / "packages").glob("*/"))]
    found = []
    for folder in folders:
        pyproject = folder / "pyproject.toml"
        if not pyproject.is_file():
            continue
        project = tomllib.loads(pyproject.read_text())["project"]
        scripts = project.get("scripts", {})
        cli = project["name"] if project["name"] in scripts else None
        import_name = project["name"].replace("-", "_")  # kernels-core -> kernels_core
        # kernels-core has a demo; every method package must have one (`<cli> demo`).
        found.append(
            Distribution(project["name"], folder, import_name, cli, project["name"] != "accel-shared")
        )
    return found


DISTRIBUTIONS = _discover()
BY_NAME = {d.name: d for d in DISTRIBUTIONS}


def _install_torch(session: nox.Session) -> None:
    # torch first and pinned: an unpinned torch requirement pulls a multi-GB CUDA build.
    session.install(*CONSTRAINTS, "torch")


def _install_repo(session: nox.Session) -> None:
    """torch, test tools, and every distribution of this checkout.

    kernels-core is built without isolation into build/nox/<session>/ so reruns are incremental.
    """
    _install_torch(session)
    session.install(*CONSTRAINTS, *TEST_TOOLS, *BUILD_TOOLS, "tqdm", "numpy")
    build_dir = ROOT / "build" / "nox" / session.name
    session.install(
        "--no-build-isolation",
        "--no-deps",
        f"--config-settings=build-dir={build_dir / 'kernels-core'}",
        str(ROOT / "kernels-core"),
    )
    others = [str(d.path) for d in DISTRIBUTIONS if d.name != "kernels-core"]
    if others:
        session.install(*CONSTRAINTS, *others)


def _split_posargs(posargs: list[str]) -> tuple[list[str], list[str]]:
    """`NAME ... -- PYTEST_ARGS` -> (names, pytest args)."""
    if "--" in posargs:
        cut = posargs.index("--")
        return posargs[:cut], posargs[cut + 1 :]
    names = [a for a in posargs if a in BY_NAME or a == "repo"]
    return names, [a for a in posargs if a not in names]


@nox.session
def tests(session: nox.Session) -> None:
    """CPU tests of every distribution, or only those named (and `repo` for tests/)."""
    names, pytest_args = _split_posargs(session.posargs)
    unknown = [n for n in names if n not in BY_NAME and n != "repo"]
    if unknown:
        session.error(f"unknown distribution(s) {unknown}; known: {sorted(BY_NAME)} and 'repo'")
    _install_repo(session)
    targets = [BY_NAME[n].tests for n in names if n != "repo"] if names else [d.tests for d in DISTRIBUTIONS]
    if not names or "repo" in names:
        targets.append(ROOT / "tests")
    for target in targets:
        if target.is_dir():
            session.run("pytest", str(target), *pytest_args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) on the whole tree; mypy on every distribution's package."""
    _install_torch(session)
    session.install(*CONSTRAINTS, "ruff", "mypy")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", *(str(d.path / "src" / d.import_name) for d in DISTRIBUTIONS))


@nox.session
def build(session: nox.Session) -> None:
    """Wheels and sdists of every distribution into dist/ (isolated builds, as pip does them)."""
    session.install(*CONSTRAINTS, "build")
    shutil.rmtree(DIST_DIR, ignore_errors=True)
    for dist in DISTRIBUTIONS:
        session.run("python", "-m", "build", "--outdir", str(DIST_DIR), str(dist.path))
    session.log("built: " + ", ".join(sorted(p.name for p in DIST_DIR.iterdir())))


def _wheel_for(name: str) -> Path:
    pattern = name.replace("-", "_") + "-*.whl"
    wheels = sorted(DIST_DIR.glob(pattern))
    if not wheels:
        raise FileNotFoundError(f"no wheel for {name} in dist/: run `nox -s build` first")
    return wheels[-1]


def _third_party_requirements(name: str) -> list[str]:
    """Requirements of `name` and its in-repo dependencies that come from outside the repo."""
    ours = {re.sub(r"[-_.]+", "-", d.name).lower() for d in DISTRIBUTIONS}
    pending, seen, external = [name], set(), []
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        with zipfile.ZipFile(_wheel_for(current)) as wheel:
            metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            lines = wheel.read(metadata).decode().splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:") or "extra ==" in line:
                continue
            requirement = line.split(":", 1)[1].strip()
            dep = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()
            if dep in ours:
                pending.append(dep)
            else:
                external.append(requirement)
    return sorted(set(external))


@nox.session
def install(session: nox.Session) -> None:
    """A fresh venv installs one package from dist/ with no index, as `pip install <name>` would.

    Third-party requirements (torch, numpy, ...) come from the package index first; then
    `pip install --no-index --find-links dist NAME` must find NAME and every distribution of
    this repo it depends on in dist/. Default NAME: the top-most distribution built.
    """
    name = session.posargs[0] if session.posargs else DISTRIBUTIONS[-1].name
    if name not in BY_NAME:
        session.error(f"unknown distribution {name!r}; known: {sorted(BY_NAME)}")
    dist = BY_NAME[name]
    _install_torch(session)
    session.install(*CONSTRAINTS, *_third_party_requirements(name))
    session.install("--no-index", "--find-links", str(DIST_DIR), name)
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    code = (
        f"import {dist.import_name} as m, kernels_core; print(m.__name__, m.__version__, 'from', m.__file__)"
    )
    session.run("python", "-c", code)
    if dist.cli:
        session.run(dist.cli, "--help")
    session.run("kernels-core", "info")


def _summary_table(rows: list[dict]) -> str:
    headers = ["method", "baseline", "accelerated", "speed ratio", "quality"]
    cells = [
        [
            r["method"],
            r["baseline"],
            r["accelerated"],
            f"{r['speed_ratio']:.2f}x",
            f"{r['quality_metric']} = {r['quality_value']:.3g}",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


@nox.session
def demo(session: nox.Session) -> None:
    """Runs every implemented package's demo on embedded tiny defaults; prints one summary table."""
    _install_repo(session)
    rows = []
    for dist in DISTRIBUTIONS:
        if not dist.has_demo:
            continue
        output = session.run(dist.cli or dist.name, "demo", "--json", silent=True)
        rows.append(json.loads(output.strip().splitlines()[-1]))
    print("\n" + _summary_table(rows) + "\n")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks (CPU here; add `-- --device cuda` on a GPU): each writes docs/benchmarks/."""
    _install_repo(session)
    scripts = sorted(ROOT.glob("kernels-core/benchmarks/bench_*.py")) + sorted(
        ROOT.glob("packages/*/benchmarks/bench_*.py")
    )
    for script in scripts:
        session.run("python", str(script), "--out", str(BENCH_DIR), *session.posargs)


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """CUDA build, `gpu` tests and GPU benchmarks with the python on PATH (needs torch with CUDA, nvcc,
    CMake, pybind11). Says so and stops when no GPU is visible. Same as scripts/gpu_check.sh."""
    session.run("bash", str(ROOT / "scripts" / "gpu_check.sh"), *session.posargs, external=True)
