"""Command-line conventions every package follows.

- Parsers come from :func:`make_parser` (help text keeps its line breaks, so epilogs can hold examples)
  and get the common options from :func:`add_common_args`: ``--device auto|cpu|cuda|cuda:N``,
  ``--dtype float32|float16|bfloat16``, ``--seed N``, ``--json`` and ``--debug``.
- :func:`run_cli` turns expected failures (:class:`CLIError`, ``ValueError``, ``TypeError``,
  ``FileNotFoundError``, ``ImportError``) into one line ``"<prog>: error: <message>"`` on stderr and exit
  code 2; ``--debug`` shows the traceback instead. Ctrl-C exits with 130.
- Demos report a :class:`DemoResult` through :func:`emit`: one JSON line with ``--json`` (the keys are the
  field names, collected into summary tables), an aligned key/value block otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch

__all__ = [
    "CLIError",
    "DemoResult",
    "add_command",
    "add_common_args",
    "emit",
    "make_parser",
    "progress",
    "resolve_device",
    "resolve_dtype",
    "run_cli",
    "seed_everything",
]

T = TypeVar("T")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class CLIError(Exception):
    """A failure to show the user as one line (no traceback)."""


def make_parser(prog: str, description: str, *, epilog: str | None = None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` that keeps the line breaks of ``description`` and ``epilog``."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_command(
    commands: Any, name: str, *, help: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand of ``commands`` (from ``parser.add_subparsers()``) with the same formatting as
    :func:`make_parser`: ``help`` is its line in the parent's ``--help``, ``epilog`` holds examples."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _device_arg(value: str) -> str:
    if not _DEVICE_RE.match(value):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def add_common_args(
    parser: argparse.ArgumentParser,
    *,
    device: bool = True,
    dtype: bool = True,
    seed: bool = True,
    json: bool = True,
) -> argparse.ArgumentParser:
    """Add the shared options to ``parser`` (``--debug`` always); returns ``parser``."""
    group = parser.add_argument_group("common options")
    if device:
        group.add_argument(
            "--device",
            type=_device_arg,
            default="auto",
            help="auto (cuda if available, else cpu), cpu, cuda or cuda:N (default: auto)",
        )
    if dtype:
        group.add_argument(
            "--dtype", choices=list(_DTYPES), default="float32", help="compute dtype (default: float32)"
        )
    if seed:
        group.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    if json:
        group.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    group.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def run_cli(
    main: Callable[[argparse.Namespace], int | None],
    parser: argparse.ArgumentParser,
    argv: list[str] | None = None,
) -> int:
    """Parse ``argv`` with ``parser`` and run ``main(args)``; returns the exit code.

    ``main`` returning ``None`` means 0. Usage errors exit 2 (argparse prints them); expected failures
    print one line and return 2 unless ``--debug`` is given, where they are re-raised.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    debug = bool(getattr(args, "debug", False))
    try:
        code = main(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, FileNotFoundError, ImportError) as e:
        if debug:
            raise
        print(f"{parser.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0 if code is None else int(code)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` are checked."""
    if not isinstance(name, str) or not _DEVICE_RE.match(name):
        raise CLIError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CLIError(f"--device {name}: only {count} CUDA device(s) present (cuda:0..cuda:{count - 1})")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    """``"float32"`` / ``"float16"`` / ``"bfloat16"`` -> ``torch.dtype``."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise CLIError(f"--dtype: expected one of {', '.join(_DTYPES)}, got {name!r}") from None


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (all devices)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise CLIError(f"--seed: expected an integer in [0, 2**32), got {seed!r}")
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is a dependency, but seeding must not be what breaks without it
        pass
    else:
        np.random.seed(seed)  # noqa: NPY002  (code under a demo may use the legacy global RNG)
    torch.manual_seed(seed)


def progress(
    iterable: Iterable[T], *, desc: str, total: int | None = None, enabled: bool = True
) -> Iterator[T]:
    """A tqdm progress bar on stderr over ``iterable`` (plain iteration when not ``enabled``)."""
    from tqdm.auto import tqdm

    return iter(
        tqdm(iterable, desc=desc, total=total, disable=not enabled, file=sys.stderr, dynamic_ncols=True)
    )


@dataclass
class DemoResult:
    """What a package's demo reports. ``speed_ratio`` = baseline time / accelerated time (> 1: faster)."""

    method: str
    baseline: str
    accelerated: str
    baseline_time_s: float
    accelerated_time_s: float
    speed_ratio: float
    quality_metric: str
    quality_value: float
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def emit(result: dict[str, Any] | DemoResult, *, as_json: bool) -> None:
    """Print ``result``: one JSON line (``as_json``) or aligned ``key : value`` lines."""
    data = result.to_dict() if isinstance(result, DemoResult) else result
    if not isinstance(data, dict):
        raise TypeError(f"emit: result must be a dict or DemoResult, got {type(result).__name__}")
    if as_json:
        print(json.dumps(data, default=str))
        return
    width = max((len(str(k)) for k in data), default=0)
    for key, value in data.items():
        print(f"{str(key).ljust(width)} : {_format(value)}")
