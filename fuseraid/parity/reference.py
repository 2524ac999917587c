"""Slow, obviously correct GF(2^8) parity: the oracle the C kernel is tested against.

Field: GF(2^8) with reducing polynomial x^8+x^4+x^3+x^2+1 (0x11d) and generator 2, as in
Linux md's RAID6 (lib/raid6). Everything here works byte by byte on Python ints.
"""

from collections.abc import Sequence

POLY = 0x11D


def gf_mul(a: int, b: int) -> int:
    """Carry-less multiply a*b reduced by POLY (shift-and-add, no tables)."""
    r = 0
    while b:
        if b & 1:
            r ^= a
        b >>= 1
        a <<= 1
        if a & 0x100:
            a ^= POLY
    return r


def gf_pow(a: int, n: int) -> int:
    r = 1
    for _ in range(n % 255 if a else n):
        r = gf_mul(r, a)
    return r


def gf_inv(a: int) -> int:
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return gf_pow(a, 254)  # a^255 == 1


def xor_blocks(srcs: Sequence[bytes], length: int) -> bytes:
    out = bytearray(length)
    for s in srcs:
        for i in range(length):
            out[i] ^= s[i]
    return bytes(out)


def gen_pq(srcs: Sequence[bytes | None], length: int) -> tuple[bytes, bytes]:
    """P = XOR of the blocks, Q = sum g^i * srcs[i]; None entries are zero blocks."""
    p = bytearray(length)
    q = bytearray(length)
    for i, s in enumerate(srcs):
        if s is None:
            continue
        c = gf_pow(2, i)
        for j in range(length):
            p[j] ^= s[j]
            q[j] ^= gf_mul(c, s[j])
    return bytes(p), bytes(q)


def rec_data_data(
    srcs: Sequence[bytes | None], p: bytes, q: bytes, x: int, y: int
) -> tuple[bytes, bytes]:
    """Solve D_x ^ D_y = Pxy, g^x D_x ^ g^y D_y = Qxy for the two lost blocks."""
    length = len(p)
    rest = [None if i in (x, y) else s for i, s in enumerate(srcs)]
    p0, q0 = gen_pq(rest, length)
    gx, gy = gf_pow(2, x), gf_pow(2, y)
    inv = gf_inv(gx ^ gy)
    dx = bytearray(length)
    dy = bytearray(length)
    for j in range(length):
        pxy = p[j] ^ p0[j]
        qxy = q[j] ^ q0[j]
        # D_x = (Qxy ^ g^y Pxy) / (g^x ^ g^y)
        dx[j] = gf_mul(inv, qxy ^ gf_mul(gy, pxy))
        dy[j] = pxy ^ dx[j]
    return bytes(dx), bytes(dy)


def rec_data_q(srcs: Sequence[bytes | None], q: bytes, x: int) -> bytes:
    """D_x = (Q ^ Q of the other blocks) / g^x."""
    length = len(q)
    rest = [None if i == x else s for i, s in enumerate(srcs)]
    _, q0 = gen_pq(rest, length)
    inv = gf_inv(gf_pow(2, x))
    return bytes(gf_mul(inv, q[j] ^ q0[j]) for j in range(length))
