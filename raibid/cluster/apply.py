"""The apply engine: plan (render with the live passwords), ordered server-side apply, classification."""

from __future__ import annotations

import dataclasses as _dc
import functools
import time as _time
from collections.abc import Callable

from raibid.cluster.client import ImmutableField, Kube, KubeObject, NamespaceTerminating
from raibid.cluster.components import crd_provider
from raibid.cluster.labels import FIELD_MANAGER
from raibid.cluster.render import Manifest
from raibid.cluster.secrets import generated_secrets_from
from raibid.errors import ClusterError, NotFound, RaibidError

VOLATILE_META = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink")


@_dc.dataclass
class Change:
    """What happened (or would happen) to one object."""

    kind: str
    name: str
    namespace: str | None
    component: str
    action: str  # created, configured, unchanged, pruned, kept, failed, not-applied
    detail: str = ""

    @property
    def ref(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{ns}{self.name}"


class ApplyFailed(ClusterError):
    """An apply stopped part-way; ``changes`` says what was and was not applied."""

    def __init__(self, cause: Exception, changes: list[Change]) -> None:
        msg = getattr(cause, "message", str(cause))
        super().__init__(msg, hint=getattr(cause, "hint", None))
        self.exit_code = getattr(cause, "exit_code", self.exit_code)
        self.cause = cause
        self.changes = changes


LiveObjects = dict[tuple[str, str, str, str], KubeObject]


def live_objects(kube: Kube, manifests: list[Manifest]) -> LiveObjects:
    """The live counterpart of each rendered object that exists: one LIST per kind and namespace."""
    groups = {(m.api_version, m.kind, m.namespace or "") for m in manifests}
    wanted = {m.key for m in manifests}
    out: LiveObjects = {}
    for api_version, kind, ns in sorted(groups):
        try:
            items = kube.list(api_version, kind, ns or None)
        except NotFound:
            continue  # kind not served yet (its CRD is applied in this run) or namespace missing
        for item in items:
            meta = item.get("metadata") or {}
            key = (api_version, kind, meta.get("namespace") or "", meta["name"])
            if key in wanted:
                out[key] = item
    return out


def plan(kube: Kube, render: Callable[[dict[str, str]], list[Manifest]],
         namespace: str) -> tuple[list[Manifest], LiveObjects]:
    """Render with the passwords already in the cluster (generated ones only for new Secrets).

    ``render(secrets)`` renders the manifests; the first pass only finds which
    objects to look up, so the live Secrets come from the same LISTs as the rest.
    """
    draft = render({})
    live = live_objects(kube, draft)
    secrets = generated_secrets_from(live.values(), namespace)
    return (render(secrets) if secrets else draft), live


def _fail(changes: list[Change], m: Manifest, rest: list[Manifest], err: RaibidError) -> ApplyFailed:
    changes.append(Change(m.kind, m.name, m.namespace, m.component, "failed", err.message))
    changes += [Change(n.kind, n.name, n.namespace, n.component, "not-applied") for n in rest]
    return ApplyFailed(err, changes)


def wait_served(kube: Kube, api_version: str, kind: str, *, timeout: float, interval: float = 1.0,
                provided_by: str = "", progress: Callable[[str], None] | None = None,
                hopeless: Callable[[], str | None] | None = None) -> None:
    """Wait until the API server serves ``kind`` (its CRD is Established), or raise naming who provides it.

    ``hopeless`` says why the CRD will never come (the chart that installs it failed), so the
    wait stops at once instead of running out its timeout.
    """
    if progress:
        progress(f"waiting for the {kind} CRD ({api_version}){' from ' + provided_by if provided_by else ''}")
    deadline = _time.monotonic() + timeout
    while not kube.serves(api_version, kind, refresh=True):
        why = hopeless() if hopeless else None
        if why:
            raise ClusterError(f"{kind} ({api_version}) will not be served: {why}",
                               hint="`raibid cluster status` shows why; fix it and run `raibid cluster up` again")
        if _time.monotonic() >= deadline:
            where = (f"; its CRD is installed by {provided_by}" if provided_by
                     else "; no raibid component installs it")
            raise ClusterError(
                f"{kind} ({api_version}) is not served: its CustomResourceDefinition was not Established within "
                f"{timeout:g}s{where}",
                hint=("check `raibid cluster status` for the component that installs it, or run "
                      "`raibid cluster up` with a longer --timeout") if provided_by else
                     "install the CRD first")
        _time.sleep(min(interval, max(0.0, deadline - _time.monotonic())))


def _failed_chart(kube: Kube, charts: list[Manifest]) -> str | None:
    """Why one of these HelmCharts can no longer install its CRDs (its helm-install Job failed), or None."""
    from raibid.cluster.readiness import helm_job_state

    for c in charts:
        hc = kube.get(c.api_version, c.kind, c.name, c.namespace)
        if hc is not None:
            _, failed, why = helm_job_state(kube, hc)
            if failed:
                return f"{c.ref} failed to install ({why})"
    return None


def apply_manifests(kube: Kube, manifests: list[Manifest], *, force: bool = False, dry_run: bool = False,
                    on_change: Callable[[Change], None] | None = None, live: LiveObjects | None = None,
                    crd_timeout: float = 300.0, crd_interval: float = 1.0,
                    progress: Callable[[str], None] | None = None, replace: bool = False) -> list[Change]:
    """Server-side apply each manifest in order; report created/configured/unchanged.

    Change groups, as kapp applies them: objects whose kind the server does not
    serve yet (a custom resource whose CRD a chart in this same apply installs)
    go last, each kind after its CRD is Established (``crd_timeout``).

    ``replace``: an object that holds no data and whose immutable fields changed is
    deleted and created again (``replaced``); PVCs and generated Secrets never are.

    Stops at the first failure and raises ApplyFailed listing what was applied
    and what was not, so a re-run converges from there.
    """
    if live is None:
        live = live_objects(kube, manifests)
    for m in manifests:
        if m.kind == "Namespace" and ((live.get(m.key) or {}).get("metadata") or {}).get("deletionTimestamp"):
            raise NamespaceTerminating(
                f"namespace {m.name} is being deleted (Terminating); nothing can be created in it until it is gone",
                hint=f"wait until `kubectl get namespace {m.name}` shows it gone, then run again "
                     "(`raibid cluster down` waits for it unless --no-wait)")
    applied_crds = {m.name for m in manifests if m.kind == "CustomResourceDefinition"}
    pending_kinds: set[tuple[str, str]] = set()
    for m in manifests:
        if m.kind != "HelmChart" and "/" in m.api_version and "." in m.api_version.split("/")[0] \
                and (m.api_version, m.kind) not in pending_kinds and not kube.serves(m.api_version, m.kind):
            pending_kinds.add((m.api_version, m.kind))
    now = [m for m in manifests if (m.api_version, m.kind) not in pending_kinds]
    later = [m for m in manifests if (m.api_version, m.kind) in pending_kinds]
    ordered = now + later
    before = {k: (v.get("metadata") or {}).get("resourceVersion", "") for k, v in live.items()}
    new_namespaces = {m.name for m in manifests if m.kind == "Namespace" and m.key not in before}
    changes: list[Change] = []
    waited: set[tuple[str, str]] = set()
    for i, m in enumerate(ordered):
        rest = ordered[i + 1:]
        if (m.api_version, m.kind) in pending_kinds:
            if dry_run:
                changes.append(Change(m.kind, m.name, m.namespace, m.component, "created",
                                      "not checked: its CRD is not installed yet"))
                continue
            if (m.api_version, m.kind) not in waited:
                provider = crd_provider(m.api_version)
                by = (f"component {provider.name} (`raibid cluster up -c {provider.name}`)" if provider
                      else ("a CustomResourceDefinition in this apply" if applied_crds else ""))
                charts = [c for c in manifests if provider and c.kind == "HelmChart" and c.component == provider.name]
                try:
                    wait_served(kube, m.api_version, m.kind, timeout=crd_timeout, interval=crd_interval,
                                provided_by=by, progress=progress, hopeless=functools.partial(_failed_chart, kube, charts))
                except RaibidError as e:
                    raise _fail(changes, m, rest, e) from None
                waited.add((m.api_version, m.kind))
        try:
            out = kube.apply(m.obj, field_manager=FIELD_MANAGER, force=force, dry_run=dry_run)
        except NotFound as e:
            if dry_run and (m.namespace in new_namespaces or m.kind == "HelmChart"):
                # A dry run creates nothing, so objects in a namespace (or of a CRD) that
                # this apply would create cannot be checked by the server yet.
                changes.append(Change(m.kind, m.name, m.namespace, m.component, "created",
                                      "not checked: its namespace or kind is created by this apply"))
                continue
            raise _fail(changes, m, rest, e) from None
        except ImmutableField as e:
            if not (replace and replaceable(m)):
                raise _fail(changes, m, rest, immutable_explained(e, m, live.get(m.key))) from None
            if dry_run:
                changes.append(Change(m.kind, m.name, m.namespace, m.component, "replaced",
                                      "would be deleted and created again (immutable field changed)"))
                continue
            try:
                _replace(kube, m, timeout=crd_timeout, interval=crd_interval)
            except RaibidError as err:
                raise _fail(changes, m, rest, err) from None
            change = Change(m.kind, m.name, m.namespace, m.component, "replaced", "immutable field changed")
            changes.append(change)
            if on_change:
                on_change(change)
            continue
        except RaibidError as e:
            raise _fail(changes, m, rest, e) from None
        old_rv = before.get(m.key)
        if old_rv is None and m.key not in before:
            action = "created"
        elif dry_run:
            # A dry run never moves the resourceVersion: compare what would be stored with what is.
            action = "unchanged" if strip(out) == strip(live[m.key]) else "configured"
        elif (out.get("metadata") or {}).get("resourceVersion") == old_rv:
            action = "unchanged"
        else:
            action = "configured"
        change = Change(m.kind, m.name, m.namespace, m.component, action)
        changes.append(change)
        if on_change:
            on_change(change)
    return changes


def strip(obj: KubeObject | None) -> KubeObject | None:
    """The object without status and server-set metadata: what a user's change can differ in."""
    if obj is None:
        return None
    obj = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in VOLATILE_META}
    ann = {k: v for k, v in (meta.get("annotations") or {}).items()
           if k != "kubectl.kubernetes.io/last-applied-configuration"}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    obj["metadata"] = meta
    return obj


