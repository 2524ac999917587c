"""fuseraid creates arrays and writes the pattern; Linux md assembles them: mdadm
--detail must show the geometry asked for and a clean state with no resync started,
the content must be the pattern, and md's check scrub must find no mismatch. Degraded
cases hand md all but the missing roles, so md reads fuseraid's parity/mirrors."""

from __future__ import annotations

import mdcases as mc
import pytest
from pattern import sha256_of
from runners import FuseraidBatches

PARAMS = [
    pytest.param(c, "smoke", id=f"smoke-{c.name}", marks=pytest.mark.interop_smoke)
    for c in mc.SMOKE
] + [pytest.param(c, "matrix", id=c.name, marks=pytest.mark.interop) for c in mc.MATRIX]


@pytest.fixture(scope="module")
def fr_made(md_image, scratch):
    return {
        "smoke": FuseraidBatches(md_image, mc.SMOKE, scratch / "fr-smoke"),
        "matrix": FuseraidBatches(md_image, mc.MATRIX, scratch / "fr-matrix"),
    }


@pytest.mark.parametrize(("case", "group"), PARAMS)
def test_md_assembles_fuseraid_array(fr_made, case: mc.Case, group: str) -> None:
    size, err, rep, output = fr_made[group].get(case)
    assert size is not None, f"fuseraid could not create {case.name}: {err}"
    assert rep.values.get("rc") == "0", f"md could not assemble {case.name}:\n{output[-3000:]}"
    # geometry as asked
    assert rep.detail_field("Raid Level") == f"raid{case.level}"
    assert rep.detail_field("Raid Devices") == str(case.disks)
    assert rep.detail_field("Active Devices") == str(len(case.present_roles))
    if case.level not in (1,) and case.chunk_kib is not None:
        assert rep.detail_field("Chunk Size") == f"{case.chunk_kib}K"
    if mc.detail_layout(case) is not None:
        assert rep.detail_field("Layout") == mc.detail_layout(case)
    # fuseraid closed it clean: md starts no resync and shows it clean
    assert rep.values["state_before"] == "clean"
    assert rep.values["sync_before"] in ("idle", "none")
    state = rep.detail_field("State") or ""
    assert state.split(",")[0].strip() == "clean"
    # same size, same bytes, consistent redundancy
    assert int(rep.values["size"]) == size
    assert rep.values["sha256"] == sha256_of(mc.SEED, size)
    if "mismatch_cnt" in rep.values:
        assert rep.values["last_sync"] == "check"
        assert rep.values["mismatch_cnt"] == "0"
