from __future__ import annotations

import pytest
from mdfixtures import FIXTURES, fixture_names, load_meta, unpack_fixture  # noqa: F401


@pytest.fixture
def md_fixture(tmp_path):
    """Factory: md_fixture(name) -> (meta, [member paths])."""

    def make(name: str):
        return load_meta(name), unpack_fixture(name, tmp_path / name)

    return make
