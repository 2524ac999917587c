"""fuseraid's half of the interop tests, through the engine's public API only:
assemble (read-only) and read an array; create one and write the pattern into it.
Skips (pytest.importorskip) while the engine modules do not exist yet."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mdcases as mc
import pytest
import trio
from pattern import secpat

STEP = 1 << 20


@contextlib.asynccontextmanager
async def opened(paths: list[Path], *, readonly: bool) -> AsyncIterator[Any]:
    """The array over paths, closed (flushed, marked clean) on exit."""
    asm = pytest.importorskip("fuseraid.engine.assemble")
    names = [str(p) for p in paths]
    if hasattr(asm, "open_array"):
        async with asm.open_array(names, readonly=readonly) as array:
            yield array
        return
    array = await asm.assemble(names, readonly=readonly)
    try:
        yield array
    finally:
        with trio.CancelScope(shield=True):
            await array.close()


def read_back(paths: list[Path]) -> tuple[int, str, list[tuple[int, int]]]:
    """Assemble read-only and read the whole array: (size, sha256, bad spans), where bad
    spans are (offset, length) of reads that differ from the pattern, including some
    reads at odd offsets and lengths that straddle chunk and row boundaries."""

    async def run() -> tuple[int, str, list[tuple[int, int]]]:
        async with opened(paths, readonly=True) as a:
            size = int(a.size)
            h = hashlib.sha256()
            for off in range(0, size, STEP):
                h.update(await a.read(off, min(STEP, size - off)))
            bad = []
            for off, n in _odd_spans(size):
                if await a.read(off, n) != secpat(mc.SEED, n, off):
                    bad.append((off, n))
            return size, h.hexdigest(), bad

    return trio.run(run)


def _odd_spans(size: int) -> list[tuple[int, int]]:
    """Deterministic unaligned reads spread over the array."""
    spans = []
    for k, n in enumerate((1, 511, 4097, 65537, 200_003, 1_048_583)):
        off = (size * (2 * k + 1)) // 13 - 7 * k - 1
        off = max(0, min(off, size - n))
        spans.append((off, min(n, size)))
    return spans


def create_and_fill(case: mc.Case, paths: list[Path]) -> int:
    """fuseraid creates the case's array over all its roles and writes the pattern over
    the whole array in pieces of varied size (full and partial rows); returns the size."""
    create_mod = pytest.importorskip("fuseraid.engine.create")

    async def run() -> int:
        chunk = None if case.chunk_kib is None or case.level == 1 else case.chunk_kib * 1024
        await create_mod.create(
            [str(p) for p in paths], level=case.level, raid_disks=case.disks, chunk=chunk,
            layout=case.layout_number, name=case.md_name,
        )
        async with opened(paths, readonly=False) as a:
            size = int(a.size)
            pieces = (STEP, 4096 + 512, 300 * 1024, 512, 3 * STEP + 4096)
            off, k = 0, 0
            while off < size:
                n = min(pieces[k % len(pieces)], size - off)
                await a.write(off, secpat(mc.SEED, n, off))
                off, k = off + n, k + 1
            if hasattr(a, "flush"):
                await a.flush()
            return size

    return trio.run(run)
