"""What every level driver shares: the member slots, member I/O that reports which role
failed, the member-error policy hook and the retry-degraded-once rule.

A driver is synchronous: the engine calls one method per request from a worker thread and
the driver does all of that request's member I/O in that thread; or, for a small request,
from the trio thread inside a non-blocking section (member/nowait.py), where its reads
come from the page cache or raise WouldBlock and its writes are deferred.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fuseraid.errors import FuseraidError, MemberIOError
from fuseraid.layout import make_layout
from fuseraid.member import nowait

T = TypeVar("T")

# md's STRIPE_SIZE: scrub compares and counts in 4 KiB pages (8 sectors each).
PAGE = 4096
PAGE_SECTORS = PAGE // 512


class MemberLike(Protocol):
    """The part of fuseraid.member.device.Member a driver uses."""

    @property
    def fd(self) -> int: ...
    def preadinto(self, buf: Any, off: int) -> Any: ...
    def read_now(self, off: int, n: int) -> bytearray | None: ...
    def preadv(self, bufs: Sequence[Any], off: int) -> Any: ...
    def pwrite(self, off: int, data: Any) -> Any: ...
    def pwritev(self, bufs: Sequence[Any], off: int) -> Any: ...
    def fsync(self) -> None: ...


@dataclass
class Slot:
    """One role's member and where its data area starts (bytes from the member start)."""

    member: MemberLike
    data_offset: int


OnMemberError = Callable[[int, MemberIOError], None]


def reraise(role: int, exc: MemberIOError) -> None:
    """Default member-error policy: the error ends the request."""
    raise exc


class RoleFailed(Exception):
    """Internal: a member read failed; carries the role so the request can be retried."""

    def __init__(self, role: int, exc: MemberIOError) -> None:
        super().__init__(role, exc)
        self.role = role
        self.exc = exc


