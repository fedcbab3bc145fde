"""`cluster diff`: a server-side dry run of each object compared with the live one, Secrets masked."""

from __future__ import annotations

import dataclasses as _dc

from raibid.cluster.apply import LiveObjects, live_objects, strip
from raibid.cluster.client import Kube, KubeObject
from raibid.cluster.labels import FIELD_MANAGER
from raibid.cluster.render import Manifest
from raibid.errors import NotFound


def _mask_secret(obj: KubeObject | None, other: KubeObject | None) -> KubeObject | None:
    """Like kubectl diff: Secret values become *** and changed ones are marked."""
    if obj is None or obj.get("kind") != "Secret":
        return obj
    obj = dict(obj)
    theirs = (other or {}).get("data") or {}
    obj["data"] = {k: ("***" if other is None or theirs.get(k) == v else "*** (changed)")
                   for k, v in (obj.get("data") or {}).items()}
    return obj


@_dc.dataclass
class ObjectDiff:
    ref: str
    component: str
    action: str  # create, update
    diff: str


def diff_manifests(kube: Kube, manifests: list[Manifest], *, force: bool = True,
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
        a, b = strip(live), strip(merged)
        a, b = _mask_secret(a, b), _mask_secret(b, a)
        if a == b:
            continue
        before = dump(a, sort_keys=True).splitlines(keepends=True) if a else []
        after = dump(b, sort_keys=True).splitlines(keepends=True)
        text = "".join(difflib.unified_diff(before, after, fromfile=f"live/{m.ref}", tofile=f"merged/{m.ref}"))
        out.append(ObjectDiff(m.ref, m.component, "create" if live is None else "update", text))
    return out
