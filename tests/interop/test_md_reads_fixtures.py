"""Linux md in the guest assembles the checked-in fixtures (which it wrote): same size,
content and mismatch count as their meta.json says. This pins the harness to the
fixtures (same kernel and mdadm as made them) and exercises mdadm's reshape
continuation without systemd: the two parked reshapes must resume and finish."""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import mdcases as mc
import mdvm
import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NAMES = sorted(p.parent.name for p in FIXTURES.glob("*/meta.json"))

WAIT_RESHAPE = r"""
md_reshaped() {  # a resumed reshape runs in mdadm's background continuation: wait for it
    n=0
    while [ "$(cat /sys/block/$1/md/reshape_position)" != none ]; do
        n=$((n+1)); [ $n -lt 6000 ] || { echo "reshape of $1 did not finish"; return 1; }
        sleep 0.1
    done
    md_idle $1
}
"""


def _case(name: str, meta: dict) -> mc.Case:
    missing = tuple(r for r, m in enumerate(meta["members"]) if m == "missing")
    return mc.Case(name, meta["level"], meta["raid_devices"], None, meta["chunk_kib"],
                   missing=missing)


def _unpack(name: str, dest: Path) -> list[Path]:
    """The fixture's member images (present roles, role order) decompressed into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for xz in sorted((FIXTURES / name).glob("d*.img.xz")):
        out.append(dest / xz.name[:-3])
        with lzma.open(xz) as src, open(out[-1], "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return out


def _body(name: str, meta: dict, md: str, devs: list[str]) -> list[str]:
    check = "check" if meta["mismatch_cnt"] is not None or "resume" in meta else "nocheck"
    return [
        f"mdadm --assemble /dev/{md} --run {' '.join(devs)}",
        f"md_reshaped {md}" if "reshape" in meta else f"md_idle {md}",
        f"md_report {name} {md} {check}",
    ]


@pytest.fixture(scope="module")
def md_on_fixtures(md_image: mdvm.Image, scratch: Path) -> dict[str, mc.Report]:
    metas = {n: json.loads((FIXTURES / n / "meta.json").read_text()) for n in NAMES}
    members = {n: _unpack(n, scratch / "fixtures" / n) for n in NAMES}
    # one boot per group of fixtures that fits the disk limit
    groups = mc.batches([_case(n, metas[n]) for n in NAMES])
    out: dict[str, mc.Report] = {}
    for group in groups:
        disks: list[Path] = []
        per_case = []
        for i, case in enumerate(group):
            first = len(disks)
            disks += members[case.name]
            devs = [f"/dev/vd{chr(ord('a') + k)}" for k in range(first, len(disks))]
            per_case.append((case.name, _body(case.name, metas[case.name], f"md{i}", devs)))
        res = mdvm.run_md_job(disks, mc.job(per_case, extra_lib=WAIT_RESHAPE),
                              image=md_image, timeout=1800)
        out.update(mc.parse_reports(res.output))
    return out


@pytest.mark.interop
@pytest.mark.parametrize("name", NAMES)
def test_md_reads_fixture(md_on_fixtures: dict[str, mc.Report], name: str) -> None:
    meta = json.loads((FIXTURES / name / "meta.json").read_text())
    rep = md_on_fixtures.get(name, mc.Report())
    assert rep.values.get("rc") == "0", rep
    if "resume" in meta:  # md finished the parked reshape
        expect = meta["resume"]
        assert int(rep.values["size"]) == expect["array_bytes_after"]
        assert rep.values["sha256"] == expect["array_sha256_after"]
        assert rep.values["last_sync"] == "check"
        assert rep.values["mismatch_cnt"] == str(expect["mismatch_cnt_after"])
        return
    assert int(rep.values["size"]) == meta["array_bytes"]
    assert rep.values["sha256"] == meta["array_sha256"]
    if meta["mismatch_cnt"] is not None:
        assert rep.values["last_sync"] == "check"
        assert rep.values["mismatch_cnt"] == str(meta["mismatch_cnt"])