def replaceable(m: Manifest) -> bool:
    """Objects that hold no data of their own may be deleted and created again."""
    from raibid.cluster.labels import is_generated

    return m.kind not in ("PersistentVolumeClaim", "Namespace", "CustomResourceDefinition") and not (
        m.kind == "Secret" and is_generated(m.obj))


def _replace(kube: Kube, m: Manifest, *, timeout: float, interval: float) -> None:
    """Delete (dependents first) and wait until gone, then apply again."""
    kube.delete(m.api_version, m.kind, m.name, m.namespace, propagation="Foreground")
    deadline = _time.monotonic() + timeout
    while kube.get(m.api_version, m.kind, m.name, m.namespace) is not None:
        if _time.monotonic() >= deadline:
            raise ClusterError(f"replace {m.ref}: deleted, but still present after {timeout:g}s",
                               hint="its finalizers are still running; run `raibid cluster up --replace` again")
        _time.sleep(min(interval, max(0.0, deadline - _time.monotonic())))
    kube.apply(m.obj, field_manager=FIELD_MANAGER)


def immutable_explained(e: ImmutableField, m: Manifest, live: KubeObject | None) -> ImmutableField:
    """Say what to do about a field that cannot change: keep the data, or start that object over."""
    if m.kind == "PersistentVolumeClaim":
        spec = (live or {}).get("spec") or {}
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "?")
        err = ImmutableField(
            f"{e.message}\nPVC {m.namespace}/{m.name} holds data: its storage class cannot change and its size can "
            f"only grow. The live claim has storageClassName {spec.get('storageClassName', '?')!r} and "
            f"size {size}.",
            hint="to keep the data, set cluster.storage_class (and the size, e.g. cluster.redis_storage) back to "
                 "the live values; to start over without the data, back it up, then "
                 f"`raibid cluster down -c {m.component} --purge --yes` and `raibid cluster up -c {m.component}`")
    else:
        err = ImmutableField(f"{e.message}\n{m.ref} holds no data of its own, so it can be deleted and created "
                             "again with the new value.",
                             hint="run `raibid cluster up --replace` to delete and re-create objects whose immutable "
                                  "fields changed (PVCs and generated Secrets are never replaced)")
    return err
