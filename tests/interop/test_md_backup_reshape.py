"""An in-place md reshape that Linux md and mdadm 4.2 left half done *with a backup file*
(raid5 chunk 64K -> 128K, no data offset change): fuseraid replays mdadm's backup
(fuseraid/migration/mdbackup.py), resumes and finishes the reshape, and Linux md then
assembles the result (geometry, SHA-256, check -> mismatch_cnt 0).

md reshapes past the end of mdadm's backup (mdadm 4.2 leaves sync_max at "max" for
native metadata), so the crash state it leaves is not fully recoverable: fuseraid must
then give exactly what mdadm's own Grow_restart + --grow --continue gives on the same
members. With md's overrun written back in the old layout (the state md would have left
had it stopped at the end of its backup), the result must be the pattern.

smoke: the checked-in capture (tests/fixtures/md-backup-reshape), one md boot.
interop: a fresh capture in the guest, then mdadm's own restart and md on fuseraid's
results in a second boot."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import mdcases as mc
import mdvm
import pytest
from pattern import secpat, sha256_of
from runners import write_payload

from fuseraid.engine.levels import Slot, make_driver
from fuseraid.migration import checkpoint
from fuseraid.migration.mdbackup import read_md_backup, restore_md_backup
from fuseraid.migration.migrator import run_offline
from fuseraid.migration.resume import open_members, resume_reshape

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_mdbackup import META, unpack_capture  # noqa: E402

S = 512
MIB = 1 << 20
ARRAY = 9 * MIB

# mdadm 4.2 asks for "systemctl restart mdadm-grow-continue@mdN" (the harness's stand-in
# only handles "start"): this one handles both, and passes the backup file explicitly
SYSTEMCTL = r"""cat > /bin/systemctl <<'@@SC'
#!/bin/sh
echo "systemctl $*" >> /run/systemctl.log
case "$1 $2" in
"start mdadm-grow-continue@"*|"restart mdadm-grow-continue@"*)
    dev=${2#mdadm-grow-continue@}; dev=${dev%.service}
    bk=$(readlink /run/mdadm/backup_file-$dev 2>/dev/null || echo /tmp/$dev.backup)
    mdadm --grow --continue "/dev/$dev" --backup-file=$bk \
        > /run/grow-continue-$dev.log 2>&1 < /dev/null &
    exit 0 ;;
esac
exit 0
@@SC
chmod 755 /bin/systemctl
"""

# disks: vda payload (pattern), vdb..vde members, vdf raw disk receiving the backup file
CAPTURE_JOB = SYSTEMCTL + r"""
M="/dev/vdb /dev/vdc /dev/vdd /dev/vde"
mdadm --create /dev/md0 --run --quiet --level=5 --raid-devices=4 --metadata=1.2 \
    --name=bk --homehost=interop --bitmap=none --chunk=64 --layout=left-symmetric $M
md_idle md0
sz=$(blockdev --getsize64 /dev/md0)
dd if=/dev/vda of=/dev/md0 bs=65536 count=$((sz / 65536)) 2>/dev/null
blockdev --flushbufs /dev/md0; sync
echo "@@CASE capture sha_before=$(sha256sum /dev/md0 | cut -d' ' -f1)"
echo 20 > /sys/block/md0/md/sync_speed_min
echo 50 > /sys/block/md0/md/sync_speed_max
# mdadm raises sync_speed_min while it backs up: keep the reshape slow enough to catch
( while [ -e /sys/block/md0/md/sync_speed_min ]; do
      echo 20 > /sys/block/md0/md/sync_speed_min 2>/dev/null; sleep 0.02; done ) &
keep=$!
mdadm --grow /dev/md0 --chunk=128 --backup-file=/tmp/md0.backup
n=0
while :; do
    sc=$(cat /sys/block/md0/md/sync_completed); d=${sc%% /*}; t=${sc##*/ }
    case "$d" in none|'') ;; *) [ $((d * 2)) -ge $t ] && break ;; esac
    # up to ~10 min of polls: at 50 KB/s under TCG half takes minutes on a loaded host
    n=$((n + 1)); [ $n -lt 6000 ] || { echo "reshape did not reach half"; exit 1; }
    sleep 0.1
