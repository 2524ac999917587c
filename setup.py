# cffi's setuptools integration needs the cffi_modules keyword, which only setup() takes.
# The io_uring write ring is optional: built where liburing's header is installed.
import os

from setuptools import setup

MODULES = ["fuseraid/parity/_build.py:ffibuilder"]
if os.path.exists("/usr/include/liburing.h") and os.environ.get("FUSERAID_NO_URING") != "1":
    MODULES.append("fuseraid/member/_uring_build.py:ffibuilder")

setup(cffi_modules=MODULES)
