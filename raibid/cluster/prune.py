"""Prune and delete: objects raibid labelled but no longer renders, and `down` in reverse order."""

from __future__ import annotations

from raibid.cluster.apply import Change
from raibid.cluster.client import Kube, KubeObject
from raibid.cluster.components import BASE, tracked_kinds
from raibid.cluster.labels import COMPONENT, is_generated, selector
from raibid.cluster.render import Manifest
from raibid.errors import NotFound


def find_labelled(kube: Kube, components: list[str], kinds: list[tuple[str, str]]) -> list[KubeObject]:
    """Every object of ``kinds`` that carries raibid's labels for ``components``."""
    found = []
    for api_version, kind in kinds:
        try:
            found += kube.list(api_version, kind, None, label_selector=selector(components))
        except NotFound:
            continue  # e.g. HelmChart when the CRD is absent
    return found


def prune(kube: Kube, manifests: list[Manifest], components: list[str], *, prune_pvcs: bool = False,
          dry_run: bool = False) -> list[Change]:
    """Delete labelled objects of the applied components that are no longer rendered.

    Never touches unlabelled objects. PVCs stay unless ``prune_pvcs``; Secrets raibid
    generated (passwords) always stay.
    """
    rendered = {m.key for m in manifests}
    kinds = sorted({(m.api_version, m.kind) for m in manifests} | set(tracked_kinds()))
    changes = []
    for obj in find_labelled(kube, components, kinds):
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])
        if key in rendered:
            continue
        comp = (meta.get("labels") or {}).get(COMPONENT, "")
        ch = Change(obj["kind"], meta["name"], meta.get("namespace"), comp, "pruned")
        if obj["kind"] == "PersistentVolumeClaim" and not prune_pvcs:
            ch.action, ch.detail = "kept", "PVC (use --prune-pvcs)"
        elif obj["kind"] == "Secret" and is_generated(obj):
            ch.action, ch.detail = "kept", "generated Secret"
        elif not dry_run:
            kube.delete(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
        changes.append(ch)
    return changes


def delete_manifests(kube: Kube, manifests: list[Manifest], *, purge: bool = False) -> list[Change]:
    """Delete in reverse apply order. PVCs, generated Secrets and the namespace stay unless ``purge``."""
    changes = []
    for m in reversed(manifests):
        keep = None
        if not purge:
            if m.kind == "PersistentVolumeClaim":
                keep = "PVC (use --purge)"
            elif m.kind == "Secret" and is_generated(m.obj):
                keep = "generated Secret (use --purge)"
            elif m.component == BASE:
                keep = "namespace holds kept PVCs and Secrets (use --purge)"
        if keep:
            changes.append(Change(m.kind, m.name, m.namespace, m.component, "kept", keep))
            continue
        try:
            gone = kube.delete(m.api_version, m.kind, m.name, m.namespace)
        except NotFound:
            gone = False  # kind not served (CRD gone)
        changes.append(Change(m.kind, m.name, m.namespace, m.component, "deleted" if gone else "absent"))
    return changes
