"""Slow, obviously-correct reference for md's data placement, one sector at a time.

Each function is a plain transliteration of the md routine it names (Linux
drivers/md/raid5.c raid5_compute_sector / raid6_d0 / raid6_idx_to_slot, raid0.c
create_strip_zones / find_zone / map_sector, raid10.c setup_geo / calc_sectors /
__raid10_find_phys / raid10_find_virt), with md's variable names, no tables and no
cleverness. Units are 512-byte sectors, as in md. Written apart from
fuseraid/layout, which the property tests compare against it."""

from __future__ import annotations

# ---------------------------------------------------------------- raid4/5/6


def raid5_compute_sector(
    level: int, algorithm: int, raid_disks: int, sectors_per_chunk: int, r_sector: int
) -> tuple[int, int, int, int, bool]:
    """-> (dd_idx, new_sector, pd_idx, qd_idx, ddf_layout) for array sector r_sector."""
    max_degraded = 2 if level == 6 else 1
    data_disks = raid_disks - max_degraded
    chunk_offset = r_sector % sectors_per_chunk
    chunk_number = r_sector // sectors_per_chunk
    stripe = chunk_number // data_disks
    dd_idx = chunk_number % data_disks
    stripe2 = stripe
    pd_idx = qd_idx = -1
    ddf_layout = False
    if level == 4:
        pd_idx = data_disks
    elif level == 5:
        if algorithm == 0:  # LEFT_ASYMMETRIC
            pd_idx = data_disks - stripe2 % raid_disks
            if dd_idx >= pd_idx:
                dd_idx += 1
        elif algorithm == 1:  # RIGHT_ASYMMETRIC
            pd_idx = stripe2 % raid_disks
            if dd_idx >= pd_idx:
                dd_idx += 1
        elif algorithm == 2:  # LEFT_SYMMETRIC
            pd_idx = data_disks - stripe2 % raid_disks
            dd_idx = (pd_idx + 1 + dd_idx) % raid_disks
        elif algorithm == 3:  # RIGHT_SYMMETRIC
            pd_idx = stripe2 % raid_disks
            dd_idx = (pd_idx + 1 + dd_idx) % raid_disks
        elif algorithm == 4:  # PARITY_0
            pd_idx = 0
            dd_idx += 1
        elif algorithm == 5:  # PARITY_N
            pd_idx = data_disks
        else:
            raise ValueError(algorithm)
    elif level == 6:
        if algorithm == 0:
            pd_idx = raid_disks - 1 - stripe2 % raid_disks
            qd_idx = pd_idx + 1
            if pd_idx == raid_disks - 1:
                dd_idx += 1
                qd_idx = 0
            elif dd_idx >= pd_idx:
                dd_idx += 2
        elif algorithm == 1:
            pd_idx = stripe2 % raid_disks
            qd_idx = pd_idx + 1
            if pd_idx == raid_disks - 1:
                dd_idx += 1
                qd_idx = 0
            elif dd_idx >= pd_idx:
                dd_idx += 2
        elif algorithm == 2:
            pd_idx = raid_disks - 1 - stripe2 % raid_disks
            qd_idx = (pd_idx + 1) % raid_disks
            dd_idx = (pd_idx + 2 + dd_idx) % raid_disks
        elif algorithm == 3:
            pd_idx = stripe2 % raid_disks
            qd_idx = (pd_idx + 1) % raid_disks
            dd_idx = (pd_idx + 2 + dd_idx) % raid_disks
        elif algorithm == 4:
            pd_idx = 0
            qd_idx = 1
            dd_idx += 2
        elif algorithm == 5:
            pd_idx = data_disks
            qd_idx = data_disks + 1
        elif algorithm == 8:  # ROTATING_ZERO_RESTART
            pd_idx = stripe2 % raid_disks
            qd_idx = pd_idx + 1
            if pd_idx == raid_disks - 1:
                dd_idx += 1
                qd_idx = 0
            elif dd_idx >= pd_idx:
                dd_idx += 2
            ddf_layout = True
        elif algorithm == 9:  # ROTATING_N_RESTART
            stripe2 += 1
            pd_idx = raid_disks - 1 - stripe2 % raid_disks
            qd_idx = pd_idx + 1
            if pd_idx == raid_disks - 1:
                dd_idx += 1
                qd_idx = 0
            elif dd_idx >= pd_idx:
                dd_idx += 2
            ddf_layout = True
        elif algorithm == 10:  # ROTATING_N_CONTINUE
            pd_idx = raid_disks - 1 - stripe2 % raid_disks
            qd_idx = (pd_idx + raid_disks - 1) % raid_disks
            dd_idx = (pd_idx + 1 + dd_idx) % raid_disks
            ddf_layout = True
        elif algorithm == 16:  # LEFT_ASYMMETRIC_6
            pd_idx = data_disks - stripe2 % (raid_disks - 1)
            if dd_idx >= pd_idx:
                dd_idx += 1
            qd_idx = raid_disks - 1
        elif algorithm == 17:  # RIGHT_ASYMMETRIC_6
            pd_idx = stripe2 % (raid_disks - 1)
            if dd_idx >= pd_idx:
                dd_idx += 1
            qd_idx = raid_disks - 1
        elif algorithm == 18:  # LEFT_SYMMETRIC_6
            pd_idx = data_disks - stripe2 % (raid_disks - 1)
            dd_idx = (pd_idx + 1 + dd_idx) % (raid_disks - 1)
            qd_idx = raid_disks - 1
        elif algorithm == 19:  # RIGHT_SYMMETRIC_6
            pd_idx = stripe2 % (raid_disks - 1)
            dd_idx = (pd_idx + 1 + dd_idx) % (raid_disks - 1)
            qd_idx = raid_disks - 1
        elif algorithm == 20:  # PARITY_0_6
            pd_idx = 0
            dd_idx += 1
            qd_idx = raid_disks - 1
        else:
            raise ValueError(algorithm)
    new_sector = stripe * sectors_per_chunk + chunk_offset
    return dd_idx, new_sector, pd_idx, qd_idx, ddf_layout


