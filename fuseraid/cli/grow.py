"""`fuseraid grow`: change a mounted array's geometry live (level, disks, chunk, layout),
pause/resume it, or reshape unmounted members offline (`--members`). Like mdadm --grow;
see docs/reshape.md."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from fuseraid.errors import FuseraidError
from fuseraid.layout.names import layout_number
from fuseraid.migration.plan import Request


def parse_size(text: str) -> int:
    """mdadm-style size: KiB by default, or with a K/M/G/T suffix; bytes out."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1024
    if t and t[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(t[-1]) + 1)
        t = t[:-1]
    if not t.isdigit() or int(t) <= 0:
        raise FuseraidError(f"bad size {text!r} (a number with K, M or G)")
    return int(t) * mult


def parse_level(text: str) -> int:
    t = text.lower().removeprefix("raid")
    if t not in ("0", "1", "4", "5", "6", "10"):
        raise FuseraidError(f"unknown RAID level {text!r} (0, 1, 4, 5, 6 or 10)")
    return int(t)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "grow", help="change level, disks, chunk or layout (live reshape)",
        description="Reshape an array while it stays mounted (or offline with --members). "
                    "The reshape survives crashes and resumes when the array is assembled.")
    p.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT")
    p.add_argument("--members", nargs="+", metavar="MEMBER",
                   help="reshape these unmounted members offline, to the end")
    p.add_argument("--level", type=str, help="new RAID level (0, 1, 4, 5, 6, 10)")
    p.add_argument("--raid-devices", "-n", type=int, dest="raid_devices",
                   help="new number of roles")
    p.add_argument("--add", nargs="+", default=[], metavar="MEMBER",
                   help="members to add for the new roles")
    p.add_argument("--chunk", type=str, help="new chunk size (KiB, or with K/M suffix)")
    p.add_argument("--layout", type=str, help="new layout name (left-symmetric, n2, ...)")
    p.add_argument("--array-size", dest="array_size", type=str,
                   help="cut the array to this size first (needed to shrink; data beyond "
                        "it is dropped)")
    p.add_argument("--backup-file", dest="backup_file",
                   help="file for window backups when the data offset cannot move (default: "
                        "the free tail of an --add member, if it has room); its place is "
                        "recorded on the members, so a resume needs no option")
    p.add_argument("--single-copy", dest="single_copy", action="store_true",
                   help="raid10 far source without room or backup file: accept one copy "
                        "of the data not yet moved while the reshape runs")
    p.add_argument("--speed-limit", dest="speed_limit", type=str,
                   help="at most this many bytes per second (K/M suffix)")
    p.add_argument("--wait", action="store_true", help="return when the reshape finished")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pause", action="store_true", help="pause the running reshape")
    g.add_argument("--resume", action="store_true", help="resume a paused reshape")
    g.add_argument("--status", action="store_true", help="show the reshape's progress")
    p.set_defaults(run=run)


def _request(args: argparse.Namespace, current_level: int) -> Request:
    level = parse_level(args.level) if args.level else None
    layout = None
    if args.layout is not None:
        layout = (int(args.layout) if args.layout.isdigit()
                  else layout_number(current_level if level is None else level, args.layout))
    return Request(level=level, raid_disks=args.raid_devices,
                   chunk=parse_size(args.chunk) if args.chunk else None, layout=layout,
                   single_copy=args.single_copy)


