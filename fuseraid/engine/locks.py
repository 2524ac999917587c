"""Interval lock on array-byte ranges for trio tasks.

Readers share, writers are exclusive, and only overlapping ranges interact. Grants are
FIFO among overlapping requests: a request is granted only when it conflicts neither with a
held range nor with an *earlier waiting* request, so a stream of readers cannot starve a
writer queued behind them. Waiting is cancellation-safe: a cancelled waiter leaves the queue
(and gives back a grant it won but never saw), then lets the requests behind it move on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

# The end of every range: locking [0, WHOLE) excludes every request on the array.
WHOLE = 1 << 63


class _Request:
    # Plain slots, and the Event only for a request that waits: a small request takes
    # and releases one of these on the trio thread, where every microsecond counts.
    __slots__ = ("start", "end", "exclusive", "event", "granted")

    def __init__(self, start: int, end: int, exclusive: bool) -> None:
        self.start = start
        self.end = end
        self.exclusive = exclusive
        self.event: trio.Event | None = None
        self.granted = False

    def conflicts(self, other: _Request) -> bool:
        overlap = self.start < other.end and other.start < self.end
        return overlap and (self.exclusive or other.exclusive)


class IntervalLock:
    """Shared/exclusive locks on half-open byte ranges [start, end)."""

    def __init__(self) -> None:
        self._held: list[_Request] = []
        self._waiting: list[_Request] = []

    async def acquire(self, start: int, end: int, *, exclusive: bool) -> _Request:
        """Wait until [start, end) is granted; returns the token for release()."""
        if end < start:
            raise ValueError(f"bad lock range [{start}, {end})")
        req = _Request(start, end, exclusive)
        if self._grantable(req, self._waiting):
            self._grant(req)
            # A checkpoint keeps acquire() a real yield point even when uncontended.
            try:
                await trio.lowlevel.checkpoint()
            except BaseException:
                self.release(req)
                raise
            return req
        req.event = trio.Event()
        self._waiting.append(req)
        try:
            await req.event.wait()
        except BaseException:
            if req.granted:
                self.release(req)
            else:
                self._waiting.remove(req)
                self._wake()
            raise
        return req

    def try_acquire(self, start: int, end: int, *, exclusive: bool) -> _Request | None:
        """Grant [start, end) now if acquire() would grant it at once (same FIFO rule),
        else None. No checkpoint: for callers whose next step is one anyway."""
        if end < start:
            raise ValueError(f"bad lock range [{start}, {end})")
        req = _Request(start, end, exclusive)
        if self._grantable(req, self._waiting):
            self._grant(req)
            return req
        return None

    def free(self, start: int, end: int) -> bool:
        """Would try_acquire grant [start, end) shared now (same FIFO rule)? Nothing is
        taken: for a caller that is done with the range before its next checkpoint,
        which no other task can then tell apart from a grant and release."""
        for r in self._held:
            if r.exclusive and r.start < end and start < r.end:
                return False
        for r in self._waiting:
            if r.exclusive and r.start < end and start < r.end:
                return False
        return True

    def release(self, req: _Request) -> None:
        held = self._held
        if held[-1] is req:  # the common case: the latest grant goes first
            held.pop()
        else:
            held.remove(req)
        req.granted = False
        if self._waiting:
            self._wake()

    @asynccontextmanager
    async def shared(self, start: int, end: int) -> AsyncIterator[None]:
        req = await self.acquire(start, end, exclusive=False)
        try:
            yield
        finally:
            self.release(req)

    @asynccontextmanager
    async def exclusive(self, start: int, end: int) -> AsyncIterator[None]:
        req = await self.acquire(start, end, exclusive=True)
        try:
            yield
        finally:
            self.release(req)

    def held(self) -> list[tuple[int, int, bool]]:
        """Granted ranges (start, end, exclusive), for tests and status."""
        return [(r.start, r.end, r.exclusive) for r in self._held]

    def waiting(self, start: int = 0, end: int = WHOLE) -> int:
        """Requests waiting for a grant that overlap [start, end) (all by default)."""
        return sum(1 for r in self._waiting if r.start < end and start < r.end)

    # -- internals ---------------------------------------------------------------------

    def _grantable(self, req: _Request, earlier: list[_Request]) -> bool:
        # req.conflicts() spelled out as plain loops (~3x cheaper than any() over a
        # generator of method calls, measured with 15 ranges held)
        start, end = req.start, req.end
        if start == end:
            return True  # an empty range touches nothing
        if req.exclusive:
            for r in self._held:
                if r.start < end and start < r.end:
                    return False
            for r in earlier:
                if r.start < end and start < r.end:
                    return False
        else:
            for r in self._held:
                if r.exclusive and r.start < end and start < r.end:
                    return False
            for r in earlier:
                if r.exclusive and r.start < end and start < r.end:
                    return False
        return True

    def _grant(self, req: _Request) -> None:
        req.granted = True
        self._held.append(req)

    def _wake(self) -> None:
        still: list[_Request] = []
        for req in self._waiting:
            if self._grantable(req, still):
                self._grant(req)
                if req.event is not None:  # always: acquire() gave it one to wait on
                    req.event.set()
            else:
                still.append(req)
        self._waiting = still
