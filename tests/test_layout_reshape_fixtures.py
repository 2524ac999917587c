"""The two reshapes md stopped half way: below the reshape position the array is in
the new geometry at the new data offset, above it in the old geometry at the old
offset. Reading each part through the matching layout gives the pattern, and the
reshaped rows carry the P (and Q) of the new geometry."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from mdfixtures import fixture_names
from test_layout_fixtures import check_parity_rows

from fuseraid.layout import Geometry, ParityLayout, layout_number, make_layout

PARKED = [n for n in fixture_names() if n.endswith("parked50")]


def member_areas(meta: dict, paths, offset_sectors: int) -> list[np.ndarray]:
    by_name = {p.name: p for p in paths}
    out = []
    for name in meta["members"]:
        with open(by_name[name], "rb") as f:
            f.seek(offset_sectors * 512)
            out.append(np.frombuffer(f.read(), dtype=np.uint8))
    return out


@pytest.mark.parametrize("name", PARKED)
def test_half_reshaped_array_reads_byte_exact(name: str, md_fixture) -> None:
    meta, paths = md_fixture(name)
    rs = meta["reshape"]
    chunk = rs["to"]["chunk_kib"] * 1024
    dev_size = rs["component_sectors"] * 512
    cur = rs.get("current")
    if cur:  # raid5 -> raid6 runs as raid6 left-symmetric-6 first
        old = Geometry(cur["level"], cur["raid_devices"], meta["layout"]["number"], chunk, dev_size)
    else:
        f = rs["from"]
        old = Geometry(f["level"], f["raid_devices"], layout_number(f["level"], f["layout"]),
                       chunk, dev_size)
    t = rs["to"]
    new = Geometry(t["level"], t["raid_devices"], layout_number(t["level"], t["layout"]),
                   chunk, dev_size)
    old_lay, new_lay = make_layout(old), make_layout(new)
    assert isinstance(new_lay, ParityLayout)
    old_devs = member_areas(meta, paths, rs["data_offset_sectors"])
    new_devs = member_areas(meta, paths, rs["new_offset_sectors"])
    border = rs["reshape_position_array_sectors"] * 512
    size = meta["array_bytes"]
    assert old_lay.array_size == size and border % new_lay.stripe_size == 0

    pieces = []
    parts = ((new_lay, new_devs, 0, border), (old_lay, old_devs, border, size))
    for lay, devs, start, end in parts:
        for e in lay.map(start, end - start):
            role, off = e.copies[0]
            pieces.append(devs[role][off : off + e.length].tobytes())
    assert hashlib.sha256(b"".join(pieces)).hexdigest() == meta["array_sha256"]

    done_rows = rs["progress_per_device_sectors"] * 512 // chunk
    assert done_rows == border // new_lay.stripe_size
    checked = check_parity_rows(new_lay, new_devs, range(done_rows))
    assert checked == done_rows * (2 if new.level == 6 else 1)
