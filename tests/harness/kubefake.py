"""An HTTP-level Kubernetes API server fake for tests.

It speaks the real wire protocol on 127.0.0.1 so the product is exercised
through its real ``--kubeconfig`` path and the official client. It implements
what raibid relies on: discovery (built-ins plus CRD-registered kinds),
create/get/list/replace/patch/delete/deletecollection, server-side apply with
field managers and conflicts, ``dryRun=All``, label selectors, the status and
scale subresources, namespace cascade, resourceVersion/generation/uid/
creationTimestamp, and real ``Status`` error bodies.

Test helpers: a request log, controller hooks to play a controller, and fault
injection (status codes, dropped connections, delays) for the next N requests.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.harness.served import Handler, Served

# ----------------------------------------------------------------------------- resource types


@dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    status: bool = False  # has a status subresource
    scale: bool = False
    crd: bool = False

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def api_resources(self) -> list[dict]:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        if self.plural == "namespaces":
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        out = [{
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
            **({"shortNames": self.short_names} if self.short_names else {}),
            "storageVersionHash": base64.b64encode(self.kind.encode()).decode()[:11],
        }]
        if self.status:
            out.append({"name": f"{self.plural}/status", "singularName": "", "namespaced": self.namespaced,
                        "kind": self.kind, "verbs": ["get", "patch", "update"]})
        if self.scale:
            out.append({"name": f"{self.plural}/scale", "singularName": "", "namespaced": self.namespaced,
                        "group": "autoscaling", "version": "v1", "kind": "Scale",
                        "verbs": ["get", "patch", "update"]})
        return out


def _builtin_types() -> list[ResourceType]:
    R = ResourceType
    return [
        R("", "v1", "namespaces", "Namespace", False, short_names=["ns"], status=True),
        R("", "v1", "pods", "Pod", True, short_names=["po"], status=True),
        R("", "v1", "services", "Service", True, short_names=["svc"], status=True),
        R("", "v1", "secrets", "Secret", True),
        R("", "v1", "configmaps", "ConfigMap", True, short_names=["cm"]),
        R("", "v1", "serviceaccounts", "ServiceAccount", True, short_names=["sa"]),
        R("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, short_names=["pvc"], status=True),
        R("", "v1", "persistentvolumes", "PersistentVolume", False, short_names=["pv"], status=True),
        R("", "v1", "events", "Event", True, short_names=["ev"]),
        R("", "v1", "endpoints", "Endpoints", True, short_names=["ep"]),
        R("", "v1", "nodes", "Node", False, short_names=["no"], status=True),
        R("apps", "v1", "deployments", "Deployment", True, short_names=["deploy"], status=True, scale=True),
        R("apps", "v1", "statefulsets", "StatefulSet", True, short_names=["sts"], status=True, scale=True),
        R("apps", "v1", "daemonsets", "DaemonSet", True, short_names=["ds"], status=True),
        R("apps", "v1", "replicasets", "ReplicaSet", True, short_names=["rs"], status=True, scale=True),
        R("batch", "v1", "jobs", "Job", True, status=True),
        R("batch", "v1", "cronjobs", "CronJob", True, short_names=["cj"], status=True),
        R("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
        R("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
        R("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
        R("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
        R("networking.k8s.io", "v1", "ingresses", "Ingress", True, short_names=["ing"], status=True),
        R("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, short_names=["netpol"]),
        R("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, short_names=["sc"]),
        R("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
          short_names=["crd", "crds"], status=True),
    ]


# Status-subresource kinds ignore status on the main endpoint.
_IGNORED_META = {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                 "deletionTimestamp", "selfLink", "name", "namespace"}

# Strategic-merge / SSA list keys for built-in kinds, by field name.
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "imagePullSecrets": "name", "volumeMounts": "mountPath", "conditions": "type",
}


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------------- errors


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def body(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def not_found(rt: ResourceType, name: str) -> ApiError:
    res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
    return ApiError(404, "NotFound", f'{res} "{name}" not found',
                    {"name": name, "group": rt.group, "kind": rt.plural})


# ----------------------------------------------------------------------------- label selectors

_SEL_RE = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[\w./-]+)"
    r"|(?P<skey>[\w./-]+)\s*(?P<setop>in|notin)\s*\((?P<vals>[^)]*)\)"
    r"|(?P<key>[\w./-]+)\s*(?P<op>==|!=|=)\s*(?P<val>[\w./-]*)"
    r"|(?P<ekey>[\w./-]+))\s*$"
)


def parse_selector(sel: str) -> list[Callable[[dict], bool]]:
    terms, depth, cur = [], 0, ""
    for ch in sel:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur)
    preds: list[Callable[[dict], bool]] = []
    for t in terms:
        m = _SEL_RE.match(t)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {t.strip()!r}")
        if m["nkey"]:
            k = m["nkey"]
            preds.append(lambda labels, k=k: k not in labels)
        elif m["skey"]:
            k, vals = m["skey"], {v.strip() for v in m["vals"].split(",") if v.strip()}
            if m["setop"] == "in":
                preds.append(lambda labels, k=k, vals=vals: labels.get(k) in vals)
            else:
                preds.append(lambda labels, k=k, vals=vals: labels.get(k) not in vals)
        elif m["key"]:
            k, v, op = m["key"], m["val"], m["op"]
            if op == "!=":
                preds.append(lambda labels, k=k, v=v: labels.get(k) != v)
            else:
                preds.append(lambda labels, k=k, v=v: labels.get(k) == v)
        else:
            k = m["ekey"]
            preds.append(lambda labels, k=k: k in labels)
    return preds


def matches(obj: dict, preds: list[Callable[[dict], bool]]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(p(labels) for p in preds)


# ----------------------------------------------------------------------------- field sets (SSA)

Path_ = tuple[str, ...]


def _list_key(field_name: str, items: list, crd: bool) -> str | None:
    if crd or not items or not all(isinstance(i, dict) for i in items):
        return None
    if field_name == "ports":
        if all("containerPort" in i for i in items):
            return "containerPort"
        if all("port" in i for i in items):
            return "port"
        return None
    key = _MERGE_KEYS.get(field_name)
    if key and all(key in i for i in items):
        return key
    return None


def _kseg(key: str, value: Any) -> str:
    return "k:" + json.dumps({key: value}, separators=(",", ":"))


def fieldset(obj: dict, crd: bool = False, include_status: bool = False) -> set[Path_]:
    out: set[Path_] = set()

    def walk(value: Any, path: Path_, name: str) -> None:
        if isinstance(value, dict):
            if not value:
                out.add(path)
                return
            for k, v in value.items():
                walk(v, path + (f"f:{k}",), k)
            return
        if isinstance(value, list):
            key = _list_key(name, value, crd)
            if key is None:
                out.add(path)  # atomic list
                return
            for item in value:
                ip = path + (_kseg(key, item[key]),)
                out.add(ip + (".",))
                for k, v in item.items():
                    walk(v, ip + (f"f:{k}",), k)
            return
        out.add(path)

    for k, v in obj.items():
        if k in ("apiVersion", "kind") or (k == "status" and not include_status):
            continue
        if k == "metadata":
            for mk, mv in (v or {}).items():
                if mk in _IGNORED_META:
                    continue
                walk(mv, ("f:metadata", f"f:{mk}"), mk)
            continue
        walk(v, (f"f:{k}",), k)
    return out


def to_fieldsv1(paths: set[Path_]) -> dict:
    root: dict = {}
    for p in sorted(paths):
        node = root
        for seg in p:
            node = node.setdefault(seg, {})
    return root


def from_fieldsv1(tree: dict, prefix: Path_ = ()) -> set[Path_]:
    out: set[Path_] = set()
    for k, v in tree.items():
        p = prefix + (k,)
        if not v:
            out.add(p)
        else:
            if k.startswith("k:") and "." in v:
                out.add(p + (".",))
            out |= from_fieldsv1({kk: vv for kk, vv in v.items() if kk != "."}, p)
    return out


_MISSING = object()


def get_at(obj: Any, path: Path_) -> Any:
    cur = obj
    for seg in path:
        if seg == ".":
            return cur
        if seg.startswith("f:"):
            if not isinstance(cur, dict) or seg[2:] not in cur:
                return _MISSING
            cur = cur[seg[2:]]
        elif seg.startswith("k:"):
            want = json.loads(seg[2:])
            if not isinstance(cur, list):
                return _MISSING
            cur = next((i for i in cur if isinstance(i, dict)
                        and all(i.get(k) == v for k, v in want.items())), _MISSING)
            if cur is _MISSING:
                return _MISSING
    return cur


def delete_at(obj: Any, path: Path_) -> None:
    if path and path[-1] == ".":
        path = path[:-1]
    parents = []
    cur = obj
    for seg in path[:-1]:
        parents.append((cur, seg))
        nxt = get_at(cur, (seg,))
        if nxt is _MISSING:
            return
        cur = nxt
    last = path[-1]
    if last.startswith("f:") and isinstance(cur, dict):
        cur.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(cur, list):
        want = json.loads(last[2:])
        cur[:] = [i for i in cur if not (isinstance(i, dict) and all(i.get(k) == v for k, v in want.items()))]
    # Drop parents left empty by the removal.
    while parents:
        parent, seg = parents.pop()
        child = get_at(parent, (seg,))
        if child in ({}, []):
            delete_at(parent, (seg,))
        else:
            break


def merge_apply(live: Any, applied: Any, name: str = "", crd: bool = False) -> Any:
    """Structural merge used by SSA and strategic merge patch."""
    if isinstance(live, dict) and isinstance(applied, dict):
        out = dict(live)
        for k, v in applied.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = merge_apply(out[k], v, k, crd)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(live, list) and isinstance(applied, list):
        key = _list_key(name, applied, crd)
        if key and all(isinstance(i, dict) and key in i for i in live):
            out_list = [copy.deepcopy(i) for i in live]
            for item in applied:
                idx = next((n for n, i in enumerate(out_list) if i.get(key) == item[key]), None)
                if idx is None:
                    out_list.append(copy.deepcopy(item))
                else:
                    out_list[idx] = merge_apply(out_list[idx], item, "", crd)
            return out_list
    return copy.deepcopy(applied)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(doc: Any, ops: list[dict]) -> Any:
    """RFC 6902 JSON patch."""
    doc = copy.deepcopy(doc)

    def split(ptr: str) -> list[str]:
        if ptr == "":
            return []
        return [p.replace("~1", "/").replace("~0", "~") for p in ptr.lstrip("/").split("/")]

    def walk(parts: list[str]) -> tuple[Any, str]:
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    for op in ops:
        kind, parts = op.get("op"), split(op.get("path", ""))
        try:
            if kind in ("add", "replace"):
                parent, last = walk(parts)
                if isinstance(parent, list):
                    if last == "-":
                        parent.append(copy.deepcopy(op["value"]))
                    elif kind == "add":
                        parent.insert(int(last), copy.deepcopy(op["value"]))
                    else:
                        parent[int(last)] = copy.deepcopy(op["value"])
                else:
                    if kind == "replace" and last not in parent:
                        raise KeyError(last)
                    parent[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                parent, last = walk(parts)
                if isinstance(parent, list):
                    parent.pop(int(last))
                else:
                    del parent[last]
            elif kind == "test":
                parent, last = walk(parts)
                val = parent[int(last)] if isinstance(parent, list) else parent[last]
                if val != op["value"]:
                    raise ApiError(422, "Invalid", f"testing value {op['path']} failed")
            elif kind in ("move", "copy"):
                src_parent, src_last = walk(split(op["from"]))
                val = src_parent[int(src_last)] if isinstance(src_parent, list) else src_parent[src_last]
                if kind == "move":
                    if isinstance(src_parent, list):
                        src_parent.pop(int(src_last))
                    else:
                        del src_parent[src_last]
                doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": val}])
            else:
                raise ApiError(400, "BadRequest", f"unknown JSON patch op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, "Invalid", f"the JSON patch op {kind} at {op.get('path')} does not apply") from None
    return doc


# ----------------------------------------------------------------------------- faults and log


@dataclass
class Fault:
    """``status``: a Status error; ``drop``: reset the connection; ``delay``: answer late;
    ``hang``: accept and never answer; ``html``: a web page instead of JSON (as a proxy or a
    web server would send); ``shape``: 200 with JSON that is not what was asked for (``body``)."""

    kind: str  # "status", "drop", "delay", "hang", "html", "shape"
    remaining: int
    status: int = 500
    delay: float = 0.0
    message: str = "injected fault"
    method: str | None = None
    path: str | None = None  # regex
    body: Any = None  # for "shape"

    def applies(self, method: str, path: str) -> bool:
        if self.method and self.method != method:
            return False
        if self.path and not re.search(self.path, path):
            return False
        return True


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    status: int
    field_manager: str | None
    user_agent: str


# ----------------------------------------------------------------------------- the fake


class KubeFake(Served):
    """A stateful Kubernetes API server on 127.0.0.1."""

    def __init__(self, *, token: str | None = "raibid-test-token", git_version: str = "v1.31.4+k3s1") -> None:
        """``token`` None turns authentication off (kubectl sends no bearer token over plain http)."""
        self.token = token
        self.git_version = git_version
        self.lock = threading.RLock()
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in _builtin_types():
            self.types[(rt.group, rt.version, rt.plural)] = rt
        self.objects: dict[tuple[str, str, str, str], dict] = {}  # (group, plural, ns, name)
        self.rv = 1000
        self.log: list[LoggedRequest] = []
        self.faults: list[Fault] = []
        self.hooks: list[Callable[[KubeFake, str, dict], None]] = []
        self._ip = 10
        self.stopping = threading.Event()
        # Seconds a deleted namespace stays Terminating (its finalizers running) before it is gone.
        self.namespace_finalize_delay = 0.0
        # Pod logs: (namespace, pod) -> lines written so far, and whether the container has exited.
        self.pod_logs: dict[tuple[str, str], list[str]] = {}
        self.pod_logs_done: set[tuple[str, str]] = set()
        self.logs_changed = threading.Condition(self.lock)
        self.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        self.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})

    # --------------------------------------------------------------- lifecycle
    def start(self) -> KubeFake:
        self._serve(_Handler)
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases handlers held by a "hang" fault
        super().stop()

    @property
    def url(self) -> str:
        return self.base_url

    def write_kubeconfig(self, path: Path, *, token: str | None = None, namespace: str = "default") -> Path:
        cfg = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token or self.token} if (token or self.token) else {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(cfg))
        return path

    # --------------------------------------------------------------- test helpers
    def inject(self, kind: str = "status", count: int = 1, **kw: Any) -> Fault:
        f = Fault(kind=kind, remaining=count, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def write_pod_log(self, namespace: str, pod: str, *lines: str, done: bool = False) -> None:
        """Append lines to a pod's log (a follower sees them at once); ``done``: the container exited."""
        with self.logs_changed:
            self.pod_logs.setdefault((namespace, pod), []).extend(lines)
            if done:
                self.pod_logs_done.add((namespace, pod))
            self.logs_changed.notify_all()

    def on_write(self, hook: Callable[[KubeFake, str, dict], None]) -> None:
        """Call ``hook(fake, verb, obj)`` after each persisted write; it may play controller."""
        self.hooks.append(hook)

    def requests(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        with self.lock:
            return [r for r in self.log if (method is None or r.method == method)
                    and (path is None or re.search(path, r.path))]

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()

    def type_for(self, api_version: str, kind: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        for rt in self.types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        raise KeyError(f"{api_version} {kind} not served")

    def get_object(self, api_version: str, kind: str, name: str, namespace: str = "") -> dict | None:
        rt = self.type_for(api_version, kind)
        with self.lock:
            obj = self.objects.get((rt.group, rt.plural, namespace if rt.namespaced else "", name))
            return copy.deepcopy(obj) if obj else None

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict]:
        rt = self.type_for(api_version, kind)
        with self.lock:
            return [copy.deepcopy(o) for (g, p, ns, _), o in self.objects.items()
                    if g == rt.group and p == rt.plural and (namespace is None or ns == namespace)]

    def add_object(self, obj: dict, manager: str = "test") -> dict:
        """Create an object directly, as another client or a controller would."""
        rt = self.type_for(obj["apiVersion"], obj["kind"])
        ns = (obj.get("metadata") or {}).get("namespace", "") if rt.namespaced else ""
        with self.lock:
            return self._create(rt, ns, copy.deepcopy(obj), manager, dry_run=False)

    def set_status(self, api_version: str, kind: str, name: str, namespace: str, status: dict) -> dict:
        """Replace an object's status, as its controller would (bumps resourceVersion)."""
        rt = self.type_for(api_version, kind)
        with self.lock:
            key = (rt.group, rt.plural, namespace if rt.namespaced else "", name)
            obj = self.objects[key]
            new = copy.deepcopy(obj)
            new["status"] = copy.deepcopy(status)
            return self._store(rt, key, obj, new, "test-controller", "Update", subresource="status")

    # --------------------------------------------------------------- storage internals
    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _key(self, rt: ResourceType, ns: str, name: str) -> tuple[str, str, str, str]:
        return (rt.group, rt.plural, ns if rt.namespaced else "", name)

    def _defaults(self, rt: ResourceType, obj: dict) -> None:
        spec = obj.get("spec")
        if rt.kind == "Namespace":
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
        elif rt.kind == "Service" and isinstance(spec, dict):
            spec.setdefault("type", "ClusterIP")
            if spec.get("clusterIP") != "None" and "clusterIP" not in spec:
                self._ip += 1
                spec["clusterIP"] = f"10.43.{self._ip // 250}.{self._ip % 250}"
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("sessionAffinity", "None")
            for p in spec.get("ports", []):
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
            obj.setdefault("status", {"loadBalancer": {}})
        elif rt.kind == "Secret":
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None) or {}
            if string_data:
                data = obj.setdefault("data", {})
                for k, v in string_data.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
        elif rt.kind == "PersistentVolumeClaim":
            obj.setdefault("status", {"phase": "Pending"})
        elif rt.kind == "CustomResourceDefinition":
            names = (spec or {}).get("names", {})
            obj["status"] = {
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "message": "no conflicts found", "lastTransitionTime": now_rfc3339()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted", "lastTransitionTime": now_rfc3339()},
                ],
                "acceptedNames": names,
                "storedVersions": [v["name"] for v in (spec or {}).get("versions", []) if v.get("storage")],
            }
        elif rt.status and "status" not in obj:
            obj["status"] = {}

    def _register_crd(self, crd: dict) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for v in spec.get("versions", []):
            if not v.get("served", True):
                continue
            sub = v.get("subresources") or {}
            rt = ResourceType(spec["group"], v["name"], names["plural"], names["kind"],
                              spec.get("scope", "Namespaced") == "Namespaced", singular=names.get("singular", ""),
                              short_names=names.get("shortNames", []), status="status" in sub,
                              scale="scale" in sub, crd=True)
            self.types[(rt.group, rt.version, rt.plural)] = rt

    def _unregister_crd(self, crd: dict) -> None:
        spec = crd.get("spec", {})
        plural = spec.get("names", {}).get("plural")
        for key in [k for k in self.types if k[0] == spec.get("group") and k[2] == plural]:
            del self.types[key]
        for key in [k for k in self.objects if k[0] == spec.get("group") and k[1] == plural]:
            del self.objects[key]

    def _generation_changed(self, old: dict, new: dict) -> bool:
        strip = ("metadata", "status", "apiVersion", "kind")
        return {k: v for k, v in old.items() if k not in strip} != {k: v for k, v in new.items() if k not in strip}

    def _store(self, rt: ResourceType, key: tuple, old: dict | None, new: dict, manager: str, operation: str,
               *, dry_run: bool = False, subresource: str = "", owned: set[Path_] | None = None,
               managed: list[dict] | None = None) -> dict:
        """Persist ``new`` (unless dry-run) with metadata bookkeeping; no-op writes keep their RV."""
        meta = new.setdefault("metadata", {})
        if managed is None:
            managed = self._managed_after_update(rt, old, new, manager, operation, subresource)
        if old is not None:
            _check_immutable(rt, old, new)
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            meta["generation"] = old["metadata"].get("generation", 1)
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            meta["managedFields"] = old["metadata"].get("managedFields", [])
            comparable_old = old
            candidate = copy.deepcopy(new)
            candidate["metadata"]["managedFields"] = _strip_times(managed)
            comparable_old = copy.deepcopy(old)
            comparable_old["metadata"]["managedFields"] = _strip_times(old["metadata"].get("managedFields", []))
            if candidate == comparable_old:
                return copy.deepcopy(old)  # nothing changed: no new resourceVersion
            if self._generation_changed(old, new):
                meta["generation"] = meta["generation"] + 1
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
        meta["managedFields"] = _stamp(managed)
        meta["resourceVersion"] = self._next_rv() if not dry_run else (meta.get("resourceVersion") or "")
        new["apiVersion"], new["kind"] = rt.group_version, rt.kind
        if dry_run:
            return copy.deepcopy(new)
        self.objects[key] = copy.deepcopy(new)
        if rt.kind == "CustomResourceDefinition":
            self._register_crd(new)
        for hook in list(self.hooks):
            hook(self, "update" if old else "create", copy.deepcopy(new))
        return copy.deepcopy(self.objects.get(key, new))

    def _managed_after_update(self, rt: ResourceType, old: dict | None, new: dict, manager: str,
                              operation: str, subresource: str) -> list[dict]:
        """Managers after a non-apply write: the writer takes the fields it changed."""
        entries = [dict(e) for e in ((old or {}).get("metadata", {}).get("managedFields") or [])]
        status_only = subresource == "status"
        new_set = fieldset(new, rt.crd, include_status=status_only)
        if status_only:
            new_set = {p for p in new_set if p[0] == "f:status"}
        if old is None:
            changed = new_set
        else:
            changed = {p for p in new_set if get_at(old, p) != get_at(new, p)}
        if not changed:
            return entries
        result = []
        for e in entries:
            paths = from_fieldsv1(e.get("fieldsV1") or {})
            if e["manager"] == manager and e["operation"] == operation and e.get("subresource", "") == subresource:
                continue
            paths -= changed
            if paths:
                result.append({**e, "fieldsV1": to_fieldsv1(paths)})
        mine = next((e for e in entries if e["manager"] == manager and e["operation"] == operation
                     and e.get("subresource", "") == subresource), None)
        mine_paths = from_fieldsv1(mine["fieldsV1"]) if mine else set()
        entry = {"manager": manager, "operation": operation, "apiVersion": rt.group_version,
                 "fieldsType": "FieldsV1", "fieldsV1": to_fieldsv1(mine_paths | changed)}
        if subresource:
            entry["subresource"] = subresource
        result.append(entry)
        return result

    def _check_namespace(self, rt: ResourceType, ns: str) -> None:
        if rt.namespaced and ("", "namespaces", "", ns) not in self.objects:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                           {"name": ns, "kind": "namespaces"})

    def _create(self, rt: ResourceType, ns: str, body: dict, manager: str, *, dry_run: bool) -> dict:
        meta = body.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(422, "Invalid", f"{rt.kind} is invalid: metadata.name: Required value: "
                               "name or generateName is required",
                               {"kind": rt.kind, "causes": [{"reason": "FieldValueRequired",
                                                             "message": "Required value", "field": "metadata.name"}]})
        if rt.namespaced:
            meta["namespace"] = ns
            self._check_namespace(rt, ns)
            self._check_not_terminating(rt, ns, meta["name"])
        else:
            meta.pop("namespace", None)
        key = self._key(rt, ns, meta["name"])
        if key in self.objects:
            res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
            raise ApiError(409, "AlreadyExists", f'{res} "{meta["name"]}" already exists',
                           {"name": meta["name"], "group": rt.group, "kind": rt.plural})
        for k in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
            meta.pop(k, None)
        self._defaults(rt, body)
        return self._store(rt, key, None, body, manager, "Update", dry_run=dry_run)

    def _delete(self, rt: ResourceType, key: tuple, *, dry_run: bool, propagation: str = "Background") -> dict:
        if propagation not in ("Background", "Foreground", "Orphan"):
            raise ApiError(400, "BadRequest", f'propagationPolicy: Unsupported value: "{propagation}": supported '
                           'values: "Foreground", "Background", "Orphan"')
        obj = self.objects.get(key)
        if obj is None:
            raise not_found(rt, key[3])
        if dry_run:
            return copy.deepcopy(obj)
        if rt.kind == "Namespace" and self.namespace_finalize_delay > 0:
            if obj["metadata"].get("deletionTimestamp"):
                return copy.deepcopy(obj)  # already Terminating
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["resourceVersion"] = self._next_rv()
            obj["status"] = {"phase": "Terminating"}
            timer = threading.Timer(self.namespace_finalize_delay, self._finalize_namespace, args=(rt, key))
            timer.daemon = True
            timer.start()
            return copy.deepcopy(obj)
        del self.objects[key]
        deleted_uids = {obj["metadata"]["uid"]}
        if rt.kind == "Namespace":
            for k in [k for k in self.objects if k[2] == key[3]]:
                deleted_uids.add(self.objects[k]["metadata"]["uid"])
                del self.objects[k]
        if rt.kind == "CustomResourceDefinition":
            self._unregister_crd(obj)
        # Garbage collection: dependents whose owner is gone (Orphan: they stay, without the reference).
        changed = True
        while changed:
            changed = False
            for k, o in list(self.objects.items()):
                refs = (o.get("metadata") or {}).get("ownerReferences") or []
                owners = {r.get("uid") for r in refs}
                if not owners & deleted_uids:
                    continue
                if propagation == "Orphan":
                    o["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") not in deleted_uids]
                    if not o["metadata"]["ownerReferences"]:
                        del o["metadata"]["ownerReferences"]
                    o["metadata"]["resourceVersion"] = self._next_rv()
                    continue
                deleted_uids.add(o["metadata"]["uid"])
                del self.objects[k]
                changed = True
        for hook in list(self.hooks):
            hook(self, "delete", copy.deepcopy(obj))
        return copy.deepcopy(obj)

    def _finalize_namespace(self, rt: ResourceType, key: tuple) -> None:
        """The namespace controller's work: after the delay, its content and then the namespace go."""
        with self.lock:
            obj = self.objects.get(key)
            if obj is None or not obj["metadata"].get("deletionTimestamp"):
                return
            delay, self.namespace_finalize_delay = self.namespace_finalize_delay, 0.0
            try:
                self._delete(rt, key, dry_run=False)
            finally:
                self.namespace_finalize_delay = delay

    def _check_not_terminating(self, rt: ResourceType, ns: str, name: str) -> None:
        live_ns = self.objects.get(("", "namespaces", "", ns)) if rt.namespaced else None
        if live_ns and live_ns["metadata"].get("deletionTimestamp"):
            res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
            raise ApiError(403, "Forbidden", f'{res} "{name}" is forbidden: unable to create new content in '
                           f"namespace {ns} because it is being terminated",
                           {"name": name, "group": rt.group, "kind": rt.plural, "causes": [
                               {"reason": "NamespaceTerminating", "message": f"namespace {ns} is being terminated",
                                "field": "metadata.namespace"}]})

    # --------------------------------------------------------------- server-side apply
    def _apply(self, rt: ResourceType, ns: str, name: str, body: dict, manager: str, force: bool,
               *, dry_run: bool, subresource: str = "") -> tuple[int, dict]:
        if body.get("kind") and body.get("kind") != rt.kind:
            raise ApiError(400, "BadRequest", f"the kind in the body ({body.get('kind')}) does not match {rt.kind}")
        meta = body.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        meta["name"] = name
        key = self._key(rt, ns, name)
        live = self.objects.get(key)
        applied_set = fieldset(body, rt.crd, include_status=subresource == "status")
        if subresource == "status":
            applied_set = {p for p in applied_set if p[0] == "f:status"}
        if live is None:
            if rt.namespaced:
                meta["namespace"] = ns
                self._check_namespace(rt, ns)
                self._check_not_terminating(rt, ns, name)
            new = copy.deepcopy(body)
            for k in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
                new["metadata"].pop(k, None)
            self._defaults(rt, new)
            entry = {"manager": manager, "operation": "Apply", "apiVersion": rt.group_version,
                     "fieldsType": "FieldsV1", "fieldsV1": to_fieldsv1(applied_set)}
            return 201, self._store(rt, key, None, new, manager, "Apply", dry_run=dry_run, managed=[entry])

        entries = [dict(e) for e in (live["metadata"].get("managedFields") or [])]

        def is_mine(e: dict) -> bool:
            return e["manager"] == manager and e["operation"] == "Apply" and e.get("subresource", "") == subresource

        conflicts: list[tuple[str, str, Path_]] = []
        for e in entries:
            if is_mine(e):
                continue
            for p in from_fieldsv1(e.get("fieldsV1") or {}) & applied_set:
                if p[-1] == ".":
                    continue
                if get_at(live, p) != get_at(body, p):
                    conflicts.append((e["manager"], e.get("apiVersion", rt.group_version), p))
        if conflicts and not force:
            lines = [f'conflict with "{m}" using {v}: {_dotted(p)}' for m, v, p in conflicts]
            msg = f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) > 1 else ''}: " + "\n".join(lines)
            raise ApiError(409, "Conflict", msg, {"causes": [
                {"reason": "FieldManagerConflict", "message": f'conflict with "{m}" using {v}', "field": _dotted(p)}
                for m, v, p in conflicts]})
        taken = {p for _, _, p in conflicts}
        mine = next((e for e in entries if is_mine(e)), None)
        prev = from_fieldsv1(mine["fieldsV1"]) if mine else set()
        others: set[Path_] = set()
        new_entries = []
        for e in entries:
            if is_mine(e):
                continue
            paths = from_fieldsv1(e.get("fieldsV1") or {}) - taken
            others |= paths
            if paths:
                new_entries.append({**e, "fieldsV1": to_fieldsv1(paths)})
        new = copy.deepcopy(live)
        for p in sorted(prev - applied_set - others, key=len, reverse=True):
            delete_at(new, p)
        patch = copy.deepcopy(body)
        for k in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
            patch["metadata"].pop(k, None)
        if subresource == "status":
            new["status"] = merge_apply(new.get("status") or {}, patch.get("status") or {}, "status", rt.crd)
        else:
            patch.pop("status", None) if rt.status else None
            if rt.kind == "Secret" and patch.get("stringData"):
                patch.setdefault("data", {}).update(
                    {k: base64.b64encode(str(v).encode()).decode() for k, v in patch.pop("stringData").items()})
            new = merge_apply(new, patch, "", rt.crd)
        entry = {"manager": manager, "operation": "Apply", "apiVersion": rt.group_version,
                 "fieldsType": "FieldsV1", "fieldsV1": to_fieldsv1(applied_set)}
        if subresource:
            entry["subresource"] = subresource
        # Keep the entry order stable so an unchanged apply is a no-op.
        if mine is not None:
            idx = entries.index(mine)
            merged = [e for e in new_entries]
            merged.insert(min(idx, len(merged)), entry)
        else:
            merged = new_entries + [entry]
        return 200, self._store(rt, key, live, new, manager, "Apply", dry_run=dry_run, managed=merged,
                                subresource=subresource)


