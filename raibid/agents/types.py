"""Agent types: the built-ins, third-party types from entry points, and the config's overrides.

A type is resolved in layers: its base (a built-in, an entry-point type, or
what ``extends:`` names), then every field the config sets under
``agents.types.<name>``. ``env`` and ``caches`` merge key by key; a cache
mapped to an empty path is removed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from raibid.agents.trust import pool_name, split_pool
from raibid.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from raibid.config import Config
    from raibid.config.model import AgentType

ENTRY_POINT_GROUP = "raibid.agent_types"
CACHE_ROOT = "/cache"


@dataclass
class TypeSpec:
    """A fully resolved agent type: what its pool renders and `agents types` shows."""

    name: str
    image: str
    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str
    lag_count: int
    max_replicas: int
    env: dict[str, str]
    caches: dict[str, str]  # cache name (a directory on the PVC) -> mount path
    cache_size: str
    gpu: int = 0
    runtime_class: str | None = None
    extends: str | None = None
    source: str = "built-in"  # built-in, config, entry point <dist>
    enabled: bool = True
    buildkit: bool = False  # its pod has the rootless BuildKit sidecar `image:` steps build with


@dataclass(frozen=True)
class Pool:
    """One KEDA pool: an agent type at one trust level (``raibid.agents.trust``).

    Every enabled type has two: ``rust`` for trusted builds and ``rust-untrusted``
    for everything else. The pool's name is its queue (``Job.agent``, the stream
    KEDA scales on); each has its own ScaledJob and its own cache PVC, so an
    untrusted build never writes a cache a trusted build reads.
    """

    spec: TypeSpec
    trusted: bool

    @property
    def name(self) -> str:
        """The queue name: ``rust`` or ``rust-untrusted``."""
        return pool_name(self.spec.name, self.trusted)

    @property
    def agent_type(self) -> str:
        return self.spec.name

    @property
    def trust(self) -> str:
        return "trusted" if self.trusted else "untrusted"

    @property
    def scaled_job(self) -> str:
        """The ScaledJob's name (its Jobs and pods start with it)."""
        return f"raibid-agent-{self.name}"

    @property
    def cache_pvc(self) -> str:
        """Per type and trust level; the trust word is in both names, so no pool inherits a shared cache."""
        return f"raibid-agent-cache-{self.spec.name}-{self.trust}"

    @property
    def lag_count(self) -> int:
        return self.spec.lag_count

    @property
    def max_replicas(self) -> int:
        return self.spec.max_replicas

    @property
    def gpu(self) -> int:
        return self.spec.gpu


@dataclass
class _Base:
    """A built-in's or plugin's defaults (fields not given take the generic defaults)."""

    image: str | None = None
    cpu: str = "2"
    memory: str = "4Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    lag_count: int = 1
    max_replicas: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    caches: dict[str, str] = field(default_factory=dict)
    cache_size: str = "20Gi"
    gpu: int = 0
    runtime_class: str | None = None
    extends: str | None = None
    buildkit: bool = False


# The `image` type's build container finds buildctl here (copied from the BuildKit image by an init container).
BUILDCTL_DIR = "/opt/buildkit/bin"

BUILTIN: dict[str, _Base] = {
    "generic": _Base(cache_size="1Gi"),
    "rust": _Base(
        env={"CARGO_HOME": "/usr/local/cargo", "SCCACHE_DIR": f"{CACHE_ROOT}/sccache", "RUSTC_WRAPPER": "sccache",
             "CARGO_INCREMENTAL": "0"},
        caches={"cargo-registry": "/usr/local/cargo/registry", "cargo-git": "/usr/local/cargo/git",
                "sccache": f"{CACHE_ROOT}/sccache"},
        cache_size="50Gi"),
    "python": _Base(
        env={"PIP_CACHE_DIR": f"{CACHE_ROOT}/pip", "UV_CACHE_DIR": f"{CACHE_ROOT}/uv"},
        caches={"pip": f"{CACHE_ROOT}/pip", "uv": f"{CACHE_ROOT}/uv"}),
    "node": _Base(
        env={"npm_config_cache": f"{CACHE_ROOT}/npm"},
        caches={"npm": f"{CACHE_ROOT}/npm"}),
    "go": _Base(
        env={"GOMODCACHE": f"{CACHE_ROOT}/gomod", "GOCACHE": f"{CACHE_ROOT}/gobuild"},
        caches={"gomod": f"{CACHE_ROOT}/gomod", "gobuild": f"{CACHE_ROOT}/gobuild"}),
    "gpu": _Base(
        cpu="4", memory="16Gi", gpu=1, runtime_class="nvidia",
        env={"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
             "PIP_CACHE_DIR": f"{CACHE_ROOT}/pip", "UV_CACHE_DIR": f"{CACHE_ROOT}/uv"},
        caches={"pip": f"{CACHE_ROOT}/pip", "uv": f"{CACHE_ROOT}/uv"}, cache_size="50Gi"),
    # `image:` steps (docs/images.md): raibid's image with buildctl, and a rootless buildkitd sidecar.
    "image": _Base(cache_size="1Gi", buildkit=True,
                   env={"PATH": f"{BUILDCTL_DIR}:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"}),
}


