"""The md reference fixtures (tests/fixtures): names, metadata, unpacking.
A plain module (not conftest) so that test files in any folder can import it."""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"



def fixture_names() -> list[str]:
    return sorted(p.name for p in FIXTURES.iterdir() if (p / "meta.json").exists())


def load_meta(name: str) -> dict:
    return json.loads((FIXTURES / name / "meta.json").read_text())


def unpack_fixture(name: str, dest: Path) -> list[Path]:
    """Decompress a fixture's member images into dest; returns paths in role order
    (None-free: missing roles are simply absent)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for xz in sorted((FIXTURES / name).glob("d*.img.xz")):
        target = dest / xz.name[:-3]
        with lzma.open(xz) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        out.append(target)
    return out
