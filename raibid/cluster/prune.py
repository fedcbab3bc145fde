"""Prune and delete: objects raibid labelled but no longer renders, and `down` in reverse order."""

from __future__ import annotations

import time as _time
from collections.abc import Callable

from raibid.cluster.apply import Change
from raibid.cluster.client import Kube, KubeObject
from raibid.cluster.components import BASE, COMPONENTS, tracked_kinds
from raibid.cluster.labels import COMPONENT, is_generated, selector
from raibid.cluster.render import Manifest
from raibid.errors import NotFound, TimeoutError_


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


def components_left(kube: Kube, removing: list[str]) -> list[str]:
    """Components not being removed that still have raibid objects in the cluster.

    The namespace holds every component's data (Gitea's chart puts its PVC there
    too), so it may only be deleted when none is left.
    """
    others = [c for c in COMPONENTS if c not in removing]
    if not others:
        return []
    found = find_labelled(kube, others, tracked_kinds())
    return sorted({(o["metadata"].get("labels") or {}).get(COMPONENT, "") for o in found} - {""})


def delete_manifests(kube: Kube, manifests: list[Manifest], *, purge: bool = False,
                     keep_namespace: list[str] | None = None) -> list[Change]:
    """Delete in reverse apply order. PVCs, generated Secrets and the namespace stay unless ``purge``.

    ``keep_namespace`` names components that stay installed: then the namespace
    stays even with ``purge`` (deleting it would delete them and their data).
    """
    changes = []
    for m in reversed(manifests):
        keep = None
        if m.component == BASE and keep_namespace:
            keep = f"{', '.join(keep_namespace)} still installed in it"
        elif not purge:
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


def wait_gone(kube: Kube, changes: list[Change], manifests: list[Manifest], *, timeout: float,
              interval: float = 1.0, progress: Callable[[str], None] | None = None) -> None:
    """Poll until every object ``changes`` reports deleted is gone (finalizers done), as ``kapp delete`` does."""
    by_ref = {m.ref: m for m in manifests}
    pending = [by_ref[c.ref] for c in changes if c.action == "deleted" and c.ref in by_ref]
    deadline = _time.monotonic() + timeout
    while True:
        still = []
        for m in pending:
            try:
                present = kube.get(m.api_version, m.kind, m.name, m.namespace) is not None
            except NotFound:
                present = False  # its kind is gone with its CRD
            if present:
                still.append(m)
            elif progress:
                progress(m.ref)
        pending = still
        if not pending:
            return
        if _time.monotonic() >= deadline:
            lines = "\n".join(f"  {m.ref}" for m in pending)
            raise TimeoutError_(f"deleted, but still present after {timeout:.0f}s (finalizers running?):\n{lines}",
                                hint="`kubectl get` them to see their finalizers; run `raibid cluster down` "
                                     "again, or pass --no-wait")
        _time.sleep(min(interval, max(0.0, deadline - _time.monotonic())))
