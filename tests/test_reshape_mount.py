"""Live reshape through a real FUSE mount: `fuseraid grow MOUNTPOINT ... --wait` while fio
writes and verifies the image; pause/resume; the unmounted result is the new geometry,
holds everything fio wrote and scrubs clean."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fsutil import fuseraid, fuseraid_mount
from test_migration_kit import KIB, MIB, make_array, read_array

from fuseraid.layout import Geometry

pytestmark = pytest.mark.skipif(shutil.which("fio") is None or not Path("/dev/fuse").exists(),
                                reason="needs fio and /dev/fuse")


def test_grow_under_fio_verify(tmp_path: Path) -> None:
    old = Geometry(5, 3, 2, 64 * KIB, 4 * MIB)
    paths, extras, _ = make_array(tmp_path, old, member_bytes=8 * MIB, data_offset=2 * MIB,
                                  extra=1)
    with fuseraid_mount(paths, tmp_path / "mp") as mp:
        image = mp / "image"
        fio = subprocess.Popen(
            ["fio", "--name=v", f"--filename={image}", "--rw=randwrite", "--bs=4k",
             "--size=8M", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1",
             "--direct=1", "--ioengine=psync", "--loops=3", "--randseed=7"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(0.5)
            r = fuseraid("grow", mp, "--raid-devices", "4", "--add", extras[0],
                         "--speed-limit", "8M")
            assert "reshape started" in r.stdout
            fuseraid("grow", "--pause", mp)
            st = fuseraid("grow", "--status", mp).stdout
            assert "paused" in st
            fuseraid("grow", "--resume", mp)
            deadline = time.monotonic() + 120
            while "no reshape" not in fuseraid("grow", "--status", mp).stdout:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            out, _ = fio.communicate(timeout=300)
        finally:
            if fio.poll() is None:
                fio.kill()
                fio.wait()
        assert fio.returncode == 0, out
        assert image.stat().st_size == 3 * 4 * MIB
        head = image.read_bytes()[: 8 * MIB]
    g, data, bad = read_array(paths + extras)
    assert g.raid_disks == 4 and bad == 0
    assert data[: 8 * MIB] == head
