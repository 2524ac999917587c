"""Linux md (under qemu, tests/interop/mdvm.py) on raid10 far arrays fuseraid reshaped,
which md itself refuses to reshape: a near-only pass from raid5 to f2 finished with
"resync needed" (md resyncs it at assembly, as a fresh raid10), the same after our own
array's resync (md's check then vouches for our far copies), a pass with both copies
(room to move the data offset), and an array converted from f2. Each assembles as a plain
md array with the model's sha256 and mismatch_cnt 0 after md's check."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from test_migration_kit import KIB, MIB, make_array, settle_resync, superblocks

from fuseraid.layout import Geometry, encode_raid10
from fuseraid.member.device import Member
from fuseraid.migration.migrator import begin_reshape, run_offline
from fuseraid.migration.plan import Request
from fuseraid.migration.resume import open_members

sys.path.insert(0, str(Path(__file__).parent / "interop"))
import mdcases as mc  # noqa: E402
import mdvm  # noqa: E402

pytestmark = pytest.mark.interop

F2 = encode_raid10(1, 2)
C = 64 * KIB
TO_F2 = Request(level=10, raid_disks=4, layout=F2, chunk=C)
TIGHT = MIB + 2 * MIB + 256 * KIB  # too little room after the data: a near-only pass

# name: (old, request, member bytes, extra members, exposed, our resync first,
#        near-only expected, layout md reports)
CASES = {
    "r5-to-f2-md-resyncs": (Geometry(5, 4, 2, C, 2 * MIB), TO_F2, TIGHT, 0, 4 * MIB, False,
                            True, "far=2"),
    "r5-to-f2-our-resync": (Geometry(5, 4, 2, C, 2 * MIB), TO_F2, TIGHT, 0, 4 * MIB, True,
                            True, "far=2"),
    "r5-3-to-f2-both-copies": (Geometry(5, 3, 2, C, 2 * MIB), TO_F2, 5 * MIB, 1,
                               None, False, False, "far=2"),
    "f2-to-r5": (Geometry(10, 4, F2, C, 2 * MIB), Request(level=5, raid_disks=4, chunk=C),
                 4 * MIB, 0, None, False, False, "left-symmetric"),
    "f2-to-r6": (Geometry(10, 4, F2, C, 2 * MIB), Request(level=6, raid_disks=5, chunk=C),
                 4 * MIB, 1, None, False, False, "left-symmetric"),
}


def _build(tmp: Path, name: str) -> tuple[list[Path], bytes, bool]:
    """The finished members, the model, and whether they say "resync needed"."""
    old, req, member, extra, exposed, ours, near_only, _ = CASES[name]
    paths, extras, content = make_array(tmp / name, old, member_bytes=member,
                                        data_offset=1 * MIB, extra=extra)
    with open_members(paths) as ms:
        added = [(str(p), Member(p)) for p in extras]
        try:
            plan, r = begin_reshape(ms.sbset, ms.by_role, req, add=added, exposed=exposed,
                                    max_window=256 * KIB)
            assert r is not None and plan.near_only == near_only
            run_offline(r)
            size = plan.new.array_size
        finally:
            for _, m in added:
                m.close()
    members = paths + extras
    if ours:
        assert settle_resync(members)
    dirty = not all(sb.is_clean for sb in superblocks(members))
    assert dirty == (near_only and not ours)
    keep = min(len(content), exposed or len(content))
    return members, (content[:keep] + bytes(size))[:size], dirty


@pytest.fixture(scope="module")
def md_results(tmp_path_factory) -> dict[str, tuple[mc.Report, bytes, bool]]:
    if mdvm.qemu_binary() is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    image = mdvm.load_image()
    if image is None:
        pytest.skip("the md guest image is not built (scripts/interop-setup.sh)")
    tmp = tmp_path_factory.mktemp("reshape-far-interop")
    disks: list[Path] = []
    per_case = []
    built = {}
    for i, name in enumerate(CASES):
        members, model, dirty = _build(tmp, name)
        built[name] = (model, dirty)
        first = len(disks)
        disks += members
        devs = " ".join(f"/dev/vd{chr(ord('a') + k)}" for k in range(first, len(disks)))
        per_case.append((name, [
            f"mdadm --assemble /dev/md{i} --run {devs}",
            f'echo "@@CASE {name} first_action=$(cat /sys/block/md{i}/md/sync_action)"',
            f"md_idle md{i}",
            f"md_report {name} md{i} check",
        ]))
    res = mdvm.run_md_job(disks, mc.job(per_case), image=image, timeout=1800)
    reports = mc.parse_reports(res.output)
    return {n: (reports.get(n, mc.Report()), *built[n]) for n in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_md_assembles_fuseraid_far_reshape(md_results, name: str) -> None:
    rep, model, dirty = md_results[name]
    assert rep.values.get("rc") == "0", rep
    assert CASES[name][-1] in (rep.detail_field("Layout") or ""), rep.detail
    if dirty:  # "resync needed" on the members: md makes the far copies at once
        assert rep.values["first_action"] == "resync", rep.values
    assert int(rep.values["size"]) == len(model)
    assert rep.values["sha256"] == hashlib.sha256(model).hexdigest()
    assert rep.values["last_sync"] == "check"
    assert rep.values["mismatch_cnt"] == "0"
