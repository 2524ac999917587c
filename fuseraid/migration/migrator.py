"""The migrator: copies one window at a time from the old geometry to the new one in the
durable order of docs/reshape.md (read, backup+fsync if in place, write, fsync + commit
the border, move the border). `Reshape` is the synchronous core (one method call per
window, run in a worker thread); `run_live` is the trio task that drives it under the
array's range lock with a speed limit and pause/resume; `run_offline` drives it alone."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from fuseraid.engine.levels import Slot, make_driver
from fuseraid.engine.state import Entry
from fuseraid.errors import FuseraidError, MemberIOError
from fuseraid.migration import checkpoint
from fuseraid.migration.backup import BackupFile, reshape_id
from fuseraid.migration.border import Border, RowWriter, read_into
from fuseraid.migration.plan import ALIGN, FORWARD, MAX_WINDOW, SB_FLOOR, Plan, plan_reshape
from fuseraid.superblock.codec import MD_DISK_ROLE_SPARE, MD_FEATURE_RECOVERY_OFFSET, SB_HEADER

log = logging.getLogger("fuseraid.migration")
Hook = Callable[[str], None]
YIELD_SECONDS = 0.002  # pause between windows while foreground requests wait


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
        backup: BackupFile | None = None,
        stale_roles: Sequence[int] = (),
        hook: Hook = _no_hook,
        driver_factory: Callable[[Any, list[Slot | None]], Any] | None = None,
    ) -> None:
        self.plan = plan
        self.sbset = sbset
        self.backup = backup
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
        self.volume = Border(self.old, self.new, border, plan.direction, plan.content)
        self.windows = 0  # windows copied by this process (tests, status)
        self.bytes_copied = 0

    def rebind(self, driver_factory: Callable[[Any, list[Slot | None]], Any]) -> None:
        """Rebuild both drivers over the same slot lists with another factory (an Array
        created after this Reshape passes its make_driver, so member failures go
        through the array's policy from then on)."""
        self.old = driver_factory(self.plan.old, self.old_slots)
        self.new = driver_factory(self.plan.new, self.new_slots)
        self.volume.old, self.volume.new = self.old, self.new

    def _member(self, role: int) -> Any:
        return self._members[role] if role < len(self._members) else None

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
        read_into(self.old, start, view[: cut - start])
        if cut < end:
            view[cut - start :] = bytes(end - cut)
        return view

    def copy_window(self, start: int, end: int, needs_backup: bool) -> None:
        """Migrate [start, end). The caller holds the range lock on it: exclusively when
        needs_backup, else at least shared (writers wait; readers may read the old
        layout meanwhile, see docs/reshape.md "Reads of the window in flight")."""
        forward = self.plan.direction == FORWARD
        if (start if forward else end) != self.border:
            raise FuseraidError(f"reshape: window [{start}, {end}) does not start at the "
                                f"border {self.border}")
        self.hook("read")
        data = self._source(start, end)
        if needs_backup:
            if self.backup is None:
                raise FuseraidError("reshape: this window is migrated in place and needs a "
                                    "backup file (--backup-file FILE)")
            self.hook("backup")
            self.backup.write(start, data)
        self.write_window(start, end, data)

    def write_window(self, start: int, end: int, data: Any) -> None:
        """Write the window in the new geometry, make it durable, move the border."""
        self.hook("write")
        writer = getattr(self, "_writer", None)
        if writer is None:
            writer = self._writer = RowWriter()
        writer.write(self.new, start, data)
        self.hook("commit")
        moved = end if self.plan.direction == FORWARD else start
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
        """Commit the new geometry as a plain md array and drop the backup record."""
        if not self.done:
            raise FuseraidError("reshape: cannot finish, windows remain")
        self.hook("finish")
        self._commit(checkpoint.finish(self.plan, self.failed_devs))
        if self.backup is not None:
            self.backup.clear()

    def final_volume(self) -> Any:
        """The driver to serve the array once finished (the new geometry, full size)."""
        return self.new

    # The engine runs a resumed reshape through these two, so it needs no import of
    # this module (the migration layer sits above the engine).
    def new_control(self) -> Control:
        return Control()

    async def run_live(self, lock: Any, control: Control,
                       on_finished: Callable[[Any], None]) -> None:
        await run_live(self, lock, control, on_finished)


# ---- drivers -----------------------------------------------------------------------------


def run_offline(reshape: Reshape, *, speed_limit: int | None = None) -> None:
    """Migrate to the end and finish, in this thread (no concurrent I/O)."""
    reshape.replay_backup()
    pacer = Pacer(speed_limit)
    while not reshape.done:
        s, e, b = reshape.next_window()
        reshape.copy_window(s, e, b)
        delay = pacer.delay(e - s)
        if delay:  # sleep(0) would still give the CPU away on a busy machine
            time.sleep(delay)
    reshape.finish()


class Pacer:
    """Average rate limiter: how long to sleep after copying n bytes."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._t0 = time.monotonic()
        self._bytes = 0

    def delay(self, n: int) -> float:
        if not self.limit:
            return 0.0
        self._bytes += n
        due = self._t0 + self._bytes / self.limit
        return max(0.0, due - time.monotonic())


@dataclass
class Control:
    """Live controls of a running migration (the control socket's grow/pause/resume)."""

    speed_limit: int | None = None
    paused: bool = False
    error: str | None = None
    finished: trio.Event = field(default_factory=trio.Event)
    _unpaused: trio.Event = field(default_factory=trio.Event)

    def pause(self) -> None:
        self.paused = True
        self._unpaused = trio.Event()

    def resume(self) -> None:
        self.paused = False
        self._unpaused.set()

    async def wait_unpaused(self) -> None:
        while self.paused:
            await self._unpaused.wait()


async def run_live(
    reshape: Reshape,
    lock: Any,
    control: Control,
    on_finished: Callable[[Any], None],
) -> None:
    """The background task: one window at a time under `lock` (the array's IntervalLock,
    exclusive on the window, so foreground requests touching it wait and others go on),
    honouring pause and the speed limit. When done it takes the whole array, commits
    the new geometry and calls on_finished(new_volume) so the array can swap volumes.
    An error stops the pass (control.error says why); it does not propagate."""
    from fuseraid.engine.locks import WHOLE

    try:
        await trio.to_thread.run_sync(reshape.replay_backup)
        pacer = Pacer(control.speed_limit)
        while not reshape.done:
            await control.wait_unpaused()
            if pacer.limit != control.speed_limit:
                pacer = Pacer(control.speed_limit)
            s, e, b = reshape.next_window()
            if b:
                # in place: the window's own old bytes are overwritten, nobody may read
                async with lock.exclusive(s, e):
                    await trio.to_thread.run_sync(reshape.copy_window, s, e, b)
            else:
                # writers of the window wait; readers go on, from the old layout, which
                # the safety rule keeps intact until the border has moved past it
                async with lock.shared(s, e):
                    await trio.to_thread.run_sync(reshape.copy_window, s, e, b)
                # barrier: readers that may still be reading the window's old layout
                # finish before the next window's writes may overwrite it
                async with lock.exclusive(s, e):
                    pass
            # let foreground requests queued behind the window go first
            delay = pacer.delay(e - s) if control.speed_limit else 0.0
            if not delay and lock.waiting():
                delay = YIELD_SECONDS
            await trio.sleep(delay)
        async with lock.exclusive(0, WHOLE):
            await trio.to_thread.run_sync(reshape.finish)
            on_finished(reshape.final_volume())
    except (FuseraidError, OSError) as e:
        # the durable state is consistent at every instant: stop, report, keep serving
        control.error = str(e)
        log.warning("reshape stopped: %s", e)
    finally:
        control.finished.set()


# ---- starting a reshape -------------------------------------------------------------


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
    plan = plan_reshape(old, offsets, sizes, request, exposed=exposed, floor=data_floor(sb),
                        backup=backup_file is not None, max_window=max_window)
    stale = _partly_rebuilt(sbset, members, old, plan.instant)
    extra = plan.new.raid_disks - old.raid_disks
    if len(add) > max(0, extra):
        raise FuseraidError(f"{len(add)} member(s) given but raid{plan.new.level} on "
                            f"{plan.new.raid_disks} disks needs {max(0, extra)} more")
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
    backup = (BackupFile(backup_file, sb.set_uuid, reshape_id(plan.ident))
              if backup_file is not None else None)
    sbset.commit(mutate)
    border = 0 if plan.direction == FORWARD else plan.end
    return plan, Reshape(plan, sbset, members, border, backup=backup, hook=hook,
                         stale_roles=stale, driver_factory=driver_factory)


def _partly_rebuilt(sbset: Any, members: list[Any], old: Any, instant: bool) -> list[int]:
    """Roles whose member carries md's recovery-offset flag (a rebuild that did not
    finish): their bytes beyond the recovery offset are not data. A migrating reshape
    reads them as missing in the old geometry (and rewrites them in the new one, whose
    finish clears the flag); refused when the old geometry cannot do without them, or
    for an instant change (which would declare them in sync)."""
    from fuseraid.engine.tolerance import describe_missing, survives

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
