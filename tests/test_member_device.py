"""Member I/O on real files and a real loop device: positioned reads and writes, vector
batches, range checks, read-only members, and the exclusive lock."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuseraid.errors import FuseraidError, MemberIOError
from fuseraid.member import nowait
from fuseraid.member.device import Member

SIZE = 1 << 20


@pytest.fixture
def member_file(tmp_path):
    path = tmp_path / "m.img"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture
def loopdev(tmp_path):
    """A loop device over an 8 MiB file; detached even when the test fails."""
    if shutil.which("losetup") is None or os.geteuid() != 0:
        pytest.skip("needs losetup and root")
    backing = tmp_path / "loop.img"
    backing.write_bytes(os.urandom(8 << 20))
    res = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                         text=True, timeout=30)
    if res.returncode != 0:
        pytest.skip(f"no loop device: {res.stderr.strip()}")
    dev = res.stdout.strip()
    try:
        yield dev, backing
    finally:
        subprocess.run(["losetup", "-d", dev], check=True, timeout=30)


def test_read_write_file(member_file):
    data = member_file.read_bytes()
    with Member(member_file) as m:
        assert m.size == SIZE and m.path == str(member_file) and not m.is_block
        assert m.pread(4096, 100) == data[4096:4196]
        assert m.pread(SIZE - 7, 7) == data[-7:]
        assert m.pread(0, 0) == b""
        m.pwrite(12345, b"hello")
        buf = bytearray(9)
        m.preadinto(buf, 12343)
        assert bytes(buf) == data[12343:12345] + b"hello" + data[12350:12352]
        big = os.urandom(300_000)
        m.pwrite(SIZE - len(big), memoryview(big))
        m.fsync()
    assert member_file.read_bytes()[-300_000:] == big
    assert m.closed
    m.close()  # twice is harmless


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=8), st.integers(0, SIZE - 40000))
def test_vectors_equal_plain_io(tmp_path_factory, sizes, off):
    path = tmp_path_factory.mktemp("vec") / "v.img"
    path.write_bytes(bytes(SIZE))
    bufs = [os.urandom(n) for n in sizes]
    with Member(path) as m:
        m.pwritev(bufs, off)
        joined = b"".join(bufs)
        assert m.pread(off, len(joined)) == joined
        outs = [bytearray(n) for n in reversed(sizes)]
        m.preadv(outs, off)
        assert b"".join(outs) == joined
    path.unlink()


def test_outside_range_refused(member_file):
    before = member_file.read_bytes()
    with Member(member_file) as m:
        for call in (lambda: m.pread(SIZE - 1, 2), lambda: m.pread(-1, 1),
                     lambda: m.pwrite(SIZE, b"x"), lambda: m.pwritev([b"ab", b"c"], SIZE - 2),
                     lambda: m.preadv([bytearray(2)], SIZE - 1),
                     lambda: m.write_durable(SIZE - 1, b"xy")):
            with pytest.raises(MemberIOError) as ei:
                call()
            assert str(member_file) in str(ei.value) and "outside the member" in str(ei.value)
            assert ei.value.errno == errno.EINVAL
    assert member_file.read_bytes() == before


def test_short_read_inside_member_is_an_error(member_file):
    with Member(member_file) as m:
        os.truncate(member_file, SIZE // 2)  # someone shrank the file under us
        with pytest.raises(MemberIOError, match="short read"):
            m.pread(SIZE // 2 - 10, 20)


def test_write_durable(member_file):
    """The superblock path: the bytes land, and a refused write names the member."""
    with Member(member_file) as m:
        m.write_durable(4096, b"durable!")
        assert m.pread(4096, 8) == b"durable!"
    assert member_file.read_bytes()[4096:4104] == b"durable!"
    with Member(member_file, readonly=True) as m:
        with pytest.raises(MemberIOError) as ei:
            m.write_durable(0, b"x")
        assert ei.value.errno == errno.EBADF and str(member_file) in str(ei.value)


def test_readonly_member_refuses_writes(member_file):
    before = member_file.read_bytes()
    with Member(member_file, readonly=True) as m:
        assert m.pread(0, 16) == before[:16]
        with pytest.raises(MemberIOError) as ei:
            m.pwrite(0, b"x")
        assert ei.value.errno == errno.EBADF and str(member_file) in str(ei.value)
    assert member_file.read_bytes() == before


def test_open_errors(tmp_path):
    with pytest.raises(MemberIOError) as ei:
        Member(tmp_path / "nope.img")
    assert ei.value.errno == errno.ENOENT and "nope.img" in str(ei.value)
    assert "\n" not in str(ei.value) and "ENOENT" in str(ei.value)
    with pytest.raises(MemberIOError, match="not a regular file or block device"):
        Member(tmp_path)
    assert issubclass(MemberIOError, FuseraidError)


def test_closed_member(member_file):
    m = Member(member_file)
    m.close()
    with pytest.raises(MemberIOError, match="closed"):
        m.pread(0, 1)


def test_busy_lock_in_this_and_another_process(member_file):
    first = Member(member_file, readonly=True)
    try:
        with pytest.raises(MemberIOError) as ei:
            Member(member_file)
        assert ei.value.errno == errno.EBUSY
        assert str(ei.value) == f"{member_file}: member is busy (locked by another " \
                                "fuseraid array)"
        probe = textwrap.dedent(f"""
            from fuseraid.member.device import Member
            from fuseraid.errors import MemberIOError
            try:
                Member({str(member_file)!r})
            except MemberIOError as e:
                print("refused", e.errno)
            else:
                print("opened")
        """)
        res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=60)
        assert res.stdout.strip() == f"refused {errno.EBUSY}", res.stderr
    finally:
        first.close()
    Member(member_file).close()  # free again once released


def test_loop_device(loopdev):
    dev, backing = loopdev
    with Member(dev) as m:
        assert m.is_block and m.size == 8 << 20
        assert m.pread(1 << 20, 4096) == backing.read_bytes()[1 << 20 : (1 << 20) + 4096]
        payload = os.urandom(65536)
        m.pwritev([payload[:4096], payload[4096:]], 3 << 20)
        m.fsync()
        assert m.pread(3 << 20, 65536) == payload
        # O_EXCL: nobody else may take the device while we hold it
        with pytest.raises(MemberIOError) as ei:
            Member(dev, readonly=True)
        assert ei.value.errno == errno.EBUSY and dev in str(ei.value)
    # the loop driver wrote through to the backing file
    assert backing.read_bytes()[3 << 20 : (3 << 20) + 65536] == payload


def test_tmpfs_member_reads_without_waiting(tmp_path):
    """tmpfs refuses RWF_NOWAIT, but its pages are memory: its member is read at once
    (once, the refusal turned the fast path off for the whole process)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    fd, name = tempfile.mkstemp(dir=shm, prefix="fuseraid-test-")
    os.close(fd)
    try:
        data = os.urandom(SIZE)
        Path(name).write_bytes(data)
        with Member(name) as m:
            assert m.read_now(4096, 8192) == data[4096:12288]
            with nowait.section():
                buf = bytearray(4096)
                m.preadinto(buf, 0)  # in a section: no WouldBlock
            assert bytes(buf) == data[:4096]
    finally:
        os.unlink(name)


def test_refused_flags_stop_that_member_only(member_file, tmp_path):
    """A file that refuses the non-blocking read flags falls back to the ordinary path
    for good; other members go on reading at once."""
    other = tmp_path / "other.img"
    other.write_bytes(member_file.read_bytes())
    with Member(member_file) as a, Member(other) as b:
        a._nowait = 1 << 30  # a flag no kernel knows: preadv2 refuses it (EOPNOTSUPP)
        assert a.read_now(0, 4096) is None
        assert a._nowait is None  # remembered: no more syscalls that fail
        with nowait.section(), pytest.raises(nowait.WouldBlock):
            a.preadinto(bytearray(4096), 0)
        assert b.read_now(0, 4096) == member_file.read_bytes()[:4096]
