"""One synchronous driver per RAID level; make_driver picks it from the geometry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fuseraid.errors import GeometryError

from .base import Driver, OnMemberError, Slot
from .raid0 import Raid0Driver
from .raid1 import Raid1Driver
from .raid10 import Raid10Driver
from .raid456 import Raid456Driver

__all__ = ["Driver", "OnMemberError", "Slot", "make_driver"]

_DRIVERS: dict[int, type[Driver]] = {
    0: Raid0Driver,
    1: Raid1Driver,
    4: Raid456Driver,
    5: Raid456Driver,
    6: Raid456Driver,
    10: Raid10Driver,
}


def make_driver(
    geometry: Any,
    slots: Sequence[Slot | None],
    on_member_error: OnMemberError | None = None,
) -> Driver:
    """The driver for geometry.level over slots[role] (Slot or None for a missing role).
    A list passed as slots is shared: the engine fails a role by setting it to None."""
    cls = _DRIVERS.get(geometry.level)
    if cls is None:
        raise GeometryError(f"raid level {geometry.level} is not supported")
    return cls(geometry, slots, on_member_error)  # type: ignore[arg-type]
