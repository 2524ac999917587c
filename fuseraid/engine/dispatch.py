"""Where a request's work runs: on the trio thread without blocking (small requests,
member/nowait.py), in the array's worker pool (workers.py), or in trio's thread cache;
and how the member writes an inline request deferred reach the members (io_uring,
ring.py, else one worker hop).

A request makes ONE hop: the volume does the whole request in the thread it lands in.
The Array (array.py) decides what runs (its lock, retries and failure handling); the
`Dispatcher` only decides where.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import trio

from fuseraid.engine.ring import WriteRing
from fuseraid.engine.workers import WorkerPool
from fuseraid.member import nowait

log = logging.getLogger("fuseraid.engine")

# Worker threads per array for requests (workers.py). The hops are batched, so more
# threads only help requests whose copies release the GIL (large ones) run side by side.
IO_THREADS = 2
# Requests from this many bytes on hop with trio.to_thread.run_sync (see hop).
LARGE_REQUEST = 64 << 10
# Requests below this are first tried on the trio thread without blocking (page-cached
# reads, deferred writes): a thread hop costs ~10x a 4 KiB request. Bounded so that the
# parity and copies done on the trio thread stay a few microseconds.
INLINE_REQUEST = 64 << 10
# FUSERAID_REQUEST_POOL=0: no worker pool, every hop is trio.to_thread.run_sync (the
# previous dispatch; kept for A/B measurements, docs/PERFORMANCE.md).
REQUEST_POOL = os.environ.get("FUSERAID_REQUEST_POOL", "1") != "0"
INLINE = os.environ.get("FUSERAID_INLINE", "1") != "0"
# FUSERAID_FAST=0: small requests take the inline section path (try_inline) without
# the levels' integer fast paths, read_now and write_now (A/B measurements,
# docs/PERFORMANCE.md).
FAST = INLINE and os.environ.get("FUSERAID_FAST", "1") != "0"
# FUSERAID_WRITE_SYNC=1: an EXPERIMENT, never a setting to run with. An inline request's
# member writes are issued with os.pwrite on the trio thread, blocking the loop (which
# the engine must not do): the upper bound of any design that acknowledges a write once
# it is in the members' page cache (docs/PERFORMANCE.md, "Writes: where the time goes").
WRITE_SYNC = os.environ.get("FUSERAID_WRITE_SYNC", "0") == "1"

Deferred = list[tuple[Any, list[tuple[int, int, Any]]]]


def _run_deferred(deferred: Deferred) -> None:
    """Member writes deferred by an inline request, in order, through their drivers
    (worker thread): a member that fails meets the policy here, as in a plain request."""
    for drv, writes in deferred:
        drv.write_blocks(writes)


def _pwrite(fd: int, off: int, data: Any) -> int:
    """FUSERAID_WRITE_SYNC's member write, on the trio thread: bytes written or -errno
    (a failure goes again through the driver, as from the ring)."""
    try:
        return os.pwrite(fd, data, off)
    except OSError as e:
        return -(e.errno or 5)


class Dispatcher:
    """The request threads of one array: its WorkerPool and WriteRing (both owned by a
    task in the nursery given to Array.start()), and the inline path's switch and
    counters."""

    def __init__(self) -> None:
        # Request hops: the worker threads while start()'s nursery runs;
        # trio.to_thread.run_sync otherwise (see hop).
        self.workers: WorkerPool | None = None
        self.ring: WriteRing | None = None  # io_uring for inline requests' writes
        self.inline_counts = [0, 0]  # small requests that fell back / were served inline
        # small requests first try the trio thread (INLINE_REQUEST); FUSERAID_INLINE=0
        # turns that off, for A/B measurements
        self.inline = INLINE
        self.fast = FAST
        self.fast_counts = [0, 0]  # read_now: fell through / served
        self._workers_scope: trio.CancelScope | None = None

    # ---- where a request runs ----
    async def hop(self, fn: Callable[..., Any], *args: Any, cost: int = 0) -> Any:
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

    def read_now(self, vol: Any, lock: Any, off: int, n: int) -> bytes | None:
        """The common small read, all on the trio thread with no checkpoint: the level
        maps it in integers and reads one member's page cache (Driver.read_now). The
        interval lock is only looked at: free means no write or background batch holds
        or waits for the span, and since nothing else runs before we return, that is
        the same as taking and releasing it (what the inline path does). None: take the
        ordinary path."""
        if n >= INLINE_REQUEST or not self.fast:
            return None
        start, end = vol.lock_span(off, n)
        if not lock.free(start, end):
            return None
        got = vol.read_now(off, n)
        self.fast_counts[got is not None] += 1
        return got

    def try_inline(self, vol: Any, off: int, n: int, data: Any) -> tuple[bool, Any, Deferred]:
        """A small request (< INLINE_REQUEST bytes) on the trio thread, without blocking
        (member/nowait.py): its reads come from the page cache, its parity is computed
        here, its member writes come back deferred: (True, result, deferred writes).
        (False, ...) when it would block: nothing was written, so the caller just runs
        the whole request with hop(). Any other exception is the request's own outcome,
        as it would have been in a worker. A write whose member writes the level maps
        without reading anything (Driver.write_now: raid0, mirrors) skips the section."""
        if data is not None and self.fast:
            plan = getattr(vol, "write_now", None)  # a level driver's (not a Border's)
            if type(data) is not bytes:
                data = memoryview(data).cast("B")
            writes = plan(off, data) if plan is not None else None
            if writes is not None:  # no member read needed: nothing to try
                self.inline_counts[1] += 1
                return True, None, [(vol, writes)]
        try:
            with nowait.section() as sec:
                result = vol.read(off, n) if data is None else vol.write(off, data)
        except nowait.WouldBlock:
            self.inline_counts[0] += 1
            return False, None, []
        self.inline_counts[1] += 1
        return True, result, sec.deferred

    async def write_deferred(self, deferred: Deferred, n: int) -> None:
        """The member writes of an inline request: through io_uring when the array has
        a ring, else one worker hop. Writes that fail or come back short are issued again
        through their driver in a worker, where a real error meets the failure policy."""
        ring = self.ring
        if (ring is None or not ring.running) and not WRITE_SYNC:
            await self.hop(_run_deferred, deferred, cost=n)
            return
        items: list[tuple[int, int, Any]] = []
        owners: list[tuple[Any, tuple[int, int, Any]]] = []
        for drv, writes in deferred:
            for w in writes:
                slot = drv.slots[w[0]]
                if slot is not None:  # as write_blocks: a role failed meanwhile drops out
                    items.append((slot.member.fd, slot.data_offset + w[1], w[2]))
                    owners.append((drv, w))
        if WRITE_SYNC or ring is None:
            results = [_pwrite(fd, off, data) for fd, off, data in items]
        else:
            results = await ring.write(items)
        redo = [(drv, [w]) for (drv, w), res in zip(owners, results, strict=True)
                if res != memoryview(w[2]).nbytes]
        if redo:
            await self.hop(_run_deferred, redo, cost=n)

    # ---- the threads' lifetime ----
    async def start_workers(self, nursery: trio.Nursery) -> None:
        """Start the worker pool in `nursery` (once; not with FUSERAID_REQUEST_POOL=0)."""
        if self.workers is None and REQUEST_POOL:
            await nursery.start(self._own_workers)

    async def start_ring(self, nursery: trio.Nursery) -> None:
        """Open the io_uring for inline writes and start its reaper in `nursery` (once;
        not where the inline path is off or io_uring is unavailable)."""
        if self.ring is None and self.inline:
            ring = WriteRing.open()
            if ring is not None:
                self.ring = ring
                await nursery.start(ring.run)

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
            await self.stop_workers()

    async def stop_workers(self) -> None:
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

    async def stop(self) -> None:
        """Stop the worker threads, then the ring once its writes in flight are done."""
        await self.stop_workers()
        if self.ring is not None:
            self.ring.stop()
            await self.ring.done.wait()

    def abandon(self) -> None:
        """Stop the threads and the ring at once, without waiting for trio (a crash)."""
        if self._workers_scope is not None:
            self._workers_scope.cancel()
        if self.workers is not None:
            self.workers.stop()
            self.workers.join()
        if self.ring is not None:
            self.ring.stop()