_QUANTITY = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
             "Ti": 2**40, "m": 0.001}


def parse_quantity(q: Any) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(q))
    if not m or m.group(2) not in _QUANTITY:
        raise ApiError(422, "Invalid", f"quantities must match the regular expression: {q!r}")
    return float(m.group(1)) * _QUANTITY[m.group(2)]


_STS_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds")


def _check_immutable(rt: ResourceType, old: dict, new: dict) -> None:
    """A PVC's spec is immutable after creation except resources.requests (which may only grow);
    a StatefulSet's spec except the fields the API server lets change."""
    if rt.kind == "StatefulSet":
        a = {k: v for k, v in (old.get("spec") or {}).items() if k not in _STS_MUTABLE}
        b = {k: v for k, v in (new.get("spec") or {}).items() if k not in _STS_MUTABLE}
        if a != b:
            name = old["metadata"]["name"]
            raise ApiError(422, "Invalid", f'StatefulSet.apps "{name}" is invalid: spec: Forbidden: updates to '
                           "statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                           "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' "
                           "are forbidden", {"name": name, "group": "apps", "kind": "StatefulSet"})
        return
    if rt.kind != "PersistentVolumeClaim":
        return
    name = old["metadata"]["name"]
    old_spec, new_spec = copy.deepcopy(old.get("spec") or {}), copy.deepcopy(new.get("spec") or {})
    old_req = ((old_spec.get("resources") or {}).get("requests") or {}).get("storage")
    new_req = ((new_spec.get("resources") or {}).get("requests") or {}).get("storage")
    for spec in (old_spec, new_spec):
        (spec.get("resources") or {}).pop("requests", None)
        if not spec.get("resources"):
            spec.pop("resources", None)
        spec.pop("volumeAttributesClassName", None)
        spec.pop("volumeName", None)  # set by the binder
    if old_spec != new_spec:
        raise ApiError(422, "Invalid", f'PersistentVolumeClaim "{name}" is invalid: spec: Forbidden: spec is '
                       "immutable after creation except resources.requests and volumeAttributesClassName for "
                       "bound claims", {"name": name, "kind": "PersistentVolumeClaim", "causes": [
                           {"reason": "FieldValueForbidden", "message": "Forbidden: spec is immutable after "
                            "creation except resources.requests and volumeAttributesClassName for bound claims",
                            "field": "spec"}]})
    if old_req and new_req and parse_quantity(new_req) < parse_quantity(old_req):
        raise ApiError(422, "Invalid", f'PersistentVolumeClaim "{name}" is invalid: '
                       "spec.resources.requests.storage: Forbidden: field can not be less than previous value",
                       {"name": name, "kind": "PersistentVolumeClaim", "causes": [
                           {"reason": "FieldValueForbidden", "message": "Forbidden: field can not be less than "
                            "previous value", "field": "spec.resources.requests.storage"}]})


