"""cffi API-mode build of the parity kernel (csrc/). Used by setup.py's cffi_modules,
which runs it from the project root (setuptools wants relative source paths)."""

from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    "parity.c",
    "parity_portable.c",
    "parity_ssse3.c",
    "parity_avx2.c",
    "parity_avx512bw.c",
    "parity_avx512gfni.c",
]

ffibuilder = FFI()
# The header's declarations after the includes are plain C that cdef understands.
ffibuilder.cdef((ROOT / "csrc" / "parity.h").read_text().split("#include <stdint.h>")[1])
ffibuilder.set_source(
    "fuseraid.parity._kernel",
    '#include "parity.h"',
    sources=[f"csrc/{name}" for name in SOURCES],
    include_dirs=["csrc"],
    depends=[
        f"csrc/{name}"
        for name in ("parity.h", "parity_impl.h", "parity_vec_tmpl.h", "parity_avx512.h")
    ],
    # No -march: ISA-specific code is opted into per function and dispatched at runtime.
    extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