class Driver:
    """Base of the per-level drivers.

    `slots` is kept by reference: the engine fails a role by setting `slots[role] = None`
    (normally from inside `on_member_error`) and re-adds one by storing a new Slot before
    calling `rebuild`.
    """

    level: int

    def __init__(
        self,
        geometry: Any,
        slots: Sequence[Slot | None],
        on_member_error: OnMemberError | None = None,
    ) -> None:
        if len(slots) != geometry.raid_disks:
            raise FuseraidError(
                f"raid{geometry.level}: {len(slots)} slots given for {geometry.raid_disks} roles"
            )
        self.geometry = geometry
        self.layout = make_layout(geometry)
        self.level = geometry.level
        self.slots: list[Slot | None] = slots if isinstance(slots, list) else list(slots)
        self.on_member_error: OnMemberError = on_member_error or reraise

    # ---- what the callers iterate over -------------------------------------------
    size: int
    rows: int
    row_bytes: int

    def lock_span(self, off: int, n: int) -> tuple[int, int]:
        return off, off + n

    def missing(self) -> list[int]:
        return [r for r, s in enumerate(self.slots) if s is None]

    def too_degraded(self, what: str) -> MemberIOError:
        """The error of a request that needs more members than are left (`what` names
        the step); the caller raises it."""
        return MemberIOError(
            f"raid{self.level}: {what} needs more members than are left "
            f"(missing roles {self.missing()})"
        )

    # ---- member I/O ----------------------------------------------------------------
    def _slot(self, role: int) -> Slot:
        slot = self.slots[role]
        if slot is None:  # callers check first; this is a bug guard, not a policy
            raise FuseraidError(f"raid{self.geometry.level}: role {role} is missing")
        return slot

    def _pread(self, role: int, dev_off: int, n: int) -> bytearray:
        """n bytes at dev_off of role's data area; a failure becomes RoleFailed."""
        buf = bytearray(n)
        self._preadinto(role, dev_off, buf)
        return buf

    def _preadinto(self, role: int, dev_off: int, buf: Any) -> None:
        """Fill buf from dev_off of role's data area (no intermediate copy)."""
        slot = self._slot(role)
        try:
            slot.member.preadinto(buf, slot.data_offset + dev_off)
        except MemberIOError as exc:
            raise RoleFailed(role, exc) from exc

    def _gather(self, reads: Sequence[tuple[int, int, Any]]) -> None:
        """Fill (role, dev_off, buf) triples, one preadv per run of adjacent member bytes."""
        for role, off, bufs in _runs(reads):
            slot = self._slot(role)
            try:
                if len(bufs) == 1:
                    slot.member.preadinto(bufs[0], slot.data_offset + off)
                else:
                    slot.member.preadv(bufs, slot.data_offset + off)
            except MemberIOError as exc:
                raise RoleFailed(role, exc) from exc

    def write_blocks(self, writes: Sequence[tuple[int, int, Any]]) -> None:
        """Write (role, dev_off, data) triples (dev_off from the role's data area), one
        pwritev per run of adjacent member bytes. All new contents were computed before,
        so a role that fails here just drops out (the policy fails it): the rest stays
        consistent without it.
        Inside a non-blocking section the writes are deferred to a worker thread as they
        are (the section refuses later reads of these bytes)."""
        sec = nowait.current()
        if sec is not None:
            for role, off, data in writes:
                slot = self.slots[role]
                if slot is not None:
                    sec.will_write(slot.member.fd, slot.data_offset + off,
                                   memoryview(data).nbytes)
            sec.defer(self, list(writes))
            return
        for role, off, bufs in _runs(writes):
            slot = self.slots[role]
            if slot is None:  # failed earlier in this same batch
                continue
            try:
                if len(bufs) == 1:
                    slot.member.pwrite(slot.data_offset + off, bufs[0])
                else:
                    slot.member.pwritev(bufs, slot.data_offset + off)
            except MemberIOError as exc:
                self._fail(role, exc)

    def _fail(self, role: int, exc: MemberIOError) -> None:
        """Hand a member error to the engine's policy; it must fail the role or raise.
        Never from a non-blocking section: failing a member commits superblocks."""
        if nowait.current() is not None:
            raise nowait.WouldBlock
        self.on_member_error(role, exc)
        if self.slots[role] is not None:
            raise exc

    def _retrying(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a request; when a member read fails, let the policy fail that role and run
        the request again degraded (each retry needs a newly failed role, so it ends)."""
        for _ in range(self.geometry.raid_disks + 1):
            try:
                return fn(*args)
            except RoleFailed as failed:
                self._fail(failed.role, failed.exc)
        raise MemberIOError(f"raid{self.geometry.level}: every member failed")

    def _check_range(self, off: int, n: int) -> None:
        if off < 0 or n < 0 or off + n > self.size:
            raise FuseraidError(
                f"raid{self.geometry.level}: request [{off}, {off + n}) outside array of "
                f"{self.size} bytes"
            )

    def _check_rows(self, start_row: int, end_row: int) -> None:
        if not 0 <= start_row <= end_row <= self.rows:
            raise FuseraidError(
                f"raid{self.geometry.level}: rows [{start_row}, {end_row}) outside 0..{self.rows}"
            )

    # ---- the volume interface --------------------------------------------------------
    def read_now(self, off: int, n: int) -> bytes | None:
        """A small read's fast path (trio thread, no section, no lock taken: the caller
        saw its lock span free and finishes before its next checkpoint): the bytes when
        [off, off+n) is one run of one live member's data area and in the page cache,
        else None, and the caller takes the ordinary path (degraded rows, errors, cache
        misses, several members). Levels map with integer arithmetic; here: never."""
        return None

    def write_now(self, off: int, data: Any) -> list[tuple[int, int, Any]] | None:
        """A small write's fast path: its member writes (role, dev_off, bytes), when
        they need no member read (one extent of a striped or mirrored level; a copy per
        live role), for the caller to issue as deferred writes of this driver (the
        inline path's step 6); else None and the caller takes the ordinary path (which
        also refuses a write no live member could store)."""
        return None

    def _member_now(self, role: int, dev_off: int, n: int) -> bytes | None:
        """n bytes at dev_off of role's data area from the page cache, else None."""
        slot = self.slots[role]
        if slot is None:
            return None
        got = slot.member.read_now(slot.data_offset + dev_off, n)
        return None if got is None else bytes(got)

    def read(self, off: int, n: int) -> bytes:
        self._check_range(off, n)
        return self._retrying(self._read, off, n)

    def read_into(self, off: int, view: memoryview) -> None:
        """view[:] = read(off, len(view)) without the intermediate buffer (the migrator
        reads megabyte windows into a reused one)."""
        self._check_range(off, len(view))
        self._retrying(self._read_into, off, view)

    def write(self, off: int, data: Any) -> None:
        view = memoryview(data).cast("B")
        self._check_range(off, len(view))
        self._retrying(self._write, off, view)

    def flush(self) -> None:
        """fsync every live member; a failing member is handed to the policy."""
        for role, slot in enumerate(self.slots):
            if slot is None:
                continue
            try:
                slot.member.fsync()
            except MemberIOError as exc:
                self._fail(role, exc)

    # ---- maintenance (rows are the level's natural unit) ------------------------------
    def scrub(self, start_row: int, end_row: int, repair: bool = False) -> int:
        self._check_rows(start_row, end_row)
        return self._retrying(self._scrub, start_row, end_row, repair)

    def resync(self, start_row: int, end_row: int) -> None:
        self._check_rows(start_row, end_row)
        self._retrying(self._resync, start_row, end_row)

    def rebuild(self, role: int, start_row: int, end_row: int) -> None:
        self._check_rows(start_row, end_row)
        if not 0 <= role < self.geometry.raid_disks:
            raise FuseraidError(f"raid{self.geometry.level}: no role {role}")
        if self.slots[role] is None:
            raise FuseraidError(f"raid{self.geometry.level}: role {role} has no member to rebuild")
        self._retrying(self._rebuild, role, start_row, end_row)

    # ---- what each level implements ----------------------------------------------------
    def _read(self, off: int, n: int) -> bytes:
        out = bytearray(n)
        self._read_into(off, memoryview(out))
        return bytes(out)

    def _read_into(self, off: int, view: memoryview) -> None:
        raise NotImplementedError

    def _write(self, off: int, data: memoryview) -> None:
        raise NotImplementedError

    def _scrub(self, start_row: int, end_row: int, repair: bool) -> int:
        raise NotImplementedError

    def _resync(self, start_row: int, end_row: int) -> None:
        raise NotImplementedError

    def _rebuild(self, role: int, start_row: int, end_row: int) -> None:
        raise NotImplementedError


def _runs(items: Sequence[tuple[int, int, Any]]) -> list[tuple[int, int, list[Any]]]:
    """Group (role, dev_off, buf) by role into runs of back-to-back member bytes:
    (role, first dev_off, [bufs in order]). Fewer, larger syscalls."""
    out: list[tuple[int, int, list[Any]]] = []
    end = -1
    for role, off, buf in sorted(items, key=lambda t: (t[0], t[1])):
        n = memoryview(buf).nbytes
        if n == 0:
            continue
        if out and out[-1][0] == role and end == off:
            out[-1][2].append(buf)
        else:
            out.append((role, off, [buf]))
        end = off + n
    return out