def raid6_syndrome_slots(
    raid_disks: int, pd_idx: int, qd_idx: int, ddf_layout: bool
) -> tuple[dict[int, int], int]:
    """{disk: slot} for the data disks, and syndrome_disks (set_syndrome_sources)."""
    syndrome_disks = raid_disks if ddf_layout else raid_disks - 2
    # raid6_d0: DDF starts at disk 0, md just after Q
    if ddf_layout:
        d0_idx = 0
    elif qd_idx == raid_disks - 1:
        d0_idx = 0
    else:
        d0_idx = qd_idx + 1
    slots: dict[int, int] = {}
    count = 0
    i = d0_idx
    while True:
        # raid6_idx_to_slot
        slot = count
        if ddf_layout:
            count += 1
        if i == pd_idx:
            pass  # P's slot is syndrome_disks
        elif i == qd_idx:
            pass  # Q's slot is syndrome_disks + 1
        else:
            if not ddf_layout:
                count += 1
            slots[i] = slot
        i = (i + 1) % raid_disks
        if i == d0_idx:
            break
    return slots, syndrome_disks


# ---------------------------------------------------------------- raid0


def raid0_zones(rdev_sectors: list[int], chunk_sectors: int) -> list[tuple[int, int, list[int]]]:
    """create_strip_zones -> list of (zone_end, dev_start, [disks]) in sectors."""
    sectors = [s // chunk_sectors * chunk_sectors for s in rdev_sectors]
    nr_strip_zones = 0
    for i, s1 in enumerate(sectors):
        unique = True
        for j in range(i):
            if sectors[j] == s1:
                unique = False
                break
        if unique:
            nr_strip_zones += 1
    cnt = len(sectors)
    smallest = min(sectors)
    zones = [(smallest * cnt, 0, list(range(cnt)))]
    curr_zone_end = smallest * cnt
    for _ in range(1, nr_strip_zones):
        dev_start = smallest
        devs = []
        smallest_now = None
        for j in range(cnt):
            if sectors[j] <= dev_start:
                continue
            devs.append(j)
            if smallest_now is None or sectors[j] < smallest_now:
                smallest_now = sectors[j]
        curr_zone_end += (smallest_now - dev_start) * len(devs)
        zones.append((curr_zone_end, dev_start, devs))
        smallest = smallest_now
    return zones


def raid0_map_sector(
    rdev_sectors: list[int], chunk_sectors: int, layout: int, sector: int
) -> tuple[int, int]:
    """-> (disk, device sector) for array sector (find_zone + map_sector)."""
    zones = raid0_zones(rdev_sectors, chunk_sectors)
    orig_sector = sector
    zone_index = None
    for i, (zone_end, _, _) in enumerate(zones):
        if sector < zone_end:
            zone_index = i
            if i:
                sector = sector - zones[i - 1][0]
            break
    if zone_index is None:
        raise ValueError("beyond the array")
    zone_end, dev_start, devs = zones[zone_index]
    nb_dev = len(devs)
    multi = len(zones) > 1 and len(zones[1][2]) > 1
    pick_from = sector if (multi and layout == 2) else orig_sector
    sect_in_chunk = pick_from % chunk_sectors
    chunk = sector // (nb_dev * chunk_sectors)
    dev_sector = chunk * chunk_sectors + sect_in_chunk
    disk = devs[(pick_from // chunk_sectors) % nb_dev]
    return disk, dev_sector + dev_start


# ---------------------------------------------------------------- raid10


def raid10_geo(layout: int, raid_disks: int, chunk_sectors: int, dev_sectors: int) -> dict:
    """setup_geo + calc_sectors -> dict of md's geo fields and array_sectors."""
    nc = layout & 255
    fc = (layout >> 8) & 255
    fo = bool(layout & (1 << 16))
    mode = layout >> 17
    if mode == 0:
        far_set_size = raid_disks
    elif mode == 1:
        far_set_size = raid_disks // fc
    else:
        far_set_size = fc * nc
    copies = nc * fc
    size = dev_sectors // chunk_sectors
    size = size // fc
    size = size * raid_disks
    size = size // nc
    size = size * copies
    size = (size + raid_disks - 1) // raid_disks
    conf_dev_sectors = size * chunk_sectors
    if fo:
        stride = chunk_sectors
    else:
        stride = (size // fc) * chunk_sectors
    # raid10_size(mddev, 0, 0) on conf->dev_sectors
    s = conf_dev_sectors // chunk_sectors
    s = s // fc
    s = s * raid_disks
    s = s // nc
    return {
        "near_copies": nc, "far_copies": fc, "far_offset": fo, "far_set_size": far_set_size,
        "raid_disks": raid_disks, "chunk_sectors": chunk_sectors, "stride": stride,
        "dev_sectors": conf_dev_sectors, "array_sectors": s * chunk_sectors,
    }


def raid10_find_phys(geo: dict, r_sector: int) -> list[tuple[int, int]]:
    """__raid10_find_phys -> [(devnum, addr)] in copy order."""
    raid_disks = geo["raid_disks"]
    far_set_size = geo["far_set_size"]
    near_copies = geo["near_copies"]
    far_copies = geo["far_copies"]
    chunk_sectors = geo["chunk_sectors"]
    last_far_set_start = (raid_disks // far_set_size - 1) * far_set_size
    last_far_set_size = far_set_size + raid_disks % far_set_size
    chunk = r_sector // chunk_sectors
    sector = r_sector % chunk_sectors
    chunk = chunk * near_copies
    stripe = chunk // raid_disks
    dev = chunk % raid_disks
    if geo["far_offset"]:
        stripe = stripe * far_copies
    sector = sector + stripe * chunk_sectors
    out = []
    for _n in range(near_copies):
        d = dev
        s = sector
        out.append((d, s))
        for _f in range(1, far_copies):
            set_ = d // far_set_size
            d = d + near_copies
            if (raid_disks % far_set_size) and d > last_far_set_start:
                d = d - last_far_set_start
                d = d % last_far_set_size
                d = d + last_far_set_start
            else:
                d = d % far_set_size
                d = d + far_set_size * set_
            s = s + geo["stride"]
            out.append((d, s))
        dev = dev + 1
        if dev >= raid_disks:
            dev = 0
            sector = sector + chunk_sectors
    return out


def raid10_find_virt(geo: dict, sector: int, dev: int) -> int:
    """raid10_find_virt -> array sector for (device sector, devnum)."""
    raid_disks = geo["raid_disks"]
    far_set_size = geo["far_set_size"]
    near_copies = geo["near_copies"]
    chunk_sectors = geo["chunk_sectors"]
    far_set_start = (dev // far_set_size) * far_set_size
    if raid_disks % far_set_size:
        last_far_set_start = (raid_disks // far_set_size - 1) * far_set_size
        if dev >= last_far_set_start:
            far_set_size = far_set_size + raid_disks % far_set_size
            far_set_start = last_far_set_start
    offset = sector % chunk_sectors
    if geo["far_offset"]:
        chunk = sector // chunk_sectors
        fc = chunk % geo["far_copies"]
        chunk = chunk // geo["far_copies"]
        dev = dev - fc * near_copies
        if dev < far_set_start:
            dev = dev + far_set_size
    else:
        while sector >= geo["stride"]:
            sector = sector - geo["stride"]
            if dev < near_copies + far_set_start:
                dev = dev + far_set_size - near_copies
            else:
                dev = dev - near_copies
        chunk = sector // chunk_sectors
    vchunk = chunk * raid_disks + dev
    vchunk = vchunk // near_copies
    return vchunk * chunk_sectors + offset
