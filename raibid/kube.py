"""Kubernetes access: one client per Application, typed errors at the boundary.

Everything here goes through ``kubernetes.config.new_client_from_config`` and
the DynamicClient; no global client state is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses as _dc
import hashlib
import json
import os
import time as _time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raibid.errors import (
    AlreadyExists,
    AuthError,
    ClusterError,
    ConfigError,
    ConflictError,
    InvalidError,
    NotFound,
    RaibidError,
    Unreachable,
)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "raibid"


def status_body(body: Any) -> tuple[str, str | None]:
    """(human message, reason) from a Kubernetes Status body, or the raw text and None."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except ValueError:
            return body.strip()[:500], None
    else:
        data = body
    if isinstance(data, dict):
        return str(data.get("message") or data.get("reason") or data), data.get("reason")
    return str(data), None


@contextlib.contextmanager
def translate(verb: str, what: str, namespace: str | None = None, server: str | None = None) -> Iterator[None]:
    """Map kubernetes/urllib3 exceptions to raibid's typed errors.

    ``verb`` and ``what`` name the request (``apply``, ``Deployment/redis``),
    so a 403 says exactly which permission is missing.
    """
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError
    from urllib3.exceptions import HTTPError as Urllib3Error

    where = f" in namespace {namespace}" if namespace else ""
    try:
        yield
    except ResourceNotFoundError as e:
        raise NotFound(f"the cluster does not serve {what}: {e}",
                       hint="is the CRD installed? `raibid doctor` checks the CRDs") from None
    except (ApiException, DynamicApiError) as e:
        status = int(getattr(e, "status", 0) or 0)
        body = getattr(e, "body", None)
        msg, reason = status_body(body) if body else (getattr(e, "reason", None) or str(e), None)
        if status in (401, 403):
            raise AuthError(f"{verb} {what}{where}: forbidden ({status}): {msg}",
                            hint="check the kubeconfig user and its RBAC permissions") from None
        if status == 404:
            raise NotFound(f"{verb} {what}{where}: not found: {msg}") from None
        if status == 409:
            if reason == "AlreadyExists":
                raise AlreadyExists(f"{verb} {what}{where}: {msg}") from None
            raise ConflictError(f"{verb} {what}{where}: conflict: {msg}",
                                hint="re-run with --force-conflicts to take ownership of these fields") from None
        if status == 422:
            raise InvalidError(f"{verb} {what}{where}: rejected by the API server: {msg}") from None
        if status == 0:
            raise Unreachable(f"{verb} {what}: cannot reach the API server{_at(server)}: {msg}") from None
        raise ClusterError(f"{verb} {what}{where}: API server error {status}: {msg}") from None
    except Urllib3Error as e:
        reason = getattr(e, "reason", None) or e
        raise Unreachable(f"cannot reach the API server{_at(server)}: {reason}",
                          hint="is k3s running? check --kubeconfig and --context") from None
    except OSError as e:
        raise Unreachable(f"cannot reach the API server{_at(server)}: {e}") from None


def _at(server: str | None) -> str:
    return f" at {server}" if server else ""


