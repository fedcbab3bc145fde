"""The Flux side: the objects that point Flux at the config repo, their status, and reconcile requests.

Like ``flux bootstrap``, raibid creates a Secret, a ``GitRepository`` and a
``Kustomization`` in Flux's namespace; unlike it, it does not put Flux's own
components in the repo (the flux2 HelmChart that `cluster up` applies installs
them, and the chart's HelmChart is itself in the repo).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raibid.cluster.labels import common_labels
from raibid.cluster.secrets import b64encode
from raibid.errors import NotFound, RaibidError, TimeoutError_, UsageError

if TYPE_CHECKING:
    from raibid.cluster.apply import Change
    from raibid.cluster.client import Kube
    from raibid.gitea import Gitea
    from raibid.gitops.repo import RepoRef

# The flux2 HelmChart's targetNamespace (templates/flux/helmchart.yaml.j2); a test keeps them equal.
FLUX_NAMESPACE = "flux-system"
# The GitRepository and the Kustomization (flux bootstrap calls both "flux-system").
NAME = "raibid"
SECRET_NAME = "raibid-gitops-auth"
COMPONENT = "gitops"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
CRDS = ("gitrepositories.source.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io")
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
# Who sets the reconcile annotation, so raibid's own applies neither own nor remove it.
RECONCILE_MANAGER = "raibid-reconcile"
# The Gitea chart names its HTTP Service <release>-http; the release is the HelmChart raibid-gitea
# (templates/gitea/helmchart.yaml.j2, service.http.port 3000).
GITEA_HTTP_SERVICE = "raibid-gitea-http"
GITEA_HTTP_PORT = 3000

_FLUX_DURATION = r"([0-9]+(\.[0-9]+)?(ms|s|m|h))+"


def check_interval(interval: str) -> str:
    """``gitops.interval`` as Flux accepts it (the CRD's pattern: 1m, 30s, 1h30m)."""
    import re

    if not re.fullmatch(_FLUX_DURATION, interval):
        raise UsageError(f"invalid gitops.interval {interval!r}: use a Flux duration such as 1m, 30s or 1h30m",
                         hint="set gitops.interval in raibid.yaml (or RAIBID_GITOPS_INTERVAL)")
    return interval


def in_cluster_url(namespace: str, owner: str, name: str) -> str:
    """The repo's clone URL as pods see it: Gitea's HTTP Service, not the NodePort on the host."""
    return f"http://{GITEA_HTTP_SERVICE}.{namespace}.svc.cluster.local:{GITEA_HTTP_PORT}/{owner}/{name}.git"


def flux_objects(*, url: str, branch: str, path: str, interval: str, username: str,
                 token: str) -> list[dict[str, Any]]:
    """The Secret (username/password for Gitea), GitRepository and Kustomization, in apply order."""
    labels = common_labels(COMPONENT)
    meta = {"namespace": FLUX_NAMESPACE, "labels": labels}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET_NAME, **meta}, "type": "Opaque",
              # data, not stringData: re-applying an unchanged Secret changes nothing
              "data": {"username": b64encode(username), "password": b64encode(token)}}
    source = {"apiVersion": SOURCE_API, "kind": "GitRepository", "metadata": {"name": NAME, **meta},
              "spec": {"interval": interval, "url": url, "ref": {"branch": branch},
                       "secretRef": {"name": SECRET_NAME}, "timeout": "60s"}}
    kustomization = {"apiVersion": KUSTOMIZE_API, "kind": "Kustomization", "metadata": {"name": NAME, **meta},
                     "spec": {"interval": interval, "path": f"./{path}", "prune": True,
                              "sourceRef": {"kind": "GitRepository", "name": NAME}, "timeout": "5m"}}
    return [secret, source, kustomization]


def require_flux(kube: Kube) -> None:
    """Flux's CRDs must be served before raibid writes anything (nothing half-done on a cluster without Flux)."""
    missing = [name for name in CRDS if not kube.crd_established(name)]
    if missing:
        raise NotFound(f"Flux is not installed: the cluster does not serve {', '.join(missing)}",
                       hint="run `raibid cluster up -c flux` first (cluster.mode apply), then bootstrap")


def apply_flux_objects(kube: Kube, objs: list[dict[str, Any]], *, dry_run: bool = False) -> list[Change]:
    from raibid.cluster.apply import apply_manifests
    from raibid.cluster.render import Manifest

    return apply_manifests(kube, [Manifest(o, COMPONENT, "raibid/gitops/flux.py") for o in objs],
                           force=True, dry_run=dry_run)


