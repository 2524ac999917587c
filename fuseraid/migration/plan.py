"""Which migrations are allowed and how they run: the new geometry, instant (metadata
only) or one pass, the direction, the new data offsets, and for every window whether it
is safe without a backup. Pure arithmetic on Geometry; see docs/reshape.md for the rules
this module enforces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from math import lcm

from fuseraid.errors import GeometryError
from fuseraid.layout.geometry import Geometry, decode_raid10, encode_raid10, raid10_stride

KIB = 1024
MIB = 1 << 20
SB_FLOOR = 16 * KIB  # superblock (4 KiB at 4 KiB) + bad-block log: the lowest data offset
DEFAULT_CHUNK = 512 * KIB
MAX_WINDOW = 4 * MIB  # memory per window and how long foreground I/O may wait on it
TARGET_WINDOW = 4 * MIB  # what an offset move aims to allow per window
ALIGN = 4 * KIB  # data offsets stay page (and sector) aligned

FORWARD = "forward"
BACKWARD = "backward"

# raid5 layout -> the raid6 layout that adds Q on a new last disk without moving data
_R5_TO_R6 = {0: 16, 1: 17, 2: 18, 3: 19, 4: 20, 5: 5}
_R6_TO_R5 = {v: k for k, v in _R5_TO_R6.items()}
_PARITY_LAST = 5


@dataclass(frozen=True)
class Request:
    """What the user asked for; None keeps the current value (or md's default when the
    level changes)."""

    level: int | None = None
    raid_disks: int | None = None
    chunk: int | None = None
    layout: int | None = None
    # accept a raid10 far source pass that keeps one copy of the data not yet moved
    # (when neither room nor a backup file lets it keep both): never implied
    single_copy: bool = False


@dataclass(frozen=True)
class Plan:
    """A reshape: old -> new geometry. Offsets are per role of the larger role set
    (added members have the same offsets as the others)."""

    old: Geometry
    new: Geometry
    instant: bool
    direction: str  # FORWARD or BACKWARD (FORWARD for instant ones)
    old_offsets: tuple[int, ...]
    new_offsets: tuple[int, ...]
    unit: int  # array bytes: whole rows in both geometries
    max_window: int
    backup_needed: bool  # some window must be backed up (no room to move the offset)
    content: int  # array bytes that hold data before the reshape (old, or the cut size)
    rebuild_roles: tuple[int, ...] = ()  # instant changes: roles to (re)build afterwards

    @property
    def end(self) -> int:
        """Array bytes the pass covers: the whole new geometry."""
        return self.new.array_size

    @property
    def ident(self) -> str:
        """Names this reshape (old, new, offsets, direction): ties backup records to it."""
        return (f"{self.old}|{self.new}|{self.old_offsets[0]}|{self.new_offsets[0]}|"
                f"{self.direction}")

    @property
    def delta(self) -> int:
        return self.new_offsets[0] - self.old_offsets[0]

    @cached_property
    def near_only(self) -> bool:
        """A raid10 far target whose far part overlaps old data (any old byte holding
        content): the pass writes the near copies only, the far copies are made by the
        resync the finished array starts with (md's fresh raid10 state), and until then
        reads use the near copies. Judged on all the old data a resume could see (it
        does not know a cut size), so the start and every resume decide alike."""
        region = far_region(self.new)
        if region is None or self.instant:
            return False
        far = _shift([region], self.new_offsets[0])
        old = dev_ranges(self.old, 0, self.seen)
        return _overlap(far, _shift(old, self.old_offsets[0]))

    @cached_property
    def old_near_only(self) -> bool:
        """A raid10 far source whose far copies no order can keep with these offsets
        (the new layout needs their place before the data they copy has moved): the
        pass keeps the near copies only, so the data not yet moved has one copy until
        it is. Decided, like near_only, on what a resume sees: the pass with every old
        copy kept, walked over all the old data, has some window no rule allows."""
        if self.instant or far_stride(self.old) is None:
            return False
        trial = replace(self, content=self.seen)
        trial.__dict__["old_near_only"] = False  # walk it keeping the far copies
        return _pass_needs_backup(trial) is None

    @property
    def seen(self) -> int:
        """The old data a resume judges by: it does not know a cut size."""
        return min(self.old.array_size, self.new.array_size)

    def next_window(self, border: int) -> tuple[int, int, bool]:
        """The window after border: (start, end, needs_backup). Largest whole-unit window
        the safety rule allows without a backup; else one unit with a backup; raises
        GeometryError if neither is safe (plan_reshape never returns such a plan)."""
        return next_window(self, border)


# --------------------------------------------------------------------------- footprints

Ranges = list[tuple[int, int]]


def far_stride(g: Geometry) -> int | None:
    """Member bytes where a raid10 far layout's far copies begin (the near part is below);
    None for every other layout (its copies of a row are side by side)."""
    if g.level != 10:
        return None
    p = decode_raid10(g.layout)
    if p.far == 1 or p.offset:
        return None
    return raid10_stride(g)


def dev_ranges(g: Geometry, a: int, b: int, *, near_only: bool = False) -> Ranges:
    """The member bytes (relative to the data offset, on any member) that hold array bytes
    [a, b) in g, their parity and their copies, widened to whole rows, as sorted disjoint
    ranges [lo, hi): one range, except a raid10 far layout: its near part, then one range
    per far copy, `stride` further on each (near_only: the near part alone)."""
    if b <= a:
        return []
    if g.level == 1:
        return [(a, b)]
    c = g.chunk
    if g.level in (0, 4, 5, 6):
        if g.level == 0 and g.member_sizes is not None and len(set(g.role_sizes())) > 1:
            raise GeometryError("multi-zone raid0 cannot be reshaped; make the members equal")
        row = g.data_disks * c
        return [(a // row * c, -(-b // row) * c)]
    p = decode_raid10(g.layout)
    rd, n = g.raid_disks, p.near
    ka, kb = a // c, (b - 1) // c
    r0 = ka * n // rd  # member chunk row of the first chunk's first near copy
    r1 = (kb * n + n - 1) // rd + 1  # past the last chunk's last near copy
    stride = far_stride(g)
    if stride is None:  # near (far 1) or offset: the far copies follow in the next rows
        return [(r0 * p.far * c, r1 * p.far * c)]
    parts = 1 if near_only else p.far
    return [(f * stride + r0 * c, f * stride + r1 * c) for f in range(parts)]


def dev_extent(g: Geometry, a: int, b: int) -> tuple[int, int]:
    """[lo, hi): the hull of dev_ranges (for a far layout it spans the gap between its
    near and far parts too)."""
    r = dev_ranges(g, a, b)
    return (r[0][0], r[-1][1]) if r else (0, 0)


def _shift(ranges: Ranges, by: int) -> Ranges:
    return [(lo + by, hi + by) for lo, hi in ranges]


def _overlap(xs: Ranges, ys: Ranges) -> bool:
    return any(a < d and c < b for a, b in xs for c, d in ys)


def far_region(g: Geometry) -> tuple[int, int] | None:
    """[lo, hi): the member bytes of g's far copies (relative to the data offset), or
    None when g has no separate far part."""
    stride = far_stride(g)
    return None if stride is None else (stride, g.dev_used)


def unit_of(g: Geometry) -> int:
    """Array bytes of the smallest whole-row period of g."""
    if g.level == 1:
        return ALIGN
    if g.level in (0, 4, 5, 6):
        return g.data_disks * g.chunk
    n = decode_raid10(g.layout).near
    return lcm(g.raid_disks, n) // n * g.chunk


def reshape_unit(old: Geometry, new: Geometry) -> int:
    """Array bytes every window boundary is a multiple of: whole rows in both geometries;
    between parity levels, whole stripes of the larger chunk in both (md's alignment of
    reshape_position, raid5.c raid5_run), so md can resume what we leave half done."""
    if old.level in (4, 5, 6) and new.level in (4, 5, 6):
        big = max(old.chunk, new.chunk)
        return lcm(old.data_disks * big, new.data_disks * big)
    return lcm(unit_of(old), unit_of(new))


def _per_device(g: Geometry) -> float:
    """Array bytes per member byte a pass's front moves by (for sizing the offset move):
    a far layout's near and far parts each advance at near-copies density."""
    if g.level == 1:
        return 1
    if g.level == 10:
        p = decode_raid10(g.layout)
        return g.raid_disks / (p.near if far_stride(g) is not None else p.copies)
    return g.data_disks


# --------------------------------------------------------------------------- safety rule


def window_safe(plan: Plan, start: int, end: int, backed_up: bool) -> bool:
    """Does copying array bytes [start, end) old -> new keep every not yet migrated old
    byte intact (backed_up: the window's own old bytes are in the backup area)? The new
    layout's writes (near copies only on a near-only pass) must miss every member byte
    holding old data still needed after a crash, every copy of it included (a far
    source's far copies are live: old-side writes update them)."""
    content = plan.content
    if plan.direction == FORWARD:
        # old data still needed: from the window (or past it, when backed up) to the
        # content's end; nothing is needed beyond the content
        keep = (end if backed_up else start, content)
    else:
        keep = (0, min(start if backed_up else end, content))  # below the window
    if keep[1] <= keep[0]:
        return True
    written = _shift(dev_ranges(plan.new, start, end, near_only=plan.near_only),
                     plan.new_offsets[0])
    needed = _shift(dev_ranges(plan.old, *keep, near_only=plan.old_near_only),
                    plan.old_offsets[0])
    return not _overlap(written, needed)


def next_window(plan: Plan, border: int) -> tuple[int, int, bool]:
    u = plan.unit
    if plan.direction == FORWARD:
        if border >= plan.end:
            raise GeometryError("the reshape is already complete")
        first_end = min(plan.end, (border // u + 1) * u)

        def window(k: int) -> tuple[int, int]:
            return border, min(plan.end, first_end + (k - 1) * u)
    else:
        if border <= 0:
            raise GeometryError("the reshape is already complete")
        first_start = (border - 1) // u * u

        def window(k: int) -> tuple[int, int]:
            return max(0, first_start - (k - 1) * u), border

    kmax = max(1, plan.max_window // u)
    span = plan.end - border if plan.direction == FORWARD else border
    kmax = min(kmax, -(-span // u) + 1)
    # largest k with a safe window (safety is monotone in k: a bigger window only
    # writes further into the old side)
    if window_safe(plan, *window(1), False):
        lo, hi = 1, kmax
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if window_safe(plan, *window(mid), False):
                lo = mid
            else:
                hi = mid - 1
        s, e = window(lo)
        return s, e, False
    s, e = window(1)
    if window_safe(plan, s, e, True):
        return s, e, True
    raise GeometryError(
        f"window [{s}, {e}) cannot be migrated safely: the new layout would overwrite "
        "data not yet copied")


# --------------------------------------------------------------------------- the plan


def _default_layout(level: int) -> int:
    return {0: 0, 1: 0, 4: 0, 5: 2, 6: 2, 10: encode_raid10(2)}[level]


def _parity_count(level: int) -> int:
    return {4: 1, 5: 1, 6: 2}.get(level, 0)


def target_geometry(old: Geometry, req: Request) -> Geometry:
    """The geometry the request names, with md's defaults for what it leaves out:
    a level change keeps the number of data disks (so the capacity) unless
    raid_disks is given, and takes md's default layout and chunk."""
    level = old.level if req.level is None else req.level
    same = level == old.level
    if req.layout is not None:
        layout = req.layout
    elif same:
        layout = old.layout
    elif old.level == 5 and level == 6 and old.layout == _PARITY_LAST:
        layout = _PARITY_LAST
    else:
        layout = _default_layout(level)
    if level == 1:
        chunk = 0
    elif req.chunk is None and old.level == 1 and level == 5:
        # md's raid1 -> raid5 takeover: the largest chunk up to 64 KiB dividing the size
        chunk = 64 * KIB
        while chunk > 4 * KIB and old.dev_size % chunk:
            chunk //= 2
    elif req.chunk is not None:
        chunk = req.chunk
    elif old.chunk:
        chunk = old.chunk
    else:
        chunk = DEFAULT_CHUNK
    if req.raid_disks is not None:
        disks = req.raid_disks
    elif same:
        disks = old.raid_disks
    elif level == 1:
        disks = 2
    elif level == 10:
        disks = old.data_disks * decode_raid10(layout).copies
    elif level == 0:
        disks = old.data_disks
    else:
        disks = old.data_disks + _parity_count(level)
    dev_size = old.dev_size
    if chunk:
        dev_size = dev_size // chunk * chunk
    if dev_size <= 0:
        raise GeometryError(f"members too small for chunk {chunk}")
    member_sizes = old.member_sizes if (level == 0 and same and disks == old.raid_disks) else None
    return Geometry(level, disks, layout, chunk, dev_size, member_sizes)


def instant_change(old: Geometry, new: Geometry) -> tuple[int, ...] | None:
    """If new places every data byte where old has it (md's takeovers), the roles that
    must be rebuilt afterwards (possibly none); else None."""
    if (old.chunk and new.chunk and old.chunk != new.chunk) or old.dev_size != new.dev_size:
        return None
    lo, ln, ro, rn = old.level, new.level, old.raid_disks, new.raid_disks
    if lo == 1 and ln == 1:
        return tuple(range(ro, rn))
    if {lo, ln} <= {1, 5} and ro == rn == 2:
        return ()  # one data and one parity (= copy) per row: a mirror
    if lo == 5 and ln == 6 and rn == ro + 1 and _R5_TO_R6.get(old.layout) == new.layout:
        return (rn - 1,)
    if lo == 4 and ln == 6 and rn == ro + 1 and new.layout == _PARITY_LAST:
        return (rn - 1,)
    if lo == 6 and ln == 5 and rn == ro - 1 and _R6_TO_R5.get(old.layout) == new.layout:
        return ()
    if lo == 6 and ln == 4 and rn == ro - 1 and old.layout == _PARITY_LAST:
        return ()
    parity_last = (ln == 4) or (ln == 5 and new.layout == _PARITY_LAST)
    if lo == 0 and parity_last and rn == ro + 1 and old.member_sizes is None:
        return (rn - 1,)
    was_parity_last = (lo == 4) or (lo == 5 and old.layout == _PARITY_LAST)
    if was_parity_last and ln == 0 and rn == ro - 1:
        return ()
    if was_parity_last and parity_last and rn == ro and lo != ln:
        return ()
    return None


def plan_reshape(
    old: Geometry,
    old_offsets: Sequence[int],
    member_bytes: Sequence[int],
    req: Request,
    *,
    exposed: int | None = None,
    floor: int = SB_FLOOR,
    backup: bool = False,
    max_window: int = MAX_WINDOW,
) -> Plan:
    """Plan old -> the requested geometry.

    old_offsets: each old role's data offset (bytes). member_bytes: the size of each
    member of the larger role set, in role order (added members after the old ones).
    exposed: the array size currently exposed (a cut size before a shrink); default the
    old array size. floor: the lowest byte a data area may start at. backup: a backup
    area is available for windows that cannot be made safe by moving the offset.
    Raises GeometryError with a one-line reason when the change is impossible."""
    new = target_geometry(old, req)
    roles = max(old.raid_disks, new.raid_disks)
    if len(old_offsets) != old.raid_disks:
        raise GeometryError(f"need {old.raid_disks} data offsets, got {len(old_offsets)}")
    if len(member_bytes) < roles:
        raise GeometryError(
            f"raid{new.level} on {new.raid_disks} disks needs {roles - old.raid_disks} "
            f"more member(s); add them with --add")
    if len(set(old_offsets)) != 1:
        raise GeometryError("members have different data offsets; reshape needs them equal")
    o_old = old_offsets[0]
    exposed = old.array_size if exposed is None else exposed
    if exposed > old.array_size:
        raise GeometryError(f"exposed size {exposed} exceeds the array ({old.array_size})")
    if new == old:
        raise GeometryError("nothing to change: the array already has this geometry")
    if new.array_size < exposed:
        raise GeometryError(
            f"the new geometry holds {new.array_size} bytes but the array exposes {exposed}; "
            f"shrink it first with --array-size {new.array_size}")
    for role in range(roles):
        if o_old + new.dev_used > member_bytes[role]:
            raise GeometryError(
                f"member {role} ({member_bytes[role]} bytes) is too small for the new "
                f"geometry ({o_old + new.dev_used} bytes needed)")
    offsets = (o_old,) * roles
    rebuild = instant_change(old, new)
    if rebuild is not None:
        return Plan(old, new, True, FORWARD, offsets, offsets, unit_of(new), max_window,
                    False, exposed, rebuild)
    for g in (old, new):
        dev_ranges(g, 0, 1)  # refuses the layouts that cannot be reshaped
    unit = reshape_unit(old, new)
    max_window = max(unit, max_window // unit * unit)
    content = min(exposed, old.array_size)
    candidates = _offset_candidates(old, new, o_old, member_bytes[:roles], floor, unit)
    base = Plan(old, new, False, FORWARD, offsets, offsets, unit, max_window, False, content)
    # first of each kind, by (needs a backup, drops the old far copies); the first that
    # needs neither wins at once; keeping redundancy beats sparing a backup
    found: dict[tuple[bool, bool], Plan] = {}
    for direction, o_new in candidates:
        p = replace(base, direction=direction, new_offsets=(o_new,) * roles)
        needs = _pass_needs_backup(p)
        if needs is None:
            continue
        drops = p.old_near_only
        p = replace(p, backup_needed=needs)
        if not needs and not drops:
            return p
        found.setdefault((needs, drops), p)
    order = [(True, False), (False, True), (True, True)] if backup else [(False, True)]
    for kind in order:
        if kind in found:
            if kind[1] and not req.single_copy:
                raise GeometryError(
                    "this raid10 far array has no room to keep both copies while it moves: "
                    "give --backup-file FILE to keep them, or --single-copy to accept one "
                    "copy of the data not yet moved")
            return found[kind]
    best = found.get((True, False)) or found.get((True, True))
    if best is None:
        if far_stride(old) is not None or far_stride(new) is not None:
            raise GeometryError(
                "no safe order for raid10 far copies in place: the members need free room "
                "before or after the data to move the data offset")
        raise GeometryError("no safe order to migrate this array (internal planning error)")
    room = -(-unit // int(_per_device(new)) // ALIGN) * ALIGN
    raise GeometryError(
        f"no room to move the data offset (need {room // KIB} KiB free before or after "
        "the data on every member); give --backup-file FILE")


def check_far_target(plan: Plan, missing: Sequence[int]) -> None:
    """Refuse a pass that keeps raid10 near copies only with roles missing: a near-only
    target (plan.near_only; missing in the new geometry) or a source whose far copies
    are dropped (plan.old_near_only; missing in the old one). Rows whose near copy has
    no member would have no valid copy, and the resync after a near-only pass needs
    every member."""
    gone = sorted(r for r in missing if r < plan.new.raid_disks)
    if plan.near_only and gone:
        raise GeometryError(
            f"raid10 far copies are made by a resync after this reshape, which needs every "
            f"member: role(s) {', '.join(map(str, gone))} missing (add or rebuild first)")
    gone = sorted(r for r in missing if r < plan.old.raid_disks)
    if plan.old_near_only and gone:
        raise GeometryError(
            f"this reshape keeps only the near copies of raid10 far data not yet moved (no "
            f"room for both): role(s) {', '.join(map(str, gone))} missing, rebuild first or "
            "give the members room to move the data offset")


def _offset_candidates(
    old: Geometry, new: Geometry, o_old: int, sizes: Sequence[int], floor: int, unit: int,
) -> list[tuple[str, int]]:
    """Data offset moves to try, best first: for a raid10 far target, the moves that
    put its whole far part clear of the old data (both copies written in the pass, no
    redundancy gap) when the room allows; then forward/down when the new geometry packs
    more data per member byte (it then never catches up with the reads), else
    backward/up; then the other; in place last (needs a backup)."""
    want = -(-max(unit, min(TARGET_WINDOW, new.array_size)) // int(_per_device(new)))
    want = -(-want // ALIGN) * ALIGN
    # prefer using at most half the free room, so a later reshape can move it again;
    # then all of it; in place (with a backup) last
    room_down = (o_old - floor) // ALIGN * ALIGN
    room_up = (min(sizes) - o_old - new.dev_used) // ALIGN * ALIGN
    half_down = min(want, room_down // 2 // ALIGN * ALIGN)
    half_up = min(want, room_up // 2 // ALIGN * ALIGN)
    full_down, full_up = min(want, room_down), min(want, room_up)
    fwd = [(FORWARD, o_old - d) for d in dict.fromkeys((half_down, full_down)) if d > 0]
    bwd = [(BACKWARD, o_old + u) for u in dict.fromkeys((half_up, full_up)) if u > 0]
    if _per_device(new) >= _per_device(old):
        first, second = fwd, bwd
    else:
        first, second = bwd, fwd
    moves = first[:1] + second[:1] + first[1:] + second[1:]
    moves += [(FORWARD, o_old), (BACKWARD, o_old)]
    seen = min(old.array_size, new.array_size)  # what Plan.near_only judges by
    return _far_clear_moves(old, new, o_old, seen, room_down, room_up) + moves


def _far_clear_moves(old: Geometry, new: Geometry, o_old: int, content: int,
                     room_down: int, room_up: int) -> list[tuple[str, int]]:
    """Offsets (each with both directions) that put a far target's far part entirely
    above or below the old content's footprint, within the room; none when the new
    geometry has no far part or it is already clear in place."""
    region = far_region(new)
    old_fp = dev_ranges(old, 0, content)
    if region is None or not old_fp or not _overlap([region], old_fp):
        return []
    out = []
    hi = old_fp[-1][1]
    # the far part above the old data (the near writes may still fit the rule), or the
    # whole new data area above it (they always do); or the whole of it below
    for up in dict.fromkeys((hi - region[0], hi)):
        up = -(-up // ALIGN) * ALIGN
        if 0 < up <= room_up:
            out += [(BACKWARD, o_old + up), (FORWARD, o_old + up)]
    down = -(-(region[1] - old_fp[0][0]) // ALIGN) * ALIGN
    if 0 < down <= room_down:
        out += [(FORWARD, o_old - down), (BACKWARD, o_old - down)]
    return out


def _pass_needs_backup(p: Plan) -> bool | None:
    """Walk the whole pass window by window: None if some window cannot be made safe,
    else whether any window needs a backup."""
    border = 0 if p.direction == FORWARD else p.end
    needs = False
    try:
        while (border < p.end) if p.direction == FORWARD else (border > 0):
            s, e, b = next_window(p, border)
            needs |= b
            border = e if p.direction == FORWARD else s
    except GeometryError:
        return None
    return needs
