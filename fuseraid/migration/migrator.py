"""The migrator: copies one window at a time from the old geometry to the new one in the
durable order of docs/reshape.md (read, backup+fsync if in place, write, fsync + commit
the border, move the border). `Reshape` is the synchronous core (one method call per
window, run in a worker thread); `run_offline` drives it alone; runner.py's `run_live`
is the trio task that drives it in a mounted array. Also here: `begin_reshape`, which
plans a reshape and writes its start."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fuseraid.engine.levels import Slot, make_driver
from fuseraid.engine.state import Entry
from fuseraid.engine.tolerance import describe_missing, survives
from fuseraid.errors import FuseraidError, GeometryError, MemberIOError
from fuseraid.migration import checkpoint, note
from fuseraid.migration.backup import HEADER as BACKUP_HEADER
from fuseraid.migration.backup import BackupArea, BackupFile, reshape_id
from fuseraid.migration.border import Border, RowWriter
from fuseraid.migration.plan import (
    ALIGN,
    FORWARD,
    MAX_WINDOW,
    SB_FLOOR,
    Plan,
    check_far_target,
    plan_reshape,
    window_safe,
)
from fuseraid.migration.runner import Control, Pacer, run_live
from fuseraid.superblock.codec import MD_DISK_ROLE_SPARE, MD_FEATURE_RECOVERY_OFFSET, SB_HEADER

log = logging.getLogger("fuseraid.migration")
Hook = Callable[[str], None]


def _no_hook(step: str) -> None:
    pass


class Reshape:
    """A reshape in progress over open members.

    members[role]: the Member of each role of the larger role set, or None (missing).
    sbset: the array's SuperblockSet (its commit() is the durable checkpoint).
    border: the durable border. stale_roles: roles whose old-geometry bytes are not valid
    (md's recovery_offset on a member added by a takeover): missing for the old driver.
    hook(step) is called before each step ("read", "backup", "write", "commit",
    "moved", "finish"): tests use it to crash at a chosen instant. driver_factory(
    geometry, slots) builds both drivers (a live Array passes its make_driver so member
    failures go through its policy); default: make_driver failing roles here."""

    def __init__(
        self,
        plan: Plan,
        sbset: Any,
        members: Sequence[Any],
        border: int,
        *,
        backup: BackupArea | None = None,
        stale_roles: Sequence[int] = (),
        hook: Hook = _no_hook,
        driver_factory: Callable[[Any, list[Slot | None]], Any] | None = None,
    ) -> None:
        self.plan = plan
        self.sbset = sbset
        self.backup = backup
        self.noted = False  # the members carry a reshape note (erased by finish)
        self.hook = hook
        self.failed_devs: set[int] = set()
        self._members = list(members)
        old, new = plan.old, plan.new
        self.old_slots: list[Slot | None] = [
            Slot(m, plan.old_offsets[r]) if m is not None and r not in stale_roles else None
            for r, m in ((r, self._member(r)) for r in range(old.raid_disks))
        ]
        self.new_slots: list[Slot | None] = [
            Slot(m, plan.new_offsets[r]) if m is not None else None
            for r, m in ((r, self._member(r)) for r in range(new.raid_disks))
        ]
        if driver_factory is None:
            # offline: this object is the member-failure policy
            def driver_factory(g: Any, slots: list[Slot | None]) -> Any:
                return make_driver(g, slots, self._member_failed)

        self.old = driver_factory(old, self.old_slots)
        self.new = driver_factory(new, self.new_slots)
        self._hold_far()
        self.volume = Border(self.old, self.new, border, plan.direction, plan.content)
        self.windows = 0  # windows copied by this process (tests, status)
        self.bytes_copied = 0

    def rebind(self, driver_factory: Callable[[Any, list[Slot | None]], Any]) -> None:
        """Rebuild both drivers over the same slot lists with another factory (an Array
        created after this Reshape passes its make_driver, so member failures go
        through the array's policy from then on)."""
        self.old = driver_factory(self.plan.old, self.old_slots)
        self.new = driver_factory(self.plan.new, self.new_slots)
        self._hold_far()
        self.volume.old, self.volume.new = self.old, self.new

    def _member(self, role: int) -> Any:
        return self._members[role] if role < len(self._members) else None

    def _hold_far(self) -> None:
        """raid10 far copies not kept by this pass: a near-only target's would land on old
        data (plan.near_only: the new driver keeps to the near copies until finish); a
        source's are overwritten before their data moves (plan.old_near_only: the old
        driver keeps to the near copies, so the data not yet moved has one copy)."""
        if self.plan.near_only:
            self.new.hold_far()
        if self.plan.old_near_only:
            self.old.hold_far()
            log.warning("reshape: no room to keep the old raid10 far copies; the data not "
                        "yet moved has only its near copy until it moves")

    # ---- state ---------------------------------------------------------------------
    @property
    def border(self) -> int:
        return self.volume.border

    @property
    def done(self) -> bool:
        if self.plan.direction == FORWARD:
            return self.border >= self.plan.end
        return self.border <= 0

    def progress(self) -> float:
        """Fraction of the pass done (0..1)."""
        end = self.plan.end or 1
        done = self.border if self.plan.direction == FORWARD else end - self.border
        return done / end

    def next_window(self) -> tuple[int, int, bool]:
        return self.plan.next_window(self.border)

    # ---- which roles the pass can do without (docs/reshape.md "A member fails during a
    # pass"): the old geometry always (it holds everything beyond the durable border),
    # the new one once it holds data; before that a new geometry that lacks roles loses
    # nothing and the pass waits for a spare.
    @property
    def committed(self) -> bool:
        """Does the new layout hold data (the durable border has left its start)?"""
        return self.durable != (0 if self.plan.direction == FORWARD else self.plan.end)

    def _gone(self, slots: list[Slot | None], roles: int, missing: Iterable[int]) -> list[int]:
        # `missing` (the array's view) plus roles whose slot is empty (failed, missing
        # from the start, or only partly rebuilt): the union, so neither view can lag
        return sorted({r for r in missing if r < roles}
                      | {r for r, s in enumerate(slots) if s is None})

    def loss(self, missing: Iterable[int] = ()) -> str | None:
        """Why the array cannot go on with the roles `missing` gone too, or None when it
        can (md's has_failed over both geometries, except that a new geometry holding
        nothing yet may lack roles: the pass then waits, see waiting())."""
        gone = set(missing)
        old, new = self.plan.old, self.plan.new
        old_gone = self._gone(self.old_slots, old.raid_disks, gone)
        if not survives(old, old_gone):
            return (f"the old geometry ({_name(old)}) cannot do without roles "
                    f"{describe_missing(old_gone)}")
        new_gone = self._gone(self.new_slots, new.raid_disks, gone)
        if self.committed and not survives(new, new_gone):
            return (f"the new geometry ({_name(new)}) cannot do without roles "
                    f"{describe_missing(new_gone)} and already holds data (reshape "
                    f"position {self.durable})")
        return None

    def survives(self, missing: Iterable[int]) -> bool:
        """The engine's survival rule during a reshape (Array.survives)."""
        return self.loss(missing) is None

    def lacking(self) -> list[int]:
        """Roles the new geometry lacks while it cannot do without them (else [])."""
        new = self.plan.new
        gone = self._gone(self.new_slots, new.raid_disks, ())
        return [] if survives(new, gone) else gone

    def waiting(self, how: str = "run `fuseraid add MOUNTPOINT MEMBER`") -> str | None:
        """One line saying why the pass waits for a spare, or None when it need not (or
        cannot: loss() says why the array failed). `how` tells how to add one."""
        lacking = self.lacking()
        if not lacking or self.loss() is not None:
            return None
        old, new = self.plan.old, self.plan.new
        text = (f"waiting for a spare: the new geometry ({_name(new)}) lacks role "
                f"{describe_missing(lacking)} and holds nothing yet")
        if any(r >= old.raid_disks for r in lacking):
            text += f"; {how}"
        both = [r for r in lacking if r < old.raid_disks]
        if both:
            text += (f"; role {describe_missing(both)} is in the old geometry too: a member "
                     "added during a reshape cannot be rebuilt into it (it stays a spare)")
        return text

    def in_sync_role(self, vacant: Iterable[int]) -> int | None:
        """The role a member added now holds in sync at once, or None: while the pass
        waits, the lowest of `vacant` (the roles nobody holds) that the new geometry
        lacks and only it has (the new layout holds nothing yet, so nothing to
        rebuild; a role of the old geometry would need a rebuild in the old layout)."""
        if self.waiting() is None:
            return None
        lacking = set(self.lacking())
        return next((r for r in sorted(vacant)
                     if r in lacking and r >= self.plan.old.raid_disks), None)

    def place(self, role: int, member: Any) -> None:
        """`member` takes `role` (from in_sync_role) in the new geometry. The caller has
        committed the role assignment to every superblock first and holds the array's
        state lock; the pass writes to the member only after this."""
        if role < self.plan.old.raid_disks or self.new_slots[role] is not None:
            raise FuseraidError(f"reshape: role {role} cannot take a member now")
        self._members += [None] * (role + 1 - len(self._members))
        self._members[role] = member
        self.new_slots[role] = Slot(member, self.plan.new_offsets[role])

    def member_bytes(self) -> int:
        """Bytes a member needs to hold a role in either geometry (an added member)."""
        p = self.plan
        return max(p.old_offsets[0] + p.old.dev_used, p.new_offsets[0] + p.new.dev_used)

    # ---- member failures -----------------------------------------------------------
    def _member_failed(self, role: int, exc: MemberIOError) -> None:
        """A member failed: both geometries lose that role; the pass goes on degraded
        (the drivers raise if a geometry cannot do without it)."""
        member = self._member(role)
        for slots in (self.old_slots, self.new_slots):
            if role < len(slots):
                slots[role] = None
        entry = self.sbset.entry_for(member) if member is not None else None
        if entry is not None:
            self.failed_devs.add(entry.sb.dev_number)
            self.sbset.drop(entry)

    def _commit(self, mutator: checkpoint.Mutator) -> None:
        failed = self.sbset.commit(mutator)
        for entry in failed:  # their data may not be durable: fail them everywhere
            self.failed_devs.add(entry.sb.dev_number)
            for r, m in enumerate(self._members):
                if m is entry.member:
                    for slots in (self.old_slots, self.new_slots):
                        if r < len(slots):
                            slots[r] = None
        if not self.sbset.entries:
            raise FuseraidError("reshape: every member failed")

    # ---- one window --------------------------------------------------------------------
    def _source(self, start: int, end: int) -> memoryview:
        """The window's content: old geometry below `content`, zeros beyond (the new
        space a grow adds reads as zeros, as with md). Read into a buffer reused from
        window to window (valid until the next call)."""
        n = end - start
        buf = getattr(self, "_wbuf", None)
        if buf is None or len(buf) < n:
            buf = self._wbuf = bytearray(n)
        view = memoryview(buf)[:n]
        cut = min(max(start, self.plan.content), end)
        if cut > start:  # a window wholly past the old content reads nothing
            self.old.read_into(start, view[: cut - start])
        if cut < end:
            view[cut - start :] = bytes(end - cut)
        return view

    def copy_window(self, start: int, end: int, needs_backup: bool, *,
                    commit: bool = True) -> None:
        """Migrate [start, end). The caller holds the range lock on it: exclusively when
        needs_backup, else at least shared (writers wait; readers may read the old
        layout meanwhile, see docs/reshape.md "Reads of the window in flight").
        commit=False: see write_window (never for a backed-up window)."""
        forward = self.plan.direction == FORWARD
        if (start if forward else end) != self.border:
            raise FuseraidError(f"reshape: window [{start}, {end}) does not start at the "
                                f"border {self.border}")
        self.hook("read")
        data = self._source(start, end)
        if needs_backup:
            if self.backup is None:
                raise FuseraidError("reshape: this window is migrated in place and needs a "
                                    "backup area (--backup-file FILE)")
            self.hook("backup")
            self.backup.write(start, data)
        # a backed-up window is committed at once: the next record replaces this one
        self.write_window(start, end, data, commit=commit or needs_backup)

    def write_window(self, start: int, end: int, data: Any, *, commit: bool = True) -> None:
        """Write the window in the new geometry, make it durable, move the border.
        commit=False moves only the in-memory border; commit_border() commits it later
        (run_live's batches: the caller keeps writes off the uncommitted range and
        checks every window against the durable border, `durable`)."""
        self.hook("write")
        writer = getattr(self, "_writer", None)
        if writer is None:
            writer = self._writer = RowWriter()
        writer.write(self.new, start, data)
        moved = end if self.plan.direction == FORWARD else start
        if commit:
            self.hook("commit")
            self._commit(checkpoint.progress(moved, self.failed_devs))
        self.hook("moved")
        self.volume.border = moved
        self.windows += 1
        self.bytes_copied += end - start

    def replay_backup(self) -> bool:
        """After a crash: if the backup holds the window at the durable border, it is that
        window's content (its in-place write may be torn): write it in the new geometry
        and move the border past it. Returns whether a record was replayed."""
        if self.backup is None or self.done:
            return False
        rec = self.backup.read()
        if rec is None:
            return False
        start, end = rec.start, rec.start + rec.length
        at = start if self.plan.direction == FORWARD else end
        if at != self.border or end > self.plan.end or start < 0:
            return False  # an older window: its data has moved on since
        self.write_window(start, end, rec.data)
        return True

    def finish(self) -> None:
        """Commit the new geometry as a plain md array, then drop the backup record and
        erase the reshape note (both inert once no superblock records the reshape)."""
        if not self.done:
            raise FuseraidError("reshape: cannot finish, windows remain")
        self.hook("finish")
        self._commit(checkpoint.finish(self.plan, self.failed_devs))
        if self.plan.near_only:  # the far part is ours now; the resync makes its copies
            self.new.release_far()
        if self.backup is not None:
            try:
                self.backup.clear()
            except (OSError, FuseraidError) as e:  # inert now: no superblock names it
                log.warning("reshape finished; cannot clear its backup record: %s", e)
        if self.noted:
            note.erase(e.member for e in self.sbset.entries)
            self.noted = False

    @property
    def backup_where(self) -> dict[str, Any] | None:
        """Where the backup area is and whether the members record it (status output),
        or None without one."""
        if self.backup is None:
            return None
        return {**self.backup.where, "recorded": self.noted}

    def final_volume(self) -> Any:
        """The driver to serve the array once finished (the new geometry, full size)."""
        return self.new

    # ---- run_live's batches (one worker hop for several windows) ---------------------
    @property
    def durable(self) -> int:
        """The border the superblocks record; the in-memory `border` runs ahead of it
        while windows are copied with commit=False."""
        return checkpoint.border_of(self.sbset.newest)

    def commit_border(self) -> None:
        """Commit the in-memory border (after windows copied with commit=False)."""
        if self.durable != self.border:
            self.hook("commit")
            self._commit(checkpoint.progress(self.border, self.failed_devs))

    def safe_from_durable(self, start: int, end: int) -> bool:
        """May window [start, end) be written before the windows since the durable
        border are committed? The safety rule applied to everything from the durable
        border through this window, as one window: its writes then keep off the old
        data a resume from the durable border needs (docs/reshape.md)."""
        d = self.durable
        if self.plan.direction == FORWARD:
            return window_safe(self.plan, min(d, start), end, False)
        return window_safe(self.plan, start, max(d, end), False)

    # The engine runs a resumed reshape through these two, so it needs no import of
    # this module (the migration layer sits above the engine).
    def new_control(self) -> Control:
        return Control()

    async def run_live(self, lock: Any, control: Control,
                       on_finished: Callable[[Any], None]) -> None:
        await run_live(self, lock, control, on_finished)


# ---- drivers -----------------------------------------------------------------------------


def run_offline(reshape: Reshape, *, speed_limit: int | None = None) -> None:
    """Migrate to the end and finish, in this thread (no concurrent I/O). A pass that
    waits for a spare is refused: only a mounted array takes one."""
    why = reshape.waiting("mount the array and run `fuseraid add MOUNTPOINT MEMBER`")
    if why is not None:
        raise FuseraidError(f"the reshape cannot go on offline: {why}")
    reshape.replay_backup()
    pacer = Pacer(speed_limit)
    while not reshape.done:
        s, e, b = reshape.next_window()
        reshape.copy_window(s, e, b)
        delay = pacer.delay(e - s)
        if delay:  # sleep(0) would still give the CPU away on a busy machine
            time.sleep(delay)
    reshape.finish()


# ---- starting a reshape -------------------------------------------------------------


def _name(g: Any) -> str:
    return f"raid{g.level} on {g.raid_disks} disks"


def data_floor(sb: Any) -> int:
    """The lowest byte a data area may start at: after the superblock and the bad-block
    log (rounded up to 4 KiB)."""
    end = sb.super_offset * 512 + SB_HEADER + 2 * sb.max_dev
    if sb.bblog_size and sb.bblog_offset:
        end = max(end, (sb.super_offset + sb.bblog_offset + sb.bblog_size) * 512)
    return max(SB_FLOOR, -(-end // ALIGN) * ALIGN)


def begin_reshape(
    sbset: Any,
    members_by_role: Sequence[Any],
    request: Any,
    *,
    add: Sequence[tuple[str, Any]] = (),
    exposed: int | None = None,
    backup_file: str | None = None,
    rebuild_now: bool = False,
    max_window: int = MAX_WINDOW,
    hook: Hook = _no_hook,
    driver_factory: Callable[[Any, list[Slot | None]], Any] | None = None,
) -> tuple[Plan, Reshape | None]:
    """Plan the request and record it in the superblocks (one commit, which also gives
    the added members (path, Member) their superblocks and roles). Returns the plan and
    the Reshape to run, or None for an instant change (done by that commit; with
    rebuild_now the roles it leaves to rebuild are rebuilt here, else the array's
    recovery does it when assembled)."""
    sb = sbset.newest
    if sb.reshape_active:
        raise FuseraidError("a reshape is already in progress")
    old = checkpoint.geometry_of(sb)
    members = list(members_by_role)[: old.raid_disks]
    members += [None] * (old.raid_disks - len(members))
    live = [m for m in members if m is not None]
    if not live:
        raise FuseraidError("no member is present")
    sizes = [m.size if m is not None else max(x.size for x in live) for m in members]
    sizes += [m.size for _, m in add]
    offsets = [sb.data_offset_bytes] * old.raid_disks

    def replan(backup: bool, window: int) -> Plan:
        return plan_reshape(old, offsets, sizes, request, exposed=exposed,
                            floor=data_floor(sb), backup=backup, max_window=window)

    plan = replan(backup_file is not None or bool(add), max_window)
    blocked = _note_blocked(sbset, plan, backup_file) if plan.backup_needed else None
    tail: tuple[Any, int, int] | None = None  # (added member, base, capacity)
    if plan.backup_needed and backup_file is None:
        plan, tail = _tail_area(plan, add, replan, blocked)
    if blocked is not None and backup_file is not None:
        log.warning("the backup file's place cannot be recorded on the members (%s): "
                    "after a crash, resume with --backup-file / -o backup_file=%s",
                    blocked, backup_file)
    stale = _partly_rebuilt(sbset, members, old, plan.instant)
    extra = plan.new.raid_disks - old.raid_disks
    if len(add) > max(0, extra):
        raise FuseraidError(f"{len(add)} member(s) given but raid{plan.new.level} on "
                            f"{plan.new.raid_disks} disks needs {max(0, extra)} more")
    check_far_target(plan, [r for r in range(max(old.raid_disks, plan.new.raid_disks))
                            if r in stale or (members[r] is None if r < old.raid_disks
                                              else r - old.raid_disks >= len(add))])
    # superblocks for the added members: copies of the newest, each in a free slot
    # the added members' superblocks: a spare of this array keeps its own (it only gets
    # a role); a new member gets a copy of the newest in a free device slot
    used = {e.sb.dev_number for e in sbset.entries}
    # a spare of this array not in the set (offline: open_members leaves spares out)
    # keeps its own device slot and uuid: one slot per member, never a phantom spare
    own = {id(m): _own_spare_slot(sb, m, used) for _, m in add if sbset.entry_for(m) is None}
    reserved = {o[0] for o in own.values() if o is not None}
    free = iter(d for d, r in enumerate(sb.dev_roles)
                if r == MD_DISK_ROLE_SPARE and d not in used and d not in reserved)
    assign: dict[int, int] = {}
    for i, (path, m) in enumerate(add):
        role = old.raid_disks + i
        entry = sbset.entry_for(m)
        if entry is not None:  # already in the set (a live array's spare): change it
            assign[entry.sb.dev_number] = role
        else:
            slot = own.get(id(m))
            dev, uuid = slot if slot is not None else (next(free, None),
                                                       secrets.token_bytes(16))
            if dev is None:
                raise FuseraidError("no free device slot in the superblock for the added "
                                    "members")
            assign[dev] = role
            nsb = sb.replace(dev_number=dev, device_uuid=uuid,
                             data_size=m.size // 512 - sb.data_offset, recovery_offset=0,
                             feature_map=sb.feature_map & ~MD_FEATURE_RECOVERY_OFFSET)
            sbset.add(Entry(path, m, nsb))
        members.append(m)
    rebuild = set(plan.rebuild_roles)
    base = (checkpoint.instant if plan.instant else checkpoint.start)(plan)

    def mutate(s: Any) -> None:
        base(s)
        for dev, role in assign.items():
            s.dev_roles[dev] = role
        if plan.instant and s.role in rebuild:
            s.feature_map |= MD_FEATURE_RECOVERY_OFFSET  # md rebuilds this role
            s.recovery_offset = 0

    if plan.instant:
        sbset.commit(mutate)
        if rebuild_now:
            rebuild_offline(sbset, members, plan)
        return plan, None
    rid = reshape_id(plan.ident)
    backup: BackupArea | None = None
    if backup_file is not None:
        backup = BackupFile(backup_file, sb.set_uuid, rid)
    elif tail is not None:
        backup = BackupArea.on_member(tail[0], tail[1], tail[2], sb.set_uuid, rid)
    noted = plan.backup_needed and backup is not None and blocked is None
    if noted:
        assert backup is not None
        # durable order: the backup file exists and the note is on every member (both
        # fsynced) before the checkpoint that starts the reshape
        if backup_file is not None:
            rec = note.ReshapeNote(sb.set_uuid, rid, note.FILE, path=backup.where["path"])
        else:
            entry = sbset.entry_for(tail[0]) if tail is not None else None
            assert entry is not None and tail is not None
            rec = note.ReshapeNote(sb.set_uuid, rid, note.MEMBER,
                                   device_uuid=entry.sb.device_uuid, offset=tail[1],
                                   length=tail[2])
        try:
            note.write((e.member for e in sbset.entries), rec)
        except FuseraidError:
            for _, m in add:  # not started: the added members are not the array's
                e = sbset.entry_for(m)
                if e is not None and e.sb.dev_number not in used:
                    sbset.drop(e)
            backup.close()
            raise
    sbset.commit(mutate)
    border = 0 if plan.direction == FORWARD else plan.end
    reshape = Reshape(plan, sbset, members, border, backup=backup, hook=hook,
                      stale_roles=stale, driver_factory=driver_factory)
    reshape.noted = noted
    return plan, reshape


def _note_blocked(sbset: Any, plan: Plan, backup_file: str | None) -> str | None:
    """Why the members cannot carry a reshape note naming the backup area (None: they
    can). Checked on every member's superblock (added members get a copy of the
    newest)."""
    lowest = min(plan.old_offsets[0], plan.new_offsets[0])
    for e in sbset.entries:
        why = note.no_room(e.sb, lowest)
        if why is not None:
            return f"{e.path}: {why}"
    if backup_file is not None:
        try:
            note.ReshapeNote(bytes(16), bytes(32), note.FILE,
                             path=os.path.abspath(backup_file)).encode()
        except FuseraidError as e:
            return str(e)
    return None


def tail_area(plan: Plan, member_size: int) -> tuple[int, int]:
    """(base, capacity) of the free tail of an added member: the bytes beyond what the
    old and the new geometry use there, 4 KiB aligned."""
    used = max(plan.old_offsets[0], plan.new_offsets[0]) + max(plan.old.dev_used,
                                                               plan.new.dev_used)
    base = -(-used // ALIGN) * ALIGN
    return base, max(0, (member_size - base) // ALIGN * ALIGN)


def _tail_area(plan: Plan, add: Sequence[tuple[str, Any]],
               replan: Callable[[bool, int], Plan],
               blocked: str | None) -> tuple[Plan, tuple[Any, int, int] | None]:
    """The plan and the backup area on the free tail of an added member, for a reshape
    that needs a backup and has no backup file: the first added member whose tail holds
    the header and a window (windows are made smaller to fit, whole units). Raises the
    planner's no-room error, naming both ways out, when there is none."""
    need = BACKUP_HEADER + plan.unit
    for _, m in add:
        base, cap = tail_area(plan, m.size)
        if cap < need or blocked is not None:
            continue
        if cap < BACKUP_HEADER + plan.max_window:
            plan = replan(True, (cap - BACKUP_HEADER) // plan.unit * plan.unit)
            if not plan.backup_needed:
                return plan, None
            base, cap = tail_area(plan, m.size)
            if cap < BACKUP_HEADER + plan.max_window:
                continue
        return plan, (m, base, BACKUP_HEADER + plan.max_window)
    try:
        replan(False, plan.max_window)
    except GeometryError as e:
        if not add:
            raise
        if blocked is not None:
            raise GeometryError(f"{e} (an added member's free tail cannot be used: the "
                                f"members cannot record it: {blocked})") from None
        used, _ = tail_area(plan, 0)
        raise GeometryError(f"{e}, or --add a member of at least {used + need} bytes "
                            "(its free tail holds the backup)") from None
    return plan, None  # unreachable: the planner refuses a backup it cannot have


def _partly_rebuilt(sbset: Any, members: list[Any], old: Any, instant: bool) -> list[int]:
    """Roles whose member carries md's recovery-offset flag (a rebuild that did not
    finish): their bytes beyond the recovery offset are not data. A migrating reshape
    reads them as missing in the old geometry (and rewrites them in the new one, whose
    finish clears the flag); refused when the old geometry cannot do without them, or
    for an instant change (which would declare them in sync)."""
    stale = []
    for r, m in enumerate(members):
        entry = sbset.entry_for(m) if m is not None else None
        if entry is not None and entry.sb.feature_map & MD_FEATURE_RECOVERY_OFFSET:
            stale.append(r)
    if not stale:
        return []
    which = describe_missing(stale)
    if instant:
        raise FuseraidError(f"role {which} is only partly rebuilt: assemble the array and "
                            "let the rebuild finish before this change")
    missing = sorted({r for r, m in enumerate(members) if m is None} | set(stale))
    if not survives(old, missing):
        raise FuseraidError(f"role {which} is only partly rebuilt and raid{old.level} cannot "
                            f"do without roles {describe_missing(missing)}: let the rebuild "
                            "finish first")
    log.info("reshape: role %s is only partly rebuilt: read as missing", which)
    return stale


def _own_spare_slot(sb: Any, member: Any, used: set[int]) -> tuple[int, bytes] | None:
    """(dev_number, device_uuid) of `member` if its own superblock says it is a spare of
    this array in a slot nobody else uses, else None."""
    from fuseraid.superblock.codec import SB_BLOCK, SB_OFFSET, Superblock

    try:
        own = Superblock.decode(member.pread(SB_OFFSET, SB_BLOCK), "member",
                                member_size=member.size)
    except (FuseraidError, OSError):
        return None  # blank or foreign: a new member
    d = own.dev_number
    if (own.set_uuid != sb.set_uuid or d in used or d >= len(sb.dev_roles)
            or sb.dev_roles[d] != MD_DISK_ROLE_SPARE):
        return None
    return d, own.device_uuid


def rebuild_offline(sbset: Any, members_by_role: Sequence[Any], plan: Plan) -> None:
    """After an instant change offline: write the roles it left to rebuild (a new Q,
    parity or mirror) from the others, then clear their recovery marks."""
    if not plan.rebuild_roles:
        return
    offset = plan.new_offsets[0]
    slots: list[Slot | None] = [
        Slot(m, offset) if m is not None else None
        for m in list(members_by_role)[: plan.new.raid_disks]
    ]
    slots += [None] * (plan.new.raid_disks - len(slots))
    drv = make_driver(plan.new, slots)
    for role in plan.rebuild_roles:
        if slots[role] is not None:
            drv.rebuild(role, 0, drv.rows)
    done = {id(m) for r, m in enumerate(members_by_role) if r in plan.rebuild_roles}
    uuids = {e.sb.device_uuid for e in sbset.entries if id(e.member) in done}

    def mark(sb: Any) -> None:
        if sb.device_uuid in uuids:
            sb.feature_map &= ~MD_FEATURE_RECOVERY_OFFSET
            sb.recovery_offset = 0

    sbset.commit(mark)