# ----------------------------------------------------------------------------- status


@dataclass
class ObjectStatus:
    """One Flux object as `flux get` shows it."""

    kind: str
    name: str
    namespace: str
    exists: bool = False
    ready: str | None = None  # the Ready condition's status: True, False, Unknown
    reason: str = ""
    message: str = ""
    stalled: bool = False
    suspended: bool = False
    revision: str | None = None  # GitRepository: the artifact; Kustomization: lastAppliedRevision
    last_attempted_revision: str | None = None  # Kustomization only
    last_handled_reconcile_at: str | None = None
    follows: str = ""  # GitRepository: url and branch; Kustomization: path


@dataclass
class GitopsStatus:
    repo: str
    branch: str
    path: str
    head: str | None
    source: ObjectStatus
    kustomization: ObjectStatus
    verdict: str = "not-bootstrapped"  # in-sync, pending, failed, not-bootstrapped
    message: str = ""
    checked_at: str = field(default_factory=lambda: _now())


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def revision_sha(revision: str | None) -> str | None:
    """The commit of a Flux revision: ``main@sha1:<sha>`` (v1) or ``main/<sha>`` (v1beta2)."""
    if not revision:
        return None
    tail = revision.rsplit("@", 1)[-1]
    if ":" in tail:
        return tail.split(":", 1)[1]
    return tail.rsplit("/", 1)[-1]


def read_object(kube: Kube, api_version: str, kind: str) -> ObjectStatus:
    """GET raibid's GitRepository or Kustomization; not ``exists`` when it, or its CRD (no Flux), is missing."""
    try:
        obj = kube.get(api_version, kind, NAME, FLUX_NAMESPACE)
    except NotFound:  # the CRD is not served: Flux is not installed
        obj = None
    return object_status(kind, obj)


def object_status(kind: str, obj: dict[str, Any] | None) -> ObjectStatus:
    """What `flux get` shows of one object (None: it does not exist); `gitops status` and `top` both read it here."""
    st = ObjectStatus(kind, NAME, FLUX_NAMESPACE)
    if obj is None:
        return st
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    st.exists = True
    st.suspended = bool(spec.get("suspend"))
    if kind == "GitRepository":
        st.follows = f"{spec.get('url')} ({(spec.get('ref') or {}).get('branch')})"
    else:
        st.follows = str(spec.get("path"))
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            st.ready, st.reason, st.message = c.get("status"), c.get("reason") or "", c.get("message") or ""
        elif c.get("type") == "Stalled" and c.get("status") == "True":
            st.stalled = True
            st.message = st.message or c.get("message") or ""
    st.last_handled_reconcile_at = status.get("lastHandledReconcileAt")
    if kind == "GitRepository":
        st.revision = (status.get("artifact") or {}).get("revision")
    else:
        st.revision = status.get("lastAppliedRevision")
        st.last_attempted_revision = status.get("lastAttemptedRevision")
    return st


def decide(head: str | None, source: ObjectStatus, ks: ObjectStatus) -> tuple[str, str]:
    """(verdict, message): failed when Flux says so, in-sync when the Kustomization is Ready at the head."""
    if not source.exists or not ks.exists:
        return "not-bootstrapped", "Flux has no GitRepository/Kustomization for the config repo"
    if head is None:
        return "not-bootstrapped", "the config repo has no commit on its branch"
    short = head[:12]
    applied = revision_sha(ks.revision)
    # A failing source is a failure even when the head was applied: Flux cannot see the next commit.
    if source.ready == "False" or source.stalled:
        return "failed", f"GitRepository {FLUX_NAMESPACE}/{NAME}: {source.message or source.reason}"
    if ks.ready == "False" or ks.stalled:
        return "failed", f"Kustomization {FLUX_NAMESPACE}/{NAME}: {ks.message or ks.reason}"
    if ks.ready == "True" and applied == head:
        return "in-sync", f"Flux has applied {short}"
    if ks.suspended:
        return "pending", f"Kustomization {FLUX_NAMESPACE}/{NAME} is suspended (flux resume kustomization)"
    if applied and applied != head:
        return "pending", f"Flux has applied {applied[:12]}, the config repo is at {short}"
    return "pending", f"Flux has not applied {short} yet" + (f" ({ks.message})" if ks.message else "")


