"""The ``accel-shared`` command: tiny models and machine description.

Usage::

accel-shared tiny-models list [--json]
accel-shared tiny-models save NAME DIR [--seed N]
accel-shared machine [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from accel_shared.cli import add_command, add_common_args, emit, make_parser, run_cli

PROG = "accel-shared"

_EPILOG = """\
examples:
  accel-shared tiny-models list
  accel-shared tiny-models save qwen2 ./tiny-qwen2
  accel-shared machine --json
"""

_TINY_EPILOG = """\
examples:
  accel-shared tiny-models list --json
  accel-shared tiny-models save qwen2-vl ./tiny-qwen2-vl --seed 1

A saved folder loads with the model class's from_pretrained, e.g.
  transformers.Qwen2VLForConditionalGeneration.from_pretrained("./tiny-qwen2-vl")
"""


def _tiny_list(args: argparse.Namespace) -> int:
    from accel_shared.tiny_models import list_tiny_models

    specs = list_tiny_models()
    rows = [
        {"name": s.name, "library": s.library, "class": s.model_class, "description": s.description}
        for s in specs
    ]
    if args.json:
        print(json.dumps(rows))
        return 0
    columns = ["name", "library", "class", "description"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
    print("  ".join(c.upper().ljust(widths.get(c, 0)) for c in columns).rstrip())
    for row in rows:
        print("  ".join(row[c].ljust(widths.get(c, 0)) for c in columns).rstrip())
    return 0


def _tiny_save(args: argparse.Namespace) -> int:
    from accel_shared.tiny_models import get_spec, save_tiny_model

    get_spec(args.name)  # unknown names fail before anything is written
    path = save_tiny_model(args.name, args.dir, seed=args.seed)
    emit({"name": args.name, "path": str(path), "seed": args.seed}, as_json=args.json)
    return 0


def _machine(args: argparse.Namespace) -> int:
    from accel_shared.bench import describe_machine, machine_summary

    info = describe_machine()
    if args.json:
        print(json.dumps(info))
    else:
        print(machine_summary(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        PROG,
        "Shared tools of the accel packages: tiny test models and a machine description.",
        epilog=_EPILOG,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    tiny = add_command(
        commands,
        "tiny-models",
        help="list or save the tiny test models",
        description="Tiny, seeded versions of the model classes the packages target (no download needed).",
        epilog=_TINY_EPILOG,
    )
    tiny_commands = tiny.add_subparsers(dest="tiny_command", metavar="ACTION", required=True)
    list_parser = add_command(
        tiny_commands,
        "list",
        help="show the tiny models",
        description="Show the tiny models: name, library, model class, description.",
        epilog="example:\n  accel-shared tiny-models list --json\n",
    )
    add_common_args(list_parser, device=False, dtype=False, seed=False)
    list_parser.set_defaults(func=_tiny_list)

    save_parser = add_command(
        tiny_commands,
        "save",
        help="save_pretrained a tiny model into a folder",
        description="Build tiny model NAME with weights from --seed and save_pretrained it into DIR.",
        epilog="example:\n  accel-shared tiny-models save qwen2 ./tiny-qwen2 --seed 0\n",
    )
    save_parser.add_argument(
        "name", metavar="NAME", help="tiny model name (see: accel-shared tiny-models list)"
    )
    save_parser.add_argument("dir", metavar="DIR", help="output folder (created if missing)")
    add_common_args(save_parser, device=False, dtype=False)
    save_parser.set_defaults(func=_tiny_save)

    machine = add_command(
        commands,
        "machine",
        help="describe this machine (CPU, memory, GPU, versions)",
        description="Describe this machine as benchmark reports record it.",
        epilog="example:\n  accel-shared machine --json\n",
    )
    add_common_args(machine, device=False, dtype=False, seed=False)
    machine.set_defaults(func=_machine)
    return parser


def _run(args: argparse.Namespace) -> int:
    code: int = args.func(args)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``accel-shared`` / ``python -m accel_shared``; returns the exit code."""
    return run_cli(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
