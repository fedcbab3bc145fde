"""`cluster diff`: a server-side dry run of each object compared with the live one, Secrets masked."""

from __future__ import annotations

import dataclasses as _dc
from typing import Any

from raibid.cluster.apply import LiveObjects, immutable_explained, live_objects, strip
from raibid.cluster.client import ImmutableField, Kube, KubeObject
from raibid.cluster.labels import FIELD_MANAGER
from raibid.cluster.render import Manifest
from raibid.errors import NotFound


def mask_secrets(before: KubeObject | None, after: KubeObject | None) -> tuple[KubeObject | None, KubeObject | None]:
    """Like kubectl diff, after comparing: Secret values become ``***``; a value that differs
    becomes ``*** (before)`` on one side and ``*** (after)`` on the other, so the change shows."""
    if (before or after or {}).get("kind") != "Secret":
        return before, after
    old = dict((before or {}).get("data") or {})
    new = dict((after or {}).get("data") or {})
    for field in ("stringData",):  # never shown in clear either
        old.update((before or {}).get(field) or {})
        new.update((after or {}).get(field) or {})

    def masked(side: dict, other: dict, label: str) -> dict:
        return {k: ("***" if k not in other or other[k] == v else f"*** ({label})") for k, v in side.items()}

    out: list[dict[str, Any] | None] = []
    for obj, side, other, label in ((before, old, new, "before"), (after, new, old, "after")):
        if obj is None:
            out.append(None)
            continue
        obj = {k: v for k, v in obj.items() if k != "stringData"}
        if side:
            obj["data"] = masked(side, other, label)
        out.append(obj)
    return out[0], out[1]


@_dc.dataclass
class ObjectDiff:
    ref: str
    component: str
    action: str  # create, update
    diff: str


def diff_manifests(kube: Kube, manifests: list[Manifest], *, force: bool = False,
                   live_objs: LiveObjects | None = None) -> list[ObjectDiff]:
    """Dry-run server-side apply of each manifest, compared with the live object."""
    import difflib

    from raibid.yamlio import dump

    if live_objs is None:
        live_objs = live_objects(kube, manifests)
    out = []
    for m in manifests:
        live = live_objs.get(m.key)
        try:
            merged = kube.apply(m.obj, field_manager=FIELD_MANAGER, force=force, dry_run=True)
        except NotFound:
            # Its CRD or namespace is created by this same apply: it would be created as rendered.
            live, merged = None, m.obj
        except ImmutableField as e:  # explained as `up` explains it: keep the data, or --replace
            raise immutable_explained(e, m, live) from None
        a, b = strip(live), strip(merged)
        if a == b:  # compare first, then mask: a changed Secret value must still show
            continue
        a, b = mask_secrets(a, b)
        before = dump(a, sort_keys=True).splitlines(keepends=True) if a else []
        after = dump(b, sort_keys=True).splitlines(keepends=True)
        text = "".join(difflib.unified_diff(before, after, fromfile=f"live/{m.ref}", tofile=f"merged/{m.ref}"))
        out.append(ObjectDiff(m.ref, m.component, "create" if live is None else "update", text))
    return out
