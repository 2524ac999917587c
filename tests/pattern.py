"""The md fixtures' content pattern ("secpat"), written from its definition in
tests/fixtures/README.md: array sector s is W(s) repeated 16 times, W(s) four
little-endian SplitMix64 outputs."""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def secpat(seed: int, length: int, offset: int = 0) -> bytes:
    """Bytes [offset, offset+length) of the pattern stream."""
    if length <= 0:
        return b""
    first, last = offset // 512, (offset + length - 1) // 512
    s = np.arange(first, last + 1, dtype=np.uint64)
    j = np.arange(4, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.uint64(4) * s[:, None] + j[None, :] + np.uint64(1)) * _GOLDEN
        words = _mix(z).astype("<u8")
    sectors = np.tile(words, (1, 16))  # W(s) repeated 16 times = 512 bytes per row
    raw = sectors.tobytes()
    start = offset - first * 512
    return raw[start : start + length]


def sha256_of(seed: int, length: int, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    for off in range(0, length, chunk):
        h.update(secpat(seed, min(chunk, length - off), off))
    return h.hexdigest()
