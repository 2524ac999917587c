"""Border: reads and writes split between the old and the new driver at the border, on
real member files, against the bytearray model; lock_span covers both geometries."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_migration_kit import KIB, make_array

from fuseraid.engine.levels import Slot, make_driver
from fuseraid.layout import Geometry
from fuseraid.member.device import Member
from fuseraid.migration.border import Border
from fuseraid.migration.plan import BACKWARD, FORWARD

OLD = Geometry(5, 4, 2, 16 * KIB, 256 * KIB)  # 768 KiB
NEW = Geometry(6, 5, 2, 8 * KIB, 256 * KIB)  # 768 KiB
# a forward reshape moves the data offset down, a backward one up (as md)
O_OLD, O_NEW = 256 * KIB, {FORWARD: 64 * KIB, BACKWARD: 512 * KIB}


def _setup(tmp: Path, border: int, direction: str):
    """Members holding content in the old layout on the old side and in the new layout
    on the new side of `border`; returns (Border, members, model)."""
    paths, _, content = make_array(tmp, OLD, member_bytes=768 * KIB, data_offset=O_OLD)
    members = [Member(p) for p in paths] + [None]
    extra = tmp / "x.img"
    with open(extra, "wb") as f:
        f.truncate(768 * KIB)
    members[-1] = Member(extra)
    old = make_driver(OLD, [Slot(m, O_OLD) for m in members[:4]])
    new = make_driver(NEW, [Slot(m, O_NEW[direction]) for m in members])
    lo, hi = (0, border) if direction == FORWARD else (border, len(content))
    if hi > lo:
        new.write(lo, content[lo:hi])  # the migrated part, as the migrator leaves it
    return Border(old, new, border, direction, len(content)), members, bytearray(content)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(border_units=st.integers(0, 4), direction=st.sampled_from([FORWARD, BACKWARD]),
       seed=st.integers(0, 1 << 30))
def test_border_reads_and_writes_match_model(
    tmp_path_factory, border_units: int, direction: str, seed: int
) -> None:
    unit = 192 * KIB  # lcm of both data stripes (48K, 24K) x 4: whole rows in both
    border = border_units * unit
    tmp = tmp_path_factory.mktemp("b")
    vol, members, model = _setup(tmp, border, direction)
    try:
        rng = random.Random(seed)
        assert vol.read(0, vol.size) == bytes(model)
        for _ in range(12):
            n = rng.randrange(1, 64 * KIB)
            off = rng.choice([rng.randrange(0, vol.size - n),
                              max(0, min(border - n // 2, vol.size - n))])  # straddling
            if rng.random() < 0.6:
                data = rng.randbytes(n)
                vol.write(off, data)
                model[off : off + n] = data
            s, e = vol.lock_span(off, n)
            assert s <= off and off + n <= e
            for drv in (vol.old, vol.new):
                ds, de = drv.lock_span(off, n)
                assert s <= ds and de <= e
            assert vol.read(off, n) == bytes(model[off : off + n])
        vol.flush()
        assert vol.read(0, vol.size) == bytes(model)
        # each side really lives in its own layout: the other driver disagrees there
        probe = border if direction == FORWARD else 0
        if probe < vol.size and vol.new_side(probe) is False:
            assert vol.old.read(probe, 4096) == bytes(model[probe : probe + 4096])
    finally:
        for m in members:
            m.close()


def test_pieces_split_exactly_at_the_border(tmp_path: Path) -> None:
    vol, members, _ = _setup(tmp_path, 192 * KIB, FORWARD)
    try:
        got = list(vol.pieces(100 * KIB, 200 * KIB))
        assert [(d is vol.new, o, n) for d, o, n in got] == [
            (True, 100 * KIB, 92 * KIB), (False, 192 * KIB, 108 * KIB)]
        vol.direction = BACKWARD
        got = list(vol.pieces(100 * KIB, 200 * KIB))
        assert [(d is vol.new, o, n) for d, o, n in got] == [
            (False, 100 * KIB, 92 * KIB), (True, 192 * KIB, 108 * KIB)]
    finally:
        for m in members:
            m.close()


def test_border_moving_during_a_read_keeps_its_split(tmp_path: Path) -> None:
    """The migrator moves the border while a read runs (a window under a shared lock).
    A read straddling the border must serve both pieces by the border it started with:
    bytes above it are still in the old layout (the migrator copies the next window
    from there), and the new layout there holds nothing yet. Judging the second piece
    by the moved border sent it to the new driver and returned stale bytes."""
    unit = 192 * KIB
    vol, members, model = _setup(tmp_path, unit, FORWARD)
    try:
        first = vol.new
        real_read = first.read

        def read_then_move(off: int, n: int) -> bytes:
            out = real_read(off, n)
            vol.border = 2 * unit  # as if the next window landed meanwhile
            return out

        first.read = read_then_move
        assert vol.read(0, 2 * unit) == bytes(model[: 2 * unit])
    finally:
        for m in members:
            m.close()


def test_read_now_serves_each_side_from_its_layout(tmp_path: Path) -> None:
    """Border.read_now (the engine's small-read fast path during a reshape) answers a read
    on one side of the border from that side's layout, and leaves a straddling read to
    the ordinary path."""
    for direction in (FORWARD, BACKWARD):
        border = 2 * 192 * KIB
        vol, members, model = _setup(tmp_path / direction, border, direction)
        try:
            served = {True: 0, False: 0}
            for off in range(0, vol.size, 4 * KIB):
                got = vol.read_now(off, 4 * KIB)
                if got is not None:
                    assert got == bytes(model[off : off + 4 * KIB]), (direction, off)
                    served[vol.new_side(off)] += 1
            assert served[True] > 0 and served[False] > 0  # both layouts answered
            assert vol.read_now(border - 2 * KIB, 4 * KIB) is None  # straddles
        finally:
            for m in members:
                m.close()