def _dotted(p: Path_) -> str:
    out = ""
    for seg in p:
        if seg.startswith("f:"):
            out += "." + seg[2:]
        elif seg.startswith("k:"):
            out += "[" + ",".join(f"{k}={v}" for k, v in json.loads(seg[2:]).items()) + "]"
    return out


def _strip_times(entries: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "time"} for e in entries]


def _stamp(entries: list[dict]) -> list[dict]:
    stamp = now_rfc3339()
    return [{**e, "time": e.get("time") or stamp} for e in entries]


class _Handler(Handler):
    owner: KubeFake

    def _send(self, code: int, body: Any) -> None:
        self._send_raw(code, "application/json", json.dumps(body).encode())

    def _send_raw(self, code: int, ctype: str, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        fake = self.owner
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        body, _ = self.read_body()
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        ua = self.headers.get("User-Agent") or ""
        fault = None
        with fake.lock:
            for f in fake.faults:
                if f.remaining > 0 and f.applies(method, split.path):
                    f.remaining -= 1
                    fault = f
                    break
        status = 0
        try:
            if fault and fault.kind == "drop":
                fake.log.append(LoggedRequest(method, split.path, query, ctype, 0, query.get("fieldManager"), ua))
                # RST instead of a response: the client sees a reset/refused connection.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if fault and fault.kind == "hang":
                with fake.lock:
                    fake.log.append(LoggedRequest(method, split.path, query, ctype, 0, query.get("fieldManager"), ua))
                fake.stopping.wait()
                self.close_connection = True
                return
            if fault and fault.kind == "html":
                with fake.lock:
                    fake.log.append(LoggedRequest(method, split.path, query, ctype, fault.status,
                                                  query.get("fieldManager"), ua))
                self._send_raw(fault.status if fault.status != 500 else 200, "text/html; charset=utf-8",
                               b"<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>"
                               b"<body><h1>Welcome to nginx!</h1></body></html>\n")
                return
            if fault and fault.kind == "shape":
                with fake.lock:
                    fake.log.append(LoggedRequest(method, split.path, query, ctype, 200, query.get("fieldManager"), ua))
                self._send(200, fault.body if fault.body is not None else ["not", "an", "object"])
                return
            if fault and fault.kind == "delay":
                time.sleep(fault.delay)
            if fault and fault.kind == "status":
                raise ApiError(fault.status, {500: "InternalError", 503: "ServiceUnavailable", 401: "Unauthorized",
                                              403: "Forbidden", 429: "TooManyRequests"}.get(fault.status, "Unknown"),
                               fault.message)
            auth = self.headers.get("Authorization") or ""
            if fake.token is not None and auth != f"Bearer {fake.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            log_path = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", split.path)
            if log_path and method == "GET":
                with fake.lock:
                    fake.log.append(LoggedRequest(method, split.path, query, ctype, 200, None, ua))
                self._pod_log(log_path.group(1), log_path.group(2), query)
                return
            status, payload = self._route(method, split.path, query, body, ctype, ua)
        except ApiError as e:
            status, payload = e.code, e.body()
        except Exception as e:  # a bug in the fake must still answer like a server would
            status, payload = 500, ApiError(500, "InternalError", f"fake: {type(e).__name__}: {e}").body()
        with fake.lock:
            fake.log.append(LoggedRequest(method, split.path, query, ctype, status, query.get("fieldManager"), ua))
        self._send(status, payload)

    def _pod_log(self, ns: str, name: str, q: dict) -> None:
        """GET .../pods/<name>/log: text/plain; ``follow=true`` streams (chunked) until the container exits.

        As a real API server: 404 for no such pod, 400 while the container is still waiting to start.
        """
        fake = self.owner
        pod = fake.get_object("v1", "Pod", name, ns)
        if pod is None:
            self._send(404, ApiError(404, "NotFound", f'pods "{name}" not found').body())
            return
        if (pod.get("status") or {}).get("phase", "Pending") == "Pending":
            container = q.get("container") or pod["spec"]["containers"][0]["name"]
            self._send(400, ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting '
                                     "to start: ContainerCreating").body())
            return
        key = (ns, name)
        follow = q.get("follow") == "true"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        while True:
            with fake.logs_changed:
                lines = fake.pod_logs.get(key, [])
                while follow and sent >= len(lines) and key not in fake.pod_logs_done \
                        and not fake.stopping.is_set():
                    fake.logs_changed.wait(0.5)
                    lines = fake.pod_logs.get(key, [])
                new, sent = lines[sent:], len(lines)
                finished = not follow or key in fake.pod_logs_done or fake.stopping.is_set()
            data = "".join(f"{line}\n" for line in new).encode()
            if data:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            if finished and sent >= len(fake.pod_logs.get(key, [])):
                break
        self.wfile.write(b"0\r\n\r\n")

    # ---------------------------------------------------------------- routing
    def _route(self, method: str, path: str, q: dict, raw: bytes, ctype: str, ua: str) -> tuple[int, Any]:
        fake = self.owner
        parts = [p for p in path.split("/") if p]
        path = "/" + "/".join(parts)
        if path == "/version":
            return 200, self._version()
        if path in ("/healthz", "/readyz", "/livez"):
            return 200, "ok"
        if parts == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}
        if parts == ["apis"]:
            return 200, self._group_list()
        if parts and parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts and parts[0] == "apis" and len(parts) >= 2:
            if len(parts) == 2:
                g = self._group(parts[1])
                if g is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return 200, g
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        with fake.lock:
            types_here = [rt for rt in fake.types.values() if rt.group == group and rt.version == version]
            if not types_here:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if not rest:
                return 200, {"kind": "APIResourceList", "apiVersion": "v1",
                             "groupVersion": types_here[0].group_version,
                             "resources": [r for rt in types_here for r in rt.api_resources()]}
            by_plural = {rt.plural: rt for rt in types_here}
            ns = ""
            if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in by_plural and by_plural[rest[2]].namespaced:
                ns, rest = rest[1], rest[2:]
            rt = by_plural.get(rest[0])
            if rt is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            name = rest[1] if len(rest) > 1 else ""
            sub = rest[2] if len(rest) > 2 else ""
            if sub and not ((sub == "status" and rt.status) or (sub == "scale" and rt.scale)):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if "dryRun" in q and q["dryRun"] != "All":
                raise ApiError(400, "BadRequest", f'dryRun: Unsupported value: "{q["dryRun"]}": supported '
                               'values: "All"')
            dry = q.get("dryRun") == "All"
            manager = q.get("fieldManager") or (ua.split("/")[0] if ua else "unknown")
            body = self._decode(raw, ctype) if raw else None
            if not name:
                return self._collection(method, rt, ns, q, body, manager, dry)
            return self._item(method, rt, ns, name, sub, q, body, ctype, manager, dry)

    def _decode(self, raw: bytes, ctype: str) -> Any:
        try:
            if ctype == "application/apply-patch+yaml":
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError(400, "BadRequest", f"error decoding request body: {e}") from None

    def _version(self) -> dict:
        gv = self.owner.git_version
        m = re.match(r"v(\d+)\.(\d+)", gv)
        return {"major": m.group(1) if m else "1", "minor": m.group(2) if m else "31", "gitVersion": gv,
                "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.22.9", "compiler": "gc", "platform": "linux/arm64"}

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rt in self.owner.types.values():
            if rt.group and rt.version not in groups.setdefault(rt.group, []):
                groups[rt.group].append(rt.version)
        return groups

    def _group(self, name: str) -> dict | None:
        with self.owner.lock:
            versions = self._groups().get(name)
        if not versions:
            return None
        vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": vs, "preferredVersion": vs[0]}

    def _group_list(self) -> dict:
        with self.owner.lock:
            groups = self._groups()
        out = []
        for name, versions in groups.items():
            vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
            out.append({"name": name, "versions": vs, "preferredVersion": vs[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": out}

    def _collection(self, method: str, rt: ResourceType, ns: str, q: dict, body: Any, manager: str,
                    dry: bool) -> tuple[int, Any]:
        fake = self.owner
        if method == "GET" or method == "DELETE":
            preds = parse_selector(q.get("labelSelector", "")) if q.get("labelSelector") else []
            field_sel = q.get("fieldSelector", "")
            fpreds = []
            for term in filter(None, field_sel.split(",")):
                k, _, v = term.partition("=")
                neg = k.endswith("!")
                k = k.rstrip("!=")
                if k not in ("metadata.name", "metadata.namespace"):
                    raise ApiError(400, "BadRequest", f'field label not supported: {k}')
                fpreds.append((k.split(".")[1], v.lstrip("="), neg))
            items = []
            for key, obj in sorted(fake.objects.items()):
                if key[0] != rt.group or key[1] != rt.plural or (ns and key[2] != ns):
                    continue
                if not matches(obj, preds):
                    continue
                meta = obj["metadata"]
                if any((meta.get(k, "") == v) == neg for k, v, neg in fpreds):
                    continue
                items.append(key)
            if method == "DELETE":
                deleted = [fake._delete(rt, k, dry_run=dry, propagation=_propagation(q, body)) for k in items]
                return 200, {"kind": f"{rt.kind}List", "apiVersion": rt.group_version,
                             "metadata": {"resourceVersion": str(fake.rv)}, "items": deleted}
            # A real server leaves kind and apiVersion out of list items (the list says them once).
            return 200, {"kind": f"{rt.kind}List", "apiVersion": rt.group_version,
                         "metadata": {"resourceVersion": str(fake.rv)},
                         "items": [{k: v for k, v in fake.objects[key].items() if k not in ("kind", "apiVersion")}
                                   for key in items]}
        if method == "POST":
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
            if body.get("kind") and body["kind"] != rt.kind:
                raise ApiError(400, "BadRequest", f"the kind {body['kind']} does not match {rt.kind}")
            body_ns = (body.get("metadata") or {}).get("namespace")
            if rt.namespaced and body_ns and body_ns != ns:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match "
                               "the namespace sent on the request")
            return 201, fake._create(rt, ns, body, manager, dry_run=dry)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")

    def _item(self, method: str, rt: ResourceType, ns: str, name: str, sub: str, q: dict, body: Any,
              ctype: str, manager: str, dry: bool) -> tuple[int, Any]:
        fake = self.owner
        key = fake._key(rt, ns, name)
        live = fake.objects.get(key)
        if method == "GET":
            if live is None:
                raise not_found(rt, name)
            if sub == "scale":
                return 200, _scale_of(rt, live)
            return 200, copy.deepcopy(live)
        if method == "DELETE":
            return 200, fake._delete(rt, key, dry_run=dry, propagation=_propagation(q, body))
        if method == "PATCH" and ctype == "application/apply-patch+yaml":
            if not q.get("fieldManager"):
                raise ApiError(422, "Invalid", "PATCH " + self.path.split("?")[0] + ": fieldManager is required "
                               "for apply requests")
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "apply body must be an object")
            force = str(q.get("force", "")).lower() == "true"
            if sub == "scale":
                raise ApiError(405, "MethodNotAllowed", "apply to scale is not supported by the fake")
            return fake._apply(rt, ns, name, body, manager, force, dry_run=dry, subresource=sub)
        if live is None:
            raise not_found(rt, name)
        if method == "PUT":
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
            if sub == "scale":
                new = copy.deepcopy(live)
                new.setdefault("spec", {})["replicas"] = (body.get("spec") or {}).get("replicas", 0)
                stored = fake._store(rt, key, live, new, manager, "Update", dry_run=dry)
                return 200, _scale_of(rt, stored)
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != live["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.plural} "{name}": the object '
                               "has been modified; please apply your changes to the latest version and try again",
                               {"name": name, "group": rt.group, "kind": rt.plural})
            new = copy.deepcopy(body)
            new.setdefault("metadata", {})["name"] = name
            if rt.namespaced:
                new["metadata"]["namespace"] = ns
            if sub == "status":
                merged = copy.deepcopy(live)
                merged["status"] = new.get("status", {})
                new = merged
            elif rt.status:
                new["status"] = copy.deepcopy(live.get("status", {}))
            if rt.kind == "Secret" and new.get("stringData"):
                fake._defaults(rt, new)
            return 200, fake._store(rt, key, live, new, manager, "Update", dry_run=dry, subresource=sub)
        if method == "PATCH":
            if ctype == "application/merge-patch+json":
                new = merge_patch(live, body)
            elif ctype == "application/json-patch+json":
                if not isinstance(body, list):
                    raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
                new = json_patch(live, body)
            elif ctype == "application/strategic-merge-patch+json":
                if rt.crd:
                    raise ApiError(415, "UnsupportedMediaType",
                                   "strategic merge patch is not supported for custom resources")
                new = merge_apply(live, body, "", rt.crd)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the content type {ctype!r} is not supported")
            if sub == "scale":
                replicas = (new.get("spec") or {}).get("replicas")
                new = copy.deepcopy(live)
                new.setdefault("spec", {})["replicas"] = replicas
                return 200, _scale_of(rt, fake._store(rt, key, live, new, manager, "Update", dry_run=dry))
            if sub == "status":
                merged = copy.deepcopy(live)
                merged["status"] = new.get("status", {})
                new = merged
            elif rt.status:
                new["status"] = copy.deepcopy(live.get("status", {}))
            new["metadata"]["name"], new["metadata"]["uid"] = name, live["metadata"]["uid"]
            if rt.kind == "Secret" and new.get("stringData"):
                fake._defaults(rt, new)
            return 200, fake._store(rt, key, live, new, manager, "Update", dry_run=dry, subresource=sub)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")


def _propagation(q: dict, body: Any) -> str:
    """DeleteOptions.propagationPolicy from the query or the body; the default for most kinds is Background."""
    if isinstance(body, dict) and body.get("propagationPolicy"):
        return body["propagationPolicy"]
    return q.get("propagationPolicy") or "Background"


def _scale_of(rt: ResourceType, obj: dict) -> dict:
    meta = obj["metadata"]
    sel = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta["uid"],
                         "resourceVersion": meta["resourceVersion"],
                         "creationTimestamp": meta["creationTimestamp"]},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sel.items())}}


