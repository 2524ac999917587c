"""`fuseraid examine` prints what `mdadm --examine` printed for the fixtures (their
examine.txt, written in the md VM) and what the local mdadm prints for the same files."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fuseraid.cli.main import main
from fuseraid.superblock.codec import read_superblock
from fuseraid.superblock.examine import human_size, layout_name, r10_layout, render

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_names() -> list[str]:
    # not imported from conftest: tests/interop has a conftest module of the same name
    return sorted(p.name for p in FIXTURES.iterdir() if (p / "meta.json").exists())


@pytest.fixture
def utc(monkeypatch):
    """examine prints local time like mdadm; the fixtures were examined in UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("name", fixture_names())
def test_cli_matches_fixture_examine(name, md_fixture, monkeypatch, capsys, utc):
    _, paths = md_fixture(name)
    monkeypatch.chdir(paths[0].parent)
    assert main(["examine", "--homehost=", *[p.name for p in paths]]) == 0
    out = capsys.readouterr().out
    assert out == (FIXTURES / name / "examine.txt").read_text()


@pytest.mark.skipif(shutil.which("mdadm") is None, reason="mdadm not installed")
@pytest.mark.parametrize("name", ["r0-3-c64-unequal-4-4-6M", "r10-4-o2-c64",
                                  "r5-4-to-r6-5-c64-parked50",
                                  "r5-4-left-symmetric-c64-degraded"])
def test_render_matches_local_mdadm(name, md_fixture, utc):
    _, paths = md_fixture(name)
    for p in paths:
        res = subprocess.run(["mdadm", "--examine", str(p)], capture_output=True, text=True,
                             env={"TZ": "UTC", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                             timeout=30)
        assert res.returncode == 0, res.stderr
        ours = render(read_superblock(p), str(p), device_size=p.stat().st_size, homehost="")
        assert ours == res.stdout


def test_cli_reports_bad_member_and_goes_on(md_fixture, tmp_path, capsys, utc):
    _, paths = md_fixture("r1-2")
    junk = tmp_path / "junk.img"
    junk.write_bytes(bytes(16384))
    assert main(["examine", "--homehost=", str(paths[0]), str(junk), str(paths[1])]) == 1
    cap = capsys.readouterr()
    assert cap.out.count("Magic : a92b4efc") == 2
    assert cap.err == f"fuseraid: {junk}: no md superblock (magic 0x00000000 at 4096)\n"
    assert main(["examine", str(tmp_path / "absent.img")]) == 1
    assert "absent.img: cannot open" in capsys.readouterr().err


def test_local_host_note(md_fixture, capsys, utc):
    _, paths = md_fixture("r1-2")
    assert main(["examine", "--homehost=mdref", str(paths[0])]) == 0
    assert "           Name : mdref:0  (local to host mdref)\n" in capsys.readouterr().out


def test_name_helpers():
    assert human_size(5000 * 1024 - 1) == ""
    assert human_size(9437184) == " (9.00 MiB 9.44 MB)"
    assert human_size(1 << 40) == " (1024.00 GiB 1099.51 GB)"
    assert human_size(4 << 40) == " (4.00 TiB 4.40 TB)"
    assert r10_layout(0x102) == " near=2"
    assert r10_layout(0x10201) == " offset=2"
    assert r10_layout(0x202) == " near=2, far=2"
    assert r10_layout(0x101) == "NO REDUNDANCY"
    assert layout_name(6, 10) == "ddf-N-continue"
    assert layout_name(5, 2) == "left-symmetric"
    assert layout_name(0, 1) == "original"
    assert layout_name(5, 9) == "-unknown-"
