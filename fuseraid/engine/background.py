"""Background work of an array: resync after an unclean stop, recovery of a spare into a
vacant role, rebuild of a role onto a new member, check/repair, and continuing a reshape
the superblocks record.

One `Background` per Array, given the array: it owns the running task (at most one; its
progress is a `Task`), that task's cancel scope and the nursery (the one given to
Array.start()). Every job works in batches of rows (BATCH_BYTES of array bytes), each
under the interval lock on its rows, so foreground requests wait at most one batch; a
batch is one worker-thread hop. Durable order: a rebuild commits its recovery checkpoint
(data fsync, then superblocks, state.py) at most every CHECKPOINT_SECONDS, and the end of
a rebuild commits before the member serves reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from fuseraid.engine import mutators
from fuseraid.engine.levels import Slot
from fuseraid.engine.locks import WHOLE
from fuseraid.engine.recovery import RecoveringVolume
from fuseraid.engine.roster import MemberState
from fuseraid.engine.tolerance import describe_missing
from fuseraid.errors import FuseraidError

if TYPE_CHECKING:
    from fuseraid.engine.array import Array

log = logging.getLogger("fuseraid.engine")

# Array bytes per background step (resync, rebuild, check): big enough that one thread
# hop does real work, small enough that foreground requests wait little for the lock.
BATCH_BYTES = 4 << 20
# Rebuild checkpoints (recovery_offset) at most this often (seconds).
CHECKPOINT_SECONDS = 5.0


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


class Background:
    """The background jobs of `array`; kick() starts the next one that is due."""

    def __init__(self, array: Array) -> None:
        self.array = array
        self._roster = array.roster  # the array's for its lifetime (after_failures: hot)
        self.nursery: trio.Nursery | None = None  # set by Array.start()
        self.task: Task | None = None  # the running job's progress
        self._scope: trio.CancelScope | None = None
        self._stopping = False  # no new background work
        self._pending = 0  # jobs launched but not finished
        self._idle = trio.Event()
        self._idle.set()
        self._kicked_gen = 0  # the roster's fail_gen at the last after_failures()

    # ---- what runs next ----
    def kick(self) -> None:
        """Start the next background job if none runs: rebuild, spare recovery, resync."""
        a = self.array
        if self.nursery is None or self.task is not None or a.readonly or self._stopping:
            return
        roster, driver = a.roster, a.driver
        if roster.dead or driver is None or a.volume is not driver:
            return
        rebuilding = roster.rebuilding()
        if not rebuilding and roster.spares and a.redundant:
            missing = roster.vacant()
            if missing:
                self._launch(self._spare_to_role, roster.spares[0], missing[0])
                return
        if rebuilding:
            self._launch(self.run_rebuild, rebuilding[0])
        elif a.resync_row is not None and not roster.missing() and a.redundant:
            self._launch(self._run_resync)

    def after_failures(self) -> None:
        """kick() once per member failure (a spare may take the role): called after every
        request, so cheap when nothing failed."""
        gen = self._roster.fail_gen
        if gen != self._kicked_gen:
            self._kicked_gen = gen
            self.kick()

    def stop(self) -> None:
        """Cancel the running job and start no new one."""
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    async def wait_idle(self) -> None:
        """Wait until no background task runs (resync, rebuild, check)."""
        while self.task is not None or self._pending:
            await self._idle.wait()

    def _launch(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self.nursery is not None
        self._pending += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        self.nursery.start_soon(self._launched, fn, *args)

    async def _launched(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            await fn(*args)
        finally:
            self._pending -= 1
            self._settle()

    def _settle(self) -> None:
        if self.task is None and self._pending == 0:
            self._idle.set()

    def _begin(self, name: str, total: int, done: int = 0) -> Task:
        if self.task is not None:
            raise FuseraidError(f"busy: {self.task.name} is running")
        self.task = Task(name, total, done, trio.current_time())
        if self._idle.is_set():
            self._idle = trio.Event()
        return self.task

    def _end(self) -> None:
        self.task = None
        self._scope = None
        self.kick()
        self._settle()

    def _batches(self, start_row: int, rows: int, row_bytes: int) -> list[tuple[int, int]]:
        step = max(1, BATCH_BYTES // max(row_bytes, 1))
        return [(a, min(a + step, rows)) for a in range(start_row, rows, step)]

    def _span(self, a: int, b: int, row_bytes: int) -> tuple[int, int]:
        return a * row_bytes, min(b * row_bytes, self.array.size)

    # ---- the jobs ----
    async def run_reshape(self) -> None:
        """Continue the reshape the superblocks record; the reshape object (from the
        migration layer's opener) brings its own runner."""
        a = self.array
        reshape = a.reshape
        a.reshape_control = control = reshape.new_control()
        new = reshape.plan.new

        def finished(volume: Any) -> None:
            a.adopt_volume(volume, new)
            a.reshape = None
            if getattr(reshape.plan, "near_only", False):
                a.start_resync(0)  # raid10 far copies not written by the pass

        try:
            await reshape.run_live(a.lock, control, finished)
        except FuseraidError as exc:
            log.warning("reshape stopped: %s", exc)
        self.kick()

    async def _spare_to_role(self, ms: MemberState, role: int) -> None:
        a = self.array
        if self.task is not None or ms not in a.roster.spares or a.roster.roles[role] is not None:
            return
        record = mutators.assign(ms.entry.sb.dev_number, role, ms.device_uuid)
        a.roster.promote(ms, role)
        await a.commit(record)
        await self.run_rebuild(ms)

    async def _run_resync(self) -> None:
        a = self.array
        drv = a.driver
        if a.resync_row is None or self.task is not None:
            return
        start = a.resync_row
        rb = int(drv.row_bytes)
        task = self._begin("resync", drv.rows * rb, start * rb)
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                for x, y in self._batches(start, drv.rows, rb):
                    async with a.lock.exclusive(*self._span(x, y, rb)):
                        if a.volume is not drv:
                            return
                        await trio.to_thread.run_sync(drv.resync, x, y)
                        a.resync_row = y
                    task.done_bytes = y * rb
                a.resync_row = None
                log.info("resync finished")
        except (FuseraidError, OSError) as exc:
            log.warning("resync stopped: %s", exc)
        finally:
            self._end()

    async def run_rebuild(self, ms: MemberState) -> None:
        """Rebuild `ms` (state "rebuilding") into its role from recovered_rows on, while
        a RecoveringVolume serves the array (recovery.py)."""
        if self.task is not None or ms.state != "rebuilding" or ms.role is None:
            return
        a = self.array
        role = ms.role
        drv = a.driver
        rb, rows = int(drv.row_bytes), int(drv.rows)
        task = self._begin(f"recovery of role {role}", rows * rb, ms.recovered_rows * rb)
        # Copy, register and build under the state lock: a failure committed in between
        # would otherwise leave its member in the full driver.
        with a.roster.lock:
            full_slots = list(a.slots)
            full_slots[role] = Slot(ms.member, ms.data_offset)
            full = a.make_driver(a.geometry, full_slots)
        rv = RecoveringVolume(drv, full, role, ms.recovered_rows)
        done = False
        try:
            await a.swap_volume(rv)
            with trio.CancelScope() as scope:
                self._scope = scope
                last = trio.current_time()
                for x, y in self._batches(ms.recovered_rows, rows, rb):
                    async with a.lock.exclusive(*self._span(x, y, rb)):
                        if ms.state != "rebuilding" or a.volume is not rv:
                            return
                        await trio.to_thread.run_sync(rv.rebuild, x, y)
                        rv.border_row = y
                        ms.recovered_rows = y
                    task.done_bytes = y * rb
                    if trio.current_time() - last >= CHECKPOINT_SECONDS:
                        await self._checkpoint_recovery(ms)
                        last = trio.current_time()
                if ms.state != "rebuilding":
                    return
                async with a.lock.exclusive(0, WHOLE):
                    # fsyncs the rebuilt data first
                    await a.commit(mutators.recovery_done(ms.device_uuid))
                    with a.roster.lock:
                        if ms.state == "rebuilding":
                            ms.state = "active"
                            a.slots[role] = full_slots[role]
                    a.volume = drv
                    done = True
                log.info("recovery of role %d onto %s finished", role, ms.path)
        except (FuseraidError, OSError) as exc:
            log.warning("recovery of role %d stopped: %s", role, exc)
        finally:
            with trio.CancelScope(shield=True):
                if not done and a.volume is rv:
                    await a.swap_volume(drv)
                a.unregister_slots(full_slots)
            self._end()

    async def _checkpoint_recovery(self, ms: MemberState) -> None:
        sectors = self.array.sectors_from_rows(ms.recovered_rows)
        if sectors:
            await self.array.commit(mutators.recovery_checkpoint(ms.device_uuid, sectors))

    async def check(self, repair: bool = False) -> int:
        """md's check (repair=False) or repair scrub over the whole array; returns the
        mismatch count in md's units (sectors)."""
        a = self.array
        if repair and a.readonly:
            raise FuseraidError("the array is read-only: cannot repair")
        drv = a.driver
        if drv is None or a.volume is not drv:
            raise FuseraidError("busy: a rebuild or reshape owns the array")
        missing = a.roster.missing()
        if missing and a.redundant:
            raise FuseraidError(f"cannot check a degraded array (missing roles "
                                f"{describe_missing(missing)})")
        rb, rows = int(drv.row_bytes), int(drv.rows)
        task = self._begin("repair" if repair else "check", rows * rb)
        total = 0
        try:
            for x, y in self._batches(0, rows, rb):
                span = self._span(x, y, rb)
                ctx = a.lock.exclusive(*span) if repair else a.lock.shared(*span)
                async with ctx:
                    if a.volume is not drv:
                        raise FuseraidError("check interrupted: the volume changed")
                    total += await trio.to_thread.run_sync(drv.scrub, x, y, repair)
                task.done_bytes = y * rb
        finally:
            self._end()
        return total
