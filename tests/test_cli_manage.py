"""`fuseraid status / fail / remove / add / check` against a live mount of an md fixture,
through the control socket and the real engine."""

from __future__ import annotations

import json
import os
import time

import pytest
from fsutil import fuseraid, fuseraid_mount, sha256_file

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="mounts need root")


def status(mp) -> dict:
    return json.loads(fuseraid("status", "--json", mp).stdout)


def wait_task_done(mp, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = status(mp)
        if st["task"] is None:
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.1)


@pytest.mark.parametrize("name", ["r5-4-left-symmetric-c64", "r6-5-left-symmetric-c64"])
def test_fail_remove_add_check(md_fixture, tmp_path, name):
    meta, members = md_fixture(name)
    with fuseraid_mount(members, tmp_path / "mp") as mp:
        assert fuseraid("check", mp).stdout.strip().endswith("0 mismatches found")

        r = fuseraid("fail", mp, members[1])
        assert r.stdout.strip() == f"{members[1]}: marked failed (role 1)"
        st = status(mp)
        assert st["state"] == "degraded"
        assert {"role": 1, "path": str(members[1]), "state": "faulty"} in st["members"]
        assert "degraded" in fuseraid("status", mp).stdout
        assert sha256_file(mp / "image") == meta["array_sha256"]  # degraded reads

        if meta["level"] == 6:  # a second failure is still readable
            fuseraid("fail", mp, "3")
            assert sha256_file(mp / "image") == meta["array_sha256"]
            # and a third is refused: one line, nothing changes
            p = fuseraid("fail", mp, members[0], check=False)
            assert p.returncode == 1 and "too many" in p.stderr and p.stderr.count("\n") == 1

        fuseraid("remove", mp, members[1])
        assert all(m["path"] != str(members[1]) for m in status(mp)["members"])

        # the removed file comes back as a fresh spare and is rebuilt
        spare = tmp_path / "spare.img"
        spare.write_bytes(b"\0" * os.path.getsize(members[0]))
        r = fuseraid("add", mp, spare)
        assert r.stdout.startswith(f"{spare}: added")
        st = wait_task_done(mp)
        if meta["level"] == 6:
            fuseraid("remove", mp, members[3])
            spare2 = tmp_path / "spare2.img"
            spare2.write_bytes(b"\0" * os.path.getsize(members[0]))
            fuseraid("add", mp, spare2)
            st = wait_task_done(mp)
        assert st["state"] in ("clean", "active"), st
        assert all(m["state"] == "active" for m in st["members"]), st
        assert sha256_file(mp / "image") == meta["array_sha256"]
        r = fuseraid("check", "--json", mp)
        assert json.loads(r.stdout)["mismatches"] == 0


def test_errors_are_one_line(md_fixture, tmp_path):
    meta, members = md_fixture("r5-4-left-symmetric-c64")
    with fuseraid_mount(members, tmp_path / "mp") as mp:
        for args, expect in [
            (["fail", mp, "/no/such/member"], "/no/such/member"),
            (["remove", mp, members[0]], "fail it before removing"),
            (["add", mp, members[0]], "already a member"),
        ]:
            p = fuseraid(*args, check=False)
            assert p.returncode == 1
            assert p.stderr.count("\n") == 1 and expect in p.stderr, p.stderr
    for cmd in (["status", tmp_path / "mp"], ["check", tmp_path / "nowhere"]):
        p = fuseraid(*cmd, check=False)
        assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr


def test_check_finds_and_repairs_mismatch(md_fixture, tmp_path):
    meta, members = md_fixture("r5-4-left-symmetric-c64")
    # corrupt one sector of a member's data area behind the array's back
    with open(members[2], "r+b") as f:
        f.seek((1 << 20) + 8192)
        f.write(b"\x5a" * 512)
    with fuseraid_mount(members, tmp_path / "mp") as mp:
        p = fuseraid("check", mp, check=False)
        assert p.returncode == 2 and "mismatches found" in p.stdout
        assert int(p.stdout.split(",")[1].split()[0]) > 0
        fuseraid("check", "--repair", mp)
        assert fuseraid("check", mp).stdout.strip().endswith(" 0 mismatches found")