class Kube:
    """A thin, typed facade over one ApiClient and its DynamicClient."""

    def __init__(self, api_client: Any, *, cache_dir: Path | None = None) -> None:
        self.api_client = api_client
        self.server: str = api_client.configuration.host
        self._cache_dir = cache_dir or _cache_dir()
        self._dyn: Any = None

    @classmethod
    def from_kubeconfig(cls, path: str, context: str | None = None) -> Kube:
        from kubernetes import config as kconfig
        from kubernetes.config.config_exception import ConfigException

        if not os.path.exists(path):
            raise ConfigError(f"kubeconfig not found: {path}",
                              hint="on k3s: export KUBECONFIG=/etc/rancher/k3s/k3s.yaml, or pass --kubeconfig")
        from kubernetes.client import Configuration

        cfg = Configuration()
        # Fail fast when the API server is down: no urllib3 retry storm. Set before
        # the client exists, because its connection pool reads it once.
        cfg.retries = 0
        try:
            client = kconfig.new_client_from_config(config_file=path, context=context, persist_config=False,
                                                    client_configuration=cfg)
        except ConfigException as e:
            raise ConfigError(f"kubeconfig {path}: {e}") from None
        except Exception as e:  # yaml errors and friends from a broken kubeconfig
            raise ConfigError(f"kubeconfig {path} is not usable: {e}") from None
        return cls(client)

    # ------------------------------------------------------------------ discovery
    @property
    def dynamic(self) -> Any:
        if self._dyn is None:
            from kubernetes.dynamic import DynamicClient

            self._cache_dir.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256(self.server.encode()).hexdigest()[:16]
            cache = self._cache_dir / f"discovery-{digest}.json"
            try:
                with translate("discover", "API resources", server=self.server):
                    self._dyn = DynamicClient(self.api_client, cache_file=str(cache))
            except ValueError as e:  # the client's word for a dropped or non-HTTP connection
                raise Unreachable(f"cannot reach the API server at {self.server}: {e}",
                                  hint="is k3s running? check --kubeconfig and --context") from None
        return self._dyn

    def resource(self, api_version: str, kind: str) -> Any:
        with translate("discover", f"{kind} ({api_version})", server=self.server):
            return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def version(self) -> dict[str, Any]:
        from kubernetes import client

        with translate("get", "/version", server=self.server):
            info = client.VersionApi(self.api_client).get_code()
        return {"git_version": info.git_version, "platform": info.platform,
                "major": info.major, "minor": info.minor}

    # ------------------------------------------------------------------ objects
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        res = self.resource(api_version, kind)
        try:
            with translate("get", f"{kind}/{name}", namespace, self.server):
                obj = self.dynamic.get(res, name=name, namespace=namespace if res.namespaced else None)
        except NotFound:
            return None
        return obj.to_dict()

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict]:
        res = self.resource(api_version, kind)
        with translate("list", kind, namespace, self.server):
            out = self.dynamic.get(res, namespace=namespace if res.namespaced else None,
                                   label_selector=label_selector)
        return out.to_dict().get("items", [])

    def apply(self, obj: dict, *, field_manager: str = "raibid", force: bool = False,
              dry_run: bool = False) -> dict:
        api_version, kind = obj["apiVersion"], obj["kind"]
        meta = obj.get("metadata", {})
        res = self.resource(api_version, kind)
        ns = meta.get("namespace") if res.namespaced else None
        kwargs: dict[str, Any] = {"field_manager": field_manager}
        if dry_run:
            kwargs["dry_run"] = "All"
        with translate("apply", f"{kind}/{meta.get('name')}", ns, self.server):
            out = self.dynamic.server_side_apply(res, body=obj, name=meta["name"], namespace=ns,
                                                 force_conflicts=force, **kwargs)
        return out.to_dict()

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None,
               *, propagation: str = "Background") -> bool:
        """Delete one object; False when it was already gone."""
        res = self.resource(api_version, kind)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            with translate("delete", f"{kind}/{name}", namespace, self.server):
                self.dynamic.delete(res, name=name, namespace=namespace if res.namespaced else None, body=body)
        except NotFound:
            return False
        return True

    def crd_established(self, name: str) -> bool:
        crd = self.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", name)
        if not crd:
            return False
        conds = (crd.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conds) or not conds


def discover_redis(kube: Kube, namespace: str) -> tuple[str, str | None]:
    """Find raibid's in-cluster Redis: the Service's ClusterIP and the Secret's password."""
    svc = kube.get("v1", "Service", "raibid-redis", namespace)
    if not svc:
        raise NotFound(f"Service raibid-redis not found in namespace {namespace}",
                       hint="run `raibid cluster up --component redis`, or set redis.url")
    ip = (svc.get("spec") or {}).get("clusterIP")
    port = next((p.get("port") for p in (svc.get("spec") or {}).get("ports", []) if p.get("name") == "redis"), 6379)
    secret = kube.get("v1", "Secret", "raibid-redis", namespace)
    password = generated_secrets_from([{**secret, "kind": "Secret"}] if secret else [], namespace).get("redis_password")
    return f"redis://{ip}:{port}/0", password


# =========================================================================== apply engine


FIELD_MANAGER = "raibid"
_VOLATILE_META = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink")

