"""`Array`: an assembled md array served to trio tasks: its construction, its volume, the
request path, the clean/active mark and its lifecycle (start, close).

Every request takes the interval lock on the volume's `lock_span` (shared for reads,
exclusive for writes) and then makes ONE worker-thread hop (dispatch.py) in which the
volume (a level driver, a RecoveringVolume while a role is rebuilt, or the migration's
Border) does the whole request. Member failures arrive in that thread through the
driver's `on_member_error`: the member is failed at once by the roster's failure policy
(roster.py: its slots set to None, the superblocks of the others record the role faulty,
events + 1) before the driver goes on degraded, so no degraded write is ever
acknowledged while the superblocks still trust the member.

The Array is composed of the engine's other ideas, each in its module:

    roster.py      who holds which role, spares, failed members, slot lists; the failure
                   policy and the state lock (`Roster.lock`)
    dispatch.py    where a request runs (trio thread, worker pool, to_thread) and how an
                   inline request's writes reach the members (io_uring)
    background.py  resync, spare recovery, rebuild, check, a recorded reshape
    manage.py      fail / remove / add (mdadm's manage mode)
    mutators.py    what the engine writes into the superblocks, in md's units
    status.py      status()

Composition, not mixins: the roster gets only the superblocks and a geometry getter,
the dispatcher nothing; background.py, manage.py and status.py are given the array,
since they act on most of its state, and use its public attributes and `commit()`.

Background work runs in a nursery the caller gives to `start()`; `open_array()` in
assemble.py does that. State changes go through `SuperblockSet.commit()` (data fsync
first, then superblocks) by way of `Array.commit()`, whose failed writes meet the policy.

Threads: the roster's state lock (a threading.RLock) guards the in-memory role table and
the slot lists, and `_driver`/`slots` when adopt_volume() swaps them. It is never held
across I/O, so the trio thread may take it: it only ever waits for a few in-memory
assignments. Superblock commits (fsyncs) run in worker threads outside it. Everything
else here changes on the trio thread only (a worker's request reads `_driver` and
`_resync_row` while it holds the interval lock on its rows).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterable
from typing import Any

import trio

from fuseraid.engine import manage, mutators
from fuseraid.engine.background import Background
from fuseraid.engine.dispatch import INLINE_REQUEST, Dispatcher
from fuseraid.engine.levels import Slot, make_driver
from fuseraid.engine.locks import WHOLE, IntervalLock
from fuseraid.engine.ring import WriteRing
from fuseraid.engine.roster import MemberState, Roster
from fuseraid.engine.state import SuperblockSet
from fuseraid.engine.status import report
from fuseraid.engine.tolerance import survives
from fuseraid.engine.workers import WorkerPool
from fuseraid.errors import FuseraidError, MemberIOError
from fuseraid.layout import Geometry
from fuseraid.member.device import Member
from fuseraid.superblock.codec import Superblock

__all__ = ["Array", "MemberState"]  # MemberState lives in roster.py; imported from here too

log = logging.getLogger("fuseraid.engine")


def _on_trio_thread() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _eio(msg: str) -> OSError:
    return OSError(errno.EIO, msg)


class Array:
    """An assembled array. Build it with assemble()/open_array() (assemble.py).

    `roster`, `dispatch` and `background` are its parts (see the module docstring); the
    engine's modules that are given the array use its public attributes, `commit()` and
    `sectors_from_rows()`."""

    def __init__(
        self,
        *,
        geometry: Geometry,
        superblocks: SuperblockSet,
        members: list[MemberState],
        readonly: bool,
        resync_from: int | None,
        reshape: Any = None,
    ) -> None:
        self.geometry = geometry
        self.superblocks = superblocks
        self.readonly = readonly
        self.lock = IntervalLock()
        self.roster = Roster(members, geometry.raid_disks, superblocks, lambda: self.geometry,
                             self.survives)
        self.slots: list[Slot | None] = [
            Slot(ms.member, ms.data_offset) if ms is not None and ms.state == "active" else None
            for ms in self.roster.roles
        ]
        # A reshape in progress (fuseraid.migration Reshape) serves through its Border;
        # the plain driver exists once it has finished.
        self.reshape = reshape
        self.reshape_control: Any = None
        self._driver: Any = None if reshape is not None else self.make_driver(geometry, self.slots)
        self.volume: Any = reshape.volume if reshape is not None else self._driver
        # Resync: None = in sync, else the first row not yet resynced.
        self._resync_row: int | None = resync_from
        if resync_from is not None and getattr(self._driver, "far_start", None) is not None:
            # raid10 far: copies past the resync point may be stale (a near-only
            # reshape pass leaves them so); read the near copies there, as md does
            self._driver.sync_from = resync_from * int(self._driver.row_bytes)
        self._active = False  # superblocks say "active" (resync_offset 0)
        self._active_lock = trio.Lock()
        self._closed = False
        self._closing = False
        self.mismatch_cnt: int | None = None  # of the last check()
        # members the array holds open but serves no role of (mid-reshape extra roles)
        self.extra_members: list[Member] = []
        self.dispatch = Dispatcher()
        self.background = Background(self)

    # ---- the volume ----
    @property
    def size(self) -> int:
        return int(self.volume.size)

    @property
    def members(self) -> list[MemberState]:
        """Role holders in role order, then faulty members, then spares."""
        return self.roster.members

    def make_driver(self, geometry: Geometry, slots: list[Slot | None]) -> Any:
        """A level driver over `slots` (kept by reference) whose member errors go through
        this array's failure policy. The migration builds its old/new drivers here.
        `slots` is registered so failing a member clears it there too; hand it back
        with unregister_slots() once the driver is dropped. Slots of members already
        failed are cleared at registration."""
        self.register_slots(slots)
        return self._policy_driver(geometry, slots)

    def _policy_driver(self, geometry: Geometry, slots: list[Slot | None]) -> Any:
        def on_error(role: int, exc: MemberIOError) -> None:
            slot = slots[role]
            if slot is not None:
                self._fail_member(slot.member, str(exc))

        return make_driver(geometry, slots, on_error)

    def _fail_member(self, member: Any, reason: str) -> None:
        """The failure policy (Roster.fail_member; worker thread)."""
        self.roster.fail_member(member, reason)

    def register_slots(self, slots: list[Slot | None]) -> None:
        """Have member failures clear `slots` (kept by reference). Under the state lock,
        so a failure is either seen here (its slot cleared now) or clears it later."""
        self.roster.register_slots(slots)

    def unregister_slots(self, slots: list[Slot | None]) -> None:
        """Stop tracking a slot list (its driver is no longer used)."""
        self.roster.unregister_slots(slots)

    @property
    def _slot_lists(self) -> list[list[Slot | None]]:
        # the registered slot lists (tests count them)
        return self.roster.slot_lists

    @property
    def driver(self) -> Any:
        """The plain level driver, or None while a reshape's Border serves the array.
        `array.volume is array.driver` means no rebuild or reshape owns the array."""
        return self._driver

    async def swap_volume(self, volume: Any, geometry: Geometry | None = None) -> None:
        """Replace the volume (and optionally the geometry) while no request runs."""
        async with self.lock.exclusive(0, WHOLE):
            self.volume = volume
            if geometry is not None:
                self.geometry = geometry

    def adopt_volume(self, volume: Any, geometry: Geometry | None = None) -> None:
        """Synchronous swap for a caller that already holds the whole-array lock (the
        migration's on_finished): `volume` becomes the array's plain driver."""
        changed = geometry is not None and geometry != self.geometry
        self.volume = volume
        if geometry is not None:
            self.geometry = geometry
        if changed and self._resync_row is not None:
            # a resync position is a row of the old geometry: start over in the new one
            self._resync_row = 0
        if hasattr(volume, "slots") and hasattr(volume, "scrub"):
            with self.roster.lock:
                old = [self.slots]
                if self.reshape is not None:
                    old += [getattr(self.reshape, "old_slots", None),
                            getattr(self.reshape, "new_slots", None)]
                self._driver = volume
                self.slots = volume.slots
                for lst in old:  # the previous drivers' lists
                    if lst is not None and lst is not volume.slots:
                        self.roster.unregister_slots(lst)
            self.register_slots(volume.slots)

    # ---- requests ----
    async def read(self, off: int, n: int) -> bytes:
        """Array bytes [off, off+n), short at the end. A small read of cached bytes is
        answered without a checkpoint (Dispatcher.read_now): a caller that loops on
        reads must yield itself (the FUSE loop does, once per request)."""
        if off < 0 or n < 0:
            raise OSError(errno.EINVAL, f"bad read at {off} of {n} bytes")
        vol = self.volume
        size = vol.size
        if n == 0 or off >= size:
            return b""
        n = min(n, size - off)
        if (vol is self._driver or vol is getattr(self.reshape, "volume", None)) \
                and not self.roster.dead:
            # the plain driver or a reshape's Border (no rebuild owns the array): a read
            # of one member's cached bytes is served here, at once (Dispatcher.read_now);
            # else the ordinary path
            got = self.dispatch.read_now(vol, self.lock, off, n)
            if got is not None:
                return got
        return await self._request(off, n, None)

    async def write(self, off: int, data: bytes | bytearray | memoryview) -> int:
        if self.readonly:
            raise OSError(errno.EROFS, "the array is read-only")
        n = len(memoryview(data).cast("B"))
        if off < 0:
            raise OSError(errno.EINVAL, f"bad write offset {off}")
        if off + n > self.size:
            raise OSError(errno.ENOSPC, f"write of {n} bytes at {off} passes the end of the "
                          f"array ({self.size} bytes)")
        if n == 0:
            return 0
        if not self._active:
            await self._mark_active()
        await self._request(off, n, data)
        return n

    async def flush(self) -> None:
        vol = self.volume
        roster = self.roster
        gen = roster.fail_gen
        try:
            await self.dispatch.hop(vol.flush)
        except (FuseraidError, OSError) as exc:
            if roster.dead or roster.fail_gen == gen:
                raise _eio(f"flush failed: {exc}") from exc
        self.background.after_failures()

    async def _request(self, off: int, n: int, data: Any) -> Any:
        write = data is not None
        roster, dispatch = self.roster, self.dispatch
        for _ in range(self.geometry.raid_disks + 1):
            vol = self.volume
            start, end = vol.lock_span(off, n)
            req = self._lock_now(start, end, write)
            if req is None:
                req = await self.lock.acquire(start, end, exclusive=write)
            try:
                if self.volume is not vol:
                    continue  # swapped while we waited: the span may differ
                if roster.dead:
                    raise _eio(roster.dead)
                gen = roster.fail_gen
                try:
                    if write and vol is self._driver and self._resync_pending_parity():
                        return await dispatch.hop(self._write_resync, off, data, cost=n)
                    if n < INLINE_REQUEST and dispatch.inline:
                        done, result, deferred = dispatch.try_inline(vol, off, n, data)
                        if done:
                            if deferred:
                                await dispatch.write_deferred(deferred, n)
                            return result
                    if write:
                        return await dispatch.hop(vol.write, off, data, cost=n)
                    return await dispatch.hop(vol.read, off, n, cost=n)
                except (FuseraidError, OSError) as exc:
                    if roster.dead:
                        raise _eio(roster.dead) from exc
                    if roster.fail_gen == gen:
                        raise _eio(str(exc)) from exc
                    # a member failed during the request: run it again degraded
            finally:
                self.lock.release(req)
                self.background.after_failures()
        raise _eio(f"request at {off} of {n} bytes kept failing")

    def _lock_now(self, start: int, end: int, exclusive: bool) -> Any:
        """The interval lock's uncontended case without a trio round trip: grant now if
        acquire() would grant at once (nothing held or waiting conflicts, the same FIFO
        rule), else None. acquire() adds a checkpoint there; a request does not need it,
        because its hop right after is a checkpoint (and releases the lock when it is
        cancelled before the job started). Saves one scheduler pass per request."""
        return self.lock.try_acquire(start, end, exclusive=exclusive)

    def _resync_pending_parity(self) -> bool:
        """Writes must also resync the rows they touch: a parity level not yet resynced,
        and complete (a resync needs every member; degraded, a write can only update
        parity read-modify-write, as md does on a forced dirty degraded array)."""
        return (self._resync_row is not None and self.geometry.level in (4, 5, 6)
                and not self.roster.missing())

    def _write_resync(self, off: int, data: Any) -> None:
        """A write to a parity array not yet resynced: after the write, make the parity
        of the touched rows that the resync has not reached agree with the data (a
        read-modify-write keeps stale parity stale). Whole rows: the lock span covers
        them. One hop, like every request."""
        drv = self._driver
        drv.write(off, data)
        rb = int(drv.row_bytes)
        n = len(memoryview(data).cast("B"))
        start = off // rb
        done = self._resync_row
        if done is not None:
            start = max(start, done)
        end = -(-(off + n) // rb)
        if start < end:
            drv.resync(start, end)

    # the request threads (dispatch.py), as tests and benchmarks look at them
    @property
    def workers(self) -> WorkerPool | None:
        return self.dispatch.workers

    @property
    def ring(self) -> WriteRing | None:
        return self.dispatch.ring

    @property
    def inline_counts(self) -> list[int]:
        return self.dispatch.inline_counts

    @property
    def inline(self) -> bool:
        return self.dispatch.inline

    # ---- superblock state: clean/active and the checkpoints ----
    def survives(self, missing: Iterable[int]) -> bool:
        """Can the array go on with these roles missing? The level's rule; during a
        reshape the Reshape's, over both geometries (docs/reshape.md "A member fails
        during a pass")."""
        rule = getattr(self.reshape, "survives", None)
        return bool(rule(missing)) if rule is not None else survives(self.geometry, missing)

    @property
    def redundant(self) -> bool:
        return self.geometry.level != 0

    @property
    def active(self) -> bool:
        """The superblocks say active (md: resync_offset 0; writes may be in flight)."""
        return self._active

    async def commit(self, mutator: Callable[[Superblock], Any] | None) -> None:
        """A superblock commit in a worker thread (Roster.commit: data fsync first; a
        member whose superblock write fails is failed; nothing once the array is dead)."""
        await trio.to_thread.run_sync(self.roster.commit, mutator)

    async def _mark_active(self) -> None:
        """md's clean -> active transition: resync_offset 0 while writes may be in flight."""
        async with self._active_lock:  # writers wait until "active" is durable
            if self._active:
                return
            if not self.readonly and self.redundant:
                await self.commit(mutators.active)
            self._active = True

    def _clean_mutator(self) -> Callable[[Superblock], Any]:
        per = self._dev_per_row()
        rebuilding = {ms.device_uuid: mutators.sectors_from_rows(ms.recovered_rows, per)
                      for ms in self.roster.rebuilding()}
        return mutators.clean(mutators.resync_offset(self._resync_row, per), rebuilding)

    def _dev_per_row(self) -> int | None:
        return mutators.dev_per_row(self.geometry, self._driver)

    def sectors_from_rows(self, rows: int) -> int:
        """md's checkpoint (member data-area sectors) of rows [0, rows); 0 where a prefix
        of rows is not a prefix of the members (raid10 far: only the end counts)."""
        return mutators.sectors_from_rows(rows, self._dev_per_row())

    def rows_from_sectors(self, sectors: int) -> int:
        """Rows fully inside the first `sectors` of each member's data area (rounded
        down: resuming a little early is always safe)."""
        per = self._dev_per_row()
        if per is None:
            return 0
        return mutators.rows_from_sectors(sectors, per, int(self._driver.rows))

    # ---- public state API (create, assemble, the migration) ----
    def missing_roles(self) -> list[int]:
        """Roles without an in-sync member (missing, failed or still rebuilding)."""
        return self.roster.missing_roles()

    @property
    def resync_row(self) -> int | None:
        """None when in sync, else the first row (of the current geometry) that the
        resync has not reached."""
        return self._resync_row

    @resync_row.setter
    def resync_row(self, row: int | None) -> None:
        # the background resync moves it forward (background.py); start_resync() back
        self._resync_row = row

    def start_resync(self, from_row: int = 0) -> None:
        """Record that rows from `from_row` on need a resync (md: resync_offset). It runs
        in the background once the plain driver serves a complete array (after a rebuild
        or a reshape); until then the array stays dirty: close() writes the checkpoint,
        never MaxSector. Never moves an earlier pending position forward."""
        if from_row < 0:
            raise ValueError(f"bad resync row {from_row}")
        if self._resync_row is None or from_row < self._resync_row:
            self._resync_row = from_row
        if _on_trio_thread():
            self.background.kick()  # (assembly calls this in a worker, before start())

    def mark_in_sync(self) -> None:
        """The whole array is in sync (e.g. create's initial sync ran): no resync is
        pending, and close() records it (resync_offset = MaxSector) even when nothing
        was written through this Array."""
        self._resync_row = None
        if not self.readonly and self.redundant:
            self._active = True  # the on-disk state may be dirty: close() commits clean

    def kick(self) -> None:
        """Start pending background work (rebuild, spare recovery, resync) if the array
        is idle: call it after changing roles or the volume."""
        self.background.kick()

    def busy(self) -> str | None:
        """Why a reshape (or another whole-array change) cannot start now, or None.
        Check it while holding `lock.exclusive(0, WHOLE)` so nothing starts in between."""
        if self.reshape is not None:
            return "a reshape is already running"
        if self._driver is None or self.volume is not self._driver:
            return "a rebuild is running; wait for it to finish"
        task = self.background.task
        if task is not None:
            return f"{task.name} is running; wait for it to finish"
        if self.roster.rebuilding():
            return "a member is waiting to be rebuilt"
        if self._resync_row is not None and self.redundant:
            return "a resync is pending; wait for it to finish"
        return None

    def role_holders(self) -> list[MemberState | None]:
        """A copy of the role table: role -> its member (None: missing)."""
        return self.roster.role_holders()

    def spare_members(self) -> list[MemberState]:
        """A copy of the spares list."""
        return self.roster.spare_members()

    def set_roles(self, roles: list[MemberState | None],
                  spares: list[MemberState] | None = None) -> None:
        """Replace the role table (and the spares) at once, under the state lock; the
        caller holds lock.exclusive(0, WHOLE) and updates each MemberState's role/state
        itself. For a reshape: the new geometry's role set."""
        self.roster.set_roles(roles, spares)

    def fit_roles(self, raid_disks: int) -> None:
        """Size the role table to `raid_disks` roles: holders of dropped roles become
        spares, new roles start missing."""
        self.roster.fit_roles(raid_disks)

    # ---- members (manage.py) ----
    async def fail(self, which: int | str) -> dict[str, Any]:
        """Mark a member faulty (by role or path), like `mdadm --fail`."""
        return await manage.fail(self, which)

    async def remove(self, which: int | str) -> dict[str, Any]:
        """Take a faulty member or a spare out of the array, like `mdadm --remove`."""
        return await manage.remove(self, which)

    async def add(self, path: str) -> dict[str, Any]:
        """Add a member: it takes a missing role and is rebuilt (in the background when the
        array runs one, else before this returns), or it becomes a spare."""
        return await manage.add(self, path)

    # ---- lifecycle and background work (background.py) ----
    async def start(self, nursery: trio.Nursery) -> None:
        """Mark the array active and run its background work in `nursery`."""
        self.background.nursery = nursery
        if not self._closing:
            await self.dispatch.start_workers(nursery)
        if not self._closing and not self.readonly:
            await self.dispatch.start_ring(nursery)
        if not self.readonly:
            await self._mark_active()
        if self.reshape is not None and not self.readonly:
            nursery.start_soon(self.background.run_reshape)
        self.background.kick()

    async def wait_idle(self) -> None:
        """Wait until no background task runs (resync, rebuild, check)."""
        await self.background.wait_idle()

    async def check(self, repair: bool = False) -> int:
        """md's check (repair=False) or repair scrub over the whole array; returns the
        mismatch count in md's units (sectors)."""
        self.mismatch_cnt = await self.background.check(repair)
        return self.mismatch_cnt

    def stop_background(self) -> None:
        """Cancel the running background task and start no new one."""
        self.background.stop()

    def status(self) -> dict[str, Any]:
        """Level, layout, state, members and the running task (status.py)."""
        return report(self)

    # ---- shutdown ----
    async def close(self) -> None:
        """Flush, mark clean (resync/recovery checkpoints as md writes them), close members.
        Shielded: runs to the end even when the caller is cancelled."""
        if self._closing:
            return
        self._closing = True
        with trio.CancelScope(shield=True):
            self.stop_background()
            await self.wait_idle()
            await self.dispatch.stop()
            self._closed = True
            try:
                if not self.readonly:
                    await self.flush()
                    if self._active and self.redundant and not self.roster.dead:
                        await self.commit(self._clean_mutator())
                        self._active = False
            except (FuseraidError, OSError) as exc:
                log.warning("closing the array: %s", exc)
            finally:
                self._close_members()

    def abandon(self) -> None:
        """Close the members without writing anything: what a crash leaves (tests)."""
        self._closing = self._closed = True
        self.stop_background()
        self.dispatch.abandon()
        self._close_members()

    def _close_members(self) -> None:
        seen: set[int] = set()
        for m in [ms.member for ms in self.members] + self.extra_members:
            if id(m) not in seen:
                seen.add(id(m))
                try:
                    m.close()
                except MemberIOError as exc:
                    log.warning("%s", exc)
