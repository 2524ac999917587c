"""Live reshape through a real FUSE mount: `fuseraid grow MOUNTPOINT ... --wait` while fio
writes and verifies the image; pause/resume; the unmounted result is the new geometry,
holds everything fio wrote and scrubs clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fsutil import daemon_pid, fuseraid, fuseraid_mount, kill_daemon, unmount
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


def test_daemon_killed_mid_reshape_resumes_on_remount(tmp_path: Path) -> None:
    old = Geometry(6, 4, 2, 64 * KIB, 4 * MIB)
    paths, extras, content = make_array(tmp_path, old, member_bytes=8 * MIB,
                                        data_offset=2 * MIB, extra=1)
    model = bytearray(content)
    mp = tmp_path / "mp"
    mp.mkdir()
    fuseraid("mount", *paths, mp)
    pid = daemon_pid(mp)
    try:
        fuseraid("grow", mp, "--raid-devices", "5", "--add", extras[0], "--speed-limit", "2M")
        time.sleep(1.0)
        # an fsynced write through the mount while the reshape runs
        data = bytes(range(256)) * 1024
        with open(mp / "image", "r+b", buffering=0) as f:
            f.seek(3 * MIB)
            f.write(data)
            os.fsync(f.fileno())
        model[3 * MIB : 3 * MIB + len(data)] = data
        assert "%" in fuseraid("grow", "--status", mp).stdout  # still running
    finally:
        kill_daemon(pid)
        unmount(mp)
    with fuseraid_mount(paths + extras, mp) as mp2:
        deadline = time.monotonic() + 120
        while "no reshape" not in fuseraid("grow", "--status", mp2).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert (mp2 / "image").read_bytes()[: len(model)] == bytes(model)
    g, got, bad = read_array(paths + extras)
    assert g.raid_disks == 5 and got[: len(model)] == bytes(model) and bad == 0
