"""`fuseraid fail|remove|add MOUNTPOINT MEMBER`: change the members of a mounted array
(mark one failed, take a failed one out, add a spare that rebuilds), like mdadm --manage.
A member is named by its path or its role number."""

from __future__ import annotations

import argparse
import os

from fuseraid.front import control

ACTIONS = {
    "fail": "mark a member failed (the array runs degraded)",
    "remove": "remove a failed or spare member from the array",
    "add": "add a member file or device as a spare; it rebuilds a missing role",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    for action, text in ACTIONS.items():
        p = sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("mountpoint", metavar="MOUNTPOINT")
        p.add_argument("member", metavar="MEMBER",
                       help="member path" + ("" if action == "add" else " or role number"))
        p.set_defaults(run=run, action=action)


def run(args: argparse.Namespace) -> int:
    member = args.member
    if not member.isdigit():
        member = os.path.abspath(member)
    result = control.request(args.mountpoint, args.action, member=member)
    done = {"fail": "marked failed", "remove": "removed", "add": "added"}[args.action]
    extra = ""
    if isinstance(result, dict) and result.get("role") is not None:
        extra = f" (role {result['role']})"
    print(f"{args.member}: {done}{extra}")
    return 0
