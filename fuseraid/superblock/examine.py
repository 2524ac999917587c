"""`mdadm --examine` style text for one decoded superblock: the same fields, order and
spelling as mdadm 4.2's examine_super1 (super1.c), so the two can be compared line by
line."""

from __future__ import annotations

import socket
import time

from fuseraid.errors import GeometryError
from fuseraid.layout import names
from fuseraid.superblock.codec import (
    FAIL_FAST,
    MAX_SECTOR,
    MD_DISK_ROLE_FAULTY,
    MD_DISK_ROLE_JOURNAL,
    MD_DISK_ROLE_MAX,
    MD_FEATURE_BAD_BLOCKS,
    MD_FEATURE_BITMAP_OFFSET,
    MD_FEATURE_MULTIPLE_PPLS,
    MD_FEATURE_NEW_OFFSET,
    MD_FEATURE_PPL,
    MD_FEATURE_RAID0_LAYOUT,
    MD_FEATURE_RECOVERY_OFFSET,
    MD_FEATURE_REPLACEMENT,
    MD_FEATURE_RESHAPE_ACTIVE,
    SECTOR,
    WRITE_MOSTLY,
    Superblock,
    calc_sb_1_csum,
    format_uuid,
    time_seconds,
)

# mdadm's level names (maps.c pers[]); layout names come from fuseraid.layout.names
_LEVEL_NAMES = {-5: "faulty", -4: "multipath", -1: "linear", 0: "raid0", 1: "raid1",
                4: "raid4", 5: "raid5", 6: "raid6", 10: "raid10"}
_UNKNOWN = "-unknown-"