done
# the crash: md stops where it is, the monitor dies
echo frozen > /sys/block/md0/md/sync_action
for p in $(pidof mdadm); do kill -9 $p; done
kill $keep || true
echo "@@CASE capture sync_max=$(cat /sys/block/md0/md/sync_max)"
echo "@@CASE capture backup_bytes=$(wc -c < /tmp/md0.backup)"
dd if=/tmp/md0.backup of=/dev/vdf bs=4096 conv=fsync 2>/dev/null
mdadm --stop /dev/md0
mdadm --examine $M | sed 's/^/@@EXAMINE capture /'
"""

WAIT = r"""
md_reshaped() {
    n=0
    while [ "$(cat /sys/block/$1/md/reshape_position)" != none ]; do
        n=$((n+1)); [ $n -lt 6000 ] || { echo "reshape of $1 did not finish"; return 1; }
        sleep 0.1
    done
    md_idle $1
}
"""


def rewind_overrun(paths: list[Path], start: int) -> int:
    """Write the rows md reshaped beyond `start` (the end of its backup) back in the old
    geometry; returns where md's in-place progress ended. Knows the content (pattern)."""
    unit = 3 * 128 * 1024  # a whole row of both geometries (3 data disks)
    with open_members(paths) as ms:
        old, new = checkpoint.geometries(ms.sb)
        off = ms.sb.data_offset_bytes
        odrv = make_driver(old, [Slot(m, off) for m in ms.by_role])
        ndrv = make_driver(new, [Slot(m, off) for m in ms.by_role])
        end = start
        while end < ARRAY:
            want = secpat(1, unit, end)
            if ndrv.read(end, unit) != want or odrv.read(end, unit) == want:
                break
            end += unit
        if end > start:
            odrv.write(start, secpat(1, end - start, start))
            odrv.flush()
    return end


def fuseraid_finish(paths: list[Path], backup: Path, fr_backup: Path) -> str:
    """Replay md's backup, resume and finish; the SHA-256 of the finished array."""
    with open_members(paths) as ms:
        restore_md_backup(backup, ms.sbset, ms.by_role)
        r = resume_reshape(ms.sbset, ms.by_role, backup_file=fr_backup)
        try:
            run_offline(r)
        finally:
            if r.backup is not None:
                r.backup.close()
    with open_members(paths, readonly=True) as ms:
        assert not ms.sb.reshape_active
        g = checkpoint.geometry_of(ms.sb)
        drv = make_driver(g, [Slot(m, ms.sb.data_offset_bytes) for m in ms.by_role])
        return hashlib.sha256(drv.read(0, g.array_size)).hexdigest()


