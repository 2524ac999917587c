"""`WriteRing`: the member writes of small requests, through io_uring, awaited in trio.

A small write is computed on the trio thread (member/nowait.py); what is left are a few
positioned writes. A worker-thread hop for them costs ~10x their syscalls (wakeups and
GIL hand-offs), so they go to the kernel's io_uring instead: the requesting task queues
them in the ring (no syscall) and sleeps; at the end of the scheduler pass (a trio
instrument's before_io_wait) one io_uring_enter hands every write queued in that pass to
the kernel; one reaper task (owned by the array's nursery) wakes when the ring's
eventfd says completions wait, and wakes the tasks whose writes are all done.

The instrument is installed only while the ring is in use: trio calls every installed
before_io_wait on every scheduler pass, which an idle ring would pay on every read
(~1 us a pass, measured as 10% of 4 KiB read IOPS with the pool's hooks). Queueing a
write installs it (before the pass ends, so the pass's before_io_wait still sends it);
it removes itself after IDLE_PASSES passes in a row with nothing to send. Installing
costs ~9 us (trio inspects the instrument), once per busy spell.

A write that fails or comes back short is not judged here: the caller issues it again
from a worker thread through the level driver, where a real error meets the failure
policy (and a transient one just succeeds).

Writes in flight cannot be called back. A task waiting for them is not cancellable
(like a worker hop that has started), and the reaper, when it is cancelled, first waits
(shielded) for every write in flight before it closes the ring: no buffer is released
and no task is left asleep while the kernel may still write.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from typing import Any

import trio

from fuseraid.member import uring

log = logging.getLogger("fuseraid.engine")

# Scheduler passes in a row with nothing to send after which the instrument leaves
# (module docstring). FUSERAID_UNHOOK=0: installed from the start and for good, as
# before (A/B measurements).
IDLE_PASSES = 64
UNHOOK = os.environ.get("FUSERAID_UNHOOK", "1") != "0"


class _Batch:
    __slots__ = ("task", "results", "left")

    def __init__(self, n: int) -> None:
        self.task = trio.lowlevel.current_task()
        self.results = [0] * n
        self.left = n


class WriteRing:
    def __init__(self, ring: uring.Ring) -> None:
        self._ring = ring
        self._next = 0
        # tag -> (batch, index, buffer kept alive until the kernel is done with it)
        self._flight: dict[int, tuple[_Batch, int, Any]] = {}
        self._backlog: deque[tuple[int, int, Any, int]] = deque()
        self._unsent = False  # writes queued in the ring, not yet handed to the kernel
        self._hooked = False  # installed as a trio instrument (before_io_wait)
        self._quiet = 0  # scheduler passes in a row with nothing to send
        self.running = True
        self.done = trio.Event()
        self._scope = trio.CancelScope()
        self.writes = 0
        self.waits = 0

    @classmethod
    def open(cls, entries: int = 256) -> WriteRing | None:
        """A ring, or None where io_uring cannot be used (the pool does the writes)."""
        if not uring.available():
            return None
        try:
            return cls(uring.Ring(entries))
        except OSError as e:
            log.info("io_uring unavailable (%s): member writes go to worker threads", e)
            return None

    async def write(self, items: Sequence[tuple[int, int, Any]]) -> list[int]:
        """Write (fd, offset, bytes-like) items; per item the byte count written or
        -errno. Returns when every item is complete."""
        if not self.running:
            raise trio.ClosedResourceError("the write ring is stopped")
        if not items:
            await trio.lowlevel.checkpoint()
            return []
        batch = _Batch(len(items))
        for i, (fd, off, data) in enumerate(items):
            buf = uring.buffer(data)
            tag = self._next
            self._next += 1
            self._flight[tag] = (batch, i, buf)
            self._backlog.append((fd, off, buf, tag))
        self.writes += len(items)
        self._pump()
        # sent at the end of this scheduler pass (before_io_wait), with every other
        # task's writes of the pass: one io_uring_enter for all
        self.waits += 1
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return batch.results

    def _pump(self) -> None:
        """Queue backlog while the ring has room (in flight never exceeds its size, so
        its completion queue cannot overflow)."""
        room = self._ring.entries - (len(self._flight) - len(self._backlog))
        if room <= 0 or not self._backlog:
            return
        take = [self._backlog.popleft() for _ in range(min(room, len(self._backlog)))]
        queued = self._ring.write(take)
        for item in reversed(take[queued:]):
            self._backlog.appendleft(item)
        if queued:
            self._unsent = True
            if not self._hooked:  # this pass's before_io_wait must send them
                self._hook()

    def _hook(self) -> None:
        trio.lowlevel.add_instrument(self)
        self._hooked = True
        self._quiet = 0

    def _unhook(self) -> None:
        if self._hooked:
            self._hooked = False
            try:
                trio.lowlevel.remove_instrument(self)
            except (KeyError, RuntimeError):
                pass  # trio dropped it (a hook raised) or the run is over

    def before_io_wait(self, timeout: float) -> None:
        """Trio instrument hook, once per scheduler pass: send the pass's writes."""
        if self._unsent:
            self._submit()
            self._quiet = 0
        else:
            self._quiet += 1
            if self._quiet >= IDLE_PASSES and UNHOOK:
                self._unhook()  # nothing unsent: the next _pump installs it again

    def _submit(self) -> None:
        rc = self._ring.submit()
        if rc >= 0:
            self._unsent = False
        else:  # kept queued: the next pass tries again
            log.warning("io_uring submit: %s", os.strerror(-rc))

    def _reap(self) -> None:
        for tag, res in self._ring.reap():
            batch, i, _buf = self._flight.pop(tag)
            batch.results[i] = res
            batch.left -= 1
            if batch.left == 0:
                trio.lowlevel.reschedule(batch.task)
        if self._backlog:
            self._pump()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The reaper; closes the ring when it ends, after every write in flight."""
        if not UNHOOK:
            self._hook()  # the previous behaviour: installed for the ring's life
        try:
            with self._scope:
                task_status.started()
                while True:
                    await trio.lowlevel.wait_readable(self._ring.eventfd)
                    self._ring.clear_eventfd()
                    self._reap()
        finally:
            self.running = False
            with trio.CancelScope(shield=True):
                while self._flight:
                    self._submit()
                    self._ring.clear_eventfd()
                    self._reap()
                    if self._flight:
                        await trio.sleep(0.001)
            self._unhook()
            self._ring.close()
            self.done.set()
            log.debug("io_uring: %d writes, %d waits", self.writes, self.waits)

    def stop(self) -> None:
        """Take no more writes; the reaper finishes those in flight and closes."""
        self.running = False
        self._scope.cancel()
