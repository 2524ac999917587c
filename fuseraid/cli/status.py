"""`fuseraid status [--json] MOUNTPOINT`: the live array's geometry, members and running
task, asked from the mount's daemon over its control socket (like /proc/mdstat plus
`mdadm --detail`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fuseraid.front import control

LEVEL_NAMES = {0: "raid0", 1: "raid1", 4: "raid4", 5: "raid5", 6: "raid6", 10: "raid10"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show a mounted array's state, members and running task",
                       description="Show the state of the array mounted at MOUNTPOINT.")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    st = control.request(args.mountpoint, "status")
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
    else:
        print(render(st))
    return 0


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def _eta(seconds: Any) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def is_degraded(st: dict[str, Any]) -> bool:
    if "degraded" in st:
        return bool(st["degraded"])
    members = st.get("members") or []
    working = [m for m in members if str(m.get("state", "")).lower() in ("active", "in_sync")]
    raid_disks = st.get("raid_disks", len(members))
    return len(working) < raid_disks


def _mdstat(st: dict[str, Any]) -> str:
    """/proc/mdstat's ' [n/m] [UU_]': roles, working roles, and which are up."""
    members = st.get("members") or []
    raid_disks = st.get("raid_disks")
    if not isinstance(raid_disks, int) or raid_disks <= 0:
        return ""
    up = [False] * raid_disks
    for m in members:
        role = m.get("role")
        if isinstance(role, int) and 0 <= role < raid_disks and m.get("state") == "active":
            up[role] = True
    return f" [{raid_disks}/{sum(up)}] [{''.join('U' if u else '_' for u in up)}]"


def render(st: dict[str, Any]) -> str:
    level = st.get("level")
    level_name = LEVEL_NAMES.get(level, str(level)) if isinstance(level, int) else str(level)
    state = str(st.get("state", "?"))
    degraded = is_degraded(st)
    if degraded and "degraded" not in state:
        state += ", degraded"
    if st.get("readonly"):
        state += ", read-only"
    lines = [f"{st.get('mountpoint', '?')}: {level_name}, {state}{_mdstat(st)}"]

    def row(key: str, value: Any) -> None:
        lines.append(f"  {key:>12} : {value}")

    if st.get("name"):
        row("name", st["name"])
    if st.get("uuid"):
        row("uuid", st["uuid"])
    row("level", level_name)
    if st.get("layout") not in (None, "", 0) or level in (5, 6, 10):
        row("layout", st.get("layout"))
    chunk = st.get("chunk")
    if chunk:
        row("chunk", f"{chunk // 1024}K" if isinstance(chunk, int) else chunk)
    size = st.get("size")
    if isinstance(size, int):
        row("size", f"{human_size(size)} ({size} bytes)")
    members = st.get("members") or []
    raid_disks = st.get("raid_disks", len([m for m in members if m.get("role") is not None]))
    row("raid disks", raid_disks)
    row("state", state)
    task = st.get("task")
    if task:
        pct = float(task.get("percent") or 0.0)
        width = 20
        done = int(pct / 100 * width)
        bar = "=" * max(done - 1, 0) + (">" if done else "") + "." * (width - done)
        speed = task.get("speed")
        speed_s = f"{human_size(speed)}/s" if isinstance(speed, (int, float)) else "?"
        name = task.get("name") or "task"
        row("task", f"{name} [{bar}] {pct:.1f}%  speed {speed_s}  ETA {_eta(task.get('eta'))}")
        if task.get("waiting"):  # a reshape waiting for a spare: what to do about it
            row("waiting", task["waiting"])
    lines.append("")
    lines.append(f"  {'role':>6}  {'state':<12} path")
    for m in members:
        role = m.get("role")
        lines.append(f"  {'-' if role is None else role:>6}  {str(m.get('state', '?')):<12} "
                     f"{m.get('path') or 'missing'}")
    return "\n".join(lines)
