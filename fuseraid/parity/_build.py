"""cffi API-mode build of the parity kernel (csrc/). Used by setup.py's cffi_modules,
which runs it from the project root (setuptools wants relative source paths)."""

from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[2]

ffibuilder = FFI()
ffibuilder.cdef((ROOT / "csrc" / "parity.h").read_text().split("#include <stdint.h>")[1])
ffibuilder.set_source(
    "fuseraid.parity._kernel",
    '#include "parity.h"',
    sources=["csrc/parity.c"],
    include_dirs=["csrc"],
    extra_compile_args=["-O3"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
