"""Validate a rendered custom resource against the CRD schemas vendored in ``tests/schemas/``.

``validate_cr(obj)`` picks the CRD by ``apiVersion``/``kind``, takes the
``openAPIV3Schema`` of the requested version (which must be served), turns it
into JSON Schema and validates with ``jsonschema``. Every problem is listed in
one ``AssertionError``.

What the API server does that this mirrors:

* ``x-kubernetes-int-or-string``: an integer or a string;
* ``x-kubernetes-preserve-unknown-fields``: any field is kept below that node;
* ``x-kubernetes-list-type: set`` / ``map`` (+ ``x-kubernetes-list-map-keys``):
  no duplicate items / keys;
* ``x-kubernetes-embedded-resource``: apiVersion, kind and metadata allowed;
* ``nullable``; OpenAPI 3.0 boolean ``exclusiveMinimum``/``exclusiveMaximum``;
* the root ``metadata`` is an ObjectMeta, checked loosely (field names, and
  types of the usual fields), never against the CRD's own ``metadata`` node;
* strict mode (the default): structural-schema pruning. An object node without
  ``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields`` keeps
  only its ``properties``; the API server silently drops anything else, so a
  field raibid renders there is reported as unknown. ``strict=False`` lets
  unknown fields through.

Not checked: CEL rules (``x-kubernetes-validations``), ``format``, defaults,
and anything an admission webhook or the controller itself rejects.

A ``<name>.patch.yaml`` next to ``<name>.yaml`` is a JSON patch (RFC 6902)
applied on load, the way the upstream release applies it with kustomize (KEDA's
ScaledJob).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"

_OBJECT_META_FIELDS = (
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields",
)
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _object_meta(strict: bool) -> dict[str, Any]:
    """ObjectMeta, loosely: the field names (strict) and the types of the fields raibid sets."""
    props: dict[str, Any] = {name: {} for name in _OBJECT_META_FIELDS}
    props.update({
        "name": {"type": "string"}, "generateName": {"type": "string"}, "namespace": {"type": "string"},
        "labels": _STRING_MAP, "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
    })
    meta: dict[str, Any] = {"type": "object", "properties": props}
    if strict:
        meta["additionalProperties"] = False
    return meta


# ----------------------------------------------------------------------------- loading


def _yaml_load(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=loader)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_json_patch(doc: Any, ops: list[Mapping[str, Any]]) -> Any:
    """The add/remove/replace subset of RFC 6902, on a copy."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        kind = op["op"]
        if isinstance(node, list):
            if kind == "add":
                node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
            elif kind == "remove":
                del node[int(last)]
            elif kind == "replace":
                node[int(last)] = copy.deepcopy(op["value"])
            else:
                raise ValueError(f"unsupported JSON patch op {kind!r}")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in node:
                raise KeyError(op["path"])
            node[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del node[last]
        else:
            raise ValueError(f"unsupported JSON patch op {kind!r}")
    return doc


@cache
def _group_crds(group: str) -> dict[str, tuple[dict[str, Any], Path]]:
    """kind -> (CRD, file) for the vendored CRDs of one API group."""
    out: dict[str, tuple[dict[str, Any], Path]] = {}
    folder = SCHEMAS / group
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.yaml")):
        if path.name.endswith(".patch.yaml"):
            continue
        crd = _yaml_load(path)
        patch = path.with_name(path.name[: -len(".yaml")] + ".patch.yaml")
        if patch.exists():
            crd = apply_json_patch(crd, _yaml_load(patch))
        if crd.get("kind") != "CustomResourceDefinition" or crd.get("apiVersion") != "apiextensions.k8s.io/v1":
            raise ValueError(f"{path}: not an apiextensions.k8s.io/v1 CustomResourceDefinition")
        if crd["spec"]["group"] != group:
            raise ValueError(f"{path}: group {crd['spec']['group']!r} is filed under {group!r}")
        out[crd["spec"]["names"]["kind"]] = (crd, path)
    return out


def vendored() -> list[tuple[str, str]]:
    """(apiVersion, kind) of every served version of every vendored CRD."""
    out = []
    for folder in sorted(p for p in SCHEMAS.iterdir() if p.is_dir()):
        for kind, (crd, _) in _group_crds(folder.name).items():
            out += [(f"{folder.name}/{v['name']}", kind) for v in crd["spec"]["versions"] if v.get("served")]
    return sorted(out)


def has_crd(obj: Mapping[str, Any]) -> bool:
    """Whether a CRD for this object's group and kind is vendored (any version)."""
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    return bool(group) and obj.get("kind") in _group_crds(group)


# ----------------------------------------------------------------------------- schema translation


def _translate(node: Any, strict: bool) -> Any:
    """A Kubernetes structural schema node as JSON Schema (draft 2020-12)."""
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {k: v for k, v in node.items() if k != "description"}
    if "properties" in out:
        out["properties"] = {k: _translate(v, strict) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), Mapping):
            out[key] = _translate(out[key], strict)
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_translate(s, strict) for s in out[key]]

    if out.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props["metadata"] = _object_meta(strict)
        out["required"] = sorted({*out.get("required", []), "apiVersion", "kind"})
    for bound in ("Minimum", "Maximum"):
        if out.get(f"exclusive{bound}") is True and bound.lower() in out:
            out[f"exclusive{bound}"] = out.pop(bound.lower())
        elif isinstance(out.get(f"exclusive{bound}"), bool):
            del out[f"exclusive{bound}"]
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    preserve = out.get("x-kubernetes-preserve-unknown-fields") is True
    is_object = out.get("type") == "object" or (isinstance(out.get("type"), list) and "object" in out["type"])
    if strict and is_object and "additionalProperties" not in out and not preserve:
        # Structural pruning: only the declared properties survive.
        out["additionalProperties"] = False
    return out


