"""The interop matrix: array geometries to build with Linux md or with fuseraid, the
guest job scripts that create/fill/inspect them, and the parser for the job output.

Every array's content is the fixtures' pattern, secpat(seed 1) from array byte 0, so the
expected SHA-256 of an array depends only on its size."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20
SEED = 1

# md's layout numbers as stored in the superblock (md_p.h / raid5.h / raid10.c).
RAID5_LAYOUTS = {
    "left-asymmetric": 0, "right-asymmetric": 1, "left-symmetric": 2,
    "right-symmetric": 3, "parity-first": 4, "parity-last": 5,
}  # fmt: skip
RAID6_LAYOUTS = {
    **RAID5_LAYOUTS,
    "ddf-zero-restart": 8, "ddf-N-restart": 9, "ddf-N-continue": 10,
    "left-asymmetric-6": 16, "right-asymmetric-6": 17, "left-symmetric-6": 18,
    "right-symmetric-6": 19, "parity-first-6": 20,
}  # fmt: skip
RAID0_LAYOUTS = {"original": 1, "alternate": 2}


def raid10_layout(name: str) -> int:
    """n2 -> 0x102, f2 -> 0x201, o2 -> 0x10201 (near in bits 0-7, far in 8-15,
    offset flag in bit 16)."""
    kind, copies = name[0], int(name[1:])
    if kind == "n":
        return (1 << 8) | copies
    if kind == "f":
        return (copies << 8) | 1
    if kind == "o":
        return (1 << 16) | (copies << 8) | 1
    raise ValueError(f"bad raid10 layout {name!r}")


@dataclass(frozen=True)
class Case:
    """One array: geometry, member file sizes, and which roles are missing."""

    name: str
    level: int
    disks: int
    layout: str | None = None  # mdadm's name; None = md's default / none
    chunk_kib: int | None = 64  # None for raid1
    member_mib: tuple[int, ...] | int = 4
    missing: tuple[int, ...] = ()
    smoke: bool = False

    @property
    def sizes(self) -> list[int]:
        m = self.member_mib
        mibs = list(m) if isinstance(m, tuple) else [m] * self.disks
        return [x * MIB for x in mibs]

    @property
    def layout_number(self) -> int | None:
        """The superblock's layout value for this case's layout name."""
        if self.layout is None:
            return None
        if self.level == 10:
            return raid10_layout(self.layout)
        if self.level == 0:
            return RAID0_LAYOUTS[self.layout]
        if self.level == 6:
            return RAID6_LAYOUTS[self.layout]
        return RAID5_LAYOUTS[self.layout]

    @property
    def md_name(self) -> str:
        """A short array name: md keeps at most 32 bytes, homehost included."""
        return f"i{zlib.crc32(self.name.encode()):08x}"

    @property
    def present_roles(self) -> list[int]:
        return [r for r in range(self.disks) if r not in self.missing]

    def mdadm_create(self, md: str, devs: list[str]) -> str:
        """The mdadm --create command; devs are the present roles' devices in order."""
        it = iter(devs)
        members = ["missing" if r in self.missing else next(it) for r in range(self.disks)]
        opts = [f"--level={self.level}", f"--raid-devices={self.disks}", "--metadata=1.2",
                f"--name={self.md_name}", "--homehost=interop"]
        if self.level != 0:  # mdadm refuses a bitmap option for raid0
            opts.append("--bitmap=none")
        if self.chunk_kib is not None and self.level != 1:
            opts.append(f"--chunk={self.chunk_kib}")
        if self.layout is not None:
            opts.append(f"--layout={self.layout}")
        return f"mdadm --create {md} --run --quiet {' '.join(opts)} {' '.join(members)}"


def _r(name: str, level: int, disks: int, layout: str | None, chunk: int | None = 64,
       **kw) -> Case:
    return Case(name, level, disks, layout, chunk, **kw)


