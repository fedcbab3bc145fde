"""Render the manifest templates (top-level ``templates/``) from the effective config.

Templates are Jinja2 with ``StrictUndefined``: a missing value is an error that
names the template, its line and the variable, never an empty string.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid.cluster.components import component as component_entry
from raibid.cluster.components import kind_rank, selected_components
from raibid.cluster.labels import common_labels
from raibid.cluster.secrets import b64encode, generate_secrets
from raibid.errors import TemplateError

if TYPE_CHECKING:
    from raibid.config import Config


@lru_cache(maxsize=1)
def templates_dir() -> Path:
    """The templates folder, from a wheel (``raibid/_templates``) or a checkout (``templates/``)."""
    package = Path(__file__).resolve().parent.parent  # raibid/
    for candidate in (package / "_templates", package.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise TemplateError("raibid's templates folder is missing from this installation",
                        hint="reinstall raibid (pip install --force-reinstall raibid)")


@dataclass
class Manifest:
    """One rendered object and where it came from."""

    obj: dict[str, Any]
    component: str
    template: str

    @property
    def kind(self) -> str:
        return self.obj["kind"]

    @property
    def api_version(self) -> str:
        return self.obj["apiVersion"]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def namespace(self) -> str | None:
        return self.obj["metadata"].get("namespace")

    @property
    def ref(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{ns}{self.name}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.api_version, self.kind, self.namespace or "", self.name)

    @property
    def is_secret(self) -> bool:
        return self.kind == "Secret"


def render(cfg: Config, components: Iterable[str] = (), *, namespace: str | None = None,
           secrets: Mapping[str, str] | None = None, templates: Path | None = None) -> list[Manifest]:
    """Render the chosen components, in apply order."""
    import yaml

    from raibid.yamlio import load_all

    root = templates or templates_dir()
    if not root.is_dir():
        raise TemplateError(f"templates folder not found: {root}", hint="check cluster.templates_dir")
    env = _environment(str(root))
    ns = namespace or cfg.cluster.namespace
    context = {**cfg.to_dict(masked=False), "namespace": ns, "secrets": dict(secrets or generate_secrets()),
               "images": _Images(cfg)}
    out: list[Manifest] = []
    for component in selected_components(cfg, components):
        folder = root / component
        if not folder.is_dir():
            raise TemplateError(f"no templates for component {component!r} in {root}")
        extra = _component_context(component, cfg, ns)
        for path in sorted(folder.glob("*.yaml.j2")):
            rel = f"{component}/{path.name}"
            text = _render_one(env, rel, {**context, **extra, "component": component})
            try:
                docs = [d for d in load_all(text) if d]
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                line = f":{mark.line + 1}" if mark else ""
                raise TemplateError(f"templates/{rel}{line}: rendered YAML is invalid: "
                                    f"{getattr(e, 'problem', e)}") from None
            for doc in docs:
                _check_object(doc, rel)
                meta = doc.setdefault("metadata", {})
                meta["labels"] = {**(meta.get("labels") or {}), **common_labels(component)}
                out.append(Manifest(doc, component, rel))
    # Stable sort: kind rank first, then the template order within a rank.
    return sorted(out, key=lambda m: kind_rank(m.kind))


class _Images:
    """``images.raibid`` in a template: raibid's own image at its resolved tag, computed only when used."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg

    @property
    def raibid(self) -> str:
        from raibid.images.catalog import raibid_image

        return raibid_image(self._cfg)


def _component_context(name: str, cfg: Config, namespace: str) -> dict[str, Any]:
    """Extra template values a component computes from the config (its registry entry's ``context``)."""
    import importlib

    from raibid.cluster.components import BASE

    if name == BASE:
        return {}
    hook = component_entry(name).context
    if not hook:
        return {}
    module, _, func = hook.partition(":")
    return getattr(importlib.import_module(module), func)(cfg, namespace)


@lru_cache(maxsize=4)
def _environment(root: str) -> Any:
    """One Jinja2 environment per templates folder, so templates compile once per process."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(root), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["b64"] = b64encode
    return env


def _render_one(env: Any, rel: str, context: dict[str, Any]) -> str:
    import jinja2

    try:
        return env.get_template(rel).render(**context)
    except jinja2.UndefinedError as e:
        line = _template_line(e, rel)
        raise TemplateError(f"templates/{rel}{line}: missing template value: {e.message}",
                            hint="set it in raibid.yaml (see docs/config.md)") from None
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"templates/{rel}:{e.lineno}: template syntax error: {e.message}") from None


def _template_line(e: BaseException, rel: str) -> str:
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if frame.filename.endswith(rel):
            return f":{frame.lineno}"
    return ""


def _check_object(doc: Any, rel: str) -> None:
    if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
        raise TemplateError(f"templates/{rel}: every document must be an object with apiVersion and kind")
    if not (doc.get("metadata") or {}).get("name"):
        raise TemplateError(f"templates/{rel}: {doc['kind']} has no metadata.name")


def to_yaml(manifests: Iterable[Manifest]) -> str:
    """Multi-document YAML; multi-line strings (configs, values) as readable blocks."""
    from raibid.yamlio import dump_documents

    return dump_documents(m.obj for m in manifests)


def file_name(index: int, m: Manifest) -> str:
    return f"{index:02d}-{m.component}-{m.kind.lower()}-{m.name}.yaml"
