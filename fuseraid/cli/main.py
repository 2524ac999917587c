"""`fuseraid` command line: one module per command under fuseraid/cli/, each with
add_parser(subparsers) and run(args) -> int."""

from __future__ import annotations

import argparse
import importlib
import sys

from fuseraid.errors import FuseraidError

# Command modules, in the order `fuseraid --help` lists them.
COMMANDS = [
    "create",
    "examine",
    "mount",
    "status",
    "manage",
    "check",
    "grow",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fuseraid", description="Software RAID in user space")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"fuseraid.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"fuseraid.cli.{name}":
                continue  # command not built yet
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except FuseraidError as e:
        print(f"fuseraid: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