# Kinds that `--prune` and `status` look for by label, in addition to whatever is rendered.
TRACKED_KINDS: list[tuple[str, str]] = [
    ("v1", "Secret"), ("v1", "ConfigMap"), ("v1", "Service"), ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"), ("apps/v1", "StatefulSet"), ("apps/v1", "Deployment"),
    ("batch/v1", "Job"), ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("helm.cattle.io/v1", "HelmChart"),
]


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


LiveObjects = dict[tuple[str, str, str, str], dict]


def live_objects(kube: Kube, manifests: list[Any]) -> LiveObjects:
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


def plan(kube: Kube, render: Any, namespace: str) -> tuple[list[Any], LiveObjects]:
    """Render with the passwords already in the cluster (generated ones only for new Secrets).

    ``render(secrets)`` renders the manifests; the first pass only finds which
    objects to look up, so the live Secrets come from the same LISTs as the rest.
    """
    draft = render({})
    live = live_objects(kube, draft)
    secrets = generated_secrets_from(live.values(), namespace)
    return (render(secrets) if secrets else draft), live


def apply_manifests(kube: Kube, manifests: list[Any], *, force: bool = False, dry_run: bool = False,
                    on_change: Any = None, live: LiveObjects | None = None) -> list[Change]:
    """Server-side apply each manifest in order; report created/configured/unchanged.

    Stops at the first failure and raises ApplyFailed listing what was applied
    and what was not, so a re-run converges from there.
    """
    if live is None:
        live = live_objects(kube, manifests)
    before = {k: (v.get("metadata") or {}).get("resourceVersion", "") for k, v in live.items()}
    new_namespaces = {m.name for m in manifests if m.kind == "Namespace" and m.key not in before}
    changes: list[Change] = []
    for i, m in enumerate(manifests):
        try:
            out = kube.apply(m.obj, field_manager=FIELD_MANAGER, force=force, dry_run=dry_run)
        except NotFound as e:
            if dry_run and (m.namespace in new_namespaces or m.kind == "HelmChart"):
                # A dry run creates nothing, so objects in a namespace (or of a CRD) that
                # this apply would create cannot be checked by the server yet.
                changes.append(Change(m.kind, m.name, m.namespace, m.component, "created",
                                      "not checked: its namespace or kind is created by this apply"))
                continue
            changes.append(Change(m.kind, m.name, m.namespace, m.component, "failed", e.message))
            changes += [Change(n.kind, n.name, n.namespace, n.component, "not-applied") for n in manifests[i + 1:]]
            raise ApplyFailed(e, changes) from None
        except RaibidError as e:
            changes.append(Change(m.kind, m.name, m.namespace, m.component, "failed", e.message))
            changes += [Change(n.kind, n.name, n.namespace, n.component, "not-applied") for n in manifests[i + 1:]]
            raise ApplyFailed(e, changes) from None
        old_rv = before.get(m.key)
        if old_rv is None and m.key not in before:
            action = "created"
        elif (out.get("metadata") or {}).get("resourceVersion") == old_rv:
            action = "unchanged"
        else:
            action = "configured"
        change = Change(m.kind, m.name, m.namespace, m.component, action)
        changes.append(change)
        if on_change:
            on_change(change)
    return changes


def _strip(obj: dict | None) -> dict | None:
    if obj is None:
        return None
    obj = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _VOLATILE_META}
    ann = {k: v for k, v in (meta.get("annotations") or {}).items()
           if k != "kubectl.kubernetes.io/last-applied-configuration"}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    obj["metadata"] = meta
    return obj


def _mask_secret(obj: dict | None, other: dict | None) -> dict | None:
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


def diff_manifests(kube: Kube, manifests: list[Any], *, force: bool = True,
                   live_objs: LiveObjects | None = None) -> list[ObjectDiff]:
    """Dry-run server-side apply of each manifest, compared with the live object."""
    import difflib

    import yaml

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
        a, b = _strip(live), _strip(merged)
        a, b = _mask_secret(a, b), _mask_secret(b, a)
        if a == b:
            continue
        before = yaml.safe_dump(a, sort_keys=True).splitlines(keepends=True) if a else []
        after = yaml.safe_dump(b, sort_keys=True).splitlines(keepends=True)
        text = "".join(difflib.unified_diff(before, after, fromfile=f"live/{m.ref}", tofile=f"merged/{m.ref}"))
        out.append(ObjectDiff(m.ref, m.component, "create" if live is None else "update", text))
    return out