def _matrix() -> list[Case]:
    c: list[Case] = [
        _r("r0-2-c4", 0, 2, None, 4),
        _r("r0-3-c64", 0, 3, None, 64, smoke=True),
        _r("r0-4-c1024", 0, 4, None, 1024, member_mib=16),
        _r("r0-3-c64-unequal-4-4-6", 0, 3, None, 64, member_mib=(4, 4, 6), smoke=True),
        _r("r0-4-c32-unequal-orig", 0, 4, "original", 32, member_mib=(4, 6, 4, 6)),
        _r("r0-4-c32-unequal-alt", 0, 4, "alternate", 32, member_mib=(4, 6, 4, 6)),
        _r("r1-2", 1, 2, None, None, smoke=True),
        _r("r1-3", 1, 3, None, None),
        _r("r1-3-degraded", 1, 3, None, None, missing=(1,)),
        _r("r1-2-unequal-4-6", 1, 2, None, None, member_mib=(4, 6)),
        _r("r4-3-c64", 4, 3, None, 64),
        _r("r4-4-c128", 4, 4, None, 128, member_mib=6),
        _r("r4-4-c64-degraded-parity", 4, 4, None, 64, missing=(3,)),
    ]
    for lay in RAID5_LAYOUTS:
        c.append(_r(f"r5-4-{lay}-c64", 5, 4, lay, 64, smoke=(lay == "left-symmetric")))
    c += [
        _r("r5-3-left-symmetric-c4", 5, 3, "left-symmetric", 4),
        _r("r5-3-right-asymmetric-c16", 5, 3, "right-asymmetric", 16),
        _r("r5-5-left-symmetric-c1024", 5, 5, "left-symmetric", 1024, member_mib=16),
        _r("r5-4-left-symmetric-c512", 5, 4, "left-symmetric", 512, member_mib=8),
        _r("r5-2-left-symmetric-c64", 5, 2, "left-symmetric", 64),
        _r("r5-3-left-symmetric-c256-64M", 5, 3, "left-symmetric", 256, member_mib=64),
        _r("r5-4-left-symmetric-c64-degraded", 5, 4, "left-symmetric", 64, missing=(2,),
           smoke=True),
        _r("r5-4-parity-first-c32-degraded0", 5, 4, "parity-first", 32, missing=(0,)),
    ]
    for lay in RAID6_LAYOUTS:
        c.append(_r(f"r6-5-{lay}-c64", 6, 5, lay, 64, smoke=(lay == "ddf-N-continue")))
    c += [
        _r("r6-4-left-symmetric-c8", 6, 4, "left-symmetric", 8),
        _r("r6-6-right-asymmetric-c512", 6, 6, "right-asymmetric", 512, member_mib=8),
        _r("r6-5-left-symmetric-c64-degraded1", 6, 5, "left-symmetric", 64, missing=(1,)),
        _r("r6-5-left-symmetric-c64-degraded2", 6, 5, "left-symmetric", 64, missing=(1, 3)),
        _r("r6-5-ddf-N-restart-c64-degraded2", 6, 5, "ddf-N-restart", 64, missing=(0, 4)),
    ]
    for lay, disks in [("n2", 2), ("n2", 3), ("n2", 4), ("f2", 2), ("f2", 3), ("f2", 4),
                       ("f2", 5), ("o2", 2), ("o2", 3), ("o2", 4), ("n3", 3), ("n3", 4),
                       ("f3", 3), ("f3", 5), ("o3", 3), ("o3", 4)]:
        c.append(_r(f"r10-{disks}-{lay}-c64", 10, disks, lay, 64,
                    smoke=(lay, disks) == ("f2", 4)))
    c += [
        _r("r10-4-n2-c4", 10, 4, "n2", 4),
        _r("r10-4-o2-c512", 10, 4, "o2", 512, member_mib=8),
        _r("r10-3-f2-c1024", 10, 3, "f2", 1024, member_mib=16),
        _r("r10-4-n2-c64-degraded", 10, 4, "n2", 64, missing=(1,)),
        _r("r10-4-f2-c64-degraded", 10, 4, "f2", 64, missing=(2,)),
    ]
    return c


MATRIX: list[Case] = _matrix()
SMOKE: list[Case] = [c for c in MATRIX if c.smoke]


def batches(cases: list[Case], max_disks: int = 25) -> list[list[Case]]:
    """Group cases so each guest boot gets at most max_disks member disks (plus one
    payload disk): booting is the fixed cost, so batch as many arrays as fit."""
    out: list[list[Case]] = []
    cur: list[Case] = []
    used = 0
    for case in cases:
        n = len(case.present_roles)
        if cur and used + n > max_disks:
            out.append(cur)
            cur, used = [], 0
        cur.append(case)
        used += n
    if cur:
        out.append(cur)
    return out


# ---------------------------------------------------------------- guest shell library

GUEST_LIB = r"""
# md may throttle resync to speed_limit_min when it sees other I/O: lift it
echo 500000 > /proc/sys/dev/raid/speed_limit_min
echo 2000000 > /proc/sys/dev/raid/speed_limit_max
md_idle() {  # wait until md has no resync/recovery/check running
    n=0
    while :; do
        a=$(cat /sys/block/$1/md/sync_action 2>/dev/null || echo none)
        case "$a" in idle|none|frozen) break ;; esac
        n=$((n+1)); [ $n -lt 6000 ] || { echo "timeout waiting for $1 ($a)"; return 1; }
        sleep 0.1
    done
}
md_report() {  # $1 case name, $2 mdN, $3 = check|nocheck
    echo "@@CASE $1 state_before=$(cat /sys/block/$2/md/array_state)"
    echo "@@CASE $1 sync_before=$(cat /sys/block/$2/md/sync_action 2>/dev/null || echo none)"
    echo "@@CASE $1 size=$(blockdev --getsize64 /dev/$2)"
    mdadm --detail /dev/$2 | sed "s/^/@@DETAIL $1 /"
    echo "@@CASE $1 sha256=$(sha256sum /dev/$2 | cut -d' ' -f1)"
    if [ "$3" = check ]; then
        echo check > /sys/block/$2/md/sync_action
        sleep 0.2
        md_idle $2
        # proves the scrub ran (md sets it when the check starts) before trusting the count
        echo "@@CASE $1 last_sync=$(cat /sys/block/$2/md/last_sync_action)"
        echo "@@CASE $1 mismatch_cnt=$(cat /sys/block/$2/md/mismatch_cnt)"
    fi
    mdadm --stop /dev/$2 > /dev/null
    echo "@@CASE $1 done=1"
}
"""


