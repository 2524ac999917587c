"""The superblock set of an assembled array: one md v1.2 superblock per live member, and
the one way to change them, `commit()`.

Durable order (docs/engine.md): a commit first fsyncs every live member, so the data a
new superblock points at (a rebuilt range, a reshape window, a resynced range) is on
disk before any superblock says so; then it writes every superblock in a fixed order
(roles ascending, then spares by dev_number), each made durable (RWF_DSYNC, or pwrite +
fsync) before the next. Commits never overlap (a
lock), so on disk members differ by at most one commit: events N or N+1, which assembly
accepts exactly as md does.

Two locks: `_commit_lock` serialises commits and is held across their I/O (fsyncs); it
is only ever taken in worker threads. `_entries_lock` guards the list of entries and is
never held across I/O, so add()/drop()/newest, which the trio thread may call, never wait
for a commit's fsyncs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fuseraid.errors import FuseraidError, MemberIOError
from fuseraid.superblock.codec import (
    MD_DISK_ROLE_MAX,
    SB_OFFSET,
    Superblock,
    encode_time,
    written_size,
)


@dataclass(eq=False)
class Entry:
    """One member whose superblock the set keeps: its path, open Member and superblock."""

    path: str
    member: Any  # fuseraid.member.device.Member (pread/pwrite/fsync/size/close)
    sb: Superblock

    @property
    def role(self) -> int:
        return self.sb.role

    def order_key(self) -> tuple[int, int]:
        r = self.sb.role
        return (0, r) if r < MD_DISK_ROLE_MAX else (1, self.sb.dev_number)


Mutator = Callable[[Superblock], Superblock | None]


class SuperblockSet:
    """Superblocks of the live members. `readonly` keeps every change in memory."""

    def __init__(self, entries: Sequence[Entry], *, readonly: bool = False) -> None:
        if not entries:
            raise FuseraidError("an array needs at least one member with a superblock")
        self.readonly = readonly
        self._entries: list[Entry] = list(entries)
        self._entries_lock = threading.RLock()  # the list only; never held across I/O
        self._commit_lock = threading.Lock()  # one commit at a time; held across I/O

    # ---- reading ----------------------------------------------------------------------
    @property
    def entries(self) -> list[Entry]:
        with self._entries_lock:
            return sorted(self._entries, key=Entry.order_key)

    @property
    def newest(self) -> Superblock:
        """The freshest superblock (highest events): md's authority on shared fields."""
        with self._entries_lock:
            return max(self._entries, key=lambda e: e.sb.events).sb

    @property
    def events(self) -> int:
        return self.newest.events

    def entry_for(self, member: Any) -> Entry | None:
        with self._entries_lock:
            entries = list(self._entries)
        for e in entries:
            if e.member is member:
                return e
        return None

    # ---- membership ------------------------------------------------------------------
    def add(self, entry: Entry) -> None:
        """Start writing this member's superblock (from the next commit on)."""
        with self._entries_lock:
            self._entries.append(entry)

    def drop(self, entry: Entry) -> None:
        """Stop writing this member's superblock (it failed or was removed). A commit
        already writing may still write it once."""
        with self._entries_lock:
            if entry in self._entries:
                self._entries.remove(entry)

    # ---- the one way to change superblocks -------------------------------------------
    def commit(self, mutator: Mutator | None = None, *, sync_data: bool = True) -> list[Entry]:
        """Apply `mutator` to every live member's superblock, bump events and utime,
        then (unless read-only) fsync data, write every superblock, fsync each.

        `mutator(sb)` changes sb in place or returns a replacement. Returns the entries
        whose member failed during the commit; they are dropped from the set and the
        caller fails their roles (the rest were written)."""
        with self._commit_lock:
            with self._entries_lock:
                entries = list(self._entries)
                events = max(e.sb.events for e in entries) + 1
                stamp = encode_time(time.time())
                for e in entries:
                    sb = e.sb.replace()
                    if mutator is not None:
                        sb = mutator(sb) or sb
                    sb.events = events
                    sb.utime = stamp
                    e.sb = sb
            if self.readonly:
                return []
            order = sorted(entries, key=Entry.order_key)
            failed: list[Entry] = []
            # 1. data first: what the new superblocks point at must be durable already.
            if sync_data:
                failed += self._each(order, lambda e: e.member.fsync())
            # 2. the superblocks in role order, each durable before the next is written
            live = [e for e in order if e not in failed]
            failed += self._each(live, _write_durable)
            with self._entries_lock:
                for e in failed:
                    if e in self._entries:
                        self._entries.remove(e)
            return failed

    @staticmethod
    def _each(entries: list[Entry], fn: Callable[[Entry], object]) -> list[Entry]:
        bad = []
        for e in entries:
            try:
                fn(e)
            except (MemberIOError, OSError):
                bad.append(e)
        return bad


def _block(e: Entry) -> bytes:
    # only header + dev_roles, as md and mdadm: the block's tail keeps the reshape note
    raw = e.sb.encode(name=e.path)
    return raw[: written_size(e.sb.max_dev)]


def _write_block(e: Entry) -> None:
    e.member.pwrite(SB_OFFSET, _block(e))


def _write_durable(e: Entry) -> None:
    """Write the superblock and make it durable (Member.write_durable: one pwritev with
    RWF_DSYNC where the kernel takes it)."""
    e.member.write_durable(SB_OFFSET, _block(e))


