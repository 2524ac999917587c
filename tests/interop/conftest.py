"""Fixtures for the interop tests: the guest image (built on demand when
scripts/interop-setup.sh has not built it) and a scratch directory for member images."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mdvm
import pytest


@pytest.fixture(scope="session")
def md_image() -> mdvm.Image:
    if mdvm.qemu_binary() is None:
        pytest.skip("qemu-system-x86_64 is not installed: run scripts/interop-setup.sh")
    return mdvm.load_image() or mdvm.build()


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    """Member images add up to hundreds of MB: removed at the end of the session."""
    d = Path(tempfile.mkdtemp(prefix="fuseraid-interop-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
