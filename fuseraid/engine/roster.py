"""The roster: which member holds which role, the spares, the failed members, the slot
lists of every driver built over them, and the failure policy that moves a member from
its role to the failed list.

Order matters (`Roster.fail_member`): the superblocks of the other members record the
role faulty BEFORE the member leaves the slots, so no request can complete a write that
skips it while the superblocks still trust it.

Threads: `Roster.lock` (a threading.RLock; the Array's state lock) guards the role table,
the spares, the failed list and the slot lists. It is never held across I/O, so the trio
thread may take it: it only ever waits for a few in-memory assignments. Superblock
commits (fsyncs) run in worker threads outside it; other threads that hit a member whose
failure is being committed wait for that commit on an Event, not on the lock.

The roster is synchronous (no trio): failures arrive in the worker thread of the request
that met them. The Array (array.py) owns one and reads its state; manage.py (fail, remove,
add) and background.py (spare recovery, rebuild) change it through the methods here.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fuseraid.engine.levels import Slot
from fuseraid.engine.mutators import Mutator, faulty
from fuseraid.engine.state import Entry, SuperblockSet
from fuseraid.engine.tolerance import describe_missing
from fuseraid.engine.tolerance import survives as level_survives
from fuseraid.errors import FuseraidError
from fuseraid.layout import Geometry
from fuseraid.member.device import Member

log = logging.getLogger("fuseraid.engine")


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


class Roster:
    """Role holders, spares, failed members and the slot lists, with the failure policy.

    `geometry` returns the array's current geometry (it changes with a reshape).
    `survives(missing)` says whether the array can go on with those roles missing (the
    Array's: the level's rule, or during a reshape both geometries'); default: the
    level's rule for `geometry()`."""

    def __init__(self, members: list[MemberState], raid_disks: int,
                 superblocks: SuperblockSet, geometry: Callable[[], Geometry],
                 survives: Callable[[list[int]], bool] | None = None) -> None:
        self.superblocks = superblocks
        self._geometry = geometry
        self._survives = survives or (lambda missing: level_survives(geometry(), missing))
        # In-memory state only (roles, spares, faulty, slot lists); NEVER held across I/O,
        # so the trio thread can take it without stalling the event loop.
        self.lock = threading.RLock()
        # member id -> Event set once its failure is durable (FAULTY committed, slots
        # cleared): other threads that hit the same member wait on it, not on a lock.
        self._failing: dict[int, threading.Event] = {}
        self.roles: list[MemberState | None] = [None] * raid_disks
        self.spares: list[MemberState] = []
        self.faulty: list[MemberState] = []
        for ms in members:
            if ms.state == "spare":
                self.spares.append(ms)
            elif ms.state == "faulty":
                self.faulty.append(ms)
            else:
                assert ms.role is not None
                self.roles[ms.role] = ms
        # Slot lists of every driver built over the members: failing one clears it in all.
        self.slot_lists: list[list[Slot | None]] = []
        self.dead: str | None = None  # why I/O fails, once beyond tolerance
        self.fail_gen = 0  # + 1 per failure made durable (requests retry when it moved)

    # ---- who is who ----
    @property
    def members(self) -> list[MemberState]:
        """Role holders in role order, then faulty members, then spares."""
        return [ms for ms in self.roles if ms is not None] + self.faulty + self.spares

    def find(self, member: Any) -> MemberState | None:
        for ms in self.members:
            if ms.member is member:
                return ms
        return None

    def missing(self) -> list[int]:
        """Roles without an in-sync member (missing, failed or still rebuilding). Without
        the lock: the trio thread reads a moment's view (the lists change under it)."""
        return [r for r, ms in enumerate(self.roles) if ms is None or ms.state != "active"]

    def vacant(self) -> list[int]:
        """Roles nobody holds (a rebuilding member holds its role)."""
        return [r for r, holder in enumerate(self.roles) if holder is None]

    def rebuilding(self) -> list[MemberState]:
        return [ms for ms in self.roles if ms is not None and ms.state == "rebuilding"]

    def missing_roles(self) -> list[int]:
        """missing(), under the lock."""
        with self.lock:
            return self.missing()

    def role_holders(self) -> list[MemberState | None]:
        """A copy of the role table: role -> its member (None: missing)."""
        with self.lock:
            return list(self.roles)

    def spare_members(self) -> list[MemberState]:
        """A copy of the spares list."""
        with self.lock:
            return list(self.spares)

    def resolve(self, which: int | str) -> MemberState:
        """The member a user names: a role number (a failed member still answers to its
        old role) or a path."""
        if isinstance(which, int) or (isinstance(which, str) and which.isdigit()):
            role = int(which)
            # mid-reshape the table holds the larger role set of the two geometries
            raid_disks = max(self._geometry().raid_disks, len(self.roles))
            if not 0 <= role < raid_disks:
                raise FuseraidError(f"no role {role} (raid_disks {raid_disks})")
            ms = self.roles[role] if role < len(self.roles) else None
            if ms is None:  # a failed member still answers to its old role
                ms = next((f for f in reversed(self.faulty) if f.role == role), None)
            if ms is None:
                raise FuseraidError(f"role {role} has no member")
            return ms
        path = os.path.realpath(which)
        for ms in self.members:
            if os.path.realpath(ms.path) == path:
                return ms
        raise FuseraidError(f"{which} is not a member of this array")

    # ---- changes to the table (the caller commits the superblocks) ----
    def set_roles(self, roles: list[MemberState | None],
                  spares: list[MemberState] | None = None) -> None:
        """Replace the role table (and the spares) at once; see Array.set_roles."""
        with self.lock:
            self.roles = list(roles)
            if spares is not None:
                self.spares = list(spares)

    def fit_roles(self, raid_disks: int) -> None:
        """Size the role table to `raid_disks` roles: holders of dropped roles become
        spares, new roles start missing."""
        with self.lock:
            for ms in self.roles[raid_disks:]:
                if ms is not None:
                    ms.role, ms.state = None, "spare"
                    self.spares.append(ms)
            self.roles = (self.roles[:raid_disks]
                          + [None] * max(0, raid_disks - len(self.roles)))

    def add(self, ms: MemberState) -> None:
        """A new member: its superblock joins the set, it takes its role or is a spare."""
        with self.lock:
            self.superblocks.add(ms.entry)
            if ms.role is None:
                self.spares.append(ms)
            else:
                self.roles[ms.role] = ms

    def promote(self, ms: MemberState, role: int) -> None:
        """A spare takes the vacant `role` and is to be rebuilt from its first row."""
        with self.lock:
            self.spares.remove(ms)
            ms.role, ms.state, ms.recovered_rows = role, "rebuilding", 0
            self.roles[role] = ms

    def remove(self, ms: MemberState) -> None:
        """A spare or failed member leaves the array (its superblock no longer written,
        its slots cleared). Raises FuseraidError for any other member."""
        with self.lock:
            if ms not in self.spares and ms not in self.faulty:
                raise FuseraidError(f"{ms.path} is {ms.state}: fail it before "
                                    "removing it")
            if ms in self.spares:
                self.spares.remove(ms)
            if ms in self.faulty:
                self.faulty.remove(ms)
            self.superblocks.drop(ms.entry)
            self.clear_member(ms.member)

    # ---- slot lists ----
    def register_slots(self, slots: list[Slot | None]) -> None:
        """Have member failures clear `slots` (kept by reference). Under the state lock,
        so a failure is either seen here (its slot cleared now) or clears it later."""
        with self.lock:
            self._clear_failed(slots)
            if not any(lst is slots for lst in self.slot_lists):
                self.slot_lists.append(slots)

    def unregister_slots(self, slots: list[Slot | None]) -> None:
        """Stop tracking a slot list (its driver is no longer used)."""
        with self.lock:
            self.slot_lists = [lst for lst in self.slot_lists if lst is not slots]

    def _clear_failed(self, slots: list[Slot | None]) -> None:
        # only failures already durable: one still committing clears it when it is
        failed = {id(ms.member) for ms in self.faulty if id(ms.member) not in self._failing}
        for i, s in enumerate(slots):
            if s is not None and id(s.member) in failed:
                slots[i] = None

    def clear_member(self, member: Any) -> None:
        """Take `member` out of every registered slot list (caller holds the lock)."""
        for lst in self.slot_lists:
            for i, s in enumerate(lst):
                if s is not None and s.member is member:
                    lst[i] = None

    # ---- the failure policy ----
    def commit(self, mutator: Mutator | None) -> None:
        """A superblock commit (worker thread). Not under the state lock: commits are
        serialised by the SuperblockSet itself. Nothing is written once the array is
        dead (md writes nothing either: the superblocks stay as they were, so the
        array assembles again once the member is back). A member whose superblock
        write fails is failed here."""
        if self.dead:
            return
        failed = self.superblocks.commit(mutator)
        for e in failed:
            self.fail_member(e.member, "superblock write failed")

    def fail_member(self, member: Any, reason: str) -> None:
        """Fail a member (worker thread). Raises OSError(EIO) when the array cannot go on.

        Order matters: the superblocks of the others record the role faulty BEFORE the
        member leaves the slots, so no request can complete a write that skips it while
        the superblocks still trust it. The commit runs outside the state lock; other
        threads that hit the same member meanwhile wait for it on an Event.

        Beyond what the level tolerates nothing is written (as md's raid0 does): the
        array is dead in memory only, I/O fails with EIO, and since the superblocks
        never recorded the failure, the array assembles again once the member is back."""
        first = False
        with self.lock:
            ms = self.find(member)
            pending = self._failing.get(id(member))
            if ms is not None and ms.state != "faulty":
                log.warning("%s failed: %s", ms.path, reason)
                if ms in self.spares:
                    self.spares.remove(ms)
                elif ms.role is not None and self.roles[ms.role] is ms:
                    self.roles[ms.role] = None
                ms.state = "faulty"
                self.faulty.append(ms)
                missing = self.missing()
                if not self._survives(missing):
                    self.dead = (f"array failed: roles {describe_missing(missing)} are "
                                 f"missing (last: {ms.path}: {reason})")
                self.superblocks.drop(ms.entry)
                pending = self._failing[id(member)] = threading.Event()
                first = True
        if first:
            assert ms is not None and pending is not None
            try:
                if not self.dead:
                    self.commit(faulty(ms.entry.sb.dev_number))
            finally:
                with self.lock:
                    self.fail_gen += 1
                    self.clear_member(member)
                    self._failing.pop(id(member), None)
                pending.set()
        elif pending is not None:
            pending.wait()  # another thread is committing this failure
        with self.lock:
            self.clear_member(member)
        if self.dead:
            raise OSError(errno.EIO, self.dead)
