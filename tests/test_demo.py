"""`fuseraid demo` runs to the end (including the live migration to raid6 under load) and
leaves nothing behind, also when interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fsutil import ROOT, mounts

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="the demo needs root")


def leftovers(base: Path) -> list[str]:
    """Mounts, loop devices and daemons that still point into base."""
    out = [mp for _, mp, _ in mounts() if mp.startswith(str(base))]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    out += [ln for ln in loops.splitlines() if str(base) in ln]
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    out += [ln for ln in ps.splitlines() if "fuseraid" in ln and str(base) in ln]
    return out


def demo(base: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fuseraid.cli.main", "demo", "--disk-mib=32", "--files=8",
           f"--dir={base}", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)


def test_demo_runs_and_cleans_up(tmp_path):
    p = demo(tmp_path)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, out + err
    assert "all checksums match after remount" in out
    assert "raid5" in out and "fsck.ext4 -n: clean" in out
    # the live migration under load: raid5 on 3 -> raid6 on 5, verified
    assert "raid5/3 -> raid6/5" in out and "reshape finished" in out
    assert "raid6, active [5/5]" in out and "check done, 0 mismatches found" in out
    assert "fsck.ext4 -n: clean after the migration" in out
    assert "all checksums match after the migration and a remount" in out
    assert out.rstrip().endswith("done: every step passed")
    assert leftovers(tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too


def test_demo_interrupted_cleans_up(tmp_path):
    p = demo(tmp_path)
    try:
        for line in p.stdout:
            if "writing" in line:  # the array, loop device and ext4 are all up
                p.send_signal(signal.SIGINT)
                break
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, out + err
    assert "cleaning up" in out
    assert leftovers(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_when_tools_missing(tmp_path):
    env = dict(os.environ, PATH="/nonexistent")
    p = subprocess.run([sys.executable, "-m", "fuseraid.cli.main", "demo", f"--dir={tmp_path}"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert p.returncode == 1
    assert p.stderr.strip() == "fuseraid: the demo needs losetup, which is not installed"
