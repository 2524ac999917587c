"""Linux md (under qemu, tests/interop/mdvm.py) on arrays fuseraid reshaped: a finished
reshape assembles as a plain md array with the model's content and mismatch_cnt 0, and a
reshape fuseraid left half done (forward or backward, moved data offset) is resumed and
finished by md itself with the same content."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from test_migration_kit import KIB, MIB, make_array

from fuseraid.layout import Geometry
from fuseraid.member.device import Member
from fuseraid.migration.migrator import begin_reshape, run_offline
from fuseraid.migration.plan import Request
from fuseraid.migration.resume import open_members

sys.path.insert(0, str(Path(__file__).parent / "interop"))
import mdcases as mc  # noqa: E402
import mdvm  # noqa: E402

pytestmark = pytest.mark.interop

WAIT_RESHAPE = r"""
md_reshaped() {  # wait until md has finished a resumed reshape, then any resync
    n=0
    while [ "$(cat /sys/block/$1/md/reshape_position)" != none ]; do
        n=$((n+1)); [ $n -lt 6000 ] || { echo "reshape of $1 did not finish"; return 1; }
        sleep 0.1
    done
    md_idle $1
}
"""

# name: (old geometry, request, windows to copy before stopping (None: to the end),
#        extra members, exposed size)
CASES = {
    "grow-done": (Geometry(5, 3, 2, 64 * KIB, 2 * MIB), Request(raid_disks=4), None, 1, None),
    "r5-to-r6-done": (Geometry(5, 4, 2, 64 * KIB, 2 * MIB),
                      Request(level=6, layout=9, raid_disks=5), None, 1, None),
    "chunk-done": (Geometry(6, 4, 2, 64 * KIB, 2 * MIB), Request(chunk=128 * KIB), None, 0,
                   None),
    "grow-half": (Geometry(5, 3, 2, 64 * KIB, 2 * MIB), Request(raid_disks=4), 3, 1, None),
    "layout-half": (Geometry(5, 4, 2, 64 * KIB, 2 * MIB), Request(layout=0), 2, 0, None),
    "shrink-half": (Geometry(5, 4, 2, 64 * KIB, 2 * MIB), Request(raid_disks=3), 2, 0,
                    4 * MIB),
}


def _build(tmp: Path, name: str) -> tuple[list[Path], bytes]:
    old, req, windows, extra, exposed = CASES[name]
    paths, extras, content = make_array(tmp / name, old, member_bytes=4 * MIB,
                                        data_offset=1 * MIB, extra=extra)
    with open_members(paths) as ms:
        added = [(str(p), Member(p)) for p in extras]
        try:
            _, r = begin_reshape(ms.sbset, ms.by_role, req, add=added, exposed=exposed,
                                 max_window=256 * KIB)
            assert r is not None
            if windows is None:
                run_offline(r)
                size = r.plan.new.array_size
            else:
                for _ in range(windows):
                    r.copy_window(*r.next_window())
                size = r.plan.new.array_size
        finally:
            for _, m in added:
                m.close()
    keep = min(len(content), exposed or len(content))
    model = content[:keep] + bytes(max(0, size - keep))
    members = paths + extras
    if name.startswith("shrink"):
        members = paths  # the dropped role stays a member until md finishes
    return members, model[:size]


@pytest.fixture(scope="module")
def md_results(tmp_path_factory) -> dict[str, tuple[mc.Report, bytes]]:
    if mdvm.qemu_binary() is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    image = mdvm.load_image()
    if image is None:
        pytest.skip("the md guest image is not built (scripts/interop-setup.sh)")
    tmp = tmp_path_factory.mktemp("reshape-interop")
    disks: list[Path] = []
    per_case = []
    models = {}
    for i, name in enumerate(CASES):
        members, model = _build(tmp, name)
        models[name] = model
        first = len(disks)
        disks += members
        devs = " ".join(f"/dev/vd{chr(ord('a') + k)}" for k in range(first, len(disks)))
        per_case.append((name, [f"mdadm --assemble /dev/md{i} --run {devs}",
                                f"md_reshaped md{i}", f"md_report {name} md{i} check"]))
    res = mdvm.run_md_job(disks, mc.job(per_case, extra_lib=WAIT_RESHAPE), image=image,
                          timeout=1800)
    reports = mc.parse_reports(res.output)
    return {n: (reports.get(n, mc.Report()), models[n]) for n in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_md_assembles_and_finishes_fuseraid_reshape(md_results, name: str) -> None:
    rep, model = md_results[name]
    assert rep.values.get("rc") == "0", rep
    assert int(rep.values["size"]) == len(model)
    assert rep.values["sha256"] == hashlib.sha256(model).hexdigest()
    assert rep.values["mismatch_cnt"] == "0"