@cache
def crd_schema(api_version: str, kind: str, strict: bool = True) -> tuple[dict[str, Any], Path]:
    """(JSON Schema, vendored file) for a served version; AssertionError when there is none."""
    group, _, version = api_version.rpartition("/")
    crds = _group_crds(group) if group else {}
    if kind not in crds:
        known = ", ".join(f"{a} {k}" for a, k in vendored())
        raise AssertionError(f"no vendored CRD for {api_version} {kind} in {SCHEMAS} (vendored: {known})")
    crd, path = crds[kind]
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    served = sorted(n for n, v in versions.items() if v.get("served"))
    if version not in versions or not versions[version].get("served"):
        raise AssertionError(f"{kind} version {version!r} is not served by {path.relative_to(SCHEMAS)} "
                             f"(served: {', '.join(served)})")
    schema = _translate(versions[version]["schema"]["openAPIV3Schema"], strict)
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"const": api_version}
    props["kind"] = {"const": kind}
    props["metadata"] = _object_meta(strict)
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return schema, path


# ----------------------------------------------------------------------------- validation


def _list_type(validator: Any, list_type: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    from jsonschema import ValidationError

    if not validator.is_type(instance, "array"):
        return
    if list_type == "set":
        seen: list[Any] = []
        for i, item in enumerate(instance):
            if item in seen:
                yield ValidationError(f"duplicate entry {item!r} in a list-type=set list (item {i})")
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: dict[tuple[Any, ...], int] = {}
        for i, item in enumerate(instance):
            if not isinstance(item, Mapping):
                continue
            key = tuple(item.get(k) for k in keys)
            if key in seen_keys:
                named = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key, strict=True))
                yield ValidationError(f"items {seen_keys[key]} and {i} share the map key ({named})")
            seen_keys.setdefault(key, i)


def _int_or_string(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    from jsonschema import ValidationError

    if value and not (validator.is_type(instance, "integer") or validator.is_type(instance, "string")):
        yield ValidationError(f"{instance!r} must be an integer or a string")


@lru_cache(maxsize=1)
def _validator_class() -> Any:
    from jsonschema import Draft202012Validator, validators

    return validators.extend(Draft202012Validator, {
        "x-kubernetes-list-type": _list_type,
        "x-kubernetes-int-or-string": _int_or_string,
    })


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


def _explain(error: Any) -> list[tuple[str, str]]:
    """(path, message) lines for one jsonschema error."""
    where = _path(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        declared = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in declared)
        return [(_path([*error.absolute_path, k]),
                 "unknown field: not in the schema, the API server would prune it") for k in extra]
    if error.validator == "anyOf" and error.schema.get("x-kubernetes-int-or-string"):
        detail = [e.message for e in error.context if e.validator != "type"]
        return [(where, "; ".join(detail) if detail else f"{error.instance!r} must be an integer or a string")]
    if error.validator in ("anyOf", "oneOf") and error.context:
        return [(where, f"{error.message}: " + "; ".join(sorted({e.message for e in error.context})))]
    if error.validator == "required":
        missing = [r for r in error.validator_value if r not in error.instance]
        return [(_path([*error.absolute_path, r]), "missing required field") for r in missing]
    return [(where, error.message)]


def validate_cr(obj: Mapping[str, Any], *, strict: bool = True) -> None:
    """Validate one custom resource against its vendored CRD schema; AssertionError lists every problem.

    ``strict`` (default): fields the API server would prune as unknown are errors.
    """
    if not isinstance(obj, Mapping) or not obj.get("apiVersion") or not obj.get("kind"):
        raise AssertionError(f"not a Kubernetes object (needs apiVersion and kind): {obj!r:.200}")
    api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
    schema, path = crd_schema(api_version, kind, strict)
    validator = _validator_class()(schema)
    lines = sorted({line for e in validator.iter_errors(obj) for line in _explain(e)})
    if not lines:
        return
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    ref = "/".join(str(p) for p in (meta.get("namespace"), meta.get("name")) if p) or "(unnamed)"
    mode = "strict" if strict else "non-strict"
    raise AssertionError(
        f"{kind} {ref} ({api_version}) does not match tests/schemas/{path.relative_to(SCHEMAS)} ({mode}), "
        f"{len(lines)} problem(s):\n" + "\n".join(f"  - {p}: {m}" for p, m in lines))