# --------------------------------------------------------------------------- readiness


@_dc.dataclass
class Readiness:
    ref: str
    ready: bool
    reason: str = ""
    failed: bool = False  # will never become ready without intervention


def _conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def workload_ready(obj: dict) -> tuple[bool, str]:
    kind = obj["kind"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    gen = (obj.get("metadata") or {}).get("generation", 0)
    if kind in ("Deployment", "StatefulSet"):
        want = spec.get("replicas", 1)
        if status.get("observedGeneration", 0) < gen:
            return False, "waiting for the controller to observe the new generation"
        ready = status.get("readyReplicas", 0)
        updated = status.get("updatedReplicas", ready)
        if ready < want or updated < want:
            return False, f"{ready}/{want} replicas ready"
        return True, f"{ready}/{want} replicas ready"
    if kind == "DaemonSet":
        want, ready = status.get("desiredNumberScheduled", 0), status.get("numberReady", 0)
        if status.get("observedGeneration", 0) < gen or ready < want:
            return False, f"{ready}/{want} pods ready"
        return True, f"{ready}/{want} pods ready"
    return True, ""


def job_state(obj: dict | None) -> tuple[bool, bool, str]:
    """(complete, failed, reason) of a Job."""
    if obj is None:
        return False, False, "not created yet"
    conds = _conditions(obj)
    if conds.get("Complete", {}).get("status") == "True":
        return True, False, "complete"
    if conds.get("Failed", {}).get("status") == "True":
        c = conds["Failed"]
        return False, True, f"failed: {c.get('reason', '')} {c.get('message', '')}".strip()
    status = obj.get("status") or {}
    return False, False, f"running (active {status.get('active', 0)}, failed {status.get('failed', 0)})"


BAD_WAITING = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
               "InvalidImageName", "CreateContainerError")


def pod_problems(kube: Kube, namespace: str, selector: str | None = None) -> list[str]:
    """Human reasons from pods that are stuck (CrashLoopBackOff, ImagePullBackOff, unschedulable)."""
    problems = []
    try:
        pods = kube.list("v1", "Pod", namespace, label_selector=selector)
    except NotFound:
        return []
    for pod in pods:
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in BAD_WAITING:
                msg = waiting.get("message", "")
                problems.append(f"pod {namespace}/{name}: {waiting['reason']}" + (f" ({msg})" if msg else ""))
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                problems.append(f"pod {namespace}/{name}: unschedulable ({c.get('message', c.get('reason', ''))})")
    return problems


