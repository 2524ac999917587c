"""The obviously-correct model of an array (a bytearray) and small helpers for driver
tests: blank member files, write payloads, opening members."""

from __future__ import annotations

import random
from pathlib import Path

from fuseraid.member.device import Member


class ArrayModel:
    """What an array of `size` bytes must read back: the bytes last written, else zeros."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, off: int, n: int) -> bytes:
        assert 0 <= off and off + n <= len(self.data)
        return bytes(self.data[off : off + n])

    def write(self, off: int, data: bytes) -> None:
        assert 0 <= off and off + len(data) <= len(self.data)
        self.data[off : off + len(data)] = data


def blank_file(path: Path, size: int) -> Path:
    """A sparse all-zero member file of `size` bytes."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def payload(seed: int, n: int) -> bytes:
    """n pseudo-random bytes, reproducible from seed (a write's content)."""
    return random.Random(seed).randbytes(n)


def open_member(path: Path | str) -> Member:
    return Member(path)
