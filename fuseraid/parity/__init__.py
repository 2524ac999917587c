"""md RAID6 parity arithmetic: a C kernel (csrc/) bound with cffi.

Field: GF(2^8), polynomial 0x11d, generator g = 2, exactly as Linux md (lib/raid6).
Every function takes buffer-protocol objects (bytes, bytearray, memoryview, contiguous
numpy arrays) that all have the same length in bytes; outputs must be writable. Buffers
are passed to C without copies and every call releases the GIL, so worker threads run
them in parallel. Any length works (vector kernels finish the tail portably).

An output may be exactly the same buffer as an input (every kernel reads all inputs at a
position before writing that position) but may not partially overlap one; outputs may
not overlap each other. Violations, unequal lengths and bad indexes raise ParityError.

- ``xor_into(dst, srcs)``: dst = XOR of srcs (an empty srcs gives zeros). RAID4/5 P,
  and rebuilding any one lost block of a RAID4/5/6 stripe from the rest plus P.
- ``gen_pq(srcs, p, q)``: ``srcs[i]`` is the data block with generator exponent i (its Q
  slot), or None for an all-zero block (DDF gaps); P = XOR of srcs, Q = sum g^i * srcs[i].
  Pass p or q as None to skip computing it.
- ``rec_data_data(srcs, p, q, x, y, out_x, out_y)``: data blocks x and y (exponents,
  x != y) are lost; ``srcs[x]``/``srcs[y]`` are ignored (may be None or even out_x/out_y
  themselves). Rebuilds D_x and D_y from the other data plus P and Q (md's
  raid6_2data_recov).
- ``rec_data_q(srcs, q, x, out_x)``: data block x and P are lost; rebuilds D_x from the
  other data plus Q (md's raid6_datap_recov). Recompute P afterwards with xor_into.
- The remaining two-failure cases need no entry point of their own: data+Q lost ->
  xor_into (from P) then gen_pq(q=...); P+Q lost -> gen_pq.
- ``recover_one(srcs, p, q, lost, out)`` and
  ``recover_two(srcs, p, q, lost_a, lost_b, out_a, out_b)``: convenience over the above
  for a RAID6 stripe with any one or two blocks lost. A lost block is named by its data
  index (generator exponent) or by "p" or "q"; inputs of lost blocks are ignored (pass
  None). recover_one of a data block uses P when given, else Q.
- ``mul_into(dst, src, c)``: dst = c * src over the field, byte by byte.
- ``gf_mul(a, b)``, ``gf_pow2(e)``, ``gf_inv(a)``: scalar field helpers (ints 0..255).
- ``KERNEL_IMPL``: name of the implementation in use ("avx512-gfni", "avx512bw", "avx2",
  "ssse3", "portable"); chosen at import as the fastest the CPU runs, or forced with the
  environment variable ``FUSERAID_KERNEL=<name>`` (an unknown or unsupported name raises
  ParityError at import).
- ``IMPLEMENTATIONS``: every implementation name, fastest first;
  ``supported_implementations()`` the ones this CPU runs; ``use_implementation(name)``
  switches the whole process (tests and benchmarks use it) and updates KERNEL_IMPL.
"""

import os
from collections.abc import Sequence
from typing import Any

from fuseraid.errors import FuseraidError
from fuseraid.parity._kernel import ffi, lib

__all__ = [
    "IMPLEMENTATIONS",
    "KERNEL_IMPL",
    "MAX_BLOCKS",
    "ParityError",
    "gen_pq",
    "gf_inv",
    "gf_mul",
    "gf_pow2",
    "mul_into",
    "rec_data_data",
    "rec_data_q",
    "recover_one",
    "recover_two",
    "supported_implementations",
    "use_implementation",
    "xor_into",
]

Buffer = Any  # anything exposing the buffer protocol as contiguous bytes

IMPLEMENTATIONS: tuple[str, ...] = ("avx512-gfni", "avx512bw", "avx2", "ssse3", "portable")
# Exponents live in Z/255: beyond 255 blocks two slots would share a coefficient.
MAX_BLOCKS = 255


class ParityError(FuseraidError, ValueError):
    """Bad arguments to a parity function (lengths, indexes, overlapping buffers)."""


def supported_implementations() -> list[str]:
    return [name for name in IMPLEMENTATIONS if lib.fr_impl_supported(name.encode())]


def use_implementation(name: str) -> None:
    """Make every later call in this process use implementation `name`."""
    global KERNEL_IMPL
    if lib.fr_impl_select(name.encode()) != 0:
        raise ParityError(
            f"parity kernel {name!r} is not available here "
            f"(supported: {', '.join(supported_implementations())})"
        )
    KERNEL_IMPL = name


def _current() -> str:
    return ffi.string(lib.fr_impl_name()).decode()


