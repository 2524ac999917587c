"""Live reshape (docs/reshape.md): plan a geometry change, migrate window by window
between the old and the new layout behind a moving border, crash-safe, resumable."""

from fuseraid.migration.border import Border
from fuseraid.migration.migrator import (
    Control,
    Reshape,
    begin_reshape,
    rebuild_offline,
    run_live,
    run_offline,
)
from fuseraid.migration.plan import BACKWARD, FORWARD, Plan, Request, plan_reshape
from fuseraid.migration.resume import open_members, open_reshaping, resume_reshape

__all__ = [
    "BACKWARD", "FORWARD", "Border", "Control", "Plan", "Request", "Reshape",
    "begin_reshape", "open_members", "open_reshaping", "plan_reshape", "rebuild_offline",
    "resume_reshape", "run_live", "run_offline",
]
