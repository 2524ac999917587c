"""Linux md's own reshape throughput on the reshapes benchmarks/bench_reshape.py and
bench_reshape_fuse.py time for fuseraid, **for reference only**: md runs in the
interop harness's qemu guest (tests/interop/mdvm.py, the image scripts/interop-setup.sh
builds) under TCG, without KVM, so every guest instruction is emulated and the figure
is md's pace in that emulator, not on hardware.

Per case and repeat, one guest boot:

- member files (--member-mib each, in --dir, page cache: qemu's cache=unsafe) are
  filled with random bytes on the host; in the guest `mdadm --create` makes a raid5 of
  4 of them (chunk 512K, left-symmetric, --assume-clean, metadata 1.2, mdadm's own data
  offset), the 5th is added as a spare;
- /proc/sys/dev/raid/speed_limit_min and _max and the array's sync_speed_min and
  sync_speed_max are raised to 2000000 KiB/s (md then never throttles);
- time from `mdadm --grow` to the end of the reshape (reshape_position back to "none"
  and sync_action idle, polled every 20 ms, clock /proc/uptime). mdadm picks its own
  method (the output shows the data offsets and what mdadm said): growing the number of
  disks it keeps the offset and backs up the critical section itself; for raid5 ->
  raid6 it moves the data offset. Had it asked for a backup file, it would get one in
  the guest's tmpfs (the output says so);
- MiB/s = the array's size before the grow (the content that moves, as
  bench_reshape.py counts) / those seconds;
- then, with the array stopped, the same guest's physical limit as bench_reshape.py
  measures it on the host: dd (bs=1M, O_DIRECT: md moves its stripes by DMA without
  the guest's page cache; a buffered dd pays two emulated copies and is slower than md
  itself) reading every old member's old data area and writing every new member's new
  data area; md / dd is md's share of what that emulated machine can move. Under TCG
  md's own CPU work (stripe handling, parity) is emulated while the disk I/O is not,
  so even this ratio understates md on hardware.

Cases: "grow" = `mdadm --grow --raid-devices=5`, "raid6" = `mdadm --grow --level=6
--raid-devices=5 --layout=left-symmetric` (a full reshape into md's default raid6
layout, what fuseraid's raid5 4 -> raid6 5 request does; without --layout mdadm would
only add Q on the new disk). mdadm 4.2 continues a reshape through
`systemctl ... mdadm-grow-continue@`; the harness has a stand-in for it.

    .venv/bin/python benchmarks/bench_md_reshape.py [--member-mib 256] [--repeat 2]
        [--case grow|raid6|all] [--dir /dev/shm] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "interop"))

import mdvm  # noqa: E402

MIB = 1 << 20
CASES = {
    "grow": ("raid5 4 -> 5 disks", "--raid-devices=5"),
    "raid6": ("raid5 4 -> raid6 5 disks", "--level=6 --raid-devices=5 --layout=left-symmetric"),
}

JOB = r"""
set -e
now() { cut -d' ' -f1 /proc/uptime; }
set -- $DISKS
echo 2000000 > /proc/sys/dev/raid/speed_limit_max
echo 2000000 > /proc/sys/dev/raid/speed_limit_min
mdadm --create /dev/md0 --run --quiet --metadata=1.2 --level=5 --raid-devices=4 \
    --chunk=512 --layout=left-symmetric --assume-clean $1 $2 $3 $4
mdadm --add /dev/md0 $5 > /dev/null
echo 2000000 > /sys/block/md0/md/sync_speed_max
echo 2000000 > /sys/block/md0/md/sync_speed_min
size=$(blockdev --getsize64 /dev/md0)
offset() { mdadm --examine $1 | sed -n 's/.*Data Offset : \([0-9]*\) sectors.*/\1/p'; }
off=$(offset $1)
backup=none
t0=$(now)
if ! mdadm --grow /dev/md0 @GROW@ > /tmp/grow.log 2>&1; then
    if grep -q -i backup /tmp/grow.log; then  # no room to move the data offset
        backup=/tmp/md0.backup
        t0=$(now)
        mdadm --grow /dev/md0 @GROW@ --backup-file=$backup > /tmp/grow.log 2>&1 || {
            cat /tmp/grow.log; exit 1; }
    else
        cat /tmp/grow.log; exit 1
    fi
fi
# md may reset the array's limits when the reshape starts: raise them again
echo 2000000 > /sys/block/md0/md/sync_speed_max
echo 2000000 > /sys/block/md0/md/sync_speed_min
cache=$(cat /sys/block/md0/md/stripe_cache_size 2>/dev/null || echo ?)
n=0
while :; do
    pos=$(cat /sys/block/md0/md/reshape_position)
    act=$(cat /sys/block/md0/md/sync_action)
    [ "$pos" = none ] && [ "$act" = idle ] && break
    n=$((n + 1)); [ $n -lt 500000 ] || { echo "reshape did not finish"; exit 1; }
    sleep 0.02
