"""`WorkerPool`: long-lived worker threads that run an array's requests for trio tasks.

Why not `trio.to_thread.run_sync` per request: measured here it costs ~100 us per call
(thread-cache hand-off through Python locks, a capacity limiter, a context copy, and a
wakeup of the trio thread per call), which is most of a 4 KiB request. The pool instead:

- keeps `threads` threads blocked on one `queue.SimpleQueue` (a C queue);
- does not queue a job when it is submitted: the pool is a trio *instrument*, and in
  `before_io_wait` (once per scheduler pass, right before the trio thread releases the
  GIL in epoll) it queues every job submitted since as one batch (one wakeup); waking a
  worker earlier would only make it wait for the GIL the trio thread still holds. A
  worker that wakes also takes every batch queued by then (up to `batch_bytes`);
- after a batch, appends the finished jobs to a deque and signals trio
  (`TrioToken.run_sync_soon`, one wakeup-socket write) only when the trio thread is
  blocked in epoll and no signal is pending; while it is busy, its next scheduler pass
  picks the finished jobs up for free (`before_io_wait` with timeout 0);
- wakes each waiting task with `trio.lowlevel.reschedule` (the task sleeps in
  `wait_task_rescheduled`; no Event, no memory channel).

The pool is an instrument only while it is in use: trio calls every installed hook on
every scheduler pass, which an idle pool would pay on every request it never sees (the
fast read path; measured ~10% of 4 KiB read IOPS with the ring's hook). `run()`
installs it (~9 us, trio inspects the instrument; once per busy spell); it removes
itself when about to block after `IDLE_PASSES` passes in a row with nothing to hand
over or take back. Uninstalled, `_blocking` stays True, so every finished job signals
(run_sync_soon): no job waits for a pass that never calls us.

Requests of `LARGE` bytes or more are queued at once (one per batch). The Array sends
requests of 64 KiB and more through `trio.to_thread.run_sync` anyway (measured faster
for 1 MiB; docs/PERFORMANCE.md).

Still one hop per request or per batch of whole requests: a job is a whole request (the
driver does all its member I/O and parity in the worker), never a block.

Cancellation (the rule the engine relies on): a job that a worker has **claimed** runs to
the end and its caller keeps waiting for it (`Abort.FAILED`), exactly like
`trio.to_thread.run_sync` without `abandon_on_cancel`: a write is never left half-applied
and unreported, and the interval lock the caller holds stays held until the member I/O is
over. A job still **queued** (no worker has touched it) may be withdrawn: the caller gets
`Cancelled` and the job never runs, so nothing of it happened. Claiming is one atomic
`list.pop()` on the job (GIL-atomic), done by whichever side comes first: the worker
(then it runs) or the abort callback (then it is dropped).

Lifetime: `start()` spawns the threads, `stop()` queues one stop mark per thread (jobs
queued before it still run), `join()` waits for them. `Array` owns its pool: a task in
the array's nursery starts it and stops and joins it when that nursery ends (normal exit
or cancellation); `Array.close()`/`abandon()` stop it too. After `stop()`, `running` is
False and the array falls back to `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import outcome
import trio

# Request bytes one worker takes per batch: many 4 KiB requests, or one 1 MiB request
# (large requests are worth spreading over threads: their copies release the GIL).
BATCH_BYTES = 256 << 10
# Requests of at least this many bytes are queued at once, one per batch.
LARGE = 64 << 10
# Scheduler passes in a row with nothing to do after which the pool's instrument leaves
# (module docstring). FUSERAID_UNHOOK=0: installed from the start and for good, as
# before (A/B measurements).
IDLE_PASSES = 64
UNHOOK = os.environ.get("FUSERAID_UNHOOK", "1") != "0"


class _Job:
    __slots__ = ("fn", "args", "cost", "task", "token", "claim", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], cost: int,
                 task: Any, token: Any) -> None:
        self.fn = fn
        self.args = args
        self.cost = cost
        self.task = task
        self.token = token
        self.claim = [True]  # popped exactly once: by the worker (run) or by abort (drop)
        self.result: Any = None


class WorkerPool:
    """A fixed set of worker threads fed by one queue; see the module docstring."""

    def __init__(self, threads: int = 4, *, name: str = "fuseraid-io",
                 batch_bytes: int = BATCH_BYTES) -> None:
        if threads < 1:
            raise ValueError("a pool needs at least one thread")
        self.size = threads
        self.name = name
        self.batch_bytes = batch_bytes
        self._queue: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._pending: list[_Job] = []  # submitted on the trio thread, not yet queued
        self._token: Any = None  # the trio run whose scheduler hands jobs over
        # finished jobs of self._token's run, and whether a drain is already scheduled
        # there (one run_sync_soon, i.e. one wakeup-socket write, per burst)
        self._done: collections.deque[_Job] = collections.deque()
        self._signalled = False
        # the trio thread is in (or entering) epoll_wait: a finished job must wake it
        self._blocking = True
        self._hooked = False  # installed as an instrument of self._token's run
        self._quiet = 0  # scheduler passes in a row with nothing handed over or back
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stopped = False
        # counters for tests and benchmarks: jobs run, batches handed back
        self.jobs = 0
        self.batches = 0
        self._stats_lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Started and not stopped: run() may be called."""
        return self._started and not self._stopped

    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def start(self) -> None:
        """Spawn the threads. Call it on the trio thread of the run that submits jobs:
        the pool's jobs are handed over by that run's scheduler (before_io_wait; the
        instrument is installed while jobs come, see the module docstring)."""
        if self._started:
            raise RuntimeError("worker pool already started")
        self._token = trio.lowlevel.current_trio_token()
        self._started = True
        if not UNHOOK:  # the previous behaviour: installed for the pool's life
            trio.lowlevel.add_instrument(self)
            self._hooked = True
        for i in range(self.size):
            t = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """No new jobs; every worker exits after the jobs queued before this call."""
        if not self._started or self._stopped:
            self._stopped = True
            return
        self._stopped = True
        self.before_io_wait(0)  # jobs submitted before stop() still run
        self._unhook()
        # No scheduler passes reach us any more: from now on every finished job must
        # signal, and the ones that finished meanwhile without signalling go now.
        self._blocking = True
        if self._done:
            self._drain()
        for _ in self._threads:
            self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)

    def alive(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    async def run(self, fn: Callable[..., Any], *args: Any, cost: int = 0) -> Any:
        """Run fn(*args) in a worker thread and return its result (or raise its
        exception). `cost` is the request's size in bytes (batching budget)."""
        if not self.running:
            raise RuntimeError("worker pool is not running")
        token = trio.lowlevel.current_trio_token()
        job = _Job(fn, args, cost, trio.lowlevel.current_task(), token)
        if cost >= LARGE or token is not self._token:
            # a large request starts at once, on its own (its copies release the GIL,
            # so it runs beside the trio thread); a job from another trio run than the
            # one that started the pool (tests) cannot wait for that run's scheduler
            self._queue.put([job])
        else:
            # handed to the workers when this trio thread is about to wait for I/O
            # (before_io_wait): every job its tasks submitted meanwhile goes at once
            self._pending.append(job)
            if not self._hooked:
                trio.lowlevel.add_instrument(self)
                self._hooked = True
                self._quiet = 0

        def abort(_: Any) -> trio.lowlevel.Abort:
            try:
                job.claim.pop()
            except IndexError:
                return trio.lowlevel.Abort.FAILED  # a worker runs it: wait for the end
            return trio.lowlevel.Abort.SUCCEEDED  # never started: nothing happened

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def before_io_wait(self, timeout: float) -> None:
        """trio instrument hook (the trio thread, once per scheduler pass, right before
        it blocks in epoll and so releases the GIL): hand the jobs submitted since the
        last pass to the workers, in batches of up to `batch_bytes`. Waking a worker
        earlier would only make it wait for the GIL the trio thread still holds."""
        took = 0
        if timeout > 0:
            # about to block in epoll: from now on workers must wake us (socket write)
            self._blocking = True
            if self._done:
                took = self._drain()
                if took:  # tasks became runnable after trio chose to block: wake epoll
                    self._run_soon(self._token, _noop)
        elif self._done:
            # busy pass (epoll will not block): take finished jobs here, no wakeup
            took = self._drain()
        pending = self._pending
        if not pending:
            if took:
                self._quiet = 0
            else:
                self._quiet += 1
                if self._quiet >= IDLE_PASSES and UNHOOK:
                    self._unhook()
            return
        self._quiet = 0
        self._pending = []
        budget = self.batch_bytes
        q = self._queue
        batch: list[_Job] = []
        cost = 0
        for job in pending:
            if batch and cost + job.cost > budget:
                q.put(batch)
                batch, cost = [], 0
            batch.append(job)
            cost += job.cost
        q.put(batch)

    def after_io_wait(self, timeout: float) -> None:
        self._blocking = False

    def _unhook(self) -> None:
        """Leave the scheduler's hooks; every finished job then signals."""
        if not self._hooked:
            return
        self._hooked = False
        self._blocking = True
        try:
            trio.lowlevel.remove_instrument(self)
        except (KeyError, RuntimeError):
            pass  # trio dropped it (a hook raised), or not in the pool's run
        if self._done:
            # finished while we still looked like we were busy (no signal): wake now
            self._drain()
            self._run_soon(self._token, _noop)

    # ---- the worker threads ---------------------------------------------------------

    def _work(self) -> None:
        q = self._queue
        budget = self.batch_bytes
        stop = False
        while not stop:
            batch = q.get()
            if batch is None:
                return
            cost = sum(j.cost for j in batch)
            while cost < budget:  # more batches queued meanwhile: take them too
                try:
                    more = q.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True  # ours: finish this batch, then exit
                    break
                batch += more
                cost += sum(j.cost for j in more)
            done: list[_Job] = []
            for job in batch:
                try:
                    job.claim.pop()
                except IndexError:
                    continue  # withdrawn by a cancelled caller before it started
                job.result = outcome.capture(job.fn, *job.args)
                done.append(job)
            if not done:
                continue
            with self._stats_lock:
                self.jobs += len(done)
                self.batches += 1
            mine = self._token
            others = [j for j in done if j.token is not mine]
            if others:  # jobs from another trio run (tests): hand each back there
                for j in others:
                    self._run_soon(j.token, _complete_one, j)
                done = [j for j in done if j.token is mine]
            if done:
                # append BEFORE testing the flags (see before_io_wait and _drain); while
                # the trio thread is busy its next scheduler pass takes them, free
                self._done.extend(done)
                if self._blocking and not self._signalled:
                    self._signalled = True
                    self._run_soon(mine, self._drain)

    @staticmethod
    def _run_soon(token: Any, fn: Callable[..., None], *args: Any) -> None:
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass  # the trio run is gone: nobody waits any more

    def _drain(self) -> int:
        """On the trio thread: wake the task of every finished job with its outcome.
        The flag is cleared BEFORE the deque is emptied, so a worker that appended and
        then saw the flag still set has its jobs taken here, and one that sees it clear
        schedules another drain: no finished job is ever left behind."""
        self._signalled = False
        done = self._done
        n = 0
        while done:
            job = done.popleft()
            trio.lowlevel.reschedule(job.task, job.result)
            n += 1
        return n


def _noop() -> None:
    return None


def _complete_one(job: _Job) -> None:
    trio.lowlevel.reschedule(job.task, job.result)