def human_size(nbytes: int) -> str:
    """mdadm's human_size(): "" below 5000 KiB, else " (x.xx MiB y.yy MB)" etc."""
    if nbytes < 5000 * 1024:
        return ""
    for limit, shift, dec, unit in ((2 << 30, 20, 10**6, "M"), (2 << 40, 30, 10**9, "G"),
                                    (None, 40, 10**12, "T")):
        if limit is None or nbytes < limit:
            cbin = (nbytes * 200 // (1 << shift) + 1) // 2
            cdec = (nbytes // (dec // 200) + 1) // 2
            return (f" ({cbin // 100}.{cbin % 100:02d} {unit}iB "
                    f"{cdec // 100}.{cdec % 100:02d} {unit}B)")
    raise AssertionError("unreachable")


def r10_layout(layout: int) -> str:
    """mdadm's print_r10_layout: " near=2", " far=2", " offset=2", " near=2, far=2"."""
    near, far, offset = layout & 0xFF, (layout >> 8) & 0xFF, layout & 0x10000
    out, sep = "", ""
    if near != 1:
        out += f"{sep} near={near}"
        sep = ","
    if far != 1:
        out += f"{sep} {'offset' if offset else 'far'}={far}"
    if near * far == 1:
        out += "NO REDUNDANCY"
    return out


def layout_name(level: int, layout: int) -> str:
    """mdadm's name for a raid0/5/6 layout number ("-unknown-" if none, as mdadm)."""
    try:
        return names.layout_name(level, layout)
    except GeometryError:
        return _UNKNOWN


def _ctime(stamp: int) -> str:
    return time.ctime(time_seconds(stamp))[:24]


def _space(sb: Superblock, device_sectors: int | None) -> tuple[int, int]:
    """mdadm getinfo_super1's space_before/space_after (sectors) for metadata 1.1/1.2."""
    data_size = sb.data_size if sb.level <= 0 else sb.size
    earliest = sb.super_offset + (32 + 4) * 2  # "match kernel"
    bm = sb.bitmap_offset if sb.feature_map & MD_FEATURE_BITMAP_OFFSET else 0
    if bm <= 0 and sb.feature_map & (MD_FEATURE_PPL | MD_FEATURE_MULTIPLE_PPLS):
        if sb.ppl_offset > 0:
            earliest = max(earliest, sb.ppl_offset + sb.ppl_size)
    if sb.bblog_offset and sb.bblog_size:
        earliest = max(earliest, sb.super_offset + sb.bblog_offset + sb.bblog_size)
    before = max(0, sb.data_offset - earliest)
    if device_sectors is None:
        after = 0
    else:
        after = device_sectors - data_size - sb.data_offset
    if before == 0 and after == 0:
        after = 1  # mdadm's marker for "no room either side"
    return before, after


def render(sb: Superblock, name: str, *, device_size: int | None = None,
           homehost: str | None = None) -> str:
    """The text `mdadm --examine` prints for this member (including the "name:" line).
    device_size is the member's size in bytes (for "Unused Space"); homehost defaults to
    this machine's host name, as mdadm's does."""
    if homehost is None:
        homehost = socket.gethostname().split(".", 1)[0]
    fm = sb.feature_map
    out: list[str] = [f"{name}:"]

    def p(label: str, value: str) -> None:
        out.append(f"{label:>15} : {value}")

    p("Magic", f"{sb.magic:08x}")
    so = sb.super_offset
    p("Version", "1.1" if so <= 4 else "1.2" if so <= 8 else "1.0")
    p("Feature Map", f"0x{fm:x}")
    p("Array UUID", format_uuid(sb.set_uuid))
    raw_name = sb.set_name.split(b"\0", 1)[0].decode("utf-8", "replace")
    local = ""
    hh = homehost.encode()
    if 0 < len(hh) < 32 and sb.set_name[len(hh) : len(hh) + 1] == b":" and \
            sb.set_name.startswith(hh):
        local = f"  (local to host {homehost})"
    p("Name", raw_name + local)
    p("Creation Time", _ctime(sb.ctime))
    p("Raid Level", _LEVEL_NAMES.get(sb.level, _UNKNOWN))
    p("Raid Devices", str(sb.raid_disks))
    out.append("")
    p("Avail Dev Size", f"{sb.data_size} sectors{human_size(sb.data_size * SECTOR)}")
    if sb.level > 0:
        ddsks, denom = {1: (1, 1), 4: (sb.raid_disks - 1, 1), 5: (sb.raid_disks - 1, 1),
                        6: (sb.raid_disks - 2, 1)}.get(sb.level, (0, 1))
        if sb.level == 10:
            ddsks = sb.raid_disks
            denom = (sb.layout & 0xFF) * ((sb.layout >> 8) & 0xFF) or 1
        if ddsks:
            asize = sb.size * SECTOR * ddsks // denom
            p("Array Size", f"{asize >> 10} KiB{human_size(asize)}")
        if sb.size != sb.data_size:
            p("Used Dev Size", f"{sb.size} sectors{human_size(sb.size * SECTOR)}")
    if sb.data_offset:
        p("Data Offset", f"{sb.data_offset} sectors")
    if sb.new_offset and fm & MD_FEATURE_NEW_OFFSET:
        p("New Offset", f"{sb.data_offset + sb.new_offset} sectors")
    p("Super Offset", f"{sb.super_offset} sectors")
    if fm & MD_FEATURE_RECOVERY_OFFSET:
        p("Recovery Offset", f"{sb.recovery_offset} sectors")
    dev_sectors = None if device_size is None else device_size // SECTOR
    before, after = _space(sb, dev_sectors)
    if after != 1 and not fm & MD_FEATURE_NEW_OFFSET and device_size is not None:
        p("Unused Space", f"before={before} sectors, after={after} sectors")
    p("State", "clean" if sb.resync_offset == MAX_SECTOR else "active")
    p("Device UUID", format_uuid(sb.device_uuid))
    out.append("")
    if fm & MD_FEATURE_BITMAP_OFFSET:
        p("Internal Bitmap", f"{sb.bitmap_offset} sectors from superblock")
    elif fm & (MD_FEATURE_PPL | MD_FEATURE_MULTIPLE_PPLS):
        p("PPL", f"{sb.ppl_size} sectors at offset {sb.ppl_offset} sectors from superblock")
    delta_extra = 0
    if fm & MD_FEATURE_RESHAPE_ACTIVE:
        p("Reshape pos'n", f"{sb.reshape_position // 2}"
          f"{human_size(sb.reshape_position * SECTOR)}")
        if sb.delta_disks:
            p("Delta Devices", f"{sb.delta_disks} ({sb.raid_disks - sb.delta_disks}->"
              f"{sb.raid_disks})")
            delta_extra = max(0, -sb.delta_disks)
        if sb.new_level != sb.level:
            p("New Level", _LEVEL_NAMES.get(sb.new_level, _UNKNOWN))
        if sb.new_layout != sb.layout:
            if sb.level in (5, 6):
                p("New Layout", layout_name(sb.level, sb.new_layout))
            elif sb.level == 10:
                out.append(f"{'New Layout':>15} :{r10_layout(sb.new_layout)}")
        if sb.new_chunk != sb.chunksize:
            p("New Chunksize", f"{sb.new_chunk // 2}K")
        out.append("")
    if sb.devflags:
        flags = "".join(s for bit, s in ((WRITE_MOSTLY, " write-mostly"),
                                        (FAIL_FAST, " failfast")) if sb.devflags & bit)
        out.append(f"{'Flags':>15} :{flags}")
    p("Update Time", _ctime(sb.utime))
    if sb.bblog_size and sb.bblog_offset:
        bad = " - bad blocks present." if fm & MD_FEATURE_BAD_BLOCKS else ""
        p("Bad Block Log", f"{sb.bblog_size * 512 // 8} entries available at offset "
          f"{sb.bblog_offset} sectors{bad}")
    want = calc_sb_1_csum(sb.pack(), sb.max_dev)
    p("Checksum", f"{sb.sb_csum:x} - " + ("correct" if want == sb.sb_csum
                                          else f"expected {want:x}"))
    p("Events", str(sb.events))
    out.append("")
    if sb.level == 0 and fm & MD_FEATURE_RAID0_LAYOUT:
        p("Layout", layout_name(0, sb.layout))
    elif sb.level in (5, 6):
        p("Layout", layout_name(sb.level, sb.layout))
    elif sb.level == 10:
        out.append(f"{'Layout':>15} :{r10_layout(sb.layout)}")
    if sb.level in (0, 4, 5, 6, 10):
        p("Chunk Size", f"{sb.chunksize // 2}K")
    elif sb.level == -1:
        p("Rounding", f"{sb.chunksize // 2}K")
    out.append("")
    role = sb.role
    if role >= MD_DISK_ROLE_FAULTY:
        desc = "spare"
    elif role == MD_DISK_ROLE_JOURNAL:
        desc = "Journal"
    elif fm & MD_FEATURE_REPLACEMENT:
        desc = f"Replacement device {role}"
    else:
        desc = f"Active device {role}"
    out.append(f"   Device Role : {desc}")
    state = ""
    for d in range(sb.raid_disks + delta_extra):
        cnt = sb.dev_roles.count(d)
        state += "R" if cnt == 2 and sb.level > 0 else "A" if cnt == 1 else \
            "." if cnt == 0 else "?"
    out.append(f"   Array State : {state} ('A' == active, '.' == missing, 'R' == replacing)")
    bad_role = any(r <= MD_DISK_ROLE_MAX and r > sb.raid_disks + delta_extra
                   for r in sb.dev_roles)
    if "?" in state or bad_role:
        out.append("WARNING Array state is inconsistent - each number should appear only once")
        out.append("".join(f" {d}:-" if r >= MD_DISK_ROLE_FAULTY else f" {d}:{r}"
                           for d, r in enumerate(sb.dev_roles)))
    return "\n".join(out) + "\n"
