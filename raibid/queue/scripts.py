"""The Lua scripts (``lua/*.lua``), one per state change, loaded with importlib.resources.

A script may start with shared fragments (``owns``, ``trim``, ``expire_log``, ``retain``, ``event``): Redis runs each
whole script atomically, so a check and the change it guards cannot race.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

# script -> the fragments it is prefixed with
_FRAGMENTS: dict[str, tuple[str, ...]] = {
    "heartbeat": ("owns",),
    "submit": ("event",),
    "finish": ("owns", "trim", "expire_log", "retain", "event"),
    "requeue": ("trim", "expire_log", "event"),
    "start": ("expire_log", "event"),
    "cancel": ("expire_log", "event"),
    "retry": ("event",),
    "approve": ("event",),
    "retain_run": ("retain",),
}


@cache
def source(name: str) -> str:
    """The full Lua text of script ``name``, fragments first."""
    parts = [*_FRAGMENTS.get(name, ()), name]
    folder = resources.files("raibid.queue") / "lua"
    return "\n".join((folder / f"{p}.lua").read_text(encoding="utf-8") for p in parts)
