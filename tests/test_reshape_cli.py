"""`fuseraid grow --members` offline: a real command line run in a subprocess reshapes
member files to the end; refusals are one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_migration_kit import KIB, make_array, read_array

from fuseraid.layout import Geometry


def fuseraid(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fuseraid.cli.main", *argv],
                          capture_output=True, text=True, timeout=120)


def test_grow_members_offline(tmp_path: Path) -> None:
    old = Geometry(5, 3, 2, 16 * KIB, 256 * KIB)
    paths, extras, content = make_array(tmp_path, old, member_bytes=768 * KIB,
                                        data_offset=256 * KIB, extra=1)
    res = fuseraid("grow", "--members", *map(str, paths), "--level", "6", "--raid-devices",
                   "4", "--layout", "right-asymmetric", "--chunk", "32K",
                   "--add", str(extras[0]))
    assert res.returncode == 0, res.stderr
    g, data, bad = read_array(paths + extras)
    assert (g.level, g.raid_disks, g.layout, g.chunk) == (6, 4, 1, 32 * KIB)
    assert data[: len(content)] == content and bad == 0


def test_grow_refusals_are_one_line(tmp_path: Path) -> None:
    old = Geometry(5, 4, 2, 16 * KIB, 256 * KIB)
    paths, _, _ = make_array(tmp_path, old, member_bytes=768 * KIB, data_offset=256 * KIB)
    res = fuseraid("grow", "--members", *map(str, paths), "--raid-devices", "3")
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "--array-size" in res.stderr
    res = fuseraid("grow", "--members", *map(str, paths), "--layout", "nonsense")
    assert res.returncode == 1 and "unknown raid5 layout" in res.stderr


def test_shrink_with_array_size(tmp_path: Path) -> None:
    old = Geometry(5, 4, 2, 16 * KIB, 256 * KIB)
    paths, _, content = make_array(tmp_path, old, member_bytes=768 * KIB, data_offset=256 * KIB)
    res = fuseraid("grow", "--members", *map(str, paths), "--raid-devices", "3",
                   "--array-size", "512K")
    assert res.returncode == 0, res.stderr
    g, data, bad = read_array(paths[:3])
    assert g.raid_disks == 3 and data == content[: 512 * KIB] and bad == 0
