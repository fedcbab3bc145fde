"""The config repo's folder as raibid writes it: one file per object, plus a kustomization.yaml.

The tree is a pure function of the rendered manifests: Secrets are left out
(raibid applies them directly; see docs/gitops.md), every other object gets a
file named after its component, kind and name, so a file keeps its name as long
as its object exists and a change to one object changes one file.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raibid.errors import UsageError

if TYPE_CHECKING:
    from raibid.cluster.render import Manifest

KUSTOMIZATION = "kustomization.yaml"
HEADER = ("# Managed by raibid (`raibid gitops sync`): edit raibid.yaml and run `raibid cluster up`;\n"
          "# changes made here are overwritten by the next sync.\n")

_SAFE = re.compile(r"[^a-z0-9.-]+")


@dataclass(frozen=True)
class TreeFile:
    """One file of the tree: its name in the folder, its text, and the object it holds (None for kustomization)."""

    name: str
    text: str
    ref: str | None = None


def in_git(manifests: Iterable[Manifest]) -> list[Manifest]:
    """The manifests that belong in the repo: every object except Secrets."""
    return [m for m in manifests if not m.is_secret]


def file_name(m: Manifest) -> str:
    """``<component>-<kind>-<name>.yaml``, lower-case: stable for as long as the object exists."""
    return _SAFE.sub("-", f"{m.component}-{m.kind}-{m.name}".lower()) + ".yaml"


def object_ref(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')}/{ns}{meta.get('name')}"


def render_tree(manifests: Iterable[Manifest]) -> list[TreeFile]:
    """The folder's files, Secrets left out, with a kustomization.yaml listing the others (sorted)."""
    from raibid.yamlio import dump

    files: dict[str, TreeFile] = {}
    for m in in_git(manifests):
        name = file_name(m)
        if name in files:  # a template bug: two objects of one component with the same kind and name
            raise UsageError(f"two rendered objects map to the same file {name}: {files[name].ref} and {m.ref}")
        files[name] = TreeFile(name, HEADER + dump(m.obj), m.ref)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": sorted(files)}
    out = [files[n] for n in sorted(files)]
    out.append(TreeFile(KUSTOMIZATION, HEADER + dump(kustomization)))
    return out


def check_path(path: str) -> str:
    """``gitops.path`` as a clean relative folder (``clusters/dgx-spark``); usage error otherwise."""
    clean = posixpath.normpath(path.strip().strip("/")) if path.strip().strip("/") else ""
    if not clean or clean == "." or path.startswith("/") or clean.startswith("..") or "\\" in path \
            or any(part in (".git",) for part in clean.split("/")):
        raise UsageError(f"invalid gitops.path {path!r}: expected a relative folder such as clusters/dgx-spark",
                         hint="set gitops.path in raibid.yaml (or RAIBID_GITOPS_PATH)")
    return clean
