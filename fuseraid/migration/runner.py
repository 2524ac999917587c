"""The live pass: the trio task that drives a Reshape in a mounted array (docs/reshape.md
"Live batches"). Batches of windows under the array's range lock, one worker hop per
batch; pause/resume and the speed limit (`Control`, `Pacer`); waiting for a spare when
the new geometry lacks roles before its first window ("A member fails during a pass")."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from fuseraid.errors import FuseraidError
from fuseraid.migration.plan import FORWARD

if TYPE_CHECKING:
    from fuseraid.migration.migrator import Reshape

log = logging.getLogger("fuseraid.migration")
YIELD_SECONDS = 0.002  # pause after a batch foreground requests had to wait for


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
    waiting: str | None = None  # why the pass waits for a spare (Reshape.waiting)
    finished: trio.Event = field(default_factory=trio.Event)
    _unpaused: trio.Event = field(default_factory=trio.Event)
    _spare: trio.Event = field(default_factory=trio.Event)

    def pause(self) -> None:
        self.paused = True
        self._unpaused = trio.Event()

    def resume(self) -> None:
        self.paused = False
        self._unpaused.set()

    async def wait_unpaused(self) -> None:
        while self.paused:
            await self._unpaused.wait()

    def spare_added(self) -> None:
        """A member took a role the waiting pass lacked (the engine's add() calls it)."""
        self._spare.set()
        self._spare = trio.Event()

    async def wait_spare(self) -> None:
        await self._spare.wait()


async def _wait_for_spare(reshape: Reshape, control: Control) -> None:
    """Wait until the new geometry has the roles it cannot do without (a member added
    by the engine's add(), Reshape.place). Nothing is lost meanwhile: no window is
    committed, so the old layout serves every byte."""
    while (why := reshape.waiting()) is not None:
        if control.waiting != why:
            log.warning("reshape: %s", why)
        control.waiting = why
        await control.wait_spare()  # no checkpoint since waiting(): no wake-up is missed
    if control.waiting is not None:
        log.info("reshape: the new geometry has its roles again; going on")
    control.waiting = None


async def run_live(
    reshape: Reshape,
    lock: Any,
    control: Control,
    on_finished: Callable[[Any], None],
) -> None:
    """The background task: batches of windows under `lock` (the array's IntervalLock:
    foreground requests touching the batch wait as docs/reshape.md "Live batches" says,
    others go on), one worker hop per batch, honouring pause and the speed limit. When
    done it takes the whole array, commits the new geometry and calls
    on_finished(new_volume) so the array can swap volumes. An error stops the pass
    (control.error says why); it does not propagate. A new geometry that lacks roles
    before any window is committed makes the pass wait for a spare (control.waiting
    says why) instead; pause/resume work meanwhile."""
    from fuseraid.engine.locks import WHOLE

    try:
        await trio.to_thread.run_sync(reshape.replay_backup)
        pacer = Pacer(control.speed_limit)
        room = 1  # windows the next batch may take: doubles while nobody waits on one
        stats: dict[str, float] = {"batches": 0, "windows": 0, "waited": 0, "bytes": 0,
                                   "cpu": 0.0, "busy": 0.0, "t0": time.monotonic()}
        while not reshape.done:
            await control.wait_unpaused()
            if reshape.waiting() is not None:
                await _wait_for_spare(reshape, control)
                continue  # paused meanwhile? wait for that first
            if pacer.limit != control.speed_limit:
                pacer = Pacer(control.speed_limit)
            # a speed limit wants the foreground first: one window at a time
            batch = plan_batch(reshape, 1 if control.speed_limit else room)
            lo, hi = batch.span
            req = await lock.acquire(lo, hi, exclusive=batch.exclusive)
            try:
                try:
                    cpu, busy = await trio.to_thread.run_sync(copy_batch, reshape, batch)
                except (FuseraidError, OSError):
                    # a member of the new geometry failed before any window was
                    # committed: wait for a spare (the loop's next turn) instead of
                    # stopping; any other error stops the pass
                    if reshape.waiting() is None:
                        raise
                    continue
                stats["cpu"] += cpu
                stats["busy"] += busy
                waited = lock.waiting(lo, hi) > 0
            finally:
                lock.release(req)
            if not batch.exclusive:
                # barrier: readers that may still be reading the window's old layout
                # finish before the next window's writes may overwrite it
                async with lock.exclusive(lo, hi):
                    pass
            room = 1 if waited else min(2 * room, MAX_ROOM)
            stats["batches"] += 1
            stats["windows"] += len(batch.windows)
            stats["waited"] += waited
            stats["bytes"] += hi - lo
            delay = pacer.delay(hi - lo) if control.speed_limit else 0.0
            if not delay and waited:  # let the requests that waited go first
                delay = YIELD_SECONDS
            await trio.sleep(delay)
        async with lock.exclusive(0, WHOLE):
            await trio.to_thread.run_sync(reshape.finish)
            on_finished(reshape.final_volume())
        took = time.monotonic() - stats["t0"]
        log.info("reshape: %d windows in %d batches (%d waited on), %.0f MiB in %.2f s; "
                 "copying %.2f s of it, using %.2f s of CPU", stats["windows"],
                 stats["batches"], stats["waited"], stats["bytes"] / (1 << 20), took,
                 stats["busy"], stats["cpu"])
    except (FuseraidError, OSError) as e:
        # the durable state is consistent at every instant: stop, report, keep serving
        control.error = str(e)
        log.warning("reshape stopped: %s", e)
    finally:
        control.finished.set()


MAX_BATCH = 16 << 20  # array bytes one batch may span (foreground writes to it wait)
MAX_ROOM = 64  # windows one batch may take


@dataclass(frozen=True)
class Batch:
    """Windows run_live copies in one worker hop. One window without a backup: a shared
    lock (reads go on from the old layout, which the safety rule keeps intact while the
    window is copied) and a barrier after it, the per-window protocol of docs/reshape.md.
    Several windows, or a backed-up one: an EXCLUSIVE lock on the span, since a window's
    new-layout writes may land on old-layout bytes of the batch (the previous window's
    once committed, or its own in place). (Shared multi-window batches let a reader of
    the old layout return stale bytes; tests/test_reshape_live.py caught it.)"""

    windows: tuple[tuple[int, int, bool], ...]

    @property
    def exclusive(self) -> bool:
        return len(self.windows) > 1 or self.windows[0][2]

    @property
    def span(self) -> tuple[int, int]:
        return (min(w[0] for w in self.windows), max(w[1] for w in self.windows))


def plan_batch(reshape: Reshape, room: int) -> Batch:
    """Up to `room` windows from the border (at most MAX_BATCH bytes); the durable
    border equals the in-memory one here (every batch ends with a commit). A window that
    needs a backup is a batch of its own (its record must start at the durable border)."""
    plan, pos = reshape.plan, reshape.border
    forward = plan.direction == FORWARD
    windows: list[tuple[int, int, bool]] = []
    while len(windows) < room and (pos < plan.end if forward else pos > 0):
        s, e, b = plan.next_window(pos)
        if b:
            if windows:
                break
            return Batch(((s, e, b),))
        windows.append((s, e, False))
        pos = e if forward else s
        if sum(w[1] - w[0] for w in windows) >= MAX_BATCH:
            break
    return Batch(tuple(windows))


def copy_batch(reshape: Reshape, batch: Batch) -> tuple[float, float]:
    """In a worker thread, under the batch's lock: copy its windows, committing only when
    the next window's writes would reach old data the durable border still needs, and
    once at the end (so the batch is durable before its lock is released). On an error
    the in-memory border goes back to the durable one: the old layout from there on is
    intact and holds the same bytes (writes to the batch were waiting). Returns (CPU,
    wall) seconds this thread spent (the pass's log line)."""
    cpu, t0 = time.thread_time(), time.perf_counter()
    try:
        for s, e, b in batch.windows:
            if b:
                reshape.copy_window(s, e, True)
                continue
            if not reshape.safe_from_durable(s, e):
                reshape.commit_border()
            reshape.copy_window(s, e, False, commit=False)
        reshape.commit_border()
    except BaseException:
        reshape.volume.border = reshape.durable
        raise
    return time.thread_time() - cpu, time.perf_counter() - t0
