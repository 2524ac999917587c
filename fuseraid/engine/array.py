"""`Array`: an assembled md array served to trio tasks.

Every request takes the interval lock on the volume's `lock_span` (shared for reads,
exclusive for writes) and then makes ONE worker-thread hop in which the volume (a level
driver, a RecoveringVolume while a role is rebuilt, or the migration's Border) does the
whole request. Member failures arrive in that thread through the driver's
`on_member_error`: the member is failed at once (its slots set to None, the superblocks
of the others record the role faulty, events + 1) before the driver goes on degraded, so
no degraded write is ever acknowledged while the superblocks still trust the member.

Background work (resync after an unclean stop, rebuild onto an added member, check) runs
in a nursery the caller gives to `start()`; `open_array()` in assemble.py does that.
State changes go through `SuperblockSet.commit()` (data fsync first, then superblocks).

Threads: `_state_lock` (a threading.RLock) guards the in-memory role table and the slot
lists. It is never held across I/O, so the trio thread may take it: it only ever waits for
a few in-memory assignments. Superblock commits (fsyncs) run in worker threads outside it.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from fuseraid.engine.levels import Slot, make_driver
from fuseraid.engine.locks import WHOLE, IntervalLock
from fuseraid.engine.recovery import RecoveringVolume
from fuseraid.engine.ring import WriteRing
from fuseraid.engine.state import Entry, SuperblockSet
from fuseraid.engine.tolerance import describe_missing, survives
from fuseraid.engine.workers import WorkerPool
from fuseraid.errors import FuseraidError, MemberIOError
from fuseraid.layout import Geometry, layout_name
from fuseraid.member import nowait
from fuseraid.member.device import Member
from fuseraid.superblock.codec import (
    MAX_SECTOR,
    MD_DISK_ROLE_FAULTY,
    MD_DISK_ROLE_MAX,
    MD_DISK_ROLE_SPARE,
    MD_FEATURE_RECOVERY_OFFSET,
    SECTOR,
    Superblock,
)

log = logging.getLogger("fuseraid.engine")

# Array bytes per background step (resync, rebuild, check): big enough that one thread
# hop does real work, small enough that foreground requests wait little for the lock.
BATCH_BYTES = 4 << 20
# Rebuild checkpoints (recovery_offset) at most this often (seconds).
CHECKPOINT_SECONDS = 5.0
# Worker threads per array for requests (workers.py). The hops are batched, so more
# threads only help requests whose copies release the GIL (large ones) run side by side.
IO_THREADS = 2
# Requests from this many bytes on hop with trio.to_thread.run_sync (see _hop).
LARGE_REQUEST = 64 << 10
# Requests below this are first tried on the trio thread without blocking (page-cached
# reads, deferred writes): a thread hop costs ~10x a 4 KiB request. Bounded so that the
# parity and copies done on the trio thread stay a few microseconds.
INLINE_REQUEST = 64 << 10
# FUSERAID_REQUEST_POOL=0: no worker pool, every hop is trio.to_thread.run_sync (the
# previous dispatch; kept for A/B measurements, docs/PERFORMANCE.md).
REQUEST_POOL = os.environ.get("FUSERAID_REQUEST_POOL", "1") != "0"
INLINE = os.environ.get("FUSERAID_INLINE", "1") != "0"


@dataclass(eq=False)
class MemberState:
    """One member of the array and what it is doing."""

    path: str
    member: Member
    entry: Entry
    role: int | None  # None for a spare
    state: str  # active | rebuilding | faulty | spare
    recovered_rows: int = 0  # rebuilding: rows [0, recovered_rows) are valid

    @property
    def data_offset(self) -> int:
        return self.entry.sb.data_offset_bytes

    @property
    def device_uuid(self) -> bytes:
        return self.entry.sb.device_uuid


@dataclass
class Task:
    """Progress of the running background task."""

    name: str
    total_bytes: int
    done_bytes: int = 0
    started: float = 0.0

    def report(self, now: float) -> dict[str, Any]:
        elapsed = max(now - self.started, 1e-9)
        speed = self.done_bytes / elapsed
        left = self.total_bytes - self.done_bytes
        return {
            "name": self.name,
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
            "percent": round(100.0 * self.done_bytes / self.total_bytes, 2)
            if self.total_bytes else 100.0,
            "speed": speed,
            "eta": left / speed if speed > 0 else None,
        }


def _set_role(sb: Superblock, dev_number: int, role: int) -> None:
    """dev_roles[dev_number] = role, growing dev_roles (unused slots read as faulty,
    as md's super_1_sync writes them)."""
    while len(sb.dev_roles) <= dev_number:
        sb.dev_roles.append(MD_DISK_ROLE_FAULTY)
    sb.max_dev = len(sb.dev_roles)
    sb.dev_roles[dev_number] = role


def _on_trio_thread() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _try_inline(vol: Any, off: int, n: int, data: Any) -> tuple[bool, Any, list[Any]]:
    """A small request on the trio thread, without blocking (member/nowait.py): its reads
    come from the page cache, its parity is computed here, its member writes come back
    deferred. (False, ...) when it would block: nothing was written, so the caller just
    runs the whole request in a worker thread. Any other exception is the request's
    own outcome, as it would have been in a worker."""
    try:
        with nowait.section() as sec:
            result = vol.read(off, n) if data is None else vol.write(off, data)
    except nowait.WouldBlock:
        return False, None, []
    return True, result, sec.deferred


def _run_deferred(deferred: list[tuple[Any, list[tuple[int, int, Any]]]]) -> None:
    """Member writes deferred by an inline request, in order, through their drivers
    (worker thread): a member that fails meets the policy here, as in a plain request."""
    for drv, writes in deferred:
        drv._pwrite_all(writes)


def _eio(msg: str) -> OSError:
    return OSError(errno.EIO, msg)


class Array:
    """An assembled array. Build it with assemble()/open_array() (assemble.py)."""

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
        # In-memory state only (roles, spares, faulty, slot lists); NEVER held across I/O,
        # so the trio thread can take it without stalling the event loop.
        self._state_lock = threading.RLock()
        # member id -> Event set once its failure is durable (FAULTY committed, slots
        # cleared): other threads that hit the same member wait on it, not on a lock.
        self._failing: dict[int, threading.Event] = {}
        self._roles: list[MemberState | None] = [None] * geometry.raid_disks
        self._spares: list[MemberState] = []
        self._faulty: list[MemberState] = []
        for ms in members:
            if ms.state == "spare":
                self._spares.append(ms)
            elif ms.state == "faulty":
                self._faulty.append(ms)
            else:
                assert ms.role is not None
                self._roles[ms.role] = ms
        # Slot lists of every driver built here: failing a member clears it in all.
        self._slot_lists: list[list[Slot | None]] = []
        self.slots: list[Slot | None] = [
            Slot(ms.member, ms.data_offset) if ms is not None and ms.state == "active" else None
            for ms in self._roles
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
        self._dead: str | None = None  # why I/O fails, once beyond tolerance
        self._fail_gen = 0
        self._kicked_gen = 0
        self._closed = False
        self._closing = False
        self._stopping = False  # no new background work
        self._active_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._task: Task | None = None
        self._task_scope: trio.CancelScope | None = None
        self._pending = 0  # background jobs launched but not finished
        self._idle = trio.Event()
        self._idle.set()
        self.mismatch_cnt: int | None = None
        # members the array holds open but serves no role of (mid-reshape extra roles)
        self.extra_members: list[Member] = []
        # Request hops (read/write/flush): the array's own worker threads while start()'s
        # nursery runs; trio.to_thread.run_sync otherwise (see _hop).
        self.workers: WorkerPool | None = None
        self.ring: WriteRing | None = None  # io_uring for inline requests' writes
        self.inline_counts = [0, 0]  # small requests that fell back / were served inline
        # small requests first try the trio thread (INLINE_REQUEST); FUSERAID_INLINE=0
        # turns that off, for A/B measurements
        self.inline = INLINE
        self._workers_scope: trio.CancelScope | None = None

    # ---- the volume ----
    @property
    def size(self) -> int:
        return int(self.volume.size)

    @property
    def members(self) -> list[MemberState]:
        """Role holders in role order, then faulty members, then spares."""
        return [ms for ms in self._roles if ms is not None] + self._faulty + self._spares

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

    def register_slots(self, slots: list[Slot | None]) -> None:
        """Have member failures clear `slots` (kept by reference). Under the state lock,
        so a failure is either seen here (its slot cleared now) or clears it later."""
        with self._state_lock:
            self._clear_failed(slots)
            if not any(lst is slots for lst in self._slot_lists):
                self._slot_lists.append(slots)

    def unregister_slots(self, slots: list[Slot | None]) -> None:
        """Stop tracking a slot list (its driver is no longer used)."""
        with self._state_lock:
            self._slot_lists = [lst for lst in self._slot_lists if lst is not slots]

    def _clear_failed(self, slots: list[Slot | None]) -> None:
        # only failures already durable: one still committing clears it when it is
        failed = {id(ms.member) for ms in self._faulty if id(ms.member) not in self._failing}
        for i, s in enumerate(slots):
            if s is not None and id(s.member) in failed:
                slots[i] = None

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
            with self._state_lock:
                old = [self.slots]
                if self.reshape is not None:
                    old += [getattr(self.reshape, "old_slots", None),
                            getattr(self.reshape, "new_slots", None)]
                self._driver = volume
                self.slots = volume.slots
                self._slot_lists = [lst for lst in self._slot_lists
                                    if lst is volume.slots or not any(lst is o for o in old)]
            self.register_slots(volume.slots)

    # ---- requests ----
    async def read(self, off: int, n: int) -> bytes:
        if off < 0 or n < 0:
            raise OSError(errno.EINVAL, f"bad read at {off} of {n} bytes")
        size = self.size
        if n == 0 or off >= size:
            return b""
        return await self._request(off, min(n, size - off), None)

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
        gen = self._fail_gen
        try:
            await self._hop(vol.flush)
        except (FuseraidError, OSError) as exc:
            if self._dead or self._fail_gen == gen:
                raise _eio(f"flush failed: {exc}") from exc
        self._after_request()

    async def _request(self, off: int, n: int, data: Any) -> Any:
        write = data is not None
        for _ in range(self.geometry.raid_disks + 1):
            vol = self.volume
            start, end = vol.lock_span(off, n)
            req = self._lock_now(start, end, write)
            if req is None:
                req = await self.lock.acquire(start, end, exclusive=write)
            try:
                if self.volume is not vol:
                    continue  # swapped while we waited: the span may differ
                if self._dead:
                    raise _eio(self._dead)
                gen = self._fail_gen
                try:
                    if write and vol is self._driver and self._resync_pending_parity():
                        return await self._hop(self._write_resync, off, data, cost=n)
                    if n < INLINE_REQUEST and self.inline:
                        done, result, deferred = _try_inline(vol, off, n, data)
                        self.inline_counts[done] += 1
                        if done:
                            if deferred:
                                await self._write_deferred(deferred, n)
                            return result
                    if write:
                        return await self._hop(vol.write, off, data, cost=n)
                    return await self._hop(vol.read, off, n, cost=n)
                except (FuseraidError, OSError) as exc:
                    if self._dead:
                        raise _eio(self._dead) from exc
                    if self._fail_gen == gen:
                        raise _eio(str(exc)) from exc
                    # a member failed during the request: run it again degraded
            finally:
                self.lock.release(req)
                self._after_request()
        raise _eio(f"request at {off} of {n} bytes kept failing")

    async def _write_deferred(self, deferred: list[tuple[Any, list[Any]]], n: int) -> None:
        """The member writes of an inline request: through io_uring when the array has
        a ring, else one worker hop. Writes that fail or come back short are issued again
        through their driver in a worker, where a real error meets the failure policy."""
        ring = self.ring
        if ring is None or not ring.running:
            await self._hop(_run_deferred, deferred, cost=n)
            return
        items: list[tuple[int, int, Any]] = []
        owners: list[tuple[Any, tuple[int, int, Any]]] = []
        for drv, writes in deferred:
            for w in writes:
                slot = drv.slots[w[0]]
                if slot is not None:  # as _pwrite_all: a role failed meanwhile drops out
                    items.append((slot.member.fd, slot.data_offset + w[1], w[2]))
                    owners.append((drv, w))
        results = await ring.write(items)
        redo = [(drv, [w]) for (drv, w), res in zip(owners, results, strict=True)
                if res != memoryview(w[2]).nbytes]
        if redo:
            await self._hop(_run_deferred, redo, cost=n)

    def _lock_now(self, start: int, end: int, exclusive: bool) -> Any:
        """The interval lock's uncontended case without a trio round trip: grant now if
        acquire() would grant at once (nothing held or waiting conflicts, the same FIFO
        rule), else None. acquire() adds a checkpoint there; a request does not need it,
        because its hop right after is a checkpoint (and releases the lock when it is
        cancelled before the job started). Saves one scheduler pass per request."""
        return self.lock.try_acquire(start, end, exclusive=exclusive)

    async def _hop(self, fn: Callable[..., Any], *args: Any, cost: int = 0) -> Any:
        """THE thread hop of a request: fn(*args) (a whole request) in a worker thread.
        Small requests go to the array's WorkerPool (batched hand-over, workers.py);
        large ones (>= LARGE_REQUEST bytes) and any hop while no pool runs use
        trio.to_thread.run_sync (measured faster for 1 MiB requests, where the ~100 us
        hop is small next to the copy). Either way, once a worker has started the
        request it runs to the end and we wait for it even when cancelled (a write is
        never half-applied behind the caller's back, and the interval lock stays held
        until the member I/O is over); a pool job still queued is withdrawn on
        cancellation and never runs."""
        pool = self.workers
        if cost < LARGE_REQUEST and pool is not None and pool.running:
            return await pool.run(fn, *args, cost=cost)
        return await trio.to_thread.run_sync(fn, *args)

    async def _own_workers(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The owner of the request worker threads: they live exactly as long as this
        task (the nursery given to start()), and close()/abandon() stop them earlier."""
        pool = WorkerPool(IO_THREADS, name="fuseraid-io")
        pool.start()
        self.workers = pool
        try:
            with trio.CancelScope() as self._workers_scope:
                task_status.started()
                await trio.sleep_forever()
        finally:
            await self._stop_workers()

    async def _stop_workers(self) -> None:
        """Stop and join the request threads (jobs queued before still run; later hops
        use to_thread) and end their owner task."""
        pool = self.workers
        if self._workers_scope is not None:
            self._workers_scope.cancel()
        if pool is None:
            return
        pool.stop()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(pool.join)
        log.debug("request threads: %d jobs in %d batches; inline %d, fell back %d",
                  pool.jobs, pool.batches, self.inline_counts[1], self.inline_counts[0])

    def _resync_pending_parity(self) -> bool:
        """Writes must also resync the rows they touch: a parity level not yet resynced,
        and complete (a resync needs every member; degraded, a write can only update
        parity read-modify-write, as md does on a forced dirty degraded array)."""
        return (self._resync_row is not None and self.geometry.level in (4, 5, 6)
                and not self._missing_roles())

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

    def _after_request(self) -> None:
        if self._fail_gen != self._kicked_gen:
            self._kicked_gen = self._fail_gen
            self._kick()

    # ---- superblock state ----
    @property
    def redundant(self) -> bool:
        return self.geometry.level != 0

    async def _commit(self, mutator: Callable[[Superblock], Any] | None) -> None:
        await trio.to_thread.run_sync(self._commit_sync, mutator)

    def _commit_sync(self, mutator: Callable[[Superblock], Any] | None) -> None:
        """A superblock commit (worker thread). Not under the state lock: commits are
        serialised by the SuperblockSet itself. Nothing is written once the array is
        dead (md writes nothing either: the superblocks stay as they were, so the
        array assembles again once the member is back)."""
        if self._dead:
            return
        failed = self.superblocks.commit(mutator)
        for e in failed:
            self._fail_member(e.member, "superblock write failed")

    async def _mark_active(self) -> None:
        """md's clean -> active transition: resync_offset 0 while writes may be in flight."""
        async with self._active_lock:  # writers wait until "active" is durable
            if self._active:
                return
            if not self.readonly and self.redundant:

                def active(sb: Superblock) -> None:
                    sb.resync_offset = 0

                await self._commit(active)
            self._active = True

    def _clean_mutator(self) -> Callable[[Superblock], None]:
        resync = self._resync_checkpoint()
        rebuilding = {ms.device_uuid: self._recovery_sectors(ms) for ms in self._rebuilding()}

        def clean(sb: Superblock) -> None:
            sb.resync_offset = resync
            if sb.device_uuid in rebuilding:
                sb.feature_map |= MD_FEATURE_RECOVERY_OFFSET
                sb.recovery_offset = rebuilding[sb.device_uuid]

        return clean

    def _dev_per_row(self) -> int | None:
        """Member data-area bytes that rows [0, k) fill, per row; None when a prefix of
        rows is not a prefix of the member (raid10 far copies): checkpoint only at the end."""
        g = self.geometry
        if g.level in (4, 5, 6):
            return g.chunk
        if g.level == 1:
            return int(self._driver.row_bytes) if self._driver is not None else None
        if g.level == 10:
            p = g.raid10
            if p.far == 1 or p.offset:
                return g.chunk * p.copies
            return None
        return None

    def _resync_checkpoint(self) -> int:
        if self._resync_row is None:
            return MAX_SECTOR
        per = self._dev_per_row()
        return 0 if per is None else self._resync_row * per // SECTOR

    def _recovery_sectors(self, ms: MemberState) -> int:
        per = self._dev_per_row()
        return 0 if per is None else ms.recovered_rows * per // SECTOR

    def rows_from_sectors(self, sectors: int) -> int:
        """Rows fully inside the first `sectors` of each member's data area (rounded
        down: resuming a little early is always safe)."""
        per = self._dev_per_row()
        if per is None:
            return 0
        return min(sectors * SECTOR // per, int(self._driver.rows))

    # ---- failure policy ----
    def _find(self, member: Any) -> MemberState | None:
        for ms in self.members:
            if ms.member is member:
                return ms
        return None

    def _missing_roles(self) -> list[int]:
        return [r for r, ms in enumerate(self._roles) if ms is None or ms.state != "active"]

    def missing_roles(self) -> list[int]:
        """Roles without an in-sync member (missing, failed or still rebuilding)."""
        with self._state_lock:
            return self._missing_roles()

    # ---- public state API (create, assemble, the migration) ----
    @property
    def resync_row(self) -> int | None:
        """None when in sync, else the first row (of the current geometry) that the
        resync has not reached."""
        return self._resync_row

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
            self._kick()  # (assembly calls this in a worker, before start())

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
        self._kick()

    def busy(self) -> str | None:
        """Why a reshape (or another whole-array change) cannot start now, or None.
        Check it while holding `lock.exclusive(0, WHOLE)` so nothing starts in between."""
        if self.reshape is not None:
            return "a reshape is already running"
        if self._driver is None or self.volume is not self._driver:
            return "a rebuild is running; wait for it to finish"
        if self._task is not None:
            return f"{self._task.name} is running; wait for it to finish"
        if any(ms is not None and ms.state == "rebuilding" for ms in self._roles):
            return "a member is waiting to be rebuilt"
        if self._resync_row is not None and self.redundant:
            return "a resync is pending; wait for it to finish"
        return None

    def role_holders(self) -> list[MemberState | None]:
        """A copy of the role table: role -> its member (None: missing)."""
        with self._state_lock:
            return list(self._roles)

    def spare_members(self) -> list[MemberState]:
        """A copy of the spares list."""
        with self._state_lock:
            return list(self._spares)

    def set_roles(self, roles: list[MemberState | None],
                  spares: list[MemberState] | None = None) -> None:
        """Replace the role table (and the spares) at once, under the state lock; the
        caller holds lock.exclusive(0, WHOLE) and updates each MemberState's role/state
        itself. For a reshape: the new geometry's role set."""
        with self._state_lock:
            self._roles = list(roles)
            if spares is not None:
                self._spares = list(spares)

    def fit_roles(self, raid_disks: int) -> None:
        """Size the role table to `raid_disks` roles: holders of dropped roles become
        spares, new roles start missing."""
        with self._state_lock:
            for ms in self._roles[raid_disks:]:
                if ms is not None:
                    ms.role, ms.state = None, "spare"
                    self._spares.append(ms)
            self._roles = (self._roles[:raid_disks]
                           + [None] * max(0, raid_disks - len(self._roles)))

    def _rebuilding(self) -> list[MemberState]:
        return [ms for ms in self._roles if ms is not None and ms.state == "rebuilding"]

    def _fail_member(self, member: Any, reason: str) -> None:
        """Fail a member (worker thread). Raises OSError(EIO) when the array cannot go on.

        Order matters: the superblocks of the others record the role faulty BEFORE the
        member leaves the slots, so no request can complete a write that skips it while
        the superblocks still trust it. The commit runs outside the state lock; other
        threads that hit the same member meanwhile wait for it on an Event.

        Beyond what the level tolerates nothing is written (as md's raid0 does): the
        array is dead in memory only, I/O fails with EIO, and since the superblocks
        never recorded the failure, the array assembles again once the member is back."""
        first = False
        with self._state_lock:
            ms = self._find(member)
            pending = self._failing.get(id(member))
            if ms is not None and ms.state != "faulty":
                log.warning("%s failed: %s", ms.path, reason)
                if ms in self._spares:
                    self._spares.remove(ms)
                elif ms.role is not None and self._roles[ms.role] is ms:
                    self._roles[ms.role] = None
                ms.state = "faulty"
                self._faulty.append(ms)
                missing = self._missing_roles()
                if not survives(self.geometry, missing):
                    self._dead = (f"array failed: roles {describe_missing(missing)} are "
                                  f"missing (last: {ms.path}: {reason})")
                self.superblocks.drop(ms.entry)
                pending = self._failing[id(member)] = threading.Event()
                first = True
        if first:
            assert ms is not None and pending is not None
            try:
                if not self._dead:
                    dev = ms.entry.sb.dev_number
                    self._commit_sync(lambda sb: _set_role(sb, dev, MD_DISK_ROLE_FAULTY))
            finally:
                with self._state_lock:
                    self._fail_gen += 1
                    self._clear_member(member)
                    self._failing.pop(id(member), None)
                pending.set()
        elif pending is not None:
            pending.wait()  # another thread is committing this failure
        with self._state_lock:
            self._clear_member(member)
        if self._dead:
            raise _eio(self._dead)

    def _clear_member(self, member: Any) -> None:
        for lst in self._slot_lists:
            for i, s in enumerate(lst):
                if s is not None and s.member is member:
                    lst[i] = None

    def _resolve(self, which: int | str) -> MemberState:
        if isinstance(which, int) or (isinstance(which, str) and which.isdigit()):
            role = int(which)
            if not 0 <= role < self.geometry.raid_disks:
                raise FuseraidError(f"no role {role} (raid_disks {self.geometry.raid_disks})")
            ms = self._roles[role]
            if ms is None:  # a failed member still answers to its old role
                ms = next((f for f in reversed(self._faulty) if f.role == role), None)
            if ms is None:
                raise FuseraidError(f"role {role} has no member")
            return ms
        path = os.path.realpath(which)
        for ms in self.members:
            if os.path.realpath(ms.path) == path:
                return ms
        raise FuseraidError(f"{which} is not a member of this array")

    async def fail(self, which: int | str) -> dict[str, Any]:
        """Mark a member faulty (by role or path), like `mdadm --fail`."""
        if self.readonly:
            raise FuseraidError("the array is read-only")
        ms = self._resolve(which)
        if ms.state == "faulty":
            raise FuseraidError(f"{ms.path} is already faulty")
        if ms.state == "active":
            missing = {*self._missing_roles(), ms.role}
            if not survives(self.geometry, missing):
                raise FuseraidError(f"failing {ms.path} would leave roles "
                                    f"{describe_missing(missing)} missing: too many for "
                                    f"raid{self.geometry.level}")
        async with self.lock.exclusive(0, WHOLE):  # no request runs on the old slots
            await trio.to_thread.run_sync(self._fail_member, ms.member, "failed by request")
        self._after_request()
        return {"path": ms.path, "role": ms.role, "state": ms.state}

    async def remove(self, which: int | str) -> dict[str, Any]:
        """Take a faulty member or a spare out of the array, like `mdadm --remove`."""
        if self.readonly:
            raise FuseraidError("the array is read-only")
        ms = self._resolve(which)
        if ms.state not in ("faulty", "spare"):
            raise FuseraidError(f"{ms.path} is {ms.state}: fail it before removing it")
        dev = ms.entry.sb.dev_number
        # No request may still use the member's file when it is closed (a request that
        # took its Slot before an automatic fail could otherwise hit a closed, or reused,
        # file descriptor): take the whole array, as fail() does.
        async with self.lock.exclusive(0, WHOLE):
            with self._state_lock:
                if ms not in self._spares and ms not in self._faulty:
                    raise FuseraidError(f"{ms.path} is {ms.state}: fail it before "
                                        "removing it")
                if ms in self._spares:
                    self._spares.remove(ms)
                if ms in self._faulty:
                    self._faulty.remove(ms)
                self.superblocks.drop(ms.entry)
                self._clear_member(ms.member)
            await self._commit(lambda sb: _set_role(sb, dev, MD_DISK_ROLE_FAULTY))
            await trio.to_thread.run_sync(ms.member.close)
        return {"path": ms.path, "removed": True}

    async def add(self, path: str) -> dict[str, Any]:
        """Add a member: it takes a missing role and is rebuilt (in the background when the
        array runs one, else before this returns), or it becomes a spare."""
        if self.readonly:
            raise FuseraidError("the array is read-only")
        if not self.redundant:
            raise FuseraidError("raid0 has no redundancy: it takes no spares")
        if self._dead:
            raise FuseraidError(f"cannot add to a failed array ({self._dead})")
        if self._driver is None:
            raise FuseraidError("busy: a reshape is in progress")
        real = os.path.realpath(path)
        for ms in self.members:
            if os.path.realpath(ms.path) == real:
                raise FuseraidError(f"{path} is already a member of this array")
        member = await trio.to_thread.run_sync(lambda: Member(path))
        try:
            ms = await self._add_member(path, member)
        except BaseException:
            member.close()
            raise
        self._kick()
        if self._nursery is None and ms.state == "rebuilding":
            await self._run_rebuild(ms)
        return {"path": path, "role": ms.role, "state": ms.state}

    async def _add_member(self, path: str, member: Member) -> MemberState:
        newest = self.superblocks.newest
        data_offset = newest.data_offset_bytes
        need = data_offset + self.geometry.dev_used
        if member.size < need:
            raise FuseraidError(f"{path}: too small: {member.size} bytes, the array needs "
                                f"{need} (data offset {data_offset} + {self.geometry.dev_used})")
        used = {ms.entry.sb.dev_number for ms in self.members}
        dev = next(d for d in range(len(newest.dev_roles) + 1)
                   if d not in used and (d >= len(newest.dev_roles)
                                         or newest.dev_roles[d] >= MD_DISK_ROLE_MAX))
        missing = [r for r, holder in enumerate(self._roles) if holder is None]
        role = missing[0] if missing and self.redundant else None
        sb = newest.replace(
            dev_number=dev,
            device_uuid=secrets.token_bytes(16),
            data_size=member.size // SECTOR - newest.data_offset,
            recovery_offset=0,
            cnt_corrected_read=0,
            devflags=0,
            feature_map=newest.feature_map & ~MD_FEATURE_RECOVERY_OFFSET,
        )
        entry = Entry(path, member, sb)
        ms = MemberState(path, member, entry, role, "spare" if role is None else "rebuilding")
        uuid = sb.device_uuid
        value = MD_DISK_ROLE_SPARE if role is None else role

        def record(s: Superblock) -> None:
            _set_role(s, dev, value)
            if s.device_uuid == uuid and role is not None:
                s.feature_map |= MD_FEATURE_RECOVERY_OFFSET
                s.recovery_offset = 0

        with self._state_lock:
            self.superblocks.add(entry)
            if role is None:
                self._spares.append(ms)
            else:
                self._roles[role] = ms
        await self._commit(record)
        log.info("%s added as %s", path, "spare" if role is None else f"role {role}")
        return ms

    # ---- background work ----
    async def start(self, nursery: trio.Nursery) -> None:
        """Mark the array active and run its background work in `nursery`."""
        self._nursery = nursery
        if self.workers is None and not self._closing and REQUEST_POOL:
            await nursery.start(self._own_workers)
        if self.ring is None and not self._closing and self.inline and not self.readonly:
            ring = WriteRing.open()
            if ring is not None:
                self.ring = ring
                await nursery.start(ring.run)
        if not self.readonly:
            await self._mark_active()
        if self.reshape is not None and not self.readonly:
            nursery.start_soon(self._run_reshape)
        self._kick()

    async def _run_reshape(self) -> None:
        """Continue the reshape the superblocks record; the reshape object (from the
        migration layer's opener) brings its own runner."""
        reshape = self.reshape
        self.reshape_control = control = reshape.new_control()
        new = reshape.plan.new

        def finished(volume: Any) -> None:
            self.adopt_volume(volume, new)
            self.reshape = None
            if getattr(reshape.plan, "near_only", False):
                self.start_resync(0)  # raid10 far copies not written by the pass

        try:
            await reshape.run_live(self.lock, control, finished)
        except FuseraidError as exc:
            log.warning("reshape stopped: %s", exc)
        self._kick()

    def _kick(self) -> None:
        """Start the next background job if none runs: rebuild, spare recovery, resync."""
        if self._nursery is None or self._task is not None or self.readonly or self._stopping:
            return
        if self._dead or self._driver is None or self.volume is not self._driver:
            return
        rebuilding = self._rebuilding()
        if not rebuilding and self._spares and self.redundant:
            missing = [r for r, holder in enumerate(self._roles) if holder is None]
            if missing:
                self._launch(self._spare_to_role, self._spares[0], missing[0])
                return
        if rebuilding:
            self._launch(self._run_rebuild, rebuilding[0])
        elif self._resync_row is not None and not self._missing_roles() and self.redundant:
            self._launch(self._run_resync)

    def _launch(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._nursery is not None
        self._pending += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        self._nursery.start_soon(self._launched, fn, *args)

    async def _launched(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            await fn(*args)
        finally:
            self._pending -= 1
            self._settle()

    def _settle(self) -> None:
        if self._task is None and self._pending == 0:
            self._idle.set()

    async def _spare_to_role(self, ms: MemberState, role: int) -> None:
        if self._task is not None or ms not in self._spares or self._roles[role] is not None:
            return
        uuid, dev = ms.device_uuid, ms.entry.sb.dev_number

        def record(s: Superblock) -> None:
            _set_role(s, dev, role)
            if s.device_uuid == uuid:
                s.feature_map |= MD_FEATURE_RECOVERY_OFFSET
                s.recovery_offset = 0

        with self._state_lock:
            self._spares.remove(ms)
            ms.role, ms.state, ms.recovered_rows = role, "rebuilding", 0
            self._roles[role] = ms
        await self._commit(record)
        await self._run_rebuild(ms)

    def _begin(self, name: str, total: int, done: int = 0) -> Task:
        if self._task is not None:
            raise FuseraidError(f"busy: {self._task.name} is running")
        self._task = Task(name, total, done, trio.current_time())
        if self._idle.is_set():
            self._idle = trio.Event()
        return self._task

    def _end(self) -> None:
        self._task = None
        self._task_scope = None
        self._kick()
        self._settle()

    async def wait_idle(self) -> None:
        """Wait until no background task runs (resync, rebuild, check)."""
        while self._task is not None or self._pending:
            await self._idle.wait()

    def _batches(self, start_row: int, rows: int, row_bytes: int) -> list[tuple[int, int]]:
        step = max(1, BATCH_BYTES // max(row_bytes, 1))
        return [(a, min(a + step, rows)) for a in range(start_row, rows, step)]

    def _span(self, a: int, b: int, row_bytes: int) -> tuple[int, int]:
        return a * row_bytes, min(b * row_bytes, self.size)

    async def _run_resync(self) -> None:
        drv = self._driver
        if self._resync_row is None or self._task is not None:
            return
        start = self._resync_row
        rb = int(drv.row_bytes)
        task = self._begin("resync", drv.rows * rb, start * rb)
        try:
            with trio.CancelScope() as scope:
                self._task_scope = scope
                for a, b in self._batches(start, drv.rows, rb):
                    async with self.lock.exclusive(*self._span(a, b, rb)):
                        if self.volume is not drv:
                            return
                        await trio.to_thread.run_sync(drv.resync, a, b)
                        self._resync_row = b
                    task.done_bytes = b * rb
                self._resync_row = None
                log.info("resync finished")
        except (FuseraidError, OSError) as exc:
            log.warning("resync stopped: %s", exc)
        finally:
            self._end()

    async def _run_rebuild(self, ms: MemberState) -> None:
        if self._task is not None or ms.state != "rebuilding" or ms.role is None:
            return
        role = ms.role
        drv = self._driver
        rb, rows = int(drv.row_bytes), int(drv.rows)
        task = self._begin(f"recovery of role {role}", rows * rb, ms.recovered_rows * rb)
        # Copy and register under the state lock: a failure committed in between would
        # otherwise leave its member in the full driver.
        with self._state_lock:
            full_slots = list(self.slots)
            full_slots[role] = Slot(ms.member, ms.data_offset)
            self.register_slots(full_slots)
        full = self._policy_driver(self.geometry, full_slots)
        rv = RecoveringVolume(drv, full, role, ms.recovered_rows)
        done = False
        try:
            await self.swap_volume(rv)
            with trio.CancelScope() as scope:
                self._task_scope = scope
                last = trio.current_time()
                for a, b in self._batches(ms.recovered_rows, rows, rb):
                    async with self.lock.exclusive(*self._span(a, b, rb)):
                        if ms.state != "rebuilding" or self.volume is not rv:
                            return
                        await trio.to_thread.run_sync(rv.rebuild, a, b)
                        rv.border_row = b
                        ms.recovered_rows = b
                    task.done_bytes = b * rb
                    if trio.current_time() - last >= CHECKPOINT_SECONDS:
                        await self._checkpoint_recovery(ms)
                        last = trio.current_time()
                if ms.state != "rebuilding":
                    return
                uuid = ms.device_uuid

                def finished(s: Superblock) -> None:
                    if s.device_uuid == uuid:
                        s.feature_map &= ~MD_FEATURE_RECOVERY_OFFSET
                        s.recovery_offset = 0

                async with self.lock.exclusive(0, WHOLE):
                    await self._commit(finished)  # fsyncs the rebuilt data first
                    with self._state_lock:
                        if ms.state == "rebuilding":
                            ms.state = "active"
                            self.slots[role] = full_slots[role]
                    self.volume = drv
                    done = True
                log.info("recovery of role %d onto %s finished", role, ms.path)
        except (FuseraidError, OSError) as exc:
            log.warning("recovery of role %d stopped: %s", role, exc)
        finally:
            with trio.CancelScope(shield=True):
                if not done and self.volume is rv:
                    await self.swap_volume(drv)
                self.unregister_slots(full_slots)
            self._end()

    async def _checkpoint_recovery(self, ms: MemberState) -> None:
        sectors, uuid = self._recovery_sectors(ms), ms.device_uuid

        def mark(s: Superblock) -> None:
            if s.device_uuid == uuid:
                s.recovery_offset = sectors

        if sectors:
            await self._commit(mark)

    async def check(self, repair: bool = False) -> int:
        """md's check (repair=False) or repair scrub over the whole array; returns the
        mismatch count in md's units (sectors)."""
        if repair and self.readonly:
            raise FuseraidError("the array is read-only: cannot repair")
        drv = self._driver
        if drv is None or self.volume is not drv:
            raise FuseraidError("busy: a rebuild or reshape owns the array")
        missing = self._missing_roles()
        if missing and self.redundant:
            raise FuseraidError(f"cannot check a degraded array (missing roles "
                                f"{describe_missing(missing)})")
        rb, rows = int(drv.row_bytes), int(drv.rows)
        task = self._begin("repair" if repair else "check", rows * rb)
        total = 0
        try:
            for a, b in self._batches(0, rows, rb):
                span = self._span(a, b, rb)
                ctx = self.lock.exclusive(*span) if repair else self.lock.shared(*span)
                async with ctx:
                    if self.volume is not drv:
                        raise FuseraidError("check interrupted: the volume changed")
                    total += await trio.to_thread.run_sync(drv.scrub, a, b, repair)
                task.done_bytes = b * rb
        finally:
            self._end()
        self.mismatch_cnt = total
        return total

    # ---- status ----
    def status(self) -> dict[str, Any]:
        sb = self.superblocks.newest
        g = self.geometry
        lname: str | None = None
        if g.level in (5, 6, 10) or (g.level == 0 and g.layout):
            try:
                lname = layout_name(g.level, g.layout)
            except FuseraidError:
                lname = str(g.layout)
        missing = self._missing_roles()
        if self._dead:
            state = "failed"
        elif missing:
            state = "degraded"
        elif self._active and not self.readonly:
            state = "active"
        else:
            state = "clean"
        members: list[dict[str, Any]] = []
        with self._state_lock:
            roles, faulty, spares = list(self._roles), list(self._faulty), list(self._spares)
        listed: set[int] = set()
        for role in range(g.raid_disks):
            ms = roles[role] if role < len(roles) else None
            if ms is None:
                # a failed member still answers to its role: list it once, as faulty
                f = next((f for f in reversed(faulty) if f.role == role), None)
                if f is not None:
                    listed.add(id(f))
                    members.append({"role": role, "path": f.path, "state": "faulty"})
                else:
                    members.append({"role": role, "path": None, "state": "missing"})
            else:
                d = {"role": role, "path": ms.path, "state": ms.state}
                if ms.state == "rebuilding" and self._driver is not None:
                    d["recovered_bytes"] = ms.recovered_rows * int(self._driver.row_bytes)
                members.append(d)
        for ms in faulty:
            if id(ms) not in listed:
                members.append({"role": ms.role, "path": ms.path, "state": "faulty"})
        for ms in spares:
            members.append({"role": None, "path": ms.path, "state": "spare"})
        task = self._task.report(trio.current_time()) if self._task else None
        if task is None and self.reshape is not None:
            total = int(self.reshape.plan.end)
            task = {"name": "reshape", "done_bytes": int(self.reshape.progress() * total),
                    "total_bytes": total, "percent": round(100 * self.reshape.progress(), 2),
                    "speed": None, "eta": None,
                    "backup": getattr(self.reshape, "backup_where", None)}
        return {
            "level": g.level,
            "layout": lname,
            "layout_number": g.layout,
            "chunk": g.chunk,
            "raid_disks": g.raid_disks,
            "size": self.size,
            "uuid": sb.set_uuid.hex(),
            "name": sb.name,
            "events": sb.events,
            "state": state,
            "in_sync": self._resync_row is None,
            "mismatch_cnt": self.mismatch_cnt,
            "members": members,
            "task": task,
        }

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
            await self._stop_workers()
            if self.ring is not None:
                self.ring.stop()
                await self.ring.done.wait()
            self._closed = True
            try:
                if not self.readonly:
                    await self.flush()
                    if self._active and self.redundant and not self._dead:
                        await self._commit(self._clean_mutator())
                        self._active = False
            except (FuseraidError, OSError) as exc:
                log.warning("closing the array: %s", exc)
            finally:
                self._close_members()

    def stop_background(self) -> None:
        """Cancel the running background task and start no new one."""
        self._stopping = True
        if self._task_scope is not None:
            self._task_scope.cancel()

    def abandon(self) -> None:
        """Close the members without writing anything: what a crash leaves (tests)."""
        self._closing = self._closed = True
        self.stop_background()
        if self._workers_scope is not None:
            self._workers_scope.cancel()
        if self.workers is not None:
            self.workers.stop()
            self.workers.join()
        if self.ring is not None:
            self.ring.stop()
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
