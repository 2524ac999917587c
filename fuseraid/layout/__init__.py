"""Layout math (pure, no I/O): md's placement of data, P, Q and copies on members."""

from __future__ import annotations

from fuseraid.layout.base import Extent, Layout
from fuseraid.layout.geometry import Geometry, Raid10Params, decode_raid10, encode_raid10
from fuseraid.layout.names import (
    DEFAULT_CHUNK,
    default_layout,
    describe_layout,
    layout_name,
    layout_number,
)
from fuseraid.layout.parity import Block, ParityLayout, RowMap
from fuseraid.layout.raid0 import Raid0Layout, Zone
from fuseraid.layout.raid1 import Raid1Layout
from fuseraid.layout.raid10 import Raid10Layout

__all__ = [
    "DEFAULT_CHUNK", "Block", "Extent", "Geometry", "Layout", "ParityLayout",
    "Raid0Layout", "Raid10Layout", "Raid10Params", "Raid1Layout", "RowMap", "Zone",
    "decode_raid10", "default_layout", "describe_layout", "encode_raid10",
    "layout_name", "layout_number", "make_layout",
]


def make_layout(geom: Geometry) -> Layout:
    """The layout class for the geometry's level."""
    if geom.level == 0:
        return Raid0Layout(geom)
    if geom.level == 1:
        return Raid1Layout(geom)
    if geom.level == 10:
        return Raid10Layout(geom)
    return ParityLayout(geom)