def _copy(paths: list[Path], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        shutil.copyfile(p, dest / p.name)
        out.append(dest / p.name)
    return out


def _assemble_lines(name: str, md: str, devs: list[str]) -> list[str]:
    return [f"mdadm --assemble /dev/{md} --run {' '.join(devs)}",
            f"md_report {name} {md} check"]


def _devs(first: int, n: int) -> list[str]:
    return [f"/dev/vd{chr(ord('a') + first + k)}" for k in range(n)]


def _check_md(rep: mc.Report, sha: str) -> None:
    assert rep.values.get("rc") == "0", rep
    assert rep.detail_field("Raid Level") == "raid5"
    assert rep.detail_field("Raid Devices") == "4"
    assert rep.detail_field("Chunk Size") == "128K"
    assert rep.detail_field("Layout") == "left-symmetric"
    assert int(rep.values["size"]) == ARRAY
    assert rep.values["sha256"] == sha
    assert rep.values["last_sync"] == "check"
    assert rep.values["mismatch_cnt"] == "0"


@pytest.mark.interop
@pytest.mark.interop_smoke
def test_md_assembles_fuseraid_finish_of_md_backup_reshape(md_image, scratch) -> None:
    d = scratch / "mdbackup-smoke"
    asis, bk = unpack_capture(d / "asis")
    rewound, bk2 = unpack_capture(d / "rewound")
    end = rewind_overrun(rewound, META["backup"]["restore_to_sectors"] * S)
    assert end == META["md_progress_sectors"] * S
    sha_asis = fuseraid_finish(asis, bk, d / "fr-asis.backup")
    sha_rew = fuseraid_finish(rewound, bk2, d / "fr-rew.backup")
    assert sha_asis == META["mdadm_restart_result"]["array_sha256"]  # what mdadm does
    assert sha_rew == sha256_of(1, ARRAY)
    per_case = [("asis", _assemble_lines("asis", "md0", _devs(0, 4))),
                ("rewound", _assemble_lines("rewound", "md1", _devs(4, 4)))]
    res = mdvm.run_md_job(asis + rewound, mc.job(per_case), image=md_image, timeout=600)
    reps = mc.parse_reports(res.output)
    _check_md(reps.get("asis", mc.Report()), sha_asis)
    _check_md(reps.get("rewound", mc.Report()), sha_rew)


@pytest.mark.interop
def test_fresh_md_backup_reshape_crash_resumed_by_fuseraid(md_image, scratch) -> None:
    d = scratch / "mdbackup-fresh"
    d.mkdir(parents=True, exist_ok=True)
    payload = write_payload(d / "payload.img", ARRAY)
    members = mc.make_members(mc.Case("bk", 5, 4, member_mib=4), d / "captured")
    raw_backup = d / "backup.img"
    with open(raw_backup, "wb") as f:
        f.truncate(8 * MIB)
    res = mdvm.run_md_job([payload, *members, raw_backup], mc.job([("capture", [CAPTURE_JOB])]),
                          image=md_image, timeout=900,
                          readonly=[True] + [False] * 5)
    rep = mc.parse_reports(res.output).get("capture", mc.Report())
    assert rep.values.get("rc") == "0", res.output[-3000:]
    assert rep.values["sha_before"] == sha256_of(1, ARRAY)
    backup = d / "md0.backup"
    with open(raw_backup, "rb") as src:
        backup.write_bytes(src.read(int(rep.values["backup_bytes"])))
    b = read_md_backup(backup)
    assert b.sections, "mdadm left no backed-up section"
    for s in b.sections:  # mdadm saved the array's content of those sectors
        assert b.read_section(s) == secpat(1, s.length, s.array_start)
    with open_members(members, readonly=True) as ms:
        assert ms.sb.reshape_active and ms.sb.new_chunk == 256
    hi = b.span[1]

    by_md = _copy(members, d / "by-mdadm")  # mdadm's own Grow_restart + continue
    asis = _copy(members, d / "asis")
    rewound = _copy(members, d / "rewound")
    rewind_overrun(rewound, hi)
    sha_asis = fuseraid_finish(asis, backup, d / "fr-asis.backup")
    sha_rew = fuseraid_finish(rewound, backup, d / "fr-rew.backup")
    assert sha_rew == sha256_of(1, ARRAY)

    nbk = -(-int(rep.values["backup_bytes"]) // S)
    md_restart = [
        f"dd if=/dev/vdm of=/tmp/md0.backup bs=512 count={nbk} 2>/dev/null",
        "mdadm --assemble /dev/md0 --backup-file=/tmp/md0.backup " + " ".join(_devs(0, 4)),
        "md_reshaped md0",
        # the continuing mdadm holds the array until it notices the end
        "n=0; while pidof mdadm > /dev/null && [ $n -lt 300 ]; do n=$((n+1)); sleep 0.2; done",
        "md_report bymdadm md0 check",
    ]
    per_case = [("bymdadm", md_restart),
                ("asis", _assemble_lines("asis", "md1", _devs(4, 4))),
                ("rewound", _assemble_lines("rewound", "md2", _devs(8, 4)))]
    res2 = mdvm.run_md_job(by_md + asis + rewound + [backup],
                           mc.job(per_case, extra_lib=SYSTEMCTL + WAIT),
                           image=md_image, timeout=900)
    reps = mc.parse_reports(res2.output)
    mine = reps.get("bymdadm", mc.Report())
    assert mine.values.get("rc") == "0", res2.output[-3000:]
    _check_md(reps.get("asis", mc.Report()), sha_asis)
    _check_md(reps.get("rewound", mc.Report()), sha_rew)
    # fuseraid's replay + finish = mdadm's restore + md's finish, byte for byte
    assert mine.values["sha256"] == sha_asis
