"""The fast layouts against the slow per-sector transliteration of md
(tests/layout_reference.py), for random geometries of every level and layout."""

from __future__ import annotations

import layout_reference as ref
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fuseraid.errors import GeometryError
from fuseraid.layout import Geometry, ParityLayout, Raid10Layout, make_layout
from fuseraid.layout.geometry import RAID6_LAYOUTS

SETTINGS = settings(max_examples=150, deadline=None)


def _dev_size(draw, chunk: int, max_chunks: int = 24) -> int:
    # whole chunks plus a ragged tail md must round away
    return chunk * draw(st.integers(1, max_chunks)) + 512 * draw(st.integers(0, chunk // 512 - 1))


@st.composite
def geometries(draw, levels=(0, 1, 4, 5, 6, 10), max_chunks: int = 24) -> Geometry:
    level = draw(st.sampled_from(levels))
    chunk = 0 if level == 1 else 1 << draw(st.integers(12, 20))
    if level == 1:
        return Geometry(1, draw(st.integers(1, 16)), 0, 0, 512 * draw(st.integers(1, 1 << 14)))
    if level == 0:
        rd = draw(st.integers(1, 16))
        sizes = tuple(_dev_size(draw, chunk, max_chunks) for _ in range(rd))
        if draw(st.booleans()):
            sizes = (sizes[0],) * rd
        rounded = [s // chunk for s in sizes]
        multi = sum(s > min(rounded) for s in rounded) > 1
        layout = draw(st.sampled_from((1, 2) if multi else (0, 1, 2)))
        return Geometry(0, rd, layout, chunk, min(sizes), sizes if len(set(sizes)) > 1 else None)
    if level == 4:
        return Geometry(4, draw(st.integers(2, 16)), draw(st.sampled_from((0, 5))), chunk,
                        _dev_size(draw, chunk, max_chunks))
    if level == 5:
        return Geometry(5, draw(st.integers(2, 16)), draw(st.integers(0, 5)), chunk,
                        _dev_size(draw, chunk, max_chunks))
    if level == 6:
        return Geometry(6, draw(st.integers(4, 16)), draw(st.sampled_from(sorted(RAID6_LAYOUTS))),
                        chunk, _dev_size(draw, chunk, max_chunks))
    rd = draw(st.integers(2, 16))
    near, far = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    layout = near | far << 8 | draw(st.booleans()) << 16 | draw(st.integers(0, 2)) << 17
    try:
        return Geometry(10, rd, layout, chunk, _dev_size(draw, chunk, max_chunks))
    except GeometryError:
        assume(False)
        raise


def ref_array_size(g: Geometry) -> int:
    cs = g.chunk // 512
    if g.level == 0:
        sizes = [s // 512 for s in (g.member_sizes or (g.dev_size,) * g.raid_disks)]
        return ref.raid0_zones(sizes, cs)[-1][0] * 512
    if g.level == 1:
        return g.dev_size
    if g.level == 10:
        return ref.raid10_geo(g.layout, g.raid_disks, cs, g.dev_size // 512)["array_sectors"] * 512
    sectors = g.dev_size // 512 // cs * cs  # raid5_size rounds to the chunk
    return sectors * (g.raid_disks - (2 if g.level == 6 else 1)) * 512


def ref_copies(g: Geometry, b: int) -> list[tuple[int, int]]:
    """Every (role, member byte) holding array byte b, per md's per-sector code."""
    sector, intra = divmod(b, 512)
    cs = g.chunk // 512
    if g.level == 1:
        return [(r, b) for r in range(g.raid_disks)]
    if g.level == 0:
        sizes = [s // 512 for s in (g.member_sizes or (g.dev_size,) * g.raid_disks)]
        disk, dev = ref.raid0_map_sector(sizes, cs, g.layout, sector)
        return [(disk, dev * 512 + intra)]
    if g.level == 10:
        geo = ref.raid10_geo(g.layout, g.raid_disks, cs, g.dev_size // 512)
        return [(d, s * 512 + intra) for d, s in ref.raid10_find_phys(geo, sector)]
    dd, new_sector, _, _, _ = ref.raid5_compute_sector(g.level, g.layout, g.raid_disks, cs, sector)
    return [(dd, new_sector * 512 + intra)]


@st.composite
def geometry_and_range(draw, **kw) -> tuple[Geometry, int, int]:
    g = draw(geometries(**kw))
    size = g.array_size
    off = draw(st.integers(0, size - 1))
    span = max(g.chunk, 4096) * 3
    length = draw(st.integers(1, min(span, size - off)))
    return g, off, length


@SETTINGS
@given(geometries())
def test_array_size_matches_md(g: Geometry) -> None:
    assert g.array_size == ref_array_size(g)
    assert make_layout(g).array_size == g.array_size


@SETTINGS
@given(geometry_and_range(), st.data())
def test_map_matches_reference(case, data) -> None:
    g, off, length = case
    lay = make_layout(g)
    extents = lay.map(off, length)
    pos = off
    for e in extents:
        assert e.array_offset == pos and e.length > 0
        pos += e.length
        probes = {0, e.length - 1, data.draw(st.integers(0, e.length - 1))}
        for d in probes:
            got = [(role, dev + d) for role, dev in e.copies]
            assert got == ref_copies(g, e.array_offset + d)
            for role, dev in got:
                assert lay.locate(role, dev) == e.array_offset + d
    assert pos == off + length


@SETTINGS
@given(geometries(levels=(4, 5, 6)), st.data())
def test_parity_rows_match_reference(g: Geometry, data) -> None:
    lay = make_layout(g)
    assert isinstance(lay, ParityLayout)
    r = data.draw(st.integers(0, 4 * g.raid_disks))
    m = lay.row(r)
    cs = g.chunk // 512
    roles = [*m.data_roles, m.p_role] + ([m.q_role] if m.q_role is not None else [])
    assert sorted(roles) == list(range(g.raid_disks))  # each role once: P never holds data
    for k, role in enumerate(m.data_roles):
        sector = lay.array_offset(r, k) // 512
        dd, new_sector, pd, qd, ddf = ref.raid5_compute_sector(
            g.level, g.layout, g.raid_disks, cs, sector)
        assert (dd, pd, new_sector) == (role, m.p_role, r * cs)
        assert lay.address(lay.array_offset(r, k, 5)) == (r, k, 5)
        if g.level == 6:
            assert qd == m.q_role
            slots, width = ref.raid6_syndrome_slots(g.raid_disks, pd, qd, ddf)
            assert m.q_slots[k] == slots[dd] and m.q_width == width
        else:
            assert m.q_role is None and m.q_slots == () and m.q_width == 0
    if r < lay.rows_used:
        assert lay.block_at(m.p_role, r * g.chunk).kind == "p"
        if m.q_role is not None:
            assert lay.block_at(m.q_role, r * g.chunk + 7).kind == "q"
            assert lay.locate(m.q_role, r * g.chunk) is None


@settings(max_examples=60, deadline=None)
@given(geometries(levels=(0, 10), max_chunks=6))
def test_every_copy_has_its_own_place(g: Geometry) -> None:
    """Whole-array enumeration on small geometries: copies never collide, stay inside
    the used area, and the reverse map finds exactly them."""
    lay = make_layout(g)
    c = g.chunk
    seen: dict[tuple[int, int], int] = {}
    sizes = g.role_sizes() if g.level == 0 else (g.dev_used,) * g.raid_disks
    for e in lay.map(0, lay.array_size):
        assert len(e.copies) == g.copies
        assert len({role for role, _ in e.copies}) == len(e.copies)  # copies on distinct roles
        for a in range(e.array_offset, e.array_offset + e.length, c):
            for role, dev in e.copies:
                place = (role, dev + a - e.array_offset)
                assert place not in seen, f"{place} holds {seen[place]} and {a}"
                assert place[1] + c <= sizes[role]
                seen[place] = a
    assert len(seen) * c == lay.array_size * g.copies
    for role in range(g.raid_disks):
        for dev in range(0, sizes[role], c):
            assert lay.locate(role, dev + 1) == (
                seen[(role, dev)] + 1 if (role, dev) in seen else None)


@settings(max_examples=60, deadline=None)
@given(geometries(levels=(10,)), st.data())
def test_raid10_reverse_matches_find_virt(g: Geometry, data) -> None:
    lay = make_layout(g)
    assert isinstance(lay, Raid10Layout)
    geo = ref.raid10_geo(g.layout, g.raid_disks, g.chunk // 512, g.dev_size // 512)
    a = data.draw(st.integers(0, lay.array_size - 1))
    for role, dev in lay.map(a, 1)[0].copies:
        assert ref.raid10_find_virt(geo, dev // 512, role) * 512 + dev % 512 == a


@SETTINGS
@given(geometry_and_range())
def test_stripe_span_covers_whole_stripes(case) -> None:
    g, off, length = case
    lay = make_layout(g)
    start, end = lay.stripe_span(off, length)
    assert start <= off and off + length <= end <= lay.array_size
    assert start % lay.stripe_size == 0
    assert end == lay.array_size or end % lay.stripe_size == 0
    if isinstance(lay, ParityLayout):
        assert lay.stripe_size == g.data_disks * g.chunk
