"""Open an array whose superblocks say a reshape is in progress (by Linux md or by us):
rebuild the plan from md's fields, build both drivers and the Border, and replay a
backup record that belongs to the window at the durable border. Also the small offline
member opener `open_members` used by `fuseraid grow --members` and the tests."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fuseraid.engine.state import Entry, SuperblockSet
from fuseraid.errors import AssemblyError
from fuseraid.member.device import Member
from fuseraid.migration import checkpoint, note
from fuseraid.migration.backup import HEADER as BACKUP_HEADER
from fuseraid.migration.backup import BackupArea, BackupFile, reshape_id
from fuseraid.migration.mdbackup import (
    is_md_backup,
    read_md_backup,
    restore_md_backup,
    restore_needed,
)
from fuseraid.migration.migrator import Hook, Reshape, _no_hook
from fuseraid.migration.plan import FORWARD, MAX_WINDOW, Plan, reshape_unit
from fuseraid.superblock.codec import (
    MD_DISK_ROLE_MAX,
    MD_FEATURE_NEW_OFFSET,
    MD_FEATURE_RECOVERY_OFFSET,
    SB_BLOCK,
    SB_OFFSET,
    Superblock,
)


@dataclass
class Members:
    """Members opened offline: the superblock set and each role's Member (None: missing)."""

    sbset: SuperblockSet
    by_role: list[Any]
    opened: list[Member]

    @property
    def sb(self) -> Superblock:
        return self.sbset.newest

    def close(self) -> None:
        for m in self.opened:
            m.close()

    def __enter__(self) -> Members:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_members(paths: Sequence[str | os.PathLike[str]], *, readonly: bool = False) -> Members:
    """Open member files/devices and read their superblocks (the newest events wins, as
    with md; members of another array or older events than the newest by more than
    one commit are refused)."""
    opened: list[Member] = []
    entries: list[Entry] = []
    try:
        for p in paths:
            m = Member(p, readonly=readonly)
            opened.append(m)
            sb = Superblock.decode(m.pread(SB_OFFSET, SB_BLOCK), os.fspath(p), member_size=m.size)
            entries.append(Entry(os.fspath(p), m, sb))
        if not entries:
            raise AssemblyError("no members given")
        newest = max(entries, key=lambda e: e.sb.events).sb
        for e in entries:
            if e.sb.set_uuid != newest.set_uuid:
                raise AssemblyError(f"{e.path}: belongs to another array")
            if e.sb.events + 1 < newest.events:
                raise AssemblyError(f"{e.path}: stale (events {e.sb.events} < {newest.events})")
        roles = newest.raid_disks + max(0, -newest.delta_disks if newest.reshape_active else 0)
        by_role: list[Any] = [None] * roles
        live = []
        for e in entries:
            r = newest.dev_roles[e.sb.dev_number] if e.sb.dev_number < newest.max_dev else None
            if r is None or r >= MD_DISK_ROLE_MAX or r >= roles:
                continue  # spare or faulty: not part of the array
            if by_role[r] is not None:
                raise AssemblyError(f"{e.path}: role {r} given twice")
            by_role[r] = e.member
            live.append(e)
        return Members(SuperblockSet(live, readonly=readonly), by_role, opened)
    except BaseException:
        for m in opened:
            m.close()
        raise


