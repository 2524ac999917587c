"""`fuseraid create --level L --raid-devices N [--chunk SIZE] [--layout NAME] [--name NAME]
[--assume-clean] [--force] MEMBER...`: write md v1.2 superblocks like `mdadm --create`
and initialise parity/mirrors. MEMBER may be "missing" for a degraded array."""

from __future__ import annotations

import argparse
import sys

import trio

from fuseraid.cli.sizes import parse_size
from fuseraid.engine.create import create


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "create", help="create an array on member files or block devices",
        description="Create an md array (metadata 1.2, md's layouts) over the members, "
        "in role order, then compute parity / copy mirrors unless --assume-clean. "
        "A member named 'missing' leaves that role empty (degraded).")
    p.add_argument("--level", "-l", required=True, help="0, 1, 4, 5, 6 or 10 (raidN too)")
    p.add_argument("--raid-devices", "-n", type=int, required=True, metavar="N",
                   help="number of roles")
    p.add_argument("--chunk", "-c", metavar="SIZE",
                   help="chunk size: KiB, or with a K/M/G suffix (default 512K)")
    p.add_argument("--layout", "-p", metavar="NAME",
                   help="layout as mdadm names it (left-symmetric, n2, f2, o2, ...)")
    p.add_argument("--name", "-N", default="", help="array name")
    p.add_argument("--assume-clean", action="store_true",
                   help="skip the initial parity/mirror sync")
    p.add_argument("--force", action="store_true",
                   help="overwrite members that carry another array's superblock")
    p.add_argument("members", nargs="+", metavar="MEMBER")
    p.set_defaults(run=run)


def _warn(msg: str) -> None:
    print(f"fuseraid: warning: {msg}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    chunk = parse_size(args.chunk) if args.chunk else None
    trio.run(lambda: create(
        args.members, level=args.level, raid_disks=args.raid_devices, chunk=chunk,
        layout=args.layout, name=args.name, assume_clean=args.assume_clean,
        force=args.force, warn=_warn,
    ))
    print(f"fuseraid: array created on {len(args.members)} members")
    return 0
