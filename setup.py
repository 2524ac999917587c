# cffi's setuptools integration needs the cffi_modules keyword, which only setup() takes.
from setuptools import setup

setup(cffi_modules=["fuseraid/parity/_build.py:ffibuilder"])
