"""Parity kernel throughput next to Intel ISA-L (Debian's libisal), same process, same
buffers, medians of repeated rounds.

GB/s counts the stripe's data bytes (data_disks * chunk) per call, for:
  P     xor_into / ISA-L xor_gen            (RAID5 parity of the data chunks)
  P+Q   gen_pq / ISA-L pq_gen               (RAID6 parity)
  rec2  rec_data_data / ISA-L ec_encode_data (two lost data chunks from the other data,
        P and Q; ISA-L the way its users do it: a 2 x data_disks decode matrix, tables
        from ec_init_tables built once outside the timing, gf_2vect_dot_prod inside)

Ours is timed through the cffi kernel with prebuilt pointer arrays (the same binding cost
ISA-L pays here) for every implementation this CPU runs, and once more through the public
Python API (argument checking included) for the default implementation.

    .venv/bin/python benchmarks/bench_parity.py [--rounds 41] [--impls avx512-gfni,avx2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from cffi import FFI
from fuseraid.parity._kernel import ffi, lib

from fuseraid import parity

ISAL_CDEF = """
int xor_gen(int vects, int len, void **array);
int pq_gen(int vects, int len, void **array);
void ec_init_tables(int k, int rows, unsigned char *a, unsigned char *gftbls);
void ec_encode_data(int len, int k, int rows, unsigned char *gftbls, unsigned char **data,
                    unsigned char **coding);
