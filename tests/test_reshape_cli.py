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


def _interrupted_in_place(tmp_path: Path):
    """An in-place reshape (no headroom: backup file) stopped after its first window,
    with that window's record still in the backup file; returns (paths, content, backup)."""
    from fuseraid.migration.migrator import begin_reshape
    from fuseraid.migration.plan import Request
    from fuseraid.migration.resume import open_members

    old = Geometry(5, 4, 1, 16 * KIB, 256 * KIB)
    paths, _, content = make_array(tmp_path, old, member_bytes=16 * KIB + 256 * KIB,
                                   data_offset=16 * KIB)
    backup = tmp_path / "backup"

    class Stop(Exception):
        pass

    def hook(step: str) -> None:
        if step == "commit":  # the window is backed up and written, not yet committed
            raise Stop

    with open_members(paths) as ms:
        _, r = begin_reshape(ms.sbset, ms.by_role, Request(layout=4, chunk=8 * KIB),
                             backup_file=str(backup), hook=hook)
        assert r is not None
        s, e, needs = r.next_window()
        assert needs
        try:
            r.copy_window(s, e, needs)
        except Stop:
            pass
        r.backup.close()
        # as if the members could not carry the reshape note (no room for it): then the
        # file must be given again (the note itself: test_reshape_backup_note.py)
        from fuseraid.migration import note

        note.erase(e.member for e in ms.sbset.entries)
    return paths, content, backup


def test_grow_members_resumes_with_backup_file(tmp_path: Path) -> None:
    paths, content, backup = _interrupted_in_place(tmp_path)
    res = fuseraid("grow", "--members", *map(str, paths))
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "--backup-file" in res.stderr
    res = fuseraid("grow", "--members", *map(str, paths), "--backup-file", str(backup))
    assert res.returncode == 0, res.stderr
    g, data, bad = read_array(paths)
    assert (g.layout, g.chunk) == (4, 8 * KIB) and data == content and bad == 0


async def test_mount_option_backup_file_resumes(tmp_path: Path) -> None:
    """What the daemon does with `-o backup_file=PATH`: fuseraid.migration.open_array
    with the backup file resumes the in-place reshape (no environment variable)."""
    import pytest
    import trio

    from fuseraid.errors import FuseraidError
    from fuseraid.migration import open_array

    paths, content, backup = _interrupted_in_place(tmp_path)
    names = [str(p) for p in paths]
    with pytest.raises(FuseraidError, match="backup"):
        async with open_array(names):
            pass
    async with open_array(names, backup_file=str(backup)) as array:
        assert await array.read(0, len(content)) == content
        with trio.fail_after(60):
            while array.reshape_control is None:
                await trio.sleep(0.01)
            await array.reshape_control.finished.wait()
        assert array.reshape_control.error is None
    g, data, bad = read_array(paths)
    assert (g.layout, g.chunk) == (4, 8 * KIB) and data == content and bad == 0


def test_grow_status_line_names_the_backup_and_a_stop() -> None:
    from fuseraid.cli.grow import _describe

    st = {"from": {"level": 5, "raid_disks": 4}, "to": {"level": 6, "raid_disks": 5},
          "direction": "forward", "percent": 12.5, "paused": False,
          "error": "raid6: writing needs more members than are left (missing roles [1, 2])",
          "backup": {"kind": "file", "path": "/var/tmp/bk", "recorded": True}}
    line = _describe(st)
    assert line.startswith("raid5/4 -> raid6/5, forward, 12.5% done (stopped: raid6: ")
    assert line.endswith("; backup file /var/tmp/bk")
    assert _describe({**st, "error": None, "backup": None}) == (
        "raid5/4 -> raid6/5, forward, 12.5% done")
