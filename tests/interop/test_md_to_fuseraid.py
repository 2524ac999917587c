"""Linux md creates arrays (every level and layout, odd chunks, unequal raid0 members,
degraded arrays) and fills them with the fixtures' pattern; fuseraid must read each one
byte for byte. The md half also checks md's own view (pattern, mismatch_cnt 0), so a
harness fault is told apart from a fuseraid fault."""

from __future__ import annotations

import mdcases as mc
import pytest
from fuseraid_side import read_back
from pattern import sha256_of
from runners import MdBatches

PARAMS = [
    pytest.param(c, "smoke", id=f"smoke-{c.name}", marks=pytest.mark.interop_smoke)
    for c in mc.SMOKE
] + [pytest.param(c, "matrix", id=c.name, marks=pytest.mark.interop) for c in mc.MATRIX]


@pytest.fixture(scope="module")
def md_made(md_image, scratch):
    """Lazily booted batches; a deselected set never boots."""
    return {
        "smoke": MdBatches(md_image, mc.SMOKE, scratch / "md-smoke"),
        "matrix": MdBatches(md_image, mc.MATRIX, scratch / "md-matrix"),
    }


def _made(md_made, case: mc.Case, group: str):
    paths, rep, output = md_made[group].get(case)
    if rep.values.get("rc") != "0" or "sha256" not in rep.values:
        pytest.fail(f"md could not build {case.name} in the guest:\n{output[-3000:]}")
    return paths, rep


@pytest.mark.parametrize(("case", "group"), PARAMS)
def test_md_wrote_pattern(md_made, case: mc.Case, group: str) -> None:
    _, rep = _made(md_made, case, group)
    size = int(rep.values["size"])
    assert rep.values["sha256"] == sha256_of(mc.SEED, size)
    assert rep.detail_field("Raid Level") == f"raid{case.level}"
    assert rep.detail_field("Raid Devices") == str(case.disks)
    if mc.detail_layout(case) is not None:
        assert rep.detail_field("Layout") == mc.detail_layout(case)
    if "mismatch_cnt" in rep.values:
        assert rep.values["last_sync"] == "check"
        assert rep.values["mismatch_cnt"] == "0"


@pytest.mark.parametrize(("case", "group"), PARAMS)
def test_fuseraid_reads_md_array(md_made, case: mc.Case, group: str) -> None:
    paths, rep = _made(md_made, case, group)
    size, sha, bad = read_back(paths)
    assert size == int(rep.values["size"])
    assert sha == rep.values["sha256"]
    assert bad == []