# ----------------------------------------------------------------------------- controller helpers


def mark_ready(fake: KubeFake, obj: dict) -> None:
    """Play the workload controllers: report an object as fully rolled out / complete / bound."""
    kind, meta = obj["kind"], obj["metadata"]
    ns, name, gen = meta.get("namespace", ""), meta["name"], meta.get("generation", 1)
    spec = obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        n = spec.get("replicas", 1)
        status = {"observedGeneration": gen, "replicas": n, "readyReplicas": n, "availableReplicas": n,
                  "updatedReplicas": n}
        if kind == "StatefulSet":
            status["currentReplicas"] = n
    elif kind == "DaemonSet":
        status = {"observedGeneration": gen, "desiredNumberScheduled": 1, "numberReady": 1,
                  "currentNumberScheduled": 1, "numberMisscheduled": 0, "updatedNumberScheduled": 1}
    elif kind == "Job":
        t = now_rfc3339()
        status = {"succeeded": 1, "startTime": t, "completionTime": t,
                  "conditions": [{"type": "Complete", "status": "True", "lastProbeTime": t,
                                  "lastTransitionTime": t}]}
    elif kind == "PersistentVolumeClaim":
        status = {"phase": "Bound", "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
                  "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")}}
    else:
        return
    fake.set_status(obj["apiVersion"], kind, name, ns, status)


