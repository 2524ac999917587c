"""The one size parser of the command line (create's --chunk, grow's sizes).

    parse_size("64K") == 65536      parse_size("1M") == 1 << 20     parse_size("2G")
    parse_size("64") == 65536       # a plain number is KiB, as mdadm reads --chunk
    parse_size("4096", default_unit=1) == 4096

Suffixes K, M, G, T (powers of 1024, case-insensitive; "KiB", "KB", "MiB", ... are read
the same). Bytes out. Zero is refused unless allow_zero=True; negative numbers,
fractions and unknown suffixes always are, with a one-line FuseraidError.
"""

from __future__ import annotations

from fuseraid.errors import FuseraidError

UNITS = "KMGT"


def parse_size(text: str, *, default_unit: int = 1024, allow_zero: bool = False) -> int:
    """`text` as a number of bytes: N<suffix> with K/M/G/T, or a plain N times
    `default_unit` (KiB by default, like mdadm's --chunk)."""
    t = str(text).strip().upper()
    if t.endswith("IB"):
        t = t[:-2]
    elif len(t) > 1 and t.endswith("B") and t[-2] in UNITS:
        t = t[:-1]
    mult = default_unit
    if t and t[-1] in UNITS:
        mult = 1024 ** (UNITS.index(t[-1]) + 1)
        t = t[:-1]
    if not t.isdigit():
        raise FuseraidError(f"bad size {text!r} (a number, optionally with K, M, G or T)")
    value = int(t) * mult
    if value == 0 and not allow_zero:
        raise FuseraidError(f"bad size {text!r}: must be more than 0")
    return value


__all__ = ["parse_size"]