_forced = os.environ.get("FUSERAID_KERNEL")
if _forced:
    use_implementation(_forced)
KERNEL_IMPL: str = _current()


_U8 = ffi.typeof("uint8_t[]")
_PTRS = ffi.typeof("uint8_t *[]")
_ERRORS = {
    lib.FR_EOVERLAP_OUT: "output buffers overlap each other",
    lib.FR_EOVERLAP_IN: "an output buffer partially overlaps an input buffer",
    lib.FR_EARG: "bad block count or index",
}


def _inp(buf: Buffer, what: str) -> Any:
    try:
        return ffi.from_buffer(_U8, buf)
    except (TypeError, BufferError, ValueError) as e:
        raise ParityError(f"{what} must be a contiguous buffer: {e}") from e


def _out(buf: Buffer, what: str) -> Any:
    try:
        return ffi.from_buffer(_U8, buf, require_writable=True)
    except (TypeError, BufferError, ValueError) as e:
        raise ParityError(f"{what} must be a writable contiguous buffer: {e}") from e


def _srcs(srcs: Sequence[Buffer | None], skip: tuple[int, ...] = ()) -> list[Any]:
    """cdata views of the blocks (None for zero or ignored blocks)."""
    if len(srcs) > MAX_BLOCKS:
        raise ParityError(f"{len(srcs)} blocks given, at most {MAX_BLOCKS} are supported")
    fb = ffi.from_buffer
    try:  # hot path: one comprehension, error messages only when something is wrong
        return [None if s is None or i in skip else fb(_U8, s) for i, s in enumerate(srcs)]
    except (TypeError, BufferError, ValueError):
        for i, s in enumerate(srcs):
            if s is not None and i not in skip:
                _inp(s, f"block {i}")
        raise


def _length(views: Sequence[Any], names: Sequence[str]) -> int:
    """The common length of all views (None entries skipped), or a ParityError.
    names[i] names views[i]; blocks past the names are called "block k"."""
    lengths = {len(v) for v in views if v is not None}
    if len(lengths) <= 1:
        return lengths.pop() if lengths else 0
    labels = [*names, *(f"block {i}" for i in range(len(views) - len(names)))]
    first = next((v, n) for v, n in zip(views, labels, strict=True) if v is not None)
    for v, name in zip(views, labels, strict=True):
        if v is not None and len(v) != len(first[0]):
            raise ParityError(
                f"{name} is {len(v)} bytes but {first[1]} is {len(first[0])}; lengths must match"
            )
    raise AssertionError("unreachable")


def _ptrs(views: list[Any]) -> Any:
    return ffi.new(_PTRS, [ffi.NULL if v is None else v for v in views] or [ffi.NULL])


def _done(rc: int) -> None:
    if rc:
        raise ParityError(_ERRORS.get(rc, f"parity kernel error {rc}"))


def _index(i: int, n: int, what: str) -> int:
    if not isinstance(i, int) or not 0 <= i < n:
        raise ParityError(f"{what} = {i!r} is not a block index in 0..{n - 1}")
    return i


def xor_into(dst: Buffer, srcs: Sequence[Buffer]) -> None:
    """dst = XOR of srcs."""
    d = _out(dst, "dst")
    views = _srcs(srcs)
    if any(v is None for v in views):
        raise ParityError("xor_into: a source block is None")
    n = _length([d, *views], ["dst"])
    _done(lib.fr_xor(d, _ptrs(views), len(views), n))


def gen_pq(srcs: Sequence[Buffer | None], p: Buffer | None, q: Buffer | None) -> None:
    """P = XOR of srcs, Q = sum 2^i * srcs[i] (None entries are zero blocks)."""
    pc = None if p is None else _out(p, "p")
    qc = None if q is None else _out(q, "q")
    views = _srcs(srcs)
    n = _length([pc, qc, *views], ["p", "q"])
    _done(
        lib.fr_gen_pq(
            _ptrs(views),
            len(views),
            ffi.NULL if pc is None else pc,
            ffi.NULL if qc is None else qc,
            n,
        )
    )


def rec_data_data(
    srcs: Sequence[Buffer | None],
    p: Buffer,
    q: Buffer,
    x: int,
    y: int,
    out_x: Buffer,
    out_y: Buffer,
) -> None:
    """Rebuild lost data blocks x and y from the other blocks plus P and Q."""
    k = len(srcs)
    _index(x, k, "x")
    _index(y, k, "y")
    if x == y:
        raise ParityError(f"rec_data_data needs two different lost blocks, got x = y = {x}")
    xc, yc = _out(out_x, "out_x"), _out(out_y, "out_y")
    pc, qc = _inp(p, "p"), _inp(q, "q")
    views = _srcs(srcs, skip=(x, y))
    n = _length([xc, yc, pc, qc, *views], ["out_x", "out_y", "p", "q"])
    _done(lib.fr_rec_data_data(_ptrs(views), k, pc, qc, x, y, xc, yc, n))