HELM_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "helmcharts.helm.cattle.io"},
    "spec": {"group": "helm.cattle.io", "scope": "Namespaced",
             "names": {"plural": "helmcharts", "singular": "helmchart", "kind": "HelmChart"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}},
                           "subresources": {"status": {}}}]},
}


def crd(group: str, plural: str, kind: str, version: str = "v1") -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                     "versions": [{"name": version, "served": True, "storage": True,
                                   "subresources": {"status": {}}}]}}


KEDA_CRDS = (crd("keda.sh", "scaledjobs", "ScaledJob", "v1alpha1"),
             crd("keda.sh", "triggerauthentications", "TriggerAuthentication", "v1alpha1"),
             crd("keda.sh", "scaledobjects", "ScaledObject", "v1alpha1"))
CHART_CRDS: dict[str, tuple[dict, ...]] = {"keda": KEDA_CRDS}


class K3sController:
    """Plays k3s's controllers on the fake: helm-controller Jobs, rollouts, PVC binding.

    ``ready`` False leaves workloads unready (for timeout tests); ``helm_fails``
    makes each helm-install Job fail.
    """

    def __init__(self, fake: KubeFake, *, ready: bool = True, helm_fails: bool = False,
                 chart_crds: dict[str, list[dict]] | None = None, crd_delay: float = 0.0) -> None:
        """``chart_crds`` maps a HelmChart name to the CRDs its chart installs, ``crd_delay``
        seconds after the HelmChart is applied (as a helm-install Job would, a little later)."""
        self.owner, self.ready, self.helm_fails = fake, ready, helm_fails
        self.chart_crds, self.crd_delay = chart_crds or {}, crd_delay
        self.timers: list[threading.Timer] = []
        fake.add_object(HELM_CRD, manager="k3s")
        fake.on_write(self._on_write)

    def _install_crds(self, crds: list[dict]) -> None:
        for c in crds:
            if self.owner.get_object(c["apiVersion"], c["kind"], c["metadata"]["name"]) is None:
                self.owner.add_object(copy.deepcopy(c), manager="helm")

    def _on_write(self, fake: KubeFake, verb: str, obj: dict) -> None:
        if verb == "delete":
            return
        kind, meta = obj["kind"], obj["metadata"]
        if kind == "HelmChart" and verb in ("create", "update"):
            self._install(obj)
        elif self.ready and kind in ("Deployment", "StatefulSet", "PersistentVolumeClaim"):
            status = obj.get("status") or {}
            if kind == "PersistentVolumeClaim" and status.get("phase") == "Bound":
                return
            if kind != "PersistentVolumeClaim" and status.get("observedGeneration") == meta.get("generation") \
                    and status.get("readyReplicas") == (obj.get("spec") or {}).get("replicas", 1):
                return
            mark_ready(fake, obj)

    def _install(self, hc: dict) -> None:
        meta, spec = hc["metadata"], hc.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        job_name = f"helm-install-{name}"
        if self.owner.get_object("batch/v1", "Job", job_name, ns) is None:
            self.owner.add_object({"apiVersion": "batch/v1", "kind": "Job",
                                  "metadata": {"name": job_name, "namespace": ns},
                                  "spec": {"backoffLimit": 1000, "template": {"spec": {
                                      "restartPolicy": "OnFailure",
                                      "containers": [{"name": "helm", "image": "rancher/klipper-helm"}]}}}},
                                 manager="helm-controller")
        job = self.owner.get_object("batch/v1", "Job", job_name, ns)
        t = now_rfc3339()
        if self.helm_fails:
            self.owner.set_status("batch/v1", "Job", job_name, ns, {"failed": 1, "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit", "lastProbeTime": t,
                 "lastTransitionTime": t}]})
            return
        mark_ready(self.owner, job)
        if name in self.chart_crds:  # a test chose this chart's CRDs and how late they come
            t = threading.Timer(self.crd_delay, self._install_crds, args=(self.chart_crds[name],))
            t.daemon = True
            self.timers.append(t)
            t.start()
        else:
            for c in CHART_CRDS.get(spec.get("chart", ""), ()):  # a chart's CRDs are served once it is installed
                if self.owner.get_object(c["apiVersion"], c["kind"], c["metadata"]["name"]) is None:
                    self.owner.add_object(c, manager="helm")
        target = spec.get("targetNamespace") or ns
        if self.owner.get_object("v1", "Namespace", target) is None:
            self.owner.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target}})
        dep_name = f"{name}-{spec.get('chart', 'chart')}"
        if self.owner.get_object("apps/v1", "Deployment", dep_name, target) is None:
            labels = {"app.kubernetes.io/instance": name}
            self.owner.add_object({"apiVersion": "apps/v1", "kind": "Deployment",
                                  "metadata": {"name": dep_name, "namespace": target, "labels": labels},
                                  "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                                           "template": {"metadata": {"labels": labels}, "spec": {
                                               "containers": [{"name": "app", "image": f"{spec.get('chart')}:x"}]}}}},
                                 manager="helm")