def job(per_case: list[tuple[str, list[str]]], extra_lib: str = "") -> str:
    """The job: the library, then each case as its own `sh -e` script, so one failing
    case reports its exit status (`@@CASE name rc=N`) and the others still run."""
    out = ["cat > /tmp/lib.sh <<'@@LIB'", GUEST_LIB + extra_lib, "@@LIB"]
    for i, (name, body) in enumerate(per_case):
        out += [f"cat > /tmp/case{i}.sh <<'@@CASE'", ". /tmp/lib.sh", *body, "@@CASE",
                f"sh -e /tmp/case{i}.sh && rc=0 || rc=$?",
                f"echo \"@@CASE {name} rc=$rc\""]
    return "\n".join(out) + "\n"


def _checkable(case: Case) -> bool:
    """md's check scrub needs redundancy that is all present."""
    return case.level != 0 and not case.missing


def create_and_fill_script(cases: list[Case], payload: str, first_disk: int = 0) -> str:
    """Guest job: for each case, mdadm --create on the next disks, wait for the initial
    sync, write the pattern from the payload disk over the whole array, then report."""
    per_case = []
    disk = first_disk
    for i, case in enumerate(cases):
        n = len(case.present_roles)
        devs = [f"/dev/vd{chr(ord('a') + disk + k)}" for k in range(n)]
        disk += n
        md = f"md{i}"
        per_case.append((case.name, [
            f"{case.mdadm_create('/dev/' + md, devs)}",
            f"md_idle {md}",
            f"sz=$(blockdev --getsize64 /dev/{md})",
            f"dd if={payload} of=/dev/{md} bs=65536 count=$((sz / 65536)) 2>/dev/null",
            f"rest=$((sz % 65536)); [ $rest -eq 0 ] || dd if={payload} of=/dev/{md} bs=512 "
            f"skip=$((sz / 512 - rest / 512)) seek=$((sz / 512 - rest / 512)) "
            f"count=$((rest / 512)) 2>/dev/null",
            f"blockdev --flushbufs /dev/{md}; sync",
            f"md_idle {md}",
            f"md_report {case.name} {md} {'check' if _checkable(case) else 'nocheck'}",
        ]))
    return job(per_case)


def assemble_script(cases: list[Case], first_disk: int = 0) -> str:
    """Guest job: for each case, mdadm --assemble its disks (as fuseraid left them) and
    report geometry, state, content hash and check's mismatch count."""
    per_case = []
    disk = first_disk
    for i, case in enumerate(cases):
        n = len(case.present_roles)
        devs = " ".join(f"/dev/vd{chr(ord('a') + disk + k)}" for k in range(n))
        disk += n
        md = f"md{i}"
        per_case.append((case.name, [
            f"mdadm --examine {devs} | sed 's/^/@@EXAMINE {case.name} /'",
            f"mdadm --assemble /dev/{md} --run {devs}",
            f"md_report {case.name} {md} {'check' if _checkable(case) else 'nocheck'}",
        ]))
    return job(per_case)


@dataclass
class Report:
    """What the guest said about one array."""

    values: dict[str, str] = field(default_factory=dict)
    detail: list[str] = field(default_factory=list)
    examine: list[str] = field(default_factory=list)

    def detail_field(self, key: str) -> str | None:
        """A `Key : value` line of mdadm --detail."""
        for line in self.detail:
            k, sep, v = line.partition(" : ")
            if sep and k.strip() == key:
                return v.strip()
        return None


def parse_reports(output: str) -> dict[str, Report]:
    reports: dict[str, Report] = {}
    for line in output.splitlines():
        m = re.match(r"@@(CASE|DETAIL|EXAMINE) (\S+) ?(.*)$", line)
        if not m:
            continue
        kind, name, rest = m.groups()
        rep = reports.setdefault(name, Report())
        if kind == "CASE":
            k, _, v = rest.partition("=")
            rep.values[k] = v
        elif kind == "DETAIL":
            rep.detail.append(rest)
        else:
            rep.examine.append(rest)
    return reports


def make_members(case: Case, directory: Path) -> list[Path]:
    """Blank (sparse) member files for the present roles, in role order."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for role in case.present_roles:
        p = directory / f"d{role}.img"
        with open(p, "wb") as f:
            f.truncate(case.sizes[role])
        paths.append(p)
    return paths


# What mdadm --detail prints as "Layout" for a case, where it prints one.
def detail_layout(case: Case) -> str | None:
    if case.level in (5, 6):
        return case.layout or "left-symmetric"
    if case.level == 0:  # mdadm prints a raid0 layout only when one is set
        return case.layout
    if case.level == 10:
        kind, copies = case.layout[0], case.layout[1:]  # type: ignore[index]
        return {"n": "near", "f": "far", "o": "offset"}[kind] + "=" + copies
    return None