unsigned char gf_mul(unsigned char a, unsigned char b);
unsigned char gf_inv(unsigned char a);
"""

GEOMETRIES = [(4, 1), (8, 1), (4, 2), (8, 2)]  # (data disks, parity disks)
CHUNKS = [64 * 1024, 512 * 1024]


def aligned(n: int, rng: np.random.Generator) -> np.ndarray:
    raw = np.empty(n + 64, np.uint8)
    start = -raw.ctypes.data % 64
    buf = raw[start : start + n]
    buf[:] = rng.integers(0, 256, n, dtype=np.uint8)
    return buf


def interleaved(variants: dict[str, tuple[str, object]], nbytes: int, rounds: int):
    """{label: [seconds per call, one per round]}. Each round times every variant back to
    back (about 3 ms each), so a load burst from other processes hits them alike."""
    calls = max(1, int(0.003 * 20e9 / nbytes))  # sized for ~20 GB/s
    out: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):
        for label, (impl, fn) in variants.items():
            parity.use_implementation(impl)
            fn()
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            out[label].append((time.perf_counter() - t) / calls)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--impls", default=",".join(parity.supported_implementations()))
    args = ap.parse_args()
    impls = args.impls.split(",")
    default = parity.KERNEL_IMPL

    iffi = FFI()
    iffi.cdef(ISAL_CDEF)
    isal = iffi.dlopen("libisal.so.2")
    rng = np.random.default_rng(1)

    cols = ["isa-l"] + impls + [f"api({default})"]
    print(
        f"GB/s of data bytes, median of {args.rounds} interleaved rounds; "
        f"ratio = median per-round ours({impls[0]})/ISA-L"
    )
    head = f"{'op':5} {'geom':5} {'chunk':>6} " + " ".join(f"{c:>13}" for c in cols)
    print(head + "  ratio(" + impls[0] + ")")
    print("-" * (len(head) + 20))
    for chunk in CHUNKS:
        for nd, npar in GEOMETRIES:
            data = [aligned(chunk, rng) for _ in range(nd)]
            p, q = aligned(chunk, rng), aligned(chunk, rng)
            ox, oy = aligned(chunk, rng), aligned(chunk, rng)
            parity.gen_pq(data, p, q)
            ops = geometry_ops(isal, iffi, nd, npar, chunk, data, p, q, ox, oy)
            for name, (isal_fn, ours_fn, api_fn) in ops.items():
                nbytes = nd * chunk
                variants = {"isa-l": (default, isal_fn)}
                variants.update({impl: (impl, ours_fn) for impl in impls})
                variants[f"api({default})"] = (default, api_fn)
                res = interleaved(variants, nbytes, args.rounds)
                parity.use_implementation(default)
                if name == "rec2":
                    assert ox.tobytes() == data[0].tobytes() and oy.tobytes() == data[1].tobytes()
                gbs = {k: nbytes / statistics.median(v) / 1e9 for k, v in res.items()}
                # per-round ratios share that round's load; their median is the figure
                ratio = statistics.median(
                    i / o for i, o in zip(res["isa-l"], res[impls[0]], strict=True)
                )
                geom = f"{nd}+{npar}"
                print(
                    f"{name:5} {geom:5} {chunk // 1024:>5}K "
                    + " ".join(f"{gbs[c]:>13.2f}" for c in cols)
                    + f"  {ratio:.2f}x",
                    flush=True,
                )


def geometry_ops(isal, iffi, nd, npar, chunk, data, p, q, ox, oy):
    """{op: (isa-l call, our kernel call, our API call)} over the same buffers."""
    srcs = ffi.new("uint8_t *[]", [ffi.cast("uint8_t *", d.ctypes.data) for d in data])
    pp, qp = ffi.cast("uint8_t *", p.ctypes.data), ffi.cast("uint8_t *", q.ctypes.data)
    xp, yp = ffi.cast("uint8_t *", ox.ctypes.data), ffi.cast("uint8_t *", oy.ctypes.data)
    if npar == 1:
        arr = iffi.new("void *[]", [iffi.cast("void *", b.ctypes.data) for b in data + [p]])
        return {
            "P": (
                lambda: isal.xor_gen(nd + 1, chunk, arr),
                lambda: lib.fr_xor(pp, srcs, nd, chunk),
                lambda: parity.xor_into(p, data),
            )
        }
    arr = iffi.new("void *[]", [iffi.cast("void *", b.ctypes.data) for b in data + [p, q]])
    return {
        "P+Q": (
            lambda: isal.pq_gen(nd + 2, chunk, arr),
            lambda: lib.fr_gen_pq(srcs, nd, pp, qp, chunk),
            lambda: parity.gen_pq(data, p, q),
        ),
        "rec2": rec2_ops(isal, iffi, nd, chunk, data, p, q, ox, oy, srcs, pp, qp, xp, yp),
    }


def rec2_ops(isal, iffi, nd, chunk, data, p, q, ox, oy, srcs, pp, qp, xp, yp):
    """Lose data chunks 0 and 1; rebuild them from data 2.. plus P and Q."""
    x, y = 0, 1
    g = [parity.gf_pow2(i) for i in range(nd)]
    inv = parity.gf_inv(g[x] ^ g[y])
    a, b = parity.gf_mul(inv, g[y]), inv  # D_x = a*Pxy ^ b*Qxy, D_y = Pxy ^ D_x
    # Decode matrix over the surviving inputs (data 2.., P, Q), the way ISA-L users do.
    row_x = [a ^ parity.gf_mul(b, g[i]) for i in range(2, nd)] + [a, b]
    row_y = [1 ^ a ^ parity.gf_mul(b, g[i]) for i in range(2, nd)] + [1 ^ a, b]
    k = nd
    mat = iffi.new("unsigned char[]", row_x + row_y)
    tbls = iffi.new("unsigned char[]", 32 * k * 2)
    isal.ec_init_tables(k, 2, mat, tbls)
    ins = iffi.new(
        "unsigned char *[]",
        [iffi.cast("unsigned char *", b_.ctypes.data) for b_ in data[2:] + [p, q]],
    )
    outs = iffi.new(
        "unsigned char *[]", [iffi.cast("unsigned char *", o.ctypes.data) for o in (ox, oy)]
    )

    def isal_fn():
        isal.ec_encode_data(chunk, k, 2, tbls, ins, outs)

    isal_fn()
    assert ox.tobytes() == data[0].tobytes() and oy.tobytes() == data[1].tobytes()
    ox[:] = 0
    oy[:] = 0
    return (
        isal_fn,
        lambda: lib.fr_rec_data_data(srcs, nd, pp, qp, x, y, xp, yp, chunk),
        lambda: parity.rec_data_data(data, p, q, x, y, ox, oy),
    )


if __name__ == "__main__":
    main()
