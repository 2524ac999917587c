"""mdadm's layout names <-> md layout numbers per level (mdadm maps.c, util.c
parse_layout_10 / print_r10_layout), and mdadm's defaults."""

from __future__ import annotations

from fuseraid.errors import GeometryError
from fuseraid.layout.geometry import decode_raid10, encode_raid10

DEFAULT_CHUNK = 512 * 1024

# canonical names first: a number's name is its first entry (mdadm's map_num)
_R5 = (
    ("left-asymmetric", 0), ("right-asymmetric", 1), ("left-symmetric", 2),
    ("right-symmetric", 3), ("default", 2), ("la", 0), ("ra", 1), ("ls", 2), ("rs", 3),
    ("parity-first", 4), ("parity-last", 5),
    # mdadm accepts the DDF names for raid5 as aliases of the plain layouts
    ("ddf-zero-restart", 1), ("ddf-N-restart", 0), ("ddf-N-continue", 2),
)
_R6 = (
    ("left-asymmetric", 0), ("right-asymmetric", 1), ("left-symmetric", 2),
    ("right-symmetric", 3), ("default", 2), ("la", 0), ("ra", 1), ("ls", 2), ("rs", 3),
    ("parity-first", 4), ("parity-last", 5),
    ("ddf-zero-restart", 8), ("ddf-N-restart", 9), ("ddf-N-continue", 10),
    ("left-asymmetric-6", 16), ("right-asymmetric-6", 17), ("left-symmetric-6", 18),
    ("right-symmetric-6", 19), ("parity-first-6", 20),
)
_R0 = (("original", 1), ("alternate", 2), ("1", 1), ("2", 2), ("dangerous", 0))
_R4 = (("parity-last", 5), ("default", 0))

_TABLES = {0: _R0, 4: _R4, 5: _R5, 6: _R6}
_DEFAULTS = {0: 0, 1: 0, 4: 0, 5: 2, 6: 2, 10: encode_raid10(2)}


def default_layout(level: int) -> int:
    """mdadm's layout when --layout is not given (raid5/6 left-symmetric, raid10 n2)."""
    try:
        return _DEFAULTS[level]
    except KeyError:
        raise GeometryError(f"unknown RAID level {level}") from None


def layout_number(level: int, name: str) -> int:
    """The layout number for a name mdadm accepts for --layout at this level."""
    if level == 10:
        return _parse_raid10(name)
    table = _TABLES.get(level)
    if table is None:
        raise GeometryError(f"raid{level} takes no layout (got {name!r})")
    for n, num in table:
        if n.lower() == name.lower():
            return num
    raise GeometryError(f"unknown raid{level} layout {name!r}")


def _parse_raid10(name: str) -> int:
    # 'n', 'f' or 'o' followed by the number of copies (mdadm parse_layout_10)
    kind, digits = name[:1], name[1:]
    if kind not in ("n", "f", "o") or not digits.isdigit() or not 1 <= int(digits) <= 200:
        raise GeometryError(f"unknown raid10 layout {name!r} (expected n2, f2, o2, ...)")
    copies = int(digits)
    if kind == "n":
        return encode_raid10(copies)
    return encode_raid10(1, copies, offset=kind == "o")


def layout_name(level: int, number: int) -> str:
    """The name mdadm accepts for this layout (n2/f2/o2 style for raid10); raises
    GeometryError when mdadm has no name for it."""
    if level == 10:
        p = decode_raid10(number)
        if p.far_set_mode == 0 and p.near > 1 and p.far == 1 and not p.offset:
            return f"n{p.near}"
        if p.far_set_mode == 0 and p.near == 1 and p.far > 1:
            return f"{'o' if p.offset else 'f'}{p.far}"
        raise GeometryError(f"raid10 layout {number:#x} has no mdadm name")
    for n, num in _TABLES.get(level, ()):
        if num == number and n not in ("default", "1", "2"):
            return n
    raise GeometryError(f"raid{level} layout {number} has no mdadm name")


def describe_layout(level: int, number: int) -> str:
    """A human name for any layout number, as mdadm --examine prints it ("near=2",
    "left-symmetric"); never raises."""
    if level == 10:
        try:
            p = decode_raid10(number)
        except GeometryError:
            return f"unknown raid10 layout {number:#x}"
        parts = []
        if p.near != 1:
            parts.append(f"near={p.near}")
        if p.far != 1:
            parts.append(f"{'offset' if p.offset else 'far'}={p.far}")
        if not parts:
            parts.append("NO REDUNDANCY")
        if p.far_set_mode:
            parts.append(f"far-set mode {p.far_set_mode}")
        return ", ".join(parts)
    if level == 1:
        return "-" if number == 0 else f"unknown ({number})"
    if level == 4 and number == 0:
        return "parity-last"
    try:
        return layout_name(level, number)
    except GeometryError:
        return f"unknown ({number})"