def run(args: argparse.Namespace) -> int:
    if args.members:
        if args.mountpoint:
            raise FuseraidError("give either MOUNTPOINT or --members, not both")
        return run_offline(args)
    if not args.mountpoint:
        raise FuseraidError("give the MOUNTPOINT of a mounted array (or --members)")
    from fuseraid.front import control

    if args.pause or args.resume or args.status:
        op = "pause" if args.pause else "resume" if args.resume else "reshape"
        extra: dict[str, Any] = {}
        if args.resume and args.speed_limit:
            extra["speed_limit"] = parse_size(args.speed_limit)
        st = control.request(args.mountpoint, op, **extra)
        print(_describe(st) if st else "no reshape is running")
        return 0
    level = args.level
    layout = args.layout
    if layout is not None and not layout.isdigit() and level is None:
        layout_arg: Any = layout  # the daemon resolves the name at the current level
    else:
        layout_arg = None if layout is None else (
            int(layout) if layout.isdigit() else layout_number(parse_level(level), layout))
    result = control.request(
        args.mountpoint, "grow",
        level=parse_level(level) if level else None,
        raid_disks=args.raid_devices,
        chunk=parse_size(args.chunk) if args.chunk else None,
        layout=layout_arg,
        add=[os.path.abspath(p) for p in args.add],
        single_copy=args.single_copy,
        backup_file=os.path.abspath(args.backup_file) if args.backup_file else None,
        speed_limit=parse_size(args.speed_limit) if args.speed_limit else None,
        array_size=parse_size(args.array_size) if args.array_size else None,
    )
    if result.get("instant"):
        print(f"{args.mountpoint}: now raid{result['level']} on {result['raid_disks']} "
              f"disks (no data moved)")
        return 0
    print(f"{args.mountpoint}: reshape started: {_describe(result)}")
    try:
        task = control.request(args.mountpoint, "status").get("task") or {}
    except FuseraidError:
        task = {}
    if task.get("backup"):
        print(f"{args.mountpoint}: {describe_backup(task['backup'])}")
    if args.wait:
        told = None
        while True:
            time.sleep(1.0)
            st = control.request(args.mountpoint, "reshape")
            if st is None:
                break
            if st.get("error"):
                raise FuseraidError(f"reshape stopped: {st['error']}")
            if st.get("waiting") and st["waiting"] != told:  # say it once, keep waiting
                told = st["waiting"]
                print(f"{args.mountpoint}: {told}", file=sys.stderr)
        print(f"{args.mountpoint}: reshape finished")
    return 0


def _describe(st: dict[str, Any]) -> str:
    if "to" not in st:
        return str(st)
    a, b = st["from"], st["to"]
    state = " (paused)" if st.get("paused") else ""
    if st.get("error"):
        state += f" (stopped: {st['error']})"
    if st.get("waiting"):
        state += f" ({st['waiting']})"
    text = (f"raid{a['level']}/{a['raid_disks']} -> raid{b['level']}/{b['raid_disks']}, "
            f"{st['direction']}, {st['percent']}% done{state}")
    if st.get("backup"):
        text += "; " + describe_backup(st["backup"])
    return text


def describe_backup(where: dict[str, Any]) -> str:
    """One line saying where a reshape's backup area is (status's task.backup)."""
    if where.get("kind") == "file":
        text = f"backup file {where.get('path')}"
    else:
        text = (f"backup area on {where.get('path')}: {where.get('length')} bytes at byte "
                f"{where.get('offset')} (its free tail)")
    if where.get("recorded") is False:
        text += (" (NOT recorded on the members: after a crash give it again with "
                 "--backup-file / -o backup_file=)")
    return text


def run_offline(args: argparse.Namespace) -> int:
    """Reshape unmounted members to the end (or finish an interrupted reshape)."""
    from fuseraid.member.device import Member
    from fuseraid.migration.migrator import begin_reshape
    from fuseraid.migration.migrator import run_offline as migrate
    from fuseraid.migration.resume import open_members, resume_reshape

    speed = parse_size(args.speed_limit) if args.speed_limit else None
    with open_members(args.members) as ms:
        if ms.sb.reshape_active:
            if args.add or args.level or args.raid_devices or args.chunk or args.layout:
                raise FuseraidError("a reshape is already in progress; run grow --members "
                                    "without a new geometry to finish it")
            reshape = resume_reshape(ms.sbset, ms.by_role, backup_file=args.backup_file)
            print(f"resuming the reshape at {reshape.border} of {reshape.plan.end} bytes",
                  file=sys.stderr)
        else:
            exposed = parse_size(args.array_size) if args.array_size else None
            added = [(os.path.abspath(p), Member(p)) for p in args.add]
            ms.opened.extend(m for _, m in added)
            plan, reshape = begin_reshape(ms.sbset, ms.by_role, _request(args, ms.sb.level),
                                          add=added, backup_file=args.backup_file,
                                          rebuild_now=True, exposed=exposed)
            if reshape is None:
                print(f"raid{plan.new.level} on {plan.new.raid_disks} disks (no data moved)")
                return 0
        if reshape.backup_where is not None and (reshape.plan.backup_needed or reshape.noted):
            print(describe_backup(reshape.backup_where), file=sys.stderr)
        try:
            migrate(reshape, speed_limit=speed)
        finally:
            if reshape.backup is not None:
                reshape.backup.close()
        new = reshape.plan.new
        print(f"reshaped to raid{new.level} on {new.raid_disks} disks, "
              f"{new.array_size} bytes")
    return 0
