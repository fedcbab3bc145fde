"""The labels, annotations and field manager every object raibid manages carries (single source)."""

from __future__ import annotations

MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"
COMPONENT = "raibid.dev/component"
GENERATED = "raibid.dev/generated"

# The field manager of every server-side apply raibid makes.
FIELD_MANAGER = "raibid"


def common_labels(component: str) -> dict[str, str]:
    return {MANAGED_BY: "raibid", PART_OF: "raibid", COMPONENT: component}


def selector(components: list[str]) -> str:
    """A label selector for raibid's objects of these components."""
    return f"{MANAGED_BY}=raibid,{COMPONENT} in ({','.join(components)})"


def is_generated(obj: dict) -> bool:
    """A Secret raibid generated (passwords, tokens): kept across applies and by `down` unless purged."""
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(GENERATED) == "true"
