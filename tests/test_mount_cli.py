"""`fuseraid mount` / `mount.fuseraid` end to end on md fixtures through the real engine:
the image's bytes, the file's semantics, options, clean stop, and bad input refused in
one line with nothing written."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import mmap
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from fsutil import (
    HELPER,
    daemon_pid,
    fstype,
    fuseraid,
    fuseraid_mount,
    is_mounted,
    loop_device,
    mounts,
    run,
    sha256_file,
    unmount,
    wait_gone,
)
from mdfixtures import fixture_names
from pattern import secpat

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="mounts need root")

R5 = "r5-4-left-symmetric-c64"


def member_digests(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def examine_states(paths: list[Path]) -> list[str]:
    out = fuseraid("examine", *paths).stdout
    lines = [ln.strip() for ln in out.splitlines()]
    return [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("State :")]


@pytest.fixture
def r5(md_fixture):
    return md_fixture(R5)


def test_fixture_image_matches_md(r5, tmp_path):
    meta, members = r5
    with fuseraid_mount(members, tmp_path / "mp", "ro") as mp:
        assert os.listdir(mp) == ["image"]
        st = os.stat(mp / "image")
        assert stat.S_ISREG(st.st_mode) and st.st_size == meta["array_bytes"]
        assert stat.S_IMODE(st.st_mode) == 0o400  # owner only, read-only mount
        assert sha256_file(mp / "image") == meta["array_sha256"]
        assert fstype(mp) == "fuse.fuseraid"
        # ro: writes are refused by the kernel before they reach us
        with pytest.raises(OSError) as e:
            os.open(mp / "image", os.O_WRONLY)
        assert e.value.errno == errno.EROFS


def test_file_semantics(r5, tmp_path):
    meta, members = r5
    size = meta["array_bytes"]
    with fuseraid_mount(members, tmp_path / "mp") as mp:
        img = mp / "image"
        assert stat.S_IMODE(img.stat().st_mode) == 0o600
        fd = os.open(img, os.O_RDWR | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, 1 << 20)  # page aligned, as O_DIRECT wants
            # read straddling the end: short
            assert os.preadv(fd, [buf], size - 4096) == 4096
            assert buf[:4096] == secpat(1, 4096, size - 4096)
            assert os.preadv(fd, [buf], size) == 0
            # write straddling the end: short; at the end: ENOSPC
            buf[:] = b"\xab" * len(buf)
            assert os.pwritev(fd, [buf], size - 8192) == 8192
            with pytest.raises(OSError) as e:
                os.pwritev(fd, [buf], size)
            assert e.value.errno == errno.ENOSPC
            # O_DIRECT round trip in the middle
            data = os.urandom(1 << 20)
            buf[:] = data
            assert os.pwritev(fd, [buf], 3 << 20) == 1 << 20
            buf[:] = b"\0" * len(buf)
            assert os.preadv(fd, [buf], 3 << 20) == 1 << 20
            assert bytes(buf) == data
            os.fsync(fd)
        finally:
            os.close(fd)
        # size never changes: truncate to another size refused, same size accepted
        with pytest.raises(OSError) as e:
            os.truncate(img, 4096)
        assert e.value.errno == errno.EPERM
        os.truncate(img, size)
        assert img.stat().st_size == size
        with pytest.raises(FileNotFoundError):
            (mp / "other").stat()
        with pytest.raises(OSError):
            (mp / "new").write_bytes(b"x")
        sv = os.statvfs(mp)
        assert sv.f_blocks * sv.f_frsize >= size
        assert os.getxattr(mp, "user.fuseraid.control").decode().endswith(".sock")
    # after the clean stop the bytes written are there, and every member says clean
    assert examine_states(members) == ["clean"] * 4
    with fuseraid_mount(members, tmp_path / "mp", "ro") as mp:
        with open(mp / "image", "rb") as f:
            f.seek(3 << 20)
            assert f.read(1 << 20) == data
            f.seek(size - 8192)
            assert f.read() == b"\xab" * 8192


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGHUP", "fusermount3", "umount"])
def test_stop_is_clean(r5, tmp_path, how):
    meta, members = r5
    with fuseraid_mount(members, tmp_path / "mp") as mp:
        pid = daemon_pid(mp)
        with open(mp / "image", "r+b") as f:
            f.write(b"x" * 4096)  # marks the array active
            f.flush()
            os.fsync(f.fileno())
        assert "active" in examine_states(members)
        if how.startswith("SIG"):
            os.kill(pid, getattr(signal, how))
        elif how == "fusermount3":
            run(["fusermount3", "-u", str(mp)])
        else:
            run(["umount", str(mp)])
        assert wait_gone(pid, 30)
        assert not is_mounted(mp)
    assert examine_states(members) == ["clean"] * 4
    p = fuseraid("status", mp, check=False)  # the control socket is gone too
    assert p.returncode == 1 and "not a fuseraid mount" in p.stderr


def test_foreground_logs_to_stderr(r5, tmp_path):
    meta, members = r5
    mp = tmp_path / "mp"
    mp.mkdir()
    cmd = [*fsutil_cmd(), "mount", "-f", *map(str, members), str(mp)]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert "mounted" in line and str(mp) in line
        assert is_mounted(mp)
    finally:
        unmount(mp)
        p.wait(30)
    assert p.returncode == 0
    assert "closed cleanly" in p.stderr.read()


def fsutil_cmd() -> list[str]:
    from fsutil import FUSERAID

    return list(FUSERAID)


def test_log_file_option(r5, tmp_path):
    meta, members = r5
    log = tmp_path / "daemon.log"
    with fuseraid_mount(members, tmp_path / "mp", f"log={log},fsname=myraid") as mp:
        srcs = [s for s, m, _ in mounts() if m == str(mp)]
        assert srcs == ["myraid"]
    assert "mounted" in log.read_text()


@pytest.fixture
def sbin_helper():
    link = Path("/sbin/mount.fuseraid")
    if link.exists() or link.is_symlink():
        pytest.skip("/sbin/mount.fuseraid already exists")
    link.symlink_to(HELPER)
    try:
        yield link
    finally:
        link.unlink()


def test_mount_t_fuseraid_and_fstab(r5, tmp_path, sbin_helper):
    meta, members = r5
    mp = tmp_path / "mp"
    mp.mkdir()
    spec = ":".join(map(str, members))
    try:
        p = run(["mount", "-t", "fuseraid", spec, str(mp), "-o", "bogus"], check=False)
        assert p.returncode != 0 and "unknown mount option 'bogus'" in p.stderr
        assert not is_mounted(mp)
        run(["mount", "-t", "fuseraid", spec, str(mp), "-o", "ro,allow_other"])
        assert sha256_file(mp / "image") == meta["array_sha256"]
        assert stat.S_IMODE((mp / "image").stat().st_mode) == 0o444
    finally:
        unmount(mp)
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{spec} {mp} fuseraid ro,nofail 0 0\n")
    try:
        run(["mount", "--fstab", str(fstab), str(mp)])
        assert sha256_file(mp / "image") == meta["array_sha256"]
        pid = daemon_pid(mp)
        assert [s for s, m, _ in mounts() if m == str(mp)] == [spec]
        # mount -a sees the line is mounted already and leaves it alone
        run(["mount", "--fstab", str(fstab), "-a"])
        assert [s for s, m, _ in mounts() if m == str(mp)] == [spec]
    finally:
        unmount(mp)
    assert wait_gone(pid, 30)


# ---- bad input: one line, non-zero, nothing written ------------------------------------


def _refused(args: list[str], expect: str, members: list[Path]) -> None:
    before = member_digests(members)
    p = fuseraid(*args, check=False)
    assert p.returncode != 0
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("fuseraid: ") and expect in lines[0], lines[0]
    assert member_digests(members) == before


def test_bad_input(r5, md_fixture, tmp_path):
    meta, members = r5
    mp = tmp_path / "mp"
    mp.mkdir()
    m = list(map(str, members))
    _refused(["mount", "-o", "frob", *m, str(mp)], "unknown mount option 'frob'", members)
    _refused(["mount", *m, str(tmp_path / "nope")], "does not exist", members)
    (mp / "junk").write_text("x")
    _refused(["mount", *m, str(mp)], "not empty", members)
    (mp / "junk").unlink()
    _refused(["mount", *m, m[0], str(mp)], "given twice", members)
    _refused(["mount", *m, str(tmp_path / "missing.img"), str(mp)], "does not exist", members)
    # members of two different arrays do not form one
    _, other = md_fixture("r1-2")
    _refused(["mount", *m[:2], str(other[0]), str(mp)], "", members + other)
    # a file with no superblock at all
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * (4 << 20))
    _refused(["mount", str(blank), str(mp)], "", members)
    assert not is_mounted(mp) and os.listdir(mp) == []


def test_status_json_of_fixture(r5, tmp_path):
    meta, members = r5
    with fuseraid_mount(members, tmp_path / "mp", "ro") as mp:
        st = json.loads(fuseraid("status", "--json", mp).stdout)
        assert st["level"] == 5 and st["size"] == meta["array_bytes"]
        assert st["chunk"] == 64 << 10 and st["layout"] == "left-symmetric"
        assert [m["role"] for m in st["members"]] == [0, 1, 2, 3]
        human = fuseraid("status", mp).stdout
        assert "raid5" in human and "left-symmetric" in human and "64K" in human
        for p in members:
            assert str(p) in human


def _open_as_nobody(path: Path) -> int:
    """errno of opening `path` for reading as user nobody (0 = it opened)."""
    code = (
        "import os, sys\n"
        "try:\n    os.close(os.open(sys.argv[1], os.O_RDONLY))\nexcept OSError as e:\n"
        "    sys.exit(e.errno)\n"
    )
    p = subprocess.run(["/usr/bin/python3", "-c", code, str(path)], user=65534, group=65534,
                       capture_output=True)
    return p.returncode


@pytest.mark.parametrize("allow_other", [False, True])
def test_only_owner_unless_allow_other(r5, allow_other):
    meta, members = r5
    base = Path(tempfile.mkdtemp(prefix="fuseraid-perm-"))  # traversable by nobody
    try:
        base.chmod(0o755)
        with fuseraid_mount(members, base / "mp", "ro,allow_other" if allow_other else "ro"):
            err = _open_as_nobody(base / "mp" / "image")
            assert err == (0 if allow_other else errno.EACCES)
    finally:
        shutil.rmtree(base, ignore_errors=True)


CI_FIXTURES = ["r0-3-c64-unequal-4-4-6M", "r1-3", "r10-4-o2-c64", "r4-4-c64",
               "r5-4-left-symmetric-c64-degraded", "r6-5-ddf-N-continue-c64"]


def _mount_fixture_ro(md_fixture, tmp_path, name):
    meta, members = md_fixture(name)
    with fuseraid_mount(members, tmp_path / "mp", "ro") as mp:
        assert (mp / "image").stat().st_size == meta["array_bytes"]
        assert sha256_file(mp / "image") == meta["array_sha256"]


@pytest.mark.parametrize("name", CI_FIXTURES)
def test_md_fixture_mounts(md_fixture, tmp_path, name):
    _mount_fixture_ro(md_fixture, tmp_path, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", fixture_names())
def test_md_fixture_mounts_all(md_fixture, tmp_path, name):
    _mount_fixture_ro(md_fixture, tmp_path, name)


def test_same_members_twice_refused(r5, tmp_path):
    meta, members = r5
    with fuseraid_mount(members, tmp_path / "mp"):
        (tmp_path / "mp2").mkdir()
        p = fuseraid("mount", *members, tmp_path / "mp2", check=False)
        assert p.returncode == 1
        line = p.stderr.strip()
        assert "\n" not in line and line.startswith("fuseraid: ") and "busy" in line, line
        assert not is_mounted(tmp_path / "mp2")


def test_block_device_members(r5, tmp_path):
    """Members that are block devices (loop devices over the fixture's files)."""
    meta, members = r5
    with contextlib.ExitStack() as stack:
        devs = [stack.enter_context(loop_device(m, direct_io=False)) for m in members]
        # the same device twice, once through another name, is caught before assembly
        alias = tmp_path / "alias"
        alias.symlink_to(devs[0])
        (tmp_path / "empty").mkdir()
        p = fuseraid("mount", *devs, alias, tmp_path / "empty", check=False)
        assert p.returncode == 1 and "given twice" in p.stderr
        with fuseraid_mount(devs, tmp_path / "mp", "ro") as mp:
            assert sha256_file(mp / "image") == meta["array_sha256"]
            st = json.loads(fuseraid("status", "--json", mp).stdout)
            assert sorted(m["path"] for m in st["members"]) == sorted(devs)
