"""`fuseraid check MOUNTPOINT [--repair]`: scrub the mounted array (read every stripe,
compare data with parity or mirrors), like md's check/repair sync_action."""

from __future__ import annotations

import argparse
import json

from fuseraid.front import control


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="scrub a mounted array: compare parity/mirrors",
                       description="Read the whole array and count stripes whose parity or "
                       "mirrors disagree (like md's mismatch_cnt). With --repair, "
                       "rewrite them from the data. Exit status 2 if mismatches were found "
                       "and not repaired.")
    p.add_argument("--repair", action="store_true", help="rewrite mismatched parity/mirrors")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = control.request(args.mountpoint, "check", repair=args.repair)
    n = int(result["mismatches"])
    if args.json:
        print(json.dumps(result))
    else:
        verb = "repaired" if args.repair else "found"
        print(f"{args.mountpoint}: check done, {n} mismatches {verb}")
    return 2 if n and not args.repair else 0
