"""Readiness: when an applied object is ready (wait), and how healthy a component is (status)."""

from __future__ import annotations

import dataclasses as _dc
import time as _time
from collections.abc import Callable

from raibid.cluster.client import Kube, KubeObject
from raibid.cluster.render import Manifest
from raibid.errors import NotFound, TimeoutError_
from raibid.timeutil import seconds_since


@_dc.dataclass
class Readiness:
    ref: str
    ready: bool
    reason: str = ""
    failed: bool = False  # will never become ready without intervention


def _conditions(obj: KubeObject) -> dict[str, dict]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def workload_ready(obj: KubeObject) -> tuple[bool, str]:
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


def job_state(obj: KubeObject | None) -> tuple[bool, bool, str]:
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


def _selector(obj: KubeObject) -> str | None:
    labels = (((obj.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}
    return ",".join(f"{k}={v}" for k, v in labels.items()) or None


# A PVC carrying this annotation is bound by its first consumer (local-path binds on first use), so
# waiting for Bound would hang until a pod that may never come (an idle agent pool's cache).
BOUND_ON_USE = "raibid.dev/bound-on-first-use"


def _bound_on_use(obj: KubeObject) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(BOUND_ON_USE) == "true"


def _get(kube: Kube, m: Manifest) -> KubeObject | None:
    """The live object, or None when it (or its kind, when the CRD is not installed) does not exist."""
    try:
        return kube.get(m.api_version, m.kind, m.name, m.namespace)
    except NotFound:
        return None


def release_selector(name: str) -> str:
    """Charts label their objects with the Helm release; k3s names the release after the HelmChart."""
    return f"app.kubernetes.io/instance={name}"


def release_workloads(kube: Kube, hc: KubeObject) -> list[KubeObject]:
    """The Deployments, StatefulSets and DaemonSets of a HelmChart's release (by the release label only,
    so another component's workloads in the same namespace never count)."""
    meta, spec = hc["metadata"], hc.get("spec") or {}
    target = spec.get("targetNamespace") or meta.get("namespace")
    out: list[KubeObject] = []
    for api_version, kind in (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet")):
        out += kube.list(api_version, kind, target, label_selector=release_selector(meta["name"]))
    return out


def _ref(obj: KubeObject) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')}/{ns}{meta.get('name')}"


def _workload_rule(kube: Kube, obj: KubeObject) -> Readiness:
    ok, why = workload_ready(obj)
    if not ok:
        probs = pod_problems(kube, obj["metadata"].get("namespace"), _selector(obj))
        if probs:
            why = f"{why}; " + "; ".join(probs)
    return Readiness(_ref(obj), ok, why)


def _job_rule(kube: Kube, obj: KubeObject) -> Readiness:
    done, failed, why = job_state(obj)
    return Readiness(_ref(obj), done, why, failed)


def _pvc_rule(kube: Kube, obj: KubeObject) -> Readiness:
    phase = (obj.get("status") or {}).get("phase", "Pending")
    if phase != "Bound" and _bound_on_use(obj):
        return Readiness(_ref(obj), True, f"phase {phase} (bound by its first pod)")
    return Readiness(_ref(obj), phase == "Bound", f"phase {phase}")


def _crd_rule(kube: Kube, obj: KubeObject) -> Readiness:
    est = _conditions(obj).get("Established", {}).get("status") == "True"
    return Readiness(_ref(obj), est, "established" if est else "not established")


def _helmchart_rule(kube: Kube, obj: KubeObject) -> Readiness:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    done, failed, why = helm_job_state(kube, obj)
    if not done:
        return Readiness(_ref(obj), False, why, failed=failed)
    waiting = []
    for w in release_workloads(kube, obj):
        ok, wwhy = workload_ready(w)
        if not ok:
            waiting.append(f"{_ref(w)} {wwhy}")
    if waiting:
        target = spec.get("targetNamespace") or meta.get("namespace")
        probs = pod_problems(kube, target, release_selector(meta["name"]))
        return Readiness(_ref(obj), False, "; ".join(waiting + probs))
    return Readiness(_ref(obj), True, f"chart {spec.get('chart')} {spec.get('version', '')} installed".strip())


# The one readiness rule table, used by `up --wait` and by `cluster status`.
RULES: dict[str, Callable[[Kube, KubeObject], Readiness]] = {
    "Deployment": _workload_rule, "StatefulSet": _workload_rule, "DaemonSet": _workload_rule,
    "Job": _job_rule,
    "PersistentVolumeClaim": _pvc_rule,
    "CustomResourceDefinition": _crd_rule,
    "HelmChart": _helmchart_rule,
}


def object_readiness(kube: Kube, obj: KubeObject) -> Readiness:
    """Is this live object ready, by the rule for its kind (other kinds are ready once they exist)?"""
    rule = RULES.get(obj.get("kind", ""))
    return rule(kube, obj) if rule else Readiness(_ref(obj), True, "")


def check_ready(kube: Kube, m: Manifest) -> Readiness:
    """Is one applied object ready? Workloads roll out, Jobs complete, PVCs bind, CRDs establish,
    HelmCharts finish their helm-install Job and then their release's workloads."""
    obj = _get(kube, m)
    if obj is None:
        return Readiness(m.ref, False, "not found")
    r = object_readiness(kube, obj)
    r.ref = m.ref
    return r


def helm_job_state(kube: Kube, hc: KubeObject) -> tuple[bool, bool, str]:
    """(complete, failed, reason) of the Job k3s's helm-controller runs for a HelmChart."""
    meta = hc["metadata"]
    job_name = (hc.get("status") or {}).get("jobName") or f"helm-install-{meta['name']}"
    done, failed, why = job_state(kube.get("batch/v1", "Job", job_name, meta.get("namespace")))
    return done, failed, f"Job {meta.get('namespace')}/{job_name} {why}"


def wait_ready(kube: Kube, manifests: list[Manifest], *, timeout: float, interval: float = 2.0,
               progress: Callable[[Readiness], None] | None = None) -> list[Readiness]:
    """Poll until every object is ready; raise TimeoutError_ naming each one that is not."""
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


def _replicas(obj: KubeObject) -> tuple[int, int]:
    """(ready, desired) pods of a workload."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if obj.get("kind") == "DaemonSet":
        want = status.get("desiredNumberScheduled", 0)
        return min(status.get("numberReady", 0), want), want
    want = spec.get("replicas", 1)
    return min(status.get("readyReplicas", 0), want), want


def terminating_namespaces(kube: Kube, manifests: list[Manifest]) -> list[str]:
    """The rendered Namespaces that are being deleted (a deletionTimestamp, phase Terminating)."""
    out = []
    for m in manifests:
        if m.kind == "Namespace":
            obj = kube.get(m.api_version, m.kind, m.name)
            if obj is not None and (obj.get("metadata") or {}).get("deletionTimestamp"):
                out.append(m.name)
    return out


def component_status(kube: Kube, component: str, manifests: list[Manifest]) -> ComponentStatus:
    """Ready/desired, version, age and problems of one component, from the live objects and the same
    readiness rules as `up --wait`."""
    ready = desired = 0
    version = ""
    created: str | None = None
    problems: list[str] = []
    missing = 0
    failed = False
    for m in manifests:
        obj = _get(kube, m)
        if obj is None:
            missing += 1
            problems.append(f"{m.ref} missing")
            continue
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        if m.kind in ("StatefulSet", "Deployment", "HelmChart") or created is None:
            created = meta.get("creationTimestamp") if m.kind != "Namespace" or created is None else created
        r = object_readiness(kube, obj)
        failed = failed or r.failed
        if not r.ready:
            if m.kind == "PersistentVolumeClaim":
                problems.append(f"{m.ref} is {(obj.get('status') or {}).get('phase', 'Pending')}")
            elif m.kind == "HelmChart":
                problems.append(r.reason)
            else:
                problems.append(f"{m.ref}: {r.reason}")
        if m.kind in ("StatefulSet", "Deployment", "DaemonSet"):
            have, want = _replicas(obj)
            ready, desired = ready + have, desired + want
            containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
            image = containers[0].get("image", "")
            version = image.rsplit(":", 1)[-1] if ":" in image else image
        elif m.kind == "HelmChart":
            version = spec.get("version", "")
            for w in release_workloads(kube, obj):
                have, want = _replicas(w)
                ready, desired = ready + have, desired + want
    if missing == len(manifests):
        state = "missing"
    elif failed or any(b in p for p in problems for b in BAD_WAITING):
        state = "degraded"
    elif problems or ready < desired:
        state = "progressing"
    else:
        state = "healthy"
    return ComponentStatus(component, state, ready, desired, version, seconds_since(created), created, problems)