def verdict(head: str | None, source: ObjectStatus, ks: ObjectStatus, *, repo: str, branch: str, path: str,
            url: str | None = None) -> tuple[str, str]:
    """(verdict, message) for Flux's objects and the repo's head: the one rule `gitops status` and `top` share.

    ``url`` (the in-cluster URL) and ``path`` are what Flux should follow; when it follows another
    place the verdict is not-bootstrapped, whatever it applied there.
    """
    found, message = decide(head, source, ks)
    wanted = f"{url} ({branch})" if url else None
    if source.exists and ks.exists and ((wanted and source.follows != wanted) or ks.follows != f"./{path}"):
        # The config moved (gitops.repo, branch or path) but Flux still follows the old place.
        return "not-bootstrapped", (
            f"Flux follows {source.follows} at {ks.follows}, but the config says "
            f"{wanted or f'{repo} ({branch})'} at ./{path}: run `raibid gitops bootstrap` to point Flux there")
    return found, message


def flux_status(kube: Kube, *, repo: str, branch: str, path: str, head: str | None,
                url: str | None = None) -> GitopsStatus:
    """Flux's view of the config repo; ``url`` (the in-cluster URL) and ``path`` are what it should follow."""
    source = read_object(kube, SOURCE_API, "GitRepository")
    ks = read_object(kube, KUSTOMIZE_API, "Kustomization")
    found, message = verdict(head, source, ks, repo=repo, branch=branch, path=path, url=url)
    return GitopsStatus(repo, branch, path, head, source, ks, found, message)


def config_head(gitea: Gitea, repo: RepoRef, branch: str) -> str | None:
    """The config repo's branch head from Gitea's API (one request); None when the repo or branch is missing."""
    return gitea.branch_head(repo.owner, repo.name, branch)


# ----------------------------------------------------------------------------- reconcile


def request_reconcile(kube: Kube) -> str:
    """Set ``reconcile.fluxcd.io/requestedAt`` on the GitRepository, then the Kustomization, as `flux reconcile`."""
    token = _now()
    for api_version, kind in ((SOURCE_API, "GitRepository"), (KUSTOMIZE_API, "Kustomization")):
        if kube.get(api_version, kind, NAME, FLUX_NAMESPACE) is None:
            raise NotFound(f"{kind} {FLUX_NAMESPACE}/{NAME} not found: GitOps is not bootstrapped",
                           hint="run `raibid gitops bootstrap`")
        kube.apply({"apiVersion": api_version, "kind": kind,
                    "metadata": {"name": NAME, "namespace": FLUX_NAMESPACE, "annotations": {REQUESTED_AT: token}}},
                   field_manager=RECONCILE_MANAGER, force=True)
    return token


def wait_applied(kube: Kube, *, head: str, timeout: float, interval: float,
                 sleep: Callable[[float], None] = time.sleep,
                 progress: Callable[[GitopsStatus], None] | None = None,
                 repo: str = "", branch: str = "", path: str = "", url: str | None = None) -> GitopsStatus:
    """Poll until the Kustomization has applied ``head`` (Ready); fail when Flux fails on it; deadline ``timeout``."""
    if not interval > 0:  # 0 would ask the API server as fast as it answers, for the whole timeout
        raise UsageError(f"invalid wait interval {interval:g}s: it must be more than 0, e.g. 2s")
    deadline = time.monotonic() + timeout
    last = None
    while True:
        st = flux_status(kube, repo=repo, branch=branch, path=path, head=head, url=url)
        if st.verdict == "in-sync":
            return st
        if st.verdict == "not-bootstrapped":
            raise NotFound(f"GitOps is not bootstrapped: {st.message}", hint="run `raibid gitops bootstrap`")
        ks = st.kustomization
        tried_head = revision_sha(ks.last_attempted_revision) == head
        if st.verdict == "failed" and (tried_head or st.source.ready == "False"):
            raise RaibidError(f"Flux failed to apply {head[:12]}: {st.message}",
                              hint="fix the config (or the cluster) and run `raibid cluster up` again; "
                                   "`raibid gitops status` shows Flux's view")
        if progress and (last is None or (st.verdict, st.message) != (last.verdict, last.message)):
            progress(st)
        last = st
        if time.monotonic() >= deadline:
            raise TimeoutError_(f"Flux has not applied {head[:12]} after {timeout:g}s: {st.message}",
                                hint="`raibid gitops status` shows Flux's view; `flux logs` shows why")
        sleep(interval)
