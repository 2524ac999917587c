"""`fuseraid examine MEMBER...`: decode each member's md superblock and print it the way
`mdadm --examine` does."""

from __future__ import annotations

import argparse
import os
import sys

from fuseraid.errors import FuseraidError
from fuseraid.superblock.codec import read_superblock
from fuseraid.superblock.examine import render


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "examine", help="print members' md superblocks (like mdadm --examine)",
        description="Decode the md v1.2 superblock of each MEMBER and print it in "
        "mdadm --examine format.")
    p.add_argument("members", nargs="+", metavar="MEMBER", help="member file or block device")
    p.add_argument("--homehost", default=None,
                   help="host name for the '(local to host ...)' note (default: this host)")
    p.set_defaults(run=run)
    return p


def _size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def run(args: argparse.Namespace) -> int:
    """Print every member that decodes; report the others in one line each. Exit 1 if
    any member failed."""
    status = 0
    for path in args.members:
        try:
            sb = read_superblock(path)
            text = render(sb, path, device_size=_size(path), homehost=args.homehost)
        except FuseraidError as e:
            print(f"fuseraid: {e}", file=sys.stderr)
            status = 1
            continue
        sys.stdout.write(text)
    return status