done
t1=$(now)
echo "@@MD t0=$t0 t1=$t1 size=$size after=$(blockdev --getsize64 /dev/md0) \
level=$(cat /sys/block/md0/md/level) disks=$(cat /sys/block/md0/md/raid_disks) \
offset=$off offset_after=$(offset $1) \
stripe_cache=$cache backup=$backup"
sed 's/^/@@LOG /' /tmp/grow.log
after=$(blockdev --getsize64 /dev/md0)
data=$(( $(cat /sys/block/md0/md/raid_disks) - $(cat /sys/block/md0/md/level | tr -d raid) + 4 ))
mdadm --stop /dev/md0 > /dev/null
# the same guest's physical limit: read the old data areas, write the new ones (bs=1M,
# direct: md moves its stripes by DMA, a buffered dd would add two emulated copies)
mib=1048576
t2=$(now)
for d in $1 $2 $3 $4; do
    dd if=$d of=/dev/null bs=1M iflag=direct skip=$((off / 2048)) count=$((size / 3 / mib)) \
        2>/dev/null
done
new_off=$(offset $1)
for d in $1 $2 $3 $4 $5; do
    dd if=/dev/zero of=$d bs=1M oflag=direct seek=$((new_off / 2048)) \
        count=$((after / data / mib)) 2>/dev/null
done
sync
echo "@@DD t2=$t2 t3=$(now)"
"""


def fill(path: Path, mib: int) -> None:
    """Random bytes (md's reshape reads and moves them; parity is not checked)."""
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)


def one(work: Path, member_mib: int, case: str, timeout: float,
        image: mdvm.Image) -> dict[str, str]:
    work.mkdir(parents=True)
    disks = [work / f"m{i}.img" for i in range(5)]
    try:
        for d in disks:
            fill(d, member_mib)
        script = JOB.replace("@GROW@", CASES[case][1])
        res = mdvm.run_md_job(disks, script, timeout=timeout, image=image)
        out = res.check()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    m = re.search(r"@@MD (.*)", out)
    if m is None:
        raise RuntimeError(f"no result line from the guest:\n{out[-2000:]}")
    res = dict(kv.split("=", 1) for kv in m.group(1).split())
    res["mdadm"] = "; ".join(re.findall(r"@@LOG (.*)", out)) or "-"
    m = re.search(r"@@DD t2=(\S+) t3=(\S+)", out)
    res["dd_s"] = str(float(m.group(2)) - float(m.group(1))) if m else "nan"
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--member-mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--case", choices=[*CASES, "all"], default="all")
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--timeout", type=float, default=3600)
    a = ap.parse_args()
    if mdvm.qemu_binary() is None:
        sys.exit("qemu-system-x86_64 is not installed (scripts/interop-setup.sh)")
    image = mdvm.load_image()
    if image is None:
        sys.exit("the md guest image is not built (scripts/interop-setup.sh)")
    print(f"guest: Linux {image.kernel_version}, mdadm {image.mdadm_version}, qemu TCG, "
          "1 vCPU", flush=True)
    cases = list(CASES) if a.case == "all" else [a.case]
    speeds: dict[str, list[float]] = {c: [] for c in cases}
    ratios: dict[str, list[float]] = {c: [] for c in cases}
    top = Path(tempfile.mkdtemp(prefix="bench-md-reshape-", dir=a.dir))
    try:
        for i in range(a.repeat):
            for c in cases:
                r = one(top / f"{c}{i}", a.member_mib, c, a.timeout, image)
                secs = float(r["t1"]) - float(r["t0"])
                mibs = int(r["size"]) / MIB / secs
                dd = int(r["size"]) / MIB / float(r["dd_s"])
                speeds[c].append(mibs)
                ratios[c].append(mibs / dd)
                print(f"{CASES[c][0]}: md {mibs:6.1f} MiB/s ({int(r['size']) // MIB} MiB of "
                      f"content in {secs:.1f} s; {r['level']} on {r['disks']} disks "
                      f"after, {int(r['after']) // MIB} MiB; data offset {r['offset']} -> "
                      f"{r['offset_after']} sectors; stripe_cache_size {r['stripe_cache']}; "
                      f"backup file {r['backup']}; mdadm said: {r['mdadm']})\n"
                      f"    the guest's dd over the same content: {dd:6.1f} MiB/s; md / dd "
                      f"{mibs / dd:.2f}", flush=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print()
    print(f"Linux md under qemu TCG, for reference only (member files {a.member_mib} MiB), "
          f"median of {a.repeat} [min-max]:")
    print("| case | md MiB/s | md / the guest's dd |")
    print("|---|---:|---:|")
    for c, v in speeds.items():
        q = ratios[c]
        print(f"| {CASES[c][0]} | {statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}] | "
              f"{statistics.median(q):.2f} [{min(q):.2f}-{max(q):.2f}] |")


if __name__ == "__main__":
    main()
