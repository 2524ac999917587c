"""The array engine (trio): assembly, create, the Array and its state. See docs/engine.md.

    from fuseraid.engine import open_array, assemble, create, Array

Names are loaded lazily so that importing a submodule (e.g. fuseraid.engine.state from
the migration) does not pull in the whole engine.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Array": "fuseraid.engine.array",
    "MemberState": "fuseraid.engine.array",
    "assemble": "fuseraid.engine.assemble",
    "open_array": "fuseraid.engine.assemble",
    "create": "fuseraid.engine.create",
    "IntervalLock": "fuseraid.engine.locks",
    "SuperblockSet": "fuseraid.engine.state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'fuseraid.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)
