"""Level drivers against the bytearray model: random geometries (every level and layout),
real member files, random unaligned writes and reads, then degraded, then rebuilt."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuseraid.engine.levels import Slot, make_driver
from fuseraid.errors import FuseraidError, MemberIOError
from fuseraid.layout import Geometry, encode_raid10, make_layout
from fuseraid.parity import reference
from tests.model import ArrayModel, Member, blank_file, payload

RAID6_LAYOUTS = (0, 1, 2, 3, 4, 5, 8, 9, 10, 16, 17, 18, 19, 20)


@st.composite
def geometries(draw) -> Geometry:
    level = draw(st.sampled_from([0, 1, 4, 5, 6, 10]))
    chunk = 0 if level == 1 else draw(st.sampled_from([4096, 8192, 16384]))
    extra = 512 * draw(st.integers(0, 3))  # md rounds member sizes down to the chunk
    rows = draw(st.integers(2, 4))
    if level == 0:
        n = draw(st.integers(1, 4))
        if n > 1 and draw(st.booleans()):
            sizes = tuple(chunk * draw(st.integers(1, 4)) + extra for _ in range(n))
            return Geometry(0, n, draw(st.sampled_from([1, 2])), chunk, sizes[0], sizes)
        return Geometry(0, n, 0, chunk, chunk * rows + extra)
    if level == 1:
        return Geometry(1, draw(st.integers(2, 3)), 0, 0, 512 * draw(st.integers(8, 160)))
    if level == 4:
        return Geometry(4, draw(st.integers(3, 5)), draw(st.sampled_from([0, 5])), chunk,
                        chunk * rows + extra)
    if level == 5:
        return Geometry(5, draw(st.integers(3, 5)), draw(st.integers(0, 5)), chunk,
                        chunk * rows + extra)
    if level == 6:
        return Geometry(6, draw(st.integers(4, 6)), draw(st.sampled_from(RAID6_LAYOUTS)), chunk,
                        chunk * rows + extra)
    n = draw(st.integers(2, 5))
    copies = draw(st.integers(2, min(3, n)))
    kind = draw(st.sampled_from("nfo"))
    layout = (
        encode_raid10(copies) if kind == "n" else encode_raid10(1, copies, offset=kind == "o")
    )
    return Geometry(10, n, layout, chunk, chunk * (rows + 2) + extra)


class Rig:
    """An array of real member files in a directory, with its driver."""

    def __init__(self, g: Geometry, where: Path, offsets: list[int], stack: ExitStack) -> None:
        self.g, self.where, self.offsets, self.stack = g, where, offsets, stack
        self.generation = 0
        self.slots: list[Slot | None] = [self.blank(role) for role in range(g.raid_disks)]
        self.driver = make_driver(g, self.slots)
        self.model = ArrayModel(self.driver.size)

    def blank(self, role: int) -> Slot:
        g = self.g
        size = g.member_sizes[role] if g.member_sizes else max(g.dev_size, g.dev_used)
        self.generation += 1
        path = blank_file(self.where / f"d{role}.{self.generation}", self.offsets[role] + size)
        member = Member(path)
        if hasattr(member, "close"):
            self.stack.callback(member.close)
        return Slot(member, self.offsets[role])

    def check_all(self) -> None:
        assert self.driver.read(0, self.driver.size) == self.model.data

    def run_ops(self, ops: list[tuple[str, float, int, int]]) -> None:
        size = self.driver.size
        for kind, frac, length, seed in ops:
            off = min(int(frac * size), size - 1)
            n = min(length, size - off)
            if kind == "w":
                data = payload(seed, n)
                self.driver.write(off, data)
                self.model.write(off, data)
                span = self.driver.lock_span(off, n)
                assert span[0] <= off and off + n <= span[1]
            else:
                assert self.driver.read(off, n) == self.model.read(off, n)


def removable(g: Geometry, draw) -> list[int]:
    """Roles to fail that the level survives (raid10: any set leaving one copy of
    every block; raid1: all but one)."""
    n = g.raid_disks
    if g.level in (4, 5):
        return [draw(st.integers(0, n - 1))]
    if g.level == 6:
        return draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
    if g.level == 1:
        keep = draw(st.integers(0, n - 1))
        return [r for r in range(n) if r != keep]
    cand = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1, unique=True))
    layout = make_layout(g)
    for ext in layout.map(0, layout.array_size):
        if all(role in cand for role, _ in ext.copies):
            return cand[:1]  # copies sit on distinct roles, so one loss is always fine
    return cand


ops_strategy = st.lists(
    st.tuples(
        st.sampled_from("wwr"),
        st.floats(0, 1),
        st.one_of(st.integers(1, 9000), st.integers(1, 200_000)),
        st.integers(0, 1 << 30),
    ),
    min_size=2,
    max_size=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=geometries(), data=st.data())
def test_driver_matches_model_healthy_degraded_rebuilt(g: Geometry, data) -> None:
    offsets = data.draw(st.lists(st.sampled_from([0, 4096, 12288]),
                                 min_size=g.raid_disks, max_size=g.raid_disks))
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        rig = Rig(g, Path(tmp), offsets, stack)
        drv = rig.driver
        assert drv.size == g.array_size
        assert drv.rows * drv.row_bytes >= drv.size
        rig.run_ops(data.draw(ops_strategy))
        rig.check_all()
        if g.level == 0:
            return
        assert drv.scrub(0, drv.rows) == 0

        lost = removable(g, data.draw)
        for role in lost:
            rig.slots[role] = None
        rig.check_all()
        rig.run_ops(data.draw(ops_strategy))
        rig.check_all()

        for role in lost:  # re-add blank members one at a time, as md recovers
            rig.slots[role] = rig.blank(role)
            drv.rebuild(role, 0, drv.rows)
        assert drv.scrub(0, drv.rows) == 0
        rig.check_all()


@pytest.mark.parametrize("level,layout", [(5, lay) for lay in range(6)]
                         + [(6, lay) for lay in RAID6_LAYOUTS] + [(4, 0)])
def test_parity_bytes_match_reference(tmp_path: Path, level: int, layout: int) -> None:
    """P and Q on the members equal the pure-Python reference over the layout's rows
    (md's exact bytes, checked without the C kernel)."""
    n = 6 if level == 6 else 4
    g = Geometry(level, n, layout, 4096, 4096 * 7)
    with ExitStack() as stack:
        rig = Rig(g, tmp_path, [4096] * n, stack)
        size = rig.driver.size
        rig.run_ops([("w", 0.0, size, 1), ("w", 0.3, 5000, 2), ("w", 0.71, 333, 3)])
        rig.check_all()
        layout_ = make_layout(g)
        width = 48  # a column slice keeps the byte-by-byte reference fast
        for r in range(rig.driver.rows):
            rm = layout_.row(r)
            for col in (0, 4096 - width):
                def blk(role: int, r: int = r, col: int = col) -> bytes:
                    slot = rig.slots[role]
                    return slot.member.pread(slot.data_offset + r * 4096 + col, width)

                data = [blk(role) for role in rm.data_roles]
                if rm.q_role is None:
                    assert blk(rm.p_role) == reference.xor_blocks(data, width)
                    continue
                srcs: list[bytes | None] = [None] * rm.q_width
                for k, d in enumerate(data):
                    srcs[rm.q_slots[k]] = d
                p, q = reference.gen_pq(srcs, width)
                assert (blk(rm.p_role), blk(rm.q_role)) == (p, q)


class CountingMember(Member):
    """A real member that counts the bytes it moves."""

    read_bytes = 0
    written_bytes = 0

    def preadinto(self, buf, off: int) -> None:
        type(self).read_bytes += len(buf)
        return super().preadinto(buf, off)

    def preadv(self, bufs, off: int) -> None:
        type(self).read_bytes += sum(len(b) for b in bufs)
        return super().preadv(bufs, off)

    def pwritev(self, bufs, off: int) -> None:
        type(self).written_bytes += sum(len(b) for b in bufs)
        return super().pwritev(bufs, off)

    def pwrite(self, off: int, data) -> None:
        type(self).written_bytes += len(data)
        return super().pwrite(off, data)


def test_small_writes_touch_only_their_columns(tmp_path: Path) -> None:
    chunk = 64 * 1024
    g = Geometry(6, 6, 2, chunk, chunk * 4)
    slots = [Slot(CountingMember(blank_file(tmp_path / f"d{i}", chunk * 4)), 0) for i in range(6)]
    drv = make_driver(g, slots)
    drv.write(0, payload(1, drv.size))
    CountingMember.read_bytes = CountingMember.written_bytes = 0
    drv.write(8192, b"\x55" * 4096)  # rmw: old D, P, Q -> 3 x 4 KiB read, 3 written
    assert (CountingMember.read_bytes, CountingMember.written_bytes) == (3 * 4096, 3 * 4096)
    CountingMember.read_bytes = CountingMember.written_bytes = 0
    drv.write(drv.row_bytes, b"\x66" * drv.row_bytes)  # full row: no reads at all
    assert CountingMember.read_bytes == 0
    assert CountingMember.written_bytes == 6 * chunk
    CountingMember.read_bytes = CountingMember.written_bytes = 0
    # chunks 0, 1 whole and 4 KiB of chunk 2: in columns [0, 4K) reconstruct-write reads
    # chunk 3 only; in [4K, chunk) it reads chunks 2 and 3 (2 reads beat rmw's 4)
    big = b"\x77" * (2 * chunk + 4096)
    drv.write(2 * drv.row_bytes, big)
    assert CountingMember.read_bytes == 4096 + 2 * (chunk - 4096)
    assert drv.read(2 * drv.row_bytes, len(big)) == big
    assert drv.scrub(0, drv.rows) == 0


class FlakyMember(Member):
    """A real member whose reads fail once armed (a dying disk)."""

    armed = False

    def preadinto(self, buf, off: int) -> None:
        if self.armed:
            raise MemberIOError(f"{self.path}: injected read error")
        return super().preadinto(buf, off)

    def preadv(self, bufs, off: int) -> None:
        if self.armed:
            raise MemberIOError(f"{self.path}: injected read error")
        return super().preadv(bufs, off)


class WriteFailingMember(Member):
    """A real member whose writes fail once armed."""

    armed = False

    def pwrite(self, off: int, data) -> None:
        if self.armed:
            raise MemberIOError(f"{self.path}: injected write error")
        return super().pwrite(off, data)

    def pwritev(self, bufs, off: int) -> None:
        if self.armed:
            raise MemberIOError(f"{self.path}: injected write error")
        return super().pwritev(bufs, off)


@pytest.mark.parametrize("level,layout", [(6, 2), (5, 1), (10, 0x201), (1, 0)])
def test_write_error_drops_role_and_keeps_data(tmp_path: Path, level, layout) -> None:
    chunk = 0 if level == 1 else 4096
    g = Geometry(level, 4, layout, chunk, 4096 * 8)
    slots: list[Slot | None] = [
        Slot(WriteFailingMember(blank_file(tmp_path / f"d{i}", 4096 * 8)), 0) for i in range(4)
    ]
    failed: list[int] = []

    def fail_role(role: int, exc: MemberIOError) -> None:
        failed.append(role)
        slots[role] = None

    drv = make_driver(g, slots, on_member_error=fail_role)
    model = ArrayModel(drv.size)
    first = payload(5, drv.size)
    drv.write(0, first)
    model.write(0, first)
    slots[1].member.armed = True
    second = payload(6, drv.size - 777)
    drv.write(333, second)  # role 1's blocks are lost; the rest stays consistent
    model.write(333, second)
    assert failed == [1]
    assert drv.read(0, drv.size) == model.data


@pytest.mark.parametrize("level,layout", [(5, 2), (6, 10), (1, 0), (10, 258)])
def test_member_error_fails_role_and_retries_degraded(tmp_path: Path, level, layout) -> None:
    chunk = 0 if level == 1 else 4096
    n = 5 if level == 6 else 4
    g = Geometry(level, n, layout, chunk, 4096 * 8)
    slots: list[Slot | None] = [
        Slot(FlakyMember(blank_file(tmp_path / f"d{i}", 4096 * 8)), 0) for i in range(n)
    ]
    failed: list[int] = []

    def fail_role(role: int, exc: MemberIOError) -> None:
        failed.append(role)
        slots[role] = None

    drv = make_driver(g, slots, on_member_error=fail_role)
    data = payload(7, drv.size)
    drv.write(0, data)
    slots[0].member.armed = True
    assert drv.read(0, drv.size) == data
    assert failed == [0] and slots[0] is None
    drv.write(100, b"x" * 5000)  # degraded write after the failure
    assert drv.read(100, 5000) == b"x" * 5000

    # the default policy re-raises the member's error
    slots2 = [Slot(FlakyMember(blank_file(tmp_path / f"e{i}", 4096 * 8)), 0) for i in range(n)]
    drv2 = make_driver(g, slots2)
    slots2[0].member.armed = True
    with pytest.raises(MemberIOError, match="injected"):
        drv2.read(0, drv2.size)


@pytest.mark.parametrize("level,layout,lost", [(5, 2, [0, 1]), (6, 2, [0, 1, 2]),
                                               (0, 0, [1]), (10, 258, [0, 1])])
def test_too_many_missing_raises_never_wrong_data(tmp_path: Path, level, layout, lost) -> None:
    n = 5 if level == 6 else 4
    g = Geometry(level, n, layout, 4096, 4096 * 8)
    slots: list[Slot | None] = [
        Slot(Member(blank_file(tmp_path / f"d{i}", 4096 * 8)), 0) for i in range(n)
    ]
    drv = make_driver(g, slots)
    drv.write(0, payload(3, drv.size))
    for role in lost:
        slots[role] = None
    with pytest.raises(MemberIOError):
        drv.read(0, drv.size)
    with pytest.raises(MemberIOError):
        drv.write(0, payload(4, drv.size))


def test_bad_requests_raise_one_line_errors(tmp_path: Path) -> None:
    g = Geometry(5, 3, 2, 4096, 4096 * 4)
    slots = [Slot(Member(blank_file(tmp_path / f"d{i}", 4096 * 4)), 0) for i in range(3)]
    drv = make_driver(g, slots)
    with pytest.raises(FuseraidError, match="outside"):
        drv.read(drv.size - 1, 2)
    with pytest.raises(FuseraidError, match="outside"):
        drv.scrub(0, drv.rows + 1)
    with pytest.raises(FuseraidError, match="slots"):
        make_driver(g, slots[:2])
    assert drv.lock_span(5000, 10) == (0, drv.row_bytes)
    assert drv.lock_span(drv.row_bytes - 1, 2) == (0, 2 * drv.row_bytes)


def _corrupt(slot: Slot, dev_off: int) -> None:
    """Flip one byte of a member's data area."""
    at = slot.data_offset + dev_off
    old = slot.member.pread(at, 1)
    slot.member.pwrite(at, bytes([old[0] ^ 0x5A]))


def _rig(tmp_path: Path, g: Geometry, stack: ExitStack) -> Rig:
    rig = Rig(g, tmp_path, [4096] * g.raid_disks, stack)
    data = payload(11, rig.driver.size)
    rig.driver.write(0, data)
    rig.model.write(0, data)
    return rig


def test_scrub_counts_md_units_and_repairs_parity(tmp_path: Path) -> None:
    chunk = 16384
    with ExitStack() as stack:
        rig = _rig(tmp_path, Geometry(6, 5, 2, chunk, chunk * 4), stack)
        drv, layout = rig.driver, make_layout(rig.g)
        rm0, rm1 = layout.row(0), layout.row(1)
        _corrupt(rig.slots[rm0.p_role], 4096 + 7)  # row 0, page 1 of P
        _corrupt(rig.slots[rm0.q_role], 4096 + 9)  # same page via Q: still one page
        _corrupt(rig.slots[rm1.q_role], chunk + 0)  # row 1, page 0 of Q
        _corrupt(rig.slots[rm1.data_roles[2]], chunk + 3 * 4096 + 1)  # row 1, page 3 data
        assert drv.scrub(0, drv.rows) == 3 * 8  # 8 sectors per mismatching 4 KiB page
        assert drv.scrub(1, 2) == 2 * 8
        assert drv.scrub(0, drv.rows, repair=True) == 3 * 8
        assert drv.scrub(0, drv.rows) == 0
        # repair trusts data (as md): row 0 is intact, row 1 keeps the flipped data byte
        assert drv.read(0, drv.row_bytes) == rig.model.read(0, drv.row_bytes)
        bad = drv.row_bytes + 2 * chunk + 3 * 4096 + 1
        assert drv.read(bad, 1) != rig.model.read(bad, 1)


@pytest.mark.parametrize("level,layout", [(5, 0), (4, 0), (6, 9)])
def test_resync_makes_parity_agree(tmp_path: Path, level: int, layout: int) -> None:
    n = 5
    with ExitStack() as stack:
        rig = _rig(tmp_path, Geometry(level, n, layout, 4096, 4096 * 6), stack)
        drv, layout_ = rig.driver, make_layout(rig.g)
        for r in range(drv.rows):
            _corrupt(rig.slots[layout_.row(r).p_role], r * 4096 + 100)
        assert drv.scrub(0, drv.rows) == 8 * drv.rows
        drv.resync(0, drv.rows)
        assert drv.scrub(0, drv.rows) == 0
        rig.check_all()


@pytest.mark.parametrize("level,layout", [(1, 0), (10, 258), (10, 513), (10, 0x10201)])
def test_mirror_scrub_counts_resync_blocks_and_repairs(tmp_path: Path, level, layout) -> None:
    chunk = 0 if level == 1 else 4096
    with ExitStack() as stack:
        rig = _rig(tmp_path, Geometry(level, 4, layout, chunk, 4096 * 48), stack)
        drv = rig.driver
        ext = make_layout(rig.g).map(70_000, 1)[0]
        role, dev = ext.copies[-1]  # a non-primary copy
        _corrupt(rig.slots[role], dev)
        assert drv.scrub(0, drv.rows) == 128  # one 64 KiB resync block
        assert drv.scrub(0, drv.rows, repair=True) == 128
        assert drv.scrub(0, drv.rows) == 0
        rig.check_all()
        _corrupt(rig.slots[role], dev)
        drv.resync(0, drv.rows)
        assert drv.scrub(0, drv.rows) == 0
        rig.check_all()


def test_degraded_parity_array_has_nothing_left_to_scrub(tmp_path: Path) -> None:
    with ExitStack() as stack:
        rig = _rig(tmp_path, Geometry(5, 3, 2, 4096, 4096 * 4), stack)
        rig.slots[1] = None
        with pytest.raises(FuseraidError, match="no redundancy"):
            rig.driver.scrub(0, rig.driver.rows)
        rig.check_all()
        with pytest.raises(FuseraidError, match="no member"):
            rig.driver.rebuild(1, 0, 1)
