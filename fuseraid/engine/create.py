"""Create an md array as `mdadm --create` does: v1.2 superblocks with mdadm's data offset
and field defaults, then md's initial sync (parity/Q computed, mirrors copied) unless
assume_clean, then the array is marked clean.

Every check runs before the first byte is written: bad input writes nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from fuseraid.engine.assemble import assemble
from fuseraid.engine.tolerance import describe_missing, survives
from fuseraid.errors import FuseraidError, GeometryError, SuperblockError
from fuseraid.layout import DEFAULT_CHUNK, Geometry, default_layout, layout_number
from fuseraid.member.device import Member
from fuseraid.superblock.codec import (
    MD_DISK_ROLE_SPARE,
    SB_HEADER,
    SECTOR,
    Superblock,
    default_data_offset,
    read_superblock,
    write_superblock,
)

log = logging.getLogger("fuseraid.create")

MISSING = "missing"
LEVELS = (0, 1, 4, 5, 6, 10)
MIN_DISKS = {0: 1, 1: 1, 4: 2, 5: 2, 6: 4, 10: 2}
# Rows per initial-sync step and how many steps run at once (worker threads).
SYNC_BATCH = 16 << 20
SYNC_WORKERS = 2
RAID1_ALIGN = 64 * 1024  # mdadm rounds a raid1 member's used size to 64 KiB


def parse_level(level: int | str) -> int:
    """5, "5", "raid5" -> 5; anything md has no array level for is refused."""
    text = str(level).strip().lower()
    text = text.removeprefix("raid")
    if text in ("mirror",):
        text = "1"
    if text in ("stripe",):
        text = "0"
    try:
        lv = int(text)
    except ValueError:
        raise FuseraidError(f"unknown RAID level {level!r} (0, 1, 4, 5, 6 or 10)") from None
    if lv not in LEVELS:
        raise FuseraidError(f"unknown RAID level {level!r} (0, 1, 4, 5, 6 or 10)")
    return lv


@dataclass
class _Plan:
    geometry: Geometry
    data_offset: int
    sizes: list[int]  # bytes of each present member (by role; 0 for missing)


def _plan(
    paths: Sequence[str], level: int, raid_disks: int, chunk: int | None,
    layout: int | str | None, sizes: list[int], warn: Callable[[str], None],
) -> _Plan:
    if raid_disks < MIN_DISKS[level]:
        raise FuseraidError(f"raid{level} needs at least {MIN_DISKS[level]} devices, "
                            f"got --raid-devices {raid_disks}")
    if len(paths) != raid_disks:
        raise FuseraidError(f"{len(paths)} members given for --raid-devices {raid_disks}")
    missing = [r for r, p in enumerate(paths) if p == MISSING]
    if len(missing) == raid_disks:
        raise FuseraidError("every member is 'missing'")
    if level == 1:
        if chunk:
            warn("raid1 has no chunk: --chunk ignored")
        chunk = 0
    else:
        chunk = DEFAULT_CHUNK if chunk is None else chunk
        if chunk < 4096 or chunk & (chunk - 1):
            raise FuseraidError(f"chunk {chunk} bytes is not a power of two of at least 4K")
    if layout is None:
        lay = default_layout(level)
    elif isinstance(layout, int):
        lay = layout
    else:
        try:
            lay = layout_number(level, layout)
        except GeometryError as e:
            raise FuseraidError(str(e)) from e
    present = [s for s in sizes if s]
    data_offset = default_data_offset(present[0], chunk)  # mdadm: from the first member
    avail = [s - data_offset if s else 0 for s in sizes]
    small = [p for p, a in zip(paths, avail, strict=True)
             if p != MISSING and a < max(chunk, 64 * 1024)]
    if small:
        raise FuseraidError(f"{small[0]} is too small: nothing left after the data offset of "
                            f"{data_offset} bytes")
    member_sizes = None
    if level == 0:
        per = [a // chunk * chunk for a in avail]
        dev_size = min(per)
        if len(set(per)) > 1:
            member_sizes = tuple(per)
            if layout is None:
                lay = 1  # mdadm: multi-zone raid0 gets the "original" layout
    else:
        dev_size = min(a for p, a in zip(paths, avail, strict=True) if p != MISSING)
        if len({a for p, a in zip(paths, avail, strict=True) if p != MISSING}) > 1:
            warn(f"members differ in size: using {dev_size} bytes of each (the smallest)")
        align = chunk or RAID1_ALIGN
        dev_size = dev_size // align * align
    try:
        geometry = Geometry(level, raid_disks, lay, chunk, dev_size, member_sizes)
    except GeometryError as e:
        raise FuseraidError(str(e)) from e
    if not survives(geometry, missing):
        raise FuseraidError(f"raid{level} cannot run with roles {describe_missing(missing)} "
                            "missing")
    return _Plan(geometry, data_offset, sizes)


def _live_superblock(path: str) -> str | None:
    """A one-line description when path already carries an md superblock."""
    try:
        sb = read_superblock(path)
    except SuperblockError:
        return None
    return f"raid{sb.level} array {sb.name!r} (events {sb.events})"


def _write_superblocks(
    paths: Sequence[str], members: dict[int, Member], plan: _Plan, name: str, clean: bool,
) -> None:
    g = plan.geometry
    max_dev = (-(-(SB_HEADER + 2 * g.raid_disks) // SECTOR) * SECTOR - SB_HEADER) // 2
    roles = [r if r < g.raid_disks and paths[r] != MISSING else MD_DISK_ROLE_SPARE
             for r in range(max_dev)]
    set_uuid, ctime = secrets.token_bytes(16), time.time()
    for role, m in sorted(members.items()):
        sb = Superblock.new(
            level=g.level, raid_disks=g.raid_disks, role=role, member_bytes=m.size,
            dev_size=0 if g.level == 0 else g.dev_size, chunk=g.chunk, layout=g.layout,
            data_offset=plan.data_offset, name=name, set_uuid=set_uuid, ctime=ctime,
            clean=clean, dev_roles=roles,
        )
        write_superblock(m.fd, sb)


async def create(
    paths: Sequence[str], *, level: int | str, raid_disks: int, chunk: int | None = None,
    layout: int | str | None = None, name: str = "", assume_clean: bool = False,
    force: bool = False, warn: Callable[[str], None] | None = None,
) -> None:
    """Create an array over `paths` (role order; "missing" leaves a role empty).
    `chunk` is in bytes (None: md's default); the CLI parses sizes
    (fuseraid.cli.sizes.parse_size)."""
    warn = warn or log.warning
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int)):
        raise TypeError(f"chunk must be a number of bytes, not {chunk!r}")
    lv = parse_level(level)
    paths = [p if p == MISSING else os.fspath(p) for p in paths]
    real = [os.path.realpath(p) for p in paths if p != MISSING]
    if len(set(real)) != len(real):
        raise FuseraidError("a member is given twice")
    members: dict[int, Member] = {}
    try:
        for role, p in enumerate(paths):
            if p != MISSING:
                members[role] = await trio.to_thread.run_sync(Member, p)
        sizes = [members[r].size if r in members else 0 for r in range(len(paths))]
        plan = _plan(paths, lv, raid_disks, chunk, layout, sizes, warn)
        for m in members.values():
            live = await trio.to_thread.run_sync(_live_superblock, m.path)
            if live and not force:
                raise FuseraidError(f"{m.path} already belongs to a {live}; use --force to "
                                    "overwrite it")
        # mdadm's initial state: clean for raid0 and --assume-clean, else dirty until
        # the initial sync has run (a crash before it finishes resyncs on assembly).
        clean = assume_clean or lv == 0
        await trio.to_thread.run_sync(_write_superblocks, paths, members, plan, name, clean)
    finally:
        for m in members.values():
            m.close()
    if clean:
        return
    await _initial_sync([p for p in paths if p != MISSING])


async def _initial_sync(paths: Sequence[str]) -> None:
    """md's initial resync: parity/Q from the data, mirrors copied from the first copy,
    in big batches on worker threads; then the array is marked clean."""
    array = await assemble(paths, force=True)
    try:
        drv = array.volume
        missing = array.missing_roles()
        can = not (missing and array.geometry.level in (4, 5)) and not (
            len(missing) >= 2 and array.geometry.level == 6)
        if can:
            step = max(1, SYNC_BATCH // int(drv.row_bytes))
            batches = [(a, min(a + step, drv.rows)) for a in range(0, drv.rows, step)]
            limit = trio.CapacityLimiter(SYNC_WORKERS)

            async def one(a: int, b: int) -> None:
                await trio.to_thread.run_sync(drv.resync, a, b, limiter=limit)

            async with trio.open_nursery() as n:
                for a, b in batches:
                    n.start_soon(one, a, b)
        array.mark_in_sync()  # close() writes resync_offset = MaxSector
    finally:
        await array.close()