def plan_from_superblock(sb: Superblock, max_window: int = MAX_WINDOW) -> Plan:
    """The Plan md's reshape fields describe (offsets: this superblock's)."""
    old, new = checkpoint.geometries(sb)
    roles = max(old.raid_disks, new.raid_disks)
    o_old = sb.data_offset_bytes
    o_new = sb.new_data_offset_bytes
    unit = reshape_unit(old, new)
    content = min(old.array_size, new.array_size)
    return Plan(old, new, False, checkpoint.direction_of(sb), (o_old,) * roles,
                (o_new,) * roles, unit, max(unit, max_window // unit * unit), False, content)


def resume_reshape(
    sbset: Any,
    members_by_role: Sequence[Any],
    *,
    backup_file: str | os.PathLike[str] | None = None,
    max_window: int = MAX_WINDOW,
    readonly: bool = False,
    hook: Hook = _no_hook,
    driver_factory: Any = None,
) -> Reshape:
    """The Reshape (synchronous core) for members whose newest superblock has
    RESHAPE_ACTIVE.
    Its `volume` (a Border) serves the array; a backup record for the window at the
    durable border is replayed first. Raises AssemblyError (one line) when the state
    cannot be continued safely (e.g. an in-place window without its backup area).
    The backup area: backup_file if given (the mount option backup_file= and
    `grow --members --backup-file` pass it), else $FUSERAID_BACKUP_FILE (kept for
    scripts), else the reshape note the members carry (note.py): a file or an
    added member's free tail."""
    sb = sbset.newest
    if not sb.reshape_active:
        raise AssemblyError("no reshape in progress")
    if backup_file is None:  # the old way, kept for scripts that set it
        backup_file = os.environ.get("FUSERAID_BACKUP_FILE") or None
    # An in-place reshape md left half done: replay mdadm's backup first (its Grow_restart).
    if (backup_file is not None and not sb.feature_map & MD_FEATURE_NEW_OFFSET
            and is_md_backup(backup_file)):
        if not readonly:
            restore_md_backup(backup_file, sbset, members_by_role)
            sb = sbset.newest
        elif restore_needed(read_md_backup(backup_file), sb) is not None:
            raise AssemblyError("md's backup file must be replayed: assemble read-write once")
    plan = plan_from_superblock(sb, max_window)
    for e in sbset.entries:
        if e.sb.data_offset != sb.data_offset or e.sb.new_data_offset != sb.new_data_offset:
            raise AssemblyError(f"{e.path}: data offsets differ between members; cannot "
                                "continue the reshape")
    border = checkpoint.border_of(sb)
    if not 0 <= border <= plan.end:
        raise AssemblyError(f"reshape position {border} outside the new array ({plan.end})")
    # md's recovery_offset on a member added by a takeover: not valid in the old layout
    stale = [e.role for e in sbset.entries
             if e.sb.feature_map & MD_FEATURE_RECOVERY_OFFSET and e.role < MD_DISK_ROLE_MAX]
    rid = reshape_id(plan.ident)
    noted = note.read((e.member for e in sbset.entries), sb.set_uuid, rid)
    missing: str | None = None  # the noted area, when its member is not here
    if backup_file is not None:
        backup: BackupArea | None = BackupFile(backup_file, sb.set_uuid, rid)
    elif noted is not None:
        backup, missing = _noted_area(noted, sbset)
        if noted.kind == note.MEMBER and backup is not None:
            # windows that fit the area (the start planned them so)
            fit = (noted.length - BACKUP_HEADER) // plan.unit * plan.unit
            if fit < plan.max_window:
                plan = dataclasses.replace(plan, max_window=max(plan.unit, fit))
    else:
        backup = None
    try:
        reshape = Reshape(plan, sbset, members_by_role, border, backup=backup,
                          stale_roles=stale, hook=hook, driver_factory=driver_factory)
        reshape.noted = noted is not None
        # md's has_failed over both geometries; a new geometry that lacks roles while it
        # holds nothing yet is not fatal: the pass waits for a spare (Reshape.waiting)
        lost = reshape.loss()
        if lost is not None:
            raise AssemblyError(f"too many members missing for the reshape in progress: "
                                f"{lost}")
        if not reshape.done:
            _, _, needs = reshape.next_window()
            if needs and backup is None:
                if missing is not None:
                    raise AssemblyError(f"the reshape is in place at this position and "
                                        f"needs its {missing}, which is not among the "
                                        "members given")
                raise AssemblyError("the reshape is in place at this position: give the "
                                    "backup file it was started with (--backup-file FILE, "
                                    "mount -o backup_file=FILE)")
        if readonly:
            rec = backup.read() if backup is not None else None
            at = None if rec is None else (
                rec.start if plan.direction == FORWARD else rec.start + rec.length)
            if at is not None and at == border:
                raise AssemblyError("the reshape's backup must be replayed: assemble "
                                    "read-write once")
        else:
            reshape.replay_backup()
    except BaseException:
        if backup is not None:
            backup.close()
        raise
    return reshape


open_reshaping = resume_reshape


def _noted_area(rec: note.ReshapeNote, sbset: Any) -> tuple[BackupArea | None, str | None]:
    """The backup area a reshape note names: (area, None), or (None, what is missing)
    when it is on a member that is not here. A noted file that is missing or holds
    another reshape's record is an AssemblyError naming it (nothing written yet)."""
    if rec.kind == note.FILE:
        if not os.path.isfile(rec.path):
            raise AssemblyError(f"{rec.path}: the reshape's backup file (recorded on the "
                                "members) is missing; give backup_file= explicitly to "
                                "use another")
        area = BackupFile(rec.path, sbset.newest.set_uuid, rec.reshape_id, create=False)
        try:
            if area.foreign():
                raise AssemblyError(f"{rec.path}: the reshape's backup file (recorded on "
                                    "the members) holds another reshape's backup")
        except BaseException:
            area.close()
            raise
        return area, None
    for e in sbset.entries:
        if e.sb.device_uuid == rec.device_uuid:
            if rec.offset + rec.length > e.member.size:
                raise AssemblyError(f"{e.path}: the reshape's backup area (bytes "
                                    f"{rec.offset}..{rec.offset + rec.length}) lies beyond "
                                    f"the member's end")
            return (BackupArea.on_member(e.member, rec.offset, rec.length,
                                         sbset.newest.set_uuid, rec.reshape_id), None)
    return None, rec.describe()


def reshape_opener(backup_file: str | os.PathLike[str] | None = None) -> Any:
    """The engine's `reshape_opener` (engine/assemble.py ReshapeOpener): opens the
    members offline, rebuilds the Reshape (replaying its backup record unless read-only)
    and hands (superblock set, opened members, Reshape) to the assembler."""

    def opener(paths: Sequence[str], *, readonly: bool = False) -> tuple[Any, list[Any], Any]:
        members = open_members(paths, readonly=readonly)
        try:
            reshape = resume_reshape(members.sbset, members.by_role, readonly=readonly,
                                     backup_file=backup_file)
        except BaseException:
            members.close()
            raise
        return members.sbset, list(members.opened), reshape

    return opener


async def assemble(paths: Sequence[str], *, readonly: bool = False, force: bool = False,
                   backup_file: str | os.PathLike[str] | None = None) -> Any:
    """engine.assemble.assemble that also resumes a reshape in progress (the migration
    layer's entry point; backup_file: the in-place reshape's backup file)."""
    from fuseraid.engine.assemble import assemble as engine_assemble

    return await engine_assemble(paths, readonly=readonly, force=force,
                                 reshape_opener=reshape_opener(backup_file))


@asynccontextmanager
async def open_array(paths: Sequence[str], *, readonly: bool = False, force: bool = False,
                     backup_file: str | os.PathLike[str] | None = None) -> AsyncIterator[Any]:
    """engine.assemble.open_array that also resumes a reshape in progress: what the
    front daemon, the CLI and the tests use wherever a reshape may be in progress."""
    from fuseraid.engine.assemble import open_array as engine_open_array

    async with engine_open_array(paths, readonly=readonly, force=force,
                                 reshape_opener=reshape_opener(backup_file)) as array:
        yield array
