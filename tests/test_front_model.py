"""Property test: random reads and writes through the mounted image (any offsets and
lengths, across chunk and row borders and the end of the array) behave exactly like a
bytearray of the array's size, through FUSE and the real engine."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest
from fsutil import fuseraid, fuseraid_mount, sha256_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pattern import secpat

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="mounts need root")


@pytest.mark.parametrize("name", ["r5-4-left-symmetric-c64", "r10-4-f2-c64"])
def test_image_behaves_like_bytearray(md_fixture, tmp_path, name):
    meta, members = md_fixture(name)
    size = meta["array_bytes"]
    model = bytearray(secpat(1, size))
    near_end = st.integers(min_value=max(0, size - 300_000), max_value=size + 5000)
    offsets = st.one_of(st.integers(min_value=0, max_value=size + 5000), near_end)
    ops = st.lists(
        st.tuples(st.sampled_from(["read", "write"]), offsets,
                  st.integers(min_value=0, max_value=300_000), st.integers(0, 255)),
        min_size=1, max_size=6,
    )  # fmt: skip

    with fuseraid_mount(members, tmp_path / "mp") as mp:
        fd = os.open(mp / "image", os.O_RDWR)
        try:

            @settings(max_examples=60, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])
            @given(ops)
            def check(seq):
                for op, off, n, fill in seq:
                    if op == "read":
                        assert os.pread(fd, n, off) == bytes(model[off : off + n])
                        continue
                    data = bytes([fill]) * n
                    if n == 0:  # the kernel answers empty writes itself
                        assert os.pwrite(fd, data, off) == 0
                        continue
                    if off >= size:
                        with pytest.raises(OSError) as e:
                            os.pwrite(fd, data, off)
                        assert e.value.errno == errno.ENOSPC
                        continue
                    done = os.pwrite(fd, data, off)
                    assert done == min(n, size - off)
                    model[off : off + done] = data[:done]

            check()
            os.fsync(fd)
        finally:
            os.close(fd)
        expect = hashlib.sha256(model).hexdigest()
        assert sha256_file(mp / "image") == expect
    # consistent parity/mirrors, and the same bytes after a clean stop and remount
    with fuseraid_mount(members, tmp_path / "mp") as mp:
        assert sha256_file(mp / "image") == expect
        assert fuseraid("check", mp).stdout.strip().endswith(" 0 mismatches found")
