"""The daemon's signal handling around start and stop: a signal during assembly
abandons the start (nothing mounted), a signal during the clean stop does not cut it
short. The real engine assembles a real md fixture; the opener around it only holds the
start or the stop open, so the timing windows are deterministic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from fsutil import ROOT, fuseraid, is_mounted, unmount

R5 = "r5-4-left-symmetric-c64"
pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="mounts need root")

SCRIPT = r"""
import contextlib, sys, trio
from fuseraid.engine.assemble import open_array
from fuseraid.errors import FuseraidError
from fuseraid.front import daemon
from fuseraid.front.options import MountOptions

mountpoint, phase, members = sys.argv[1], sys.argv[2], sys.argv[3:]

@contextlib.asynccontextmanager
async def opener(paths, readonly=False):
    print("assembling", flush=True)
    if phase == "start":
        await trio.sleep_forever()
    async with open_array(paths, readonly=readonly) as array:
        try:
            yield array
        finally:
            print("closing", flush=True)
            with trio.CancelScope(shield=True):
                await trio.sleep(1.5)  # hold the clean stop open
    print("closed", flush=True)

req = daemon.MountRequest(members, mountpoint, MountOptions())
try:
    trio.run(daemon.serve, req, lambda msg: print("ready", flush=True), opener)
except FuseraidError as e:
    print("error:", e, flush=True)
    sys.exit(1)
"""


def start(mp, phase, members):
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(mp), phase, *map(str, members)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip


def expect(p, line):
    got = p.stdout.readline().strip()
    assert got == line, got


def test_signal_during_assembly_abandons_start(md_fixture, tmp_path):
    _, members = md_fixture(R5)
    mp = tmp_path / "mp"
    mp.mkdir()
    p = start(mp, "start", members)
    try:
        expect(p, "assembling")
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 1
        assert out.strip() == "error: interrupted by a signal before the mount was up"
        assert not is_mounted(mp)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        unmount(mp)


def test_second_signal_does_not_cut_the_stop_short(md_fixture, tmp_path):
    meta, members = md_fixture(R5)
    mp = tmp_path / "mp"
    mp.mkdir()
    p = start(mp, "stop", members)
    try:
        expect(p, "assembling")
        expect(p, "ready")
        assert is_mounted(mp) and os.listdir(mp) == ["image"]
        with open(mp / "image", "r+b") as f:
            f.write(b"y" * 4096)  # the array is active now
        p.send_signal(signal.SIGTERM)
        expect(p, "closing")
        p.send_signal(signal.SIGTERM)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
        assert out.strip() == "closed" and p.returncode == 0
        assert not is_mounted(mp)
        states = fuseraid("examine", *members).stdout
        assert states.count("State : clean") == len(members)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        unmount(mp)
