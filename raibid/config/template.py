"""`raibid config init`: a complete, commented config file generated from the schema."""

from __future__ import annotations

import dataclasses
from typing import Any

from raibid.config.model import Config


def commented_default_yaml() -> str:
    """A complete, commented config file with every default."""
    from raibid.yamlio import dump_scalar

    lines = [
        "# raibid configuration. Every key is optional; these are the built-in defaults.",
        "# Any key can be overridden by an env var RAIBID_<SECTION>_<KEY>, e.g. RAIBID_REDIS_URL.",
        "# Secrets are never stored here: *_env keys name the env var that holds each secret.",
    ]

    def walk(obj: Any, indent: int) -> None:
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            v = getattr(obj, f.name)
            help_ = f.metadata.get("help")
            pad = "  " * indent
            if help_:
                lines.append(f"{pad}# {help_}")
            if dataclasses.is_dataclass(v):
                lines.append(f"{pad}{f.name}:")
                walk(v, indent + 1)
            else:
                lines.append(f"{pad}{f.name}: {dump_scalar(v)}")

    walk(Config(), 0)
    lines.append("")
    return "\n".join(lines)