def rec_data_q(srcs: Sequence[Buffer | None], q: Buffer, x: int, out_x: Buffer) -> None:
    """Rebuild lost data block x from the other blocks plus Q (P lost too)."""
    k = len(srcs)
    _index(x, k, "x")
    xc, qc = _out(out_x, "out_x"), _inp(q, "q")
    views = _srcs(srcs, skip=(x,))
    n = _length([xc, qc, *views], ["out_x", "q"])
    _done(lib.fr_rec_data_q(_ptrs(views), k, qc, x, xc, n))


Lost = int | str  # a data index (generator exponent) or "p" or "q"


def _rest(srcs: Sequence[Buffer | None], *lost: Lost) -> list[Buffer | None]:
    return [None if i in lost else s for i, s in enumerate(srcs)]


def recover_one(
    srcs: Sequence[Buffer | None], p: Buffer | None, q: Buffer | None, lost: Lost, out: Buffer
) -> None:
    """Rebuild one lost block (data index, "p" or "q") of a stripe into out."""
    if lost == "p":
        gen_pq(srcs, out, None)
    elif lost == "q":
        gen_pq(srcs, None, out)
    else:
        x = _index(lost, len(srcs), "lost")
        if p is not None:
            rest = _rest(srcs, x)
            rest[x] = p  # D_x = P ^ (XOR of the other data); None gaps count as zeros
            gen_pq(rest, out, None)
        elif q is not None:
            rec_data_q(srcs, q, x, out)
        else:
            raise ParityError("recover_one: a lost data block needs P or Q")


def recover_two(
    srcs: Sequence[Buffer | None],
    p: Buffer | None,
    q: Buffer | None,
    lost_a: Lost,
    lost_b: Lost,
    out_a: Buffer,
    out_b: Buffer,
) -> None:
    """Rebuild two lost blocks (each a data index, "p" or "q") into out_a and out_b."""
    if lost_a == lost_b:
        raise ParityError(f"recover_two needs two different lost blocks, got {lost_a!r} twice")
    if isinstance(lost_a, str) and not isinstance(lost_b, str):
        lost_a, lost_b, out_a, out_b = lost_b, lost_a, out_b, out_a
    for lost in (lost_a, lost_b):
        if isinstance(lost, str) and lost not in ("p", "q"):
            raise ParityError(f"lost block {lost!r} is neither a data index nor 'p'/'q'")
    if isinstance(lost_a, str):  # P and Q
        pq = (out_a, out_b) if lost_a == "p" else (out_b, out_a)
        gen_pq(srcs, *pq)
        return
    x = _index(lost_a, len(srcs), "lost_a")
    if not isinstance(lost_b, str):
        if p is None or q is None:
            raise ParityError("recover_two: two lost data blocks need both P and Q")
        rec_data_data(srcs, p, q, x, _index(lost_b, len(srcs), "lost_b"), out_a, out_b)
    elif lost_b == "p":  # data + P: D_x from Q, then P afresh
        if q is None:
            raise ParityError("recover_two: data and P lost needs Q")
        rec_data_q(srcs, q, x, out_a)
        rest = list(srcs)
        rest[x] = out_a
        gen_pq(rest, out_b, None)
    else:  # data + Q: D_x from P, then Q afresh
        if p is None:
            raise ParityError("recover_two: data and Q lost needs P")
        recover_one(srcs, p, None, x, out_a)
        rest = list(srcs)
        rest[x] = out_a
        gen_pq(rest, None, out_b)


def mul_into(dst: Buffer, src: Buffer, c: int) -> None:
    """dst = c * src over GF(2^8)."""
    d, s = _out(dst, "dst"), _inp(src, "src")
    n = _length([d, s], ["dst", "src"])
    _done(lib.fr_mul(d, s, _byte(c, "c"), n))


def _byte(v: int, what: str) -> int:
    if not isinstance(v, int) or not 0 <= v <= 255:
        raise ParityError(f"{what} = {v!r} is not a field element (0..255)")
    return v


def gf_mul(a: int, b: int) -> int:
    return int(lib.fr_gf_mul(_byte(a, "a"), _byte(b, "b")))


def gf_pow2(e: int) -> int:
    """g^e for the generator g = 2 (any integer e; exponents are taken mod 255)."""
    return int(lib.fr_gf_pow2(e % 255))


def gf_inv(a: int) -> int:
    if _byte(a, "a") == 0:
        raise ParityError("0 has no inverse in GF(2^8)")
    return int(lib.fr_gf_inv(a))
