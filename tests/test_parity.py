"""The parity kernel against the pure-Python reference, for every implementation this
CPU runs (plus the portable one, which every CPU runs), and against parity that Linux md
itself wrote."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuseraid import parity
from fuseraid.parity import reference as ref
from tests.pattern import secpat

IMPLS = parity.supported_implementations()
CHUNK = 64 * 1024


@pytest.fixture(params=IMPLS)
def impl(request):
    before = parity.KERNEL_IMPL
    parity.use_implementation(request.param)
    yield request.param
    parity.use_implementation(before)


def test_portable_and_dispatch():
    assert "portable" in IMPLS
    if not os.environ.get("FUSERAID_KERNEL"):
        assert parity.KERNEL_IMPL == IMPLS[0]  # the fastest runnable one unless forced


@pytest.mark.parametrize("name", IMPLS)
def test_environment_forces_implementation(name):
    code = "from fuseraid import parity; print(parity.KERNEL_IMPL)"
    env = {**os.environ, "FUSERAID_KERNEL": name}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name


def test_environment_refuses_unknown_implementation():
    env = {**os.environ, "FUSERAID_KERNEL": "sse9"}
    out = subprocess.run(
        [sys.executable, "-c", "import fuseraid.parity"], env=env, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "parity kernel 'sse9' is not available" in out.stderr


def test_unknown_implementation_refused():
    with pytest.raises(parity.ParityError, match="not available"):
        parity.use_implementation("sse9")


# Lengths that cross every vector step (32..256 bytes) and leave tails of every size.
lengths = st.one_of(st.integers(0, 70), st.integers(250, 1100))


@st.composite
def stripes(draw, min_blocks=1):
    n = draw(st.integers(min_blocks, 20))
    length = draw(lengths)
    seed = draw(st.integers(0, 2**32))
    rnd = random.Random(seed)
    gaps = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    srcs = [None if gap else rnd.randbytes(length) for gap in gaps]
    return srcs, length


def zero_filled(srcs, length):
    return [bytes(length) if s is None else s for s in srcs]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stripes())
def test_xor_matches_reference(impl, stripe):
    srcs, length = stripe
    full = zero_filled(srcs, length)
    dst = bytearray(b"\xaa" * length)
    parity.xor_into(dst, full)
    assert bytes(dst) == ref.xor_blocks(full, length)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stripes())
def test_gen_pq_matches_reference(impl, stripe):
    srcs, length = stripe
    p, q = bytearray(b"\x55" * length), bytearray(b"\x55" * length)
    parity.gen_pq(srcs, p, q)
    rp, rq = ref.gen_pq(srcs, length)
    assert bytes(p) == rp
    assert bytes(q) == rq
    only_q = bytearray(length)
    parity.gen_pq(srcs, None, only_q)
    assert bytes(only_q) == rq
    only_p = bytearray(length)
    parity.gen_pq(srcs, only_p, None)
    assert bytes(only_p) == rp


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stripes(min_blocks=2), st.data())
def test_rec_data_data_matches_reference(impl, stripe, data):
    srcs, length = stripe
    x, y = data.draw(st.lists(st.integers(0, len(srcs) - 1), min_size=2, max_size=2, unique=True))
    p, q = ref.gen_pq(srcs, length)
    lost = list(srcs)
    lost[x] = lost[y] = b"\xff" * length  # must be ignored
    out_x, out_y = bytearray(length), bytearray(length)
    parity.rec_data_data(lost, p, q, x, y, out_x, out_y)
    rx, ry = ref.rec_data_data(srcs, p, q, x, y)
    assert (bytes(out_x), bytes(out_y)) == (rx, ry)
    full = zero_filled(srcs, length)
    assert (bytes(out_x), bytes(out_y)) == (full[x], full[y])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stripes(), st.data())
def test_rec_data_q_matches_reference(impl, stripe, data):
    srcs, length = stripe
    x = data.draw(st.integers(0, len(srcs) - 1))
    _, q = ref.gen_pq(srcs, length)
    lost = list(srcs)
    lost[x] = None
    out_x = bytearray(length)
    parity.rec_data_q(lost, q, x, out_x)
    assert bytes(out_x) == ref.rec_data_q(srcs, q, x)
    assert bytes(out_x) == zero_filled(srcs, length)[x]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lengths, st.integers(0, 255), st.integers(0, 2**32))
def test_mul_matches_reference(impl, length, c, seed):
    src = random.Random(seed).randbytes(length)
    dst = bytearray(length)
    parity.mul_into(dst, src, c)
    assert bytes(dst) == bytes(ref.gf_mul(c, b) for b in src)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stripes(min_blocks=1), st.data())
def test_recover_any_one_or_two(impl, stripe, data):
    srcs, length = stripe
    p, q = ref.gen_pq(srcs, length)
    full = zero_filled(srcs, length)
    want = {"p": p, "q": q, **dict(enumerate(full))}
    names = [*range(len(srcs)), "p", "q"]
    a, b = data.draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
    lost = list(srcs)
    for name in (a, b):
        if not isinstance(name, str):
            lost[name] = None
    given_p = None if "p" in (a, b) else p
    given_q = None if "q" in (a, b) else q
    out_a, out_b = bytearray(length), bytearray(length)
    parity.recover_two(lost, given_p, given_q, a, b, out_a, out_b)
    assert (bytes(out_a), bytes(out_b)) == (want[a], want[b])
    lost_one = list(srcs)
    if not isinstance(a, str):
        lost_one[a] = None
    parity.recover_one(lost_one, None if a == "p" else p, None if a == "q" else q, a, out_a)
    assert bytes(out_a) == want[a]
    if not isinstance(a, str):  # from Q alone
        parity.recover_one(lost_one, None, q, a, out_a)
        assert bytes(out_a) == want[a]


def test_every_pair_recovers(impl):
    """Every (x, y) of a 20-block stripe, at a length with a vector body and a tail."""
    rnd = random.Random(7)
    length = 512 + 77
    srcs = [rnd.randbytes(length) for _ in range(20)]
    p, q = bytearray(length), bytearray(length)
    parity.gen_pq(srcs, p, q)
    assert (bytes(p), bytes(q)) == ref.gen_pq(srcs, length)
    out_x, out_y = bytearray(length), bytearray(length)
    for x, y in itertools.permutations(range(20), 2):
        parity.rec_data_data(srcs, p, q, x, y, out_x, out_y)
        assert out_x == srcs[x] and out_y == srcs[y], (x, y)
    for x in range(20):
        parity.rec_data_q(srcs, q, x, out_x)
        assert out_x == srcs[x], x


def test_field_helpers_match_reference():
    for a in range(256):
        for b in range(0, 256, 7):
            assert parity.gf_mul(a, b) == ref.gf_mul(a, b)
    for e in range(-3, 300):
        assert parity.gf_pow2(e) == ref.gf_pow(2, e % 255)
    for a in range(1, 256):
        assert parity.gf_mul(a, parity.gf_inv(a)) == 1
    # md's table: g^8 = x^4+x^3+x^2+1 under 0x11d; g is a generator (order 255).
    assert parity.gf_pow2(8) == 0x1D
    assert len({parity.gf_pow2(e) for e in range(255)}) == 255


def test_other_buffer_types_and_aliasing():
    length = 4096 + 3
    rnd = np.random.default_rng(1)
    a = rnd.integers(0, 256, length, dtype=np.uint8)
    b = bytearray(rnd.integers(0, 256, length, dtype=np.uint8).tobytes())
    c = memoryview(bytes(rnd.integers(0, 256, length, dtype=np.uint8).tobytes()))
    p, q = np.zeros(length, np.uint8), bytearray(length)
    parity.gen_pq([a, b, c], memoryview(p), q)
    rp, rq = ref.gen_pq([a.tobytes(), bytes(b), bytes(c)], length)
    assert p.tobytes() == rp and bytes(q) == rq
    # The lost blocks' own buffers may serve as the outputs.
    want_a, want_b = a.tobytes(), bytes(b)
    a[:] = 0
    b[:] = bytes(length)
    parity.rec_data_data([a, b, c], p, q, 0, 1, a, b)
    assert a.tobytes() == want_a and bytes(b) == want_b
    # dst identical to a source is fine: every position is read before it is written.
    parity.xor_into(b, [a, b, c])
    assert bytes(b) == ref.xor_blocks([want_a, want_b, bytes(c)], length)
    # No sources: the XOR of nothing is zeros.
    parity.xor_into(b, [])
    assert bytes(b) == bytes(length)
    # Word-sized numpy arrays are taken as their bytes.
    words = np.frombuffer(want_a[:4096], dtype=np.uint64).copy()
    out = np.zeros(512, np.uint64)
    parity.xor_into(out, [words])
    assert out.tobytes() == want_a[:4096]


def test_unaligned_buffers(impl):
    """Buffers at every misalignment within a vector take the same path as aligned ones."""
    rnd = random.Random(3)
    length = 1024 + 5
    srcs = [rnd.randbytes(length) for _ in range(5)]
    want_p, want_q = ref.gen_pq(srcs, length)
    for shift in (1, 3, 17, 63):
        arena = bytearray(length * 9 + 64 * 9)
        views = [memoryview(arena)[k * (length + 64) + shift :][:length] for k in range(9)]
        for v, s in zip(views, srcs, strict=False):
            v[:] = s
        p, q, ox, oy = views[5:9]
        parity.gen_pq(views[:5], p, q)
        assert (bytes(p), bytes(q)) == (want_p, want_q), shift
        parity.rec_data_data(views[:5], p, q, 1, 4, ox, oy)
        assert (bytes(ox), bytes(oy)) == (srcs[1], srcs[4]), shift
        parity.xor_into(ox, views[:5])
        assert bytes(ox) == want_p, shift


def test_bad_arguments_refused():
    blk = bytes(64)
    with pytest.raises(parity.ParityError, match="lengths must match"):
        parity.xor_into(bytearray(64), [blk, bytes(63)])
    with pytest.raises(parity.ParityError, match="writable"):
        parity.xor_into(bytes(64), [blk])
    with pytest.raises(parity.ParityError, match="x = y"):
        parity.rec_data_data([blk, blk], blk, blk, 1, 1, bytearray(64), bytearray(64))
    with pytest.raises(parity.ParityError, match="block index"):
        parity.rec_data_q([blk, blk], blk, 2, bytearray(64))
    with pytest.raises(parity.ParityError, match="at most"):
        parity.gen_pq([blk] * 256, bytearray(64), None)
    with pytest.raises(parity.ParityError, match="None"):
        parity.xor_into(bytearray(64), [blk, None])
    with pytest.raises(parity.ParityError, match="block 1 must be a contiguous buffer"):
        parity.gen_pq([blk, memoryview(bytearray(128))[::2]], bytearray(64), None)
    with pytest.raises(parity.ParityError, match="contiguous buffer"):
        parity.xor_into(bytearray(64), ["not a buffer"])
    big = bytearray(128)
    view = memoryview(big)
    with pytest.raises(parity.ParityError, match="partially overlaps"):
        parity.xor_into(view[0:64], [view[32:96]])
    with pytest.raises(parity.ParityError, match="overlap each other"):
        parity.gen_pq([blk], view[0:64], view[32:96])
    with pytest.raises(parity.ParityError, match="overlap each other"):
        parity.rec_data_data([blk, blk], blk, blk, 0, 1, view[0:64], view[0:64])
    with pytest.raises(parity.ParityError, match="field element"):
        parity.mul_into(bytearray(64), blk, 256)
    with pytest.raises(parity.ParityError, match="no inverse"):
        parity.gf_inv(0)


def test_md_written_raid6_parity(md_fixture, impl):
    """P and Q that Linux md wrote (left-symmetric, 5 disks) equal ours, and two lost
    data chunks come back from md's P and Q. Row r: P on role 4 - r%5, Q after it,
    data after Q (md's ALGORITHM_LEFT_SYMMETRIC for RAID6)."""
    meta, paths = md_fixture("r6-5-left-symmetric-c64")
    disks, data_disks = meta["raid_devices"], meta["raid_devices"] - 2
    offset = meta["data_offset_sectors"] * 512
    members = [path.read_bytes() for path in paths]
    for row in range(disks * 2):
        pd = disks - 1 - row % disks
        qd = (pd + 1) % disks
        roles = [(qd + 1 + k) % disks for k in range(data_disks)]
        at = offset + row * CHUNK
        chunk = [members[role][at : at + CHUNK] for role in range(disks)]
        data = [chunk[role] for role in roles]
        assert data == [secpat(1, CHUNK, (row * data_disks + k) * CHUNK) for k in range(data_disks)]
        p, q = bytearray(CHUNK), bytearray(CHUNK)
        parity.gen_pq(data, p, q)
        assert p == chunk[pd] and q == chunk[qd], row
        # The oracle itself agrees with md (on a slice: it is slow).
        head = [d[:256] for d in data]
        assert ref.gen_pq(head, 256) == (chunk[pd][:256], chunk[qd][:256])
        out_x, out_y = bytearray(CHUNK), bytearray(CHUNK)
        parity.rec_data_data([None, data[1], None], chunk[pd], chunk[qd], 0, 2, out_x, out_y)
        assert out_x == data[0] and out_y == data[2]
