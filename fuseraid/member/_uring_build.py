"""cffi API-mode build of the io_uring write ring (csrc/uring.c, liburing). Optional:
setup.py builds it only where liburing's header exists; without it the engine issues
member writes from worker threads (fuseraid/member/uring.py says which)."""

from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[2]

ffibuilder = FFI()
ffibuilder.cdef((ROOT / "csrc" / "uring.h").read_text().split("#include <stdint.h>")[1]
                .replace("#endif", ""))
ffibuilder.set_source(
    "fuseraid.member._uring",
    '#include "uring.h"',
    sources=["csrc/uring.c"],
    include_dirs=["csrc"],
    depends=["csrc/uring.h"],
    libraries=["uring"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