def entry_point_types() -> dict[str, tuple[_Base, str]]:
    """Third-party types: each entry point in ``raibid.agent_types`` loads to a mapping of fields.

    The mapping uses the config's keys (image, cpu, memory, env, caches, ...).
    A broken plugin is a config error naming it, not a traceback.
    """
    from importlib.metadata import entry_points

    out: dict[str, tuple[_Base, str]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value
        try:
            value = ep.load()
            data = value() if callable(value) else value
            out[ep.name] = (_base_from(dict(data)), f"entry point {dist}")
        except Exception as e:
            raise ConfigError(f"agent type {ep.name!r} from entry point {ep.value}: {e}",
                              hint=f"fix or uninstall {dist}") from None
    return out


def _base_from(data: dict[str, Any]) -> _Base:
    names = {f.name for f in dataclasses.fields(_Base)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown keys {', '.join(unknown)}")
    return _Base(**data)


def default_registry(cfg: Config) -> str:
    """Registry host for agent images: ``agents.registry``, else gitea.url's host:port."""
    if cfg.agents.registry:
        return cfg.agents.registry.rstrip("/")
    parts = urlsplit(cfg.gitea.url)
    return parts.netloc.rpartition("@")[2] or "127.0.0.1:30080"


def resolve_types(cfg: Config, *, plugins: dict[str, tuple[_Base, str]] | None = None) -> dict[str, TypeSpec]:
    """Every known type (built-in, plugin, configured), resolved; ``enabled`` says which get a pool."""
    known: dict[str, tuple[_Base, str]] = {name: (b, "built-in") for name, b in BUILTIN.items()}
    known.update(entry_point_types() if plugins is None else plugins)
    from raibid.queue.model import AGENT_RE

    out: dict[str, TypeSpec] = {}
    names = list(known) + [n for n in cfg.agents.types if n not in known]
    for name in names:
        if not AGENT_RE.fullmatch(name) or name == "dead":
            raise ConfigError(f"agents.types.{name}: invalid type name (lower-case letters, digits and '-')")
        override = cfg.agents.types.get(name)
        if name in known:
            if override is not None and override.extends and override.extends != name:
                raise ConfigError(f"agents.types.{name}: `extends` is only for new types; {name!r} is "
                                  f"already a {known[name][1]} type")
            base, source = known[name]
            base_name = base.extends
        else:
            assert override is not None
            base_name = override.extends or "generic"
            if base_name not in known:
                raise ConfigError(f"agents.types.{name}.extends: unknown type {base_name!r}",
                                  hint=f"known types: {', '.join(sorted(known))}")
            base, source = known[base_name][0], "config"
        spec = _from_base(cfg, name, base, base_name, source)
        if override is not None:
            spec = _apply(spec, override)
        _validate(spec)
        spec.enabled = _enabled(cfg, name, override)
        out[name] = spec
    default = cfg.agents.default_type
    if default not in out:
        raise ConfigError(f"agents.default_type: unknown type {default!r}", hint=f"known types: {', '.join(out)}")
    for name in cfg.agents.pools:
        if name not in out:
            raise ConfigError(f"agents.pools: unknown type {name!r}", hint=f"known types: {', '.join(out)}")
    return out


def enabled_types(cfg: Config) -> dict[str, TypeSpec]:
    """The types that get a pool, in a stable order (the default type always does)."""
    types = resolve_types(cfg)
    return {n: t for n, t in types.items() if t.enabled or n == cfg.agents.default_type}


def _enabled(cfg: Config, name: str, override: AgentType | None) -> bool:
    if override is not None and override.enabled is not None:
        return override.enabled
    return name in cfg.agents.pools or override is not None


def _from_base(cfg: Config, name: str, base: _Base, base_name: str | None, source: str) -> TypeSpec:
    from raibid.images.catalog import default_tag, image_for_type, ref

    image_name = base_name if (base_name and not base.image) else name
    catalogued = image_for_type(image_name)
    if base.image:
        image = base.image
    elif catalogued:  # one of raibid's images, at the exact tag `raibid images build` pushes
        image = ref(cfg, catalogued).ref
    else:  # a plugin type that names no image: the operator builds agent-<name> at raibid's tag
        image = f"{default_registry(cfg)}/raibid/agent-{image_name}:{default_tag(cfg)}"
    return TypeSpec(name=name, image=image, cpu=base.cpu, memory=base.memory,
                    cpu_limit=base.cpu_limit or base.cpu, memory_limit=base.memory_limit or base.memory,
                    lag_count=base.lag_count, max_replicas=base.max_replicas or cfg.agents.max_replicas,
                    env=dict(base.env), caches=dict(base.caches), cache_size=base.cache_size, gpu=base.gpu,
                    runtime_class=base.runtime_class, extends=base_name if base_name != name else None,
                    source=source, buildkit=base.buildkit)


def _apply(spec: TypeSpec, o: AgentType) -> TypeSpec:
    spec = dataclasses.replace(spec, env=dict(spec.env), caches=dict(spec.caches))
    if o.cpu is not None and o.cpu_limit is None and spec.cpu_limit == spec.cpu:
        spec.cpu_limit = o.cpu
    if o.memory is not None and o.memory_limit is None and spec.memory_limit == spec.memory:
        spec.memory_limit = o.memory
    for name in ("image", "cpu", "memory", "cpu_limit", "memory_limit", "lag_count", "max_replicas", "gpu",
                 "cache_size"):
        value = getattr(o, name)
        if value is not None:
            setattr(spec, name, value)
    if o.runtime_class is not None:
        spec.runtime_class = o.runtime_class or None
    elif o.gpu is not None:
        spec.runtime_class = "nvidia" if o.gpu > 0 else None
    spec.env.update(o.env)
    for cache, path in o.caches.items():
        if path:
            spec.caches[cache] = path
        else:
            spec.caches.pop(cache, None)
    if spec.source == "built-in":
        spec.source = "built-in + config"
    return spec


def _validate(spec: TypeSpec) -> None:
    import re

    where = f"agents.types.{spec.name}"
    if spec.lag_count < 1:
        raise ConfigError(f"{where}.lag_count must be at least 1")
    if spec.max_replicas < 1:
        raise ConfigError(f"{where}.max_replicas must be at least 1")
    if spec.gpu < 0:
        raise ConfigError(f"{where}.gpu must not be negative")
    for cache, path in spec.caches.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", cache):
            raise ConfigError(f"{where}.caches: invalid cache name {cache!r} (lower-case letters, digits, . _ -)")
        if not path.startswith("/"):
            raise ConfigError(f"{where}.caches.{cache}: {path!r} must be an absolute path")
    for key in spec.env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{where}.env: invalid variable name {key!r}")


def enabled_pools(cfg: Config) -> dict[str, Pool]:
    """Pool name (the queue) -> pool, two per enabled type: trusted first, then untrusted."""
    out: dict[str, Pool] = {}
    for spec in enabled_types(cfg).values():
        for trusted in (True, False):
            pool = Pool(spec, trusted)
            out[pool.name] = pool
    return out


def select_pools(pools: dict[str, Pool], name: str, trust: str | None = None) -> list[Pool]:
    """The pools a command argument names: a type is both its pools, ``TYPE-untrusted`` just that one.

    ``trust`` (``trusted`` or ``untrusted``) narrows a type to one of its pools.
    """
    agent_type, trusted = split_pool(name)
    known = sorted({p.agent_type for p in pools.values()})
    mine = [p for p in pools.values() if p.agent_type == agent_type]
    if not mine:
        raise UsageError(f"agent type {name!r} has no pool", hint=f"types with pools: {', '.join(known) or 'none'}")
    if not trusted:
        if trust == "trusted":
            raise UsageError(f"{name!r} is the untrusted pool; --trust trusted contradicts it")
        return [p for p in mine if not p.trusted]
    if trust is not None:
        return [p for p in mine if p.trust == trust]
    return mine


def pool_settings(cfg: Config) -> dict[str, tuple[int, int]]:
    """Pool (queue) name -> (KEDA lagCount, max replicas) for every pool: what `queue stats` compares with."""
    return {name: (p.lag_count, p.max_replicas) for name, p in enabled_pools(cfg).items()}
