"""Live reshape (docs/reshape.md): plan a geometry change, migrate window by window
between the old and the new layout behind a moving border, crash-safe, resumable.

`open_array`/`assemble` here are the engine's with the migration's reshape opener: use
them wherever the members may be in mid-reshape (the engine alone refuses those)."""

from fuseraid.migration.border import Border
from fuseraid.migration.migrator import Reshape, begin_reshape, rebuild_offline, run_offline
from fuseraid.migration.plan import BACKWARD, FORWARD, Plan, Request, plan_reshape
from fuseraid.migration.resume import (
    assemble,
    open_array,
    open_members,
    open_reshaping,
    reshape_opener,
    resume_reshape,
)
from fuseraid.migration.runner import Control, run_live

__all__ = [
    "BACKWARD", "FORWARD", "Border", "Control", "Plan", "Request", "Reshape", "assemble",
    "begin_reshape", "open_array", "open_members", "open_reshaping", "plan_reshape",
    "rebuild_offline", "reshape_opener", "resume_reshape", "run_live", "run_offline",
]