def _selector(obj: dict) -> str | None:
    labels = (((obj.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}
    return ",".join(f"{k}={v}" for k, v in labels.items()) or None


def check_ready(kube: Kube, m: Any) -> Readiness:
    """Is one applied object ready? Workloads roll out, Jobs complete, PVCs bind, CRDs establish,
    HelmCharts finish their helm-install Job and then their target namespace's workloads."""
    obj = kube.get(m.api_version, m.kind, m.name, m.namespace)
    if obj is None:
        return Readiness(m.ref, False, "not found")
    kind = m.kind
    if kind in ("Deployment", "StatefulSet", "DaemonSet"):
        ok, why = workload_ready(obj)
        if not ok:
            probs = pod_problems(kube, m.namespace, _selector(obj))
            if probs:
                why = f"{why}; " + "; ".join(probs)
        return Readiness(m.ref, ok, why)
    if kind == "Job":
        done, failed, why = job_state(obj)
        return Readiness(m.ref, done, why, failed)
    if kind == "PersistentVolumeClaim":
        phase = (obj.get("status") or {}).get("phase", "Pending")
        return Readiness(m.ref, phase == "Bound", f"phase {phase}")
    if kind == "CustomResourceDefinition":
        est = _conditions(obj).get("Established", {}).get("status") == "True"
        return Readiness(m.ref, est, "established" if est else "not established")
    if kind == "HelmChart":
        return helmchart_ready(kube, obj)
    return Readiness(m.ref, True, "")


def helm_job_state(kube: Kube, hc: dict) -> tuple[bool, bool, str]:
    """(complete, failed, reason) of the Job k3s's helm-controller runs for a HelmChart."""
    meta = hc["metadata"]
    job_name = (hc.get("status") or {}).get("jobName") or f"helm-install-{meta['name']}"
    done, failed, why = job_state(kube.get("batch/v1", "Job", job_name, meta.get("namespace")))
    return done, failed, f"Job {meta.get('namespace')}/{job_name} {why}"


def helmchart_ready(kube: Kube, obj: dict) -> Readiness:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    ref = f"HelmChart/{meta.get('namespace')}/{meta['name']}"
    done, failed, why = helm_job_state(kube, obj)
    if not done:
        return Readiness(ref, False, why, failed=failed)
    target = spec.get("targetNamespace") or meta.get("namespace")
    waiting = []
    for api_version, kind in (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet")):
        for w in kube.list(api_version, kind, target):
            ok, wwhy = workload_ready(w)
            if not ok:
                waiting.append(f"{kind}/{target}/{w['metadata']['name']} {wwhy}")
    if waiting:
        probs = pod_problems(kube, target)
        return Readiness(ref, False, "; ".join(waiting + probs))
    return Readiness(ref, True, f"chart {spec.get('chart')} {spec.get('version', '')} installed".strip())


def parse_duration(text: str) -> float:
    """'10m', '90s', '1h30m', '300' -> seconds."""
    import re

    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        from raibid.errors import UsageError

        raise UsageError(f"invalid duration {text!r}: use e.g. 90s, 10m, 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def wait_ready(kube: Kube, manifests: list[Any], *, timeout: float, interval: float = 2.0,
               progress: Any = None) -> list[Readiness]:
    """Poll until every object is ready; raise TimeoutError_ naming each one that is not."""
    from raibid.errors import TimeoutError_

    deadline = _time.monotonic() + timeout
    pending = list(manifests)
    done: dict[str, Readiness] = {}
    while True:
        still = []
        states = []
        for m in pending:
            r = check_ready(kube, m)
            if r.ready:
                done[m.ref] = r
                if progress:
                    progress(r)
            else:
                still.append(m)
                states.append(r)
        pending = still
        if not pending:
            return list(done.values())
        failed = [r for r in states if r.failed]
        if failed or _time.monotonic() >= deadline:
            lines = "\n".join(f"  {r.ref}: {r.reason}" for r in states)
            head = "failed" if failed else f"timed out after {timeout:.0f}s"
            err = TimeoutError_(f"{head}; not ready:\n{lines}",
                                hint="`raibid cluster status` shows more; `kubectl -n <ns> describe` the objects")
            err.not_ready = states  # type: ignore[attr-defined]
            raise err
        _time.sleep(min(interval, max(0.0, deadline - _time.monotonic())))


# --------------------------------------------------------------------------- prune / down


def find_labelled(kube: Kube, components: list[str], kinds: list[tuple[str, str]]) -> list[dict]:
    """Every object of ``kinds`` that carries raibid's labels for ``components``."""
    from raibid.manifests import COMPONENT, MANAGED_BY

    selector = f"{MANAGED_BY}=raibid,{COMPONENT} in ({','.join(components)})"
    found = []
    for api_version, kind in kinds:
        try:
            found += kube.list(api_version, kind, None, label_selector=selector)
        except NotFound:
            continue  # e.g. HelmChart when the CRD is absent
    return found


def prune(kube: Kube, manifests: list[Any], components: list[str], *, prune_pvcs: bool = False,
          dry_run: bool = False) -> list[Change]:
    """Delete labelled objects of the applied components that are no longer rendered.

    Never touches unlabelled objects. PVCs stay unless ``prune_pvcs``; Secrets raibid
    generated (passwords) always stay.
    """
    from raibid.manifests import COMPONENT, GENERATED

    rendered = {m.key for m in manifests}
    kinds = sorted({(m.api_version, m.kind) for m in manifests} | set(TRACKED_KINDS))
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
        elif obj["kind"] == "Secret" and (meta.get("annotations") or {}).get(GENERATED) == "true":
            ch.action, ch.detail = "kept", "generated Secret"
        elif not dry_run:
            kube.delete(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
        changes.append(ch)
    return changes


def delete_manifests(kube: Kube, manifests: list[Any], *, purge: bool = False) -> list[Change]:
    """Delete in reverse apply order. PVCs, generated Secrets and the namespace stay unless ``purge``."""
    from raibid.manifests import BASE, GENERATED

    changes = []
    for m in reversed(manifests):
        keep = None
        if not purge:
            if m.kind == "PersistentVolumeClaim":
                keep = "PVC (use --purge)"
            elif m.kind == "Secret" and (m.obj["metadata"].get("annotations") or {}).get(GENERATED) == "true":
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


# Secret name -> (data key, template variable) for every password raibid generates.
GENERATED_SECRETS = {"raibid-redis": ("password", "redis_password"),
                     "raibid-gitea-admin": ("password", "gitea_admin_password")}


def generated_secrets_from(objects: Any, namespace: str) -> dict[str, str]:
    """Passwords raibid generated earlier, from live Secrets, so `up` keeps instead of rotating them."""
    import base64

    out = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        if obj.get("kind", "Secret") != "Secret" or meta.get("namespace") != namespace:
            continue
        spec = GENERATED_SECRETS.get(meta.get("name"))
        value = (obj.get("data") or {}).get(spec[0]) if spec else None
        if value:
            out[spec[1]] = base64.b64decode(value).decode()
    return out



# --------------------------------------------------------------------------- status


@_dc.dataclass
class ComponentStatus:
    component: str
    state: str  # healthy, progressing, degraded, missing
    ready: int
    desired: int
    version: str
    age_s: float | None
    created_at: str | None
    problems: list[str]


def component_status(kube: Kube, component: str, manifests: list[Any]) -> ComponentStatus:
    """Ready/desired, version, age and problems of one component, from the live objects."""
    ready = desired = 0
    version = ""
    created: str | None = None
    problems: list[str] = []
    missing = 0
    for m in manifests:
        obj = kube.get(m.api_version, m.kind, m.name, m.namespace)
        if obj is None:
            missing += 1
            problems.append(f"{m.ref} missing")
            continue
        meta = obj.get("metadata") or {}
        if m.kind in ("StatefulSet", "Deployment", "HelmChart") or created is None:
            created = meta.get("creationTimestamp") if m.kind != "Namespace" or created is None else created
        if m.kind in ("StatefulSet", "Deployment"):
            want = (obj.get("spec") or {}).get("replicas", 1)
            have = (obj.get("status") or {}).get("readyReplicas", 0)
            desired += want
            ready += min(have, want)
            image = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", [{}])[0].get(
                "image", "")
            version = image.rsplit(":", 1)[-1] if ":" in image else image
            problems += pod_problems(kube, m.namespace, _selector(obj))
        elif m.kind == "PersistentVolumeClaim":
            phase = (obj.get("status") or {}).get("phase", "Pending")
            if phase != "Bound":
                problems.append(f"{m.ref} is {phase}")
        elif m.kind == "HelmChart":
            spec = obj.get("spec") or {}
            version = spec.get("version", "")
            done, _, why = helm_job_state(kube, obj)
            if not done:
                problems.append(why)
            target = spec.get("targetNamespace") or m.namespace
            release = _chart_selector(m.name)
            for api_version, kind in (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet")):
                for w in kube.list(api_version, kind, target, label_selector=release):
                    want = (w.get("spec") or {}).get("replicas", 1)
                    desired += want
                    ready += min((w.get("status") or {}).get("readyReplicas", 0), want)
            problems += pod_problems(kube, target, release)
    if missing == len(manifests):
        state = "missing"
    elif any("CrashLoopBackOff" in p or "ImagePull" in p or "failed" in p for p in problems):
        state = "degraded"
    elif problems or ready < desired:
        state = "progressing"
    else:
        state = "healthy"
    from raibid.output import seconds_since

    return ComponentStatus(component, state, ready, desired, version, seconds_since(created), created, problems)


def _chart_selector(name: str) -> str:
    """Charts label their objects with the Helm release; k3s names the release after the HelmChart."""
    return f"app.kubernetes.io/instance={name}"
