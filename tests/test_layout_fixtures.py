"""Arrays real Linux md wrote, read through our layouts with plain file reads: the
content must be the fixtures' pattern byte for byte, and every P, Q and mirror copy
md wrote must be what our placement says it is."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from mdfixtures import fixture_names, load_meta
from pattern import secpat

from fuseraid.layout import Geometry, ParityLayout, make_layout

# mid-reshape arrays need two geometries at once; the migration layer reads those
PARKED = {n for n in fixture_names() if n.endswith("parked50")}
NAMES = [n for n in fixture_names() if n not in PARKED]


def gf_mul(a: int, b: int) -> int:
    """GF(2^8) product, poly 0x11d, the obvious shift-and-add way."""
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11D
        b >>= 1
    return r


@cache
def mul_table(c: int) -> np.ndarray:
    return np.array([gf_mul(c, x) for x in range(256)], dtype=np.uint8)


def gexp(e: int) -> int:
    v = 1
    for _ in range(e):
        v = gf_mul(v, 2)
    return v


def geometry_from_meta(meta: dict) -> Geometry:
    doff = meta["data_offset_sectors"] * 512
    mb = meta["member_bytes"]
    names = [m for m in meta["members"] if m != "missing"]
    sizes = [(mb[n] if isinstance(mb, dict) else mb) - doff for n in names]
    layout = meta["layout"]["number"] if meta["layout"] else 0
    member_sizes = None
    if meta["level"] == 0 and len(set(sizes)) > 1:
        member_sizes = tuple(sizes)
    return Geometry(
        level=meta["level"],
        raid_disks=meta["raid_devices"],
        layout=layout or 0,
        chunk=(meta["chunk_kib"] or 0) * 1024,
        dev_size=min(sizes),
        member_sizes=member_sizes,
    )


def load_members(meta: dict, paths: list[Path]) -> list[np.ndarray | None]:
    """Each role's data area (None for a missing role), read with plain file reads."""
    doff = meta["data_offset_sectors"] * 512
    by_name = {p.name: p for p in paths}
    out: list[np.ndarray | None] = []
    for name in meta["members"]:
        if name == "missing":
            out.append(None)
            continue
        with open(by_name[name], "rb") as f:
            f.seek(doff)
            out.append(np.frombuffer(f.read(), dtype=np.uint8))
    return out


def chunk_of(dev: np.ndarray, row: int, chunk: int) -> np.ndarray:
    return dev[row * chunk : (row + 1) * chunk]


def read_parity_array(lay: ParityLayout, devs: list[np.ndarray | None]) -> bytes:
    """Assemble the array row by row, rebuilding a missing data chunk from P."""
    c = lay.chunk
    parts = []
    for r in range(lay.rows_used):
        m = lay.row(r)
        for role in m.data_roles:
            if devs[role] is not None:
                parts.append(chunk_of(devs[role], r, c))
                continue
            acc = np.zeros(c, dtype=np.uint8)
            for other in (*m.data_roles, m.p_role):
                if other != role:
                    acc ^= chunk_of(devs[other], r, c)
            parts.append(acc)
    return b"".join(p.tobytes() for p in parts)


def check_parity_rows(
    lay: ParityLayout, devs: list[np.ndarray | None], rows: range | None = None
) -> int:
    """Compare every row's P and Q with XOR / GF sums of the expected data."""
    c = lay.chunk
    checked = 0
    for r in rows if rows is not None else range(lay.rows_used):
        m = lay.row(r)
        data = [
            np.frombuffer(secpat(1, c, lay.array_offset(r, k)), dtype=np.uint8)
            for k in range(len(m.data_roles))
        ]
        if devs[m.p_role] is not None:
            p = np.zeros(c, dtype=np.uint8)
            for d in data:
                p ^= d
            assert np.array_equal(p, chunk_of(devs[m.p_role], r, c)), f"P of row {r}"
            checked += 1
        if m.q_role is not None:
            assert len(set(m.q_slots)) == len(m.q_slots)
            assert all(0 <= s < m.q_width for s in m.q_slots)
            q = np.zeros(c, dtype=np.uint8)
            for slot, d in zip(m.q_slots, data, strict=True):
                q ^= mul_table(gexp(slot))[d]
            assert np.array_equal(q, chunk_of(devs[m.q_role], r, c)), f"Q of row {r}"
            checked += 1
    return checked


@pytest.mark.parametrize("name", NAMES)
def test_fixture_reads_byte_exact(name: str, md_fixture) -> None:
    meta, paths = md_fixture(name)
    geom = geometry_from_meta(meta)
    lay = make_layout(geom)
    assert lay.array_size == meta["array_bytes"]
    devs = load_members(meta, paths)
    if isinstance(lay, ParityLayout):
        image = read_parity_array(lay, devs)
        present = [devs[lay.row(r).p_role] is not None for r in range(lay.rows_used)]
        q_rows = lay.rows_used if geom.level == 6 else 0
        assert check_parity_rows(lay, devs) == sum(present) + q_rows
        if any(d is None for d in devs):  # degraded: the missing role held P in some rows only
            assert 0 < sum(present) < lay.rows_used
    else:
        pieces = []
        for e in lay.map(0, lay.array_size):
            copies = [devs[role][off : off + e.length] for role, off in e.copies]
            assert len(copies) == geom.copies
            for other in copies[1:]:
                assert np.array_equal(copies[0], other), f"copies differ at {e.array_offset}"
            pieces.append(copies[0].tobytes())
        image = b"".join(pieces)
    assert len(image) == meta["array_bytes"]
    assert hashlib.sha256(image).hexdigest() == meta["array_sha256"]
    # and the same bytes as the pattern, so a mismatch names the first bad offset
    want = secpat(1, len(image))
    if image != want:
        bad = next(i for i in range(len(image)) if image[i] != want[i])
        pytest.fail(f"first wrong byte at array offset {bad}")


def test_every_fixture_is_covered() -> None:
    # the list above is derived from the directory: make sure it is not empty
    assert len(NAMES) >= 25
    assert all(load_meta(n)["level"] in (0, 1, 4, 5, 6, 10) for n in NAMES)
