"""The typed config model, its loader and env overrides.

Search order: ``--config`` / ``$RAIBID_CONFIG``, ``./raibid.yaml``, then
``$XDG_CONFIG_HOME/raibid/config.yaml``. The file is merged deeply over the
built-in defaults, then ``RAIBID_<SECTION>_<KEY>`` env vars override single
values. Unknown keys and wrongly typed values are errors that name the file and
line. Secrets never live here: the config names the env var holding each one.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raibid.errors import ConfigError


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field carrying the help text used by `config init` and the docs."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: _copy(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


@dataclass
class ClusterVersions:
    redis_image: str = _f("redis:7.4.2", "Official multi-arch Redis image (arm64 available)")
    gitea_chart: str = _f("12.3.0", "Gitea Helm chart version (https://dl.gitea.com/charts/); pins the Gitea image")
    keda_chart: str = _f("2.17.2", "KEDA Helm chart version (>= 2.17 for activationLagCount 0)")
    flux_chart: str = _f("2.12.4", "Community flux2 Helm chart version (fluxcd-community)")


@dataclass
class ClusterConfig:
    namespace: str = _f("raibid-ci", "Namespace for every raibid object")
    components: list[str] = _f(["redis", "gitea", "keda", "flux"], "Components that `cluster up` manages")
    storage_class: str = _f("local-path", "StorageClass for PVCs (k3s ships local-path)")
    node_ip: str = _f("127.0.0.1", "Node address that containerd and the host use to reach NodePorts")
    redis_storage: str = _f("5Gi", "Size of the Redis AOF volume")
    gitea_storage: str = _f("20Gi", "Size of the Gitea data volume")
    gitea_http_node_port: int = _f(30080, "NodePort for Gitea HTTP (and the OCI registry)")
    gitea_ssh_node_port: int = _f(30022, "NodePort for Gitea SSH")
    templates_dir: str | None = _f(None, "Use a customised copy of the templates folder (default: the built-in one)")
    versions: ClusterVersions = field(default_factory=ClusterVersions, metadata={"help": "Pinned versions"})


@dataclass
class RedisConfig:
    url: str = _f("redis://127.0.0.1:6379/0", "Redis URL, or `auto` to find raibid's Redis Service in the cluster")
    password_env: str = _f("RAIBID_REDIS_PASSWORD", "Env var holding the Redis password")
    prefix: str = _f("raibid", "Key prefix for every queue key")


@dataclass
class QueueConfig:
    max_deliveries: int = _f(3, "Deliveries before a job goes to the dead-letter queue")
    min_idle: int = _f(300, "Seconds a pending entry must be idle before another worker reclaims it")
    heartbeat: int = _f(30, "Seconds between a running job's heartbeats")
    log_ttl: int = _f(7 * 24 * 3600, "Seconds a finished job's log stream is kept")
    log_maxlen: int = _f(100_000, "Approximate cap on log lines per job")
    default_timeout: int = _f(3600, "Job timeout in seconds when none is given")


@dataclass
class GiteaConfig:
    url: str = _f("http://127.0.0.1:30080", "Gitea base URL (ROOT_URL)")
    token_env: str = _f("RAIBID_GITEA_TOKEN", "Env var holding the Gitea API token")
    token_file: str | None = _f(None, "File holding the Gitea API token (used when the env var is unset)")
    admin_user: str = _f("raibid-admin", "Gitea admin user name")
    timeout: float = _f(10.0, "Seconds before a Gitea API request times out")
    retries: int = _f(3, "Retries on connection errors and 502/503/504, with exponential backoff")
    retry_backoff: float = _f(0.5, "First retry delay in seconds (doubles each retry)")


@dataclass
class AgentType:
    image: str = _f("ghcr.io/raibid-labs/raibid-agent:latest", "Agent image (must exist for arm64)")
    lag_count: int = _f(1, "KEDA lagCount: queued jobs per agent pod")
    max_replicas: int | None = _f(None, "Cap for this pool (defaults to agents.max_replicas)")
    cpu: str = _f("2", "CPU request")
    memory: str = _f("4Gi", "Memory request")


@dataclass
class AgentsConfig:
    default_type: str = _f("generic", "Agent type used when a job names none")
    max_replicas: int = _f(8, "Default maximum pods per agent pool")
    polling_interval: int = _f(5, "KEDA pollingInterval in seconds")
    types: dict[str, AgentType] = _f({}, "Agent pools by type name")


@dataclass
class TriggerConfig:
    enabled: bool = _f(True, "Enqueue CI jobs when a mirror sync finds changed refs")
    branches: str = _f("^(main|master)$", "Regex of branch names that trigger jobs")
    agent: str = _f("generic", "Agent type for triggered jobs")


@dataclass
class MirrorConfig:
    github_api: str = _f("https://api.github.com", "GitHub API base URL")
    github_token_env: str = _f("GITHUB_TOKEN", "Env var holding the GitHub token")
    target_org: str = _f("mirrors", "Gitea org that receives mirrors")
    mode: str = _f("push", "`push` (raibid fetches and pushes) or `pull` (Gitea pull mirrors)")
    cache_dir: str | None = _f(None, "Bare-repo cache directory (default: XDG cache)")
    jobs: int = _f(4, "Repositories synced in parallel")
    repos: list[str] = _f([], "Single repos, as OWNER/NAME")
    lists: list[str] = _f([], "Files listing OWNER/NAME lines")
    orgs: list[Any] = _f([], "Orgs or users, with optional include/exclude regexes")
    trigger: TriggerConfig = field(default_factory=TriggerConfig, metadata={"help": "CI triggering"})


@dataclass
class Config:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    gitea: GiteaConfig = field(default_factory=GiteaConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    mirror: MirrorConfig = field(default_factory=MirrorConfig)

    # Where the values came from; not part of the schema.
    source: Path | None = field(default=None, compare=False, metadata={"internal": True})

    def secret(self, env_name: str) -> str | None:
        """Read a secret from the env var the config names. Never stored, never printed."""
        value = os.environ.get(env_name)
        return value or None

    def to_dict(self, *, masked: bool = True) -> dict[str, Any]:
        from raibid.errors import redact_url

        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "source"}
        if masked:
            _mask_urls(out, redact_url)
        return out

    def agent_type(self, name: str) -> AgentType:
        t = self.agents.types.get(name)
        if t is None:
            t = AgentType()
        if t.max_replicas is None:
            t = dataclasses.replace(t, max_replicas=self.agents.max_replicas)
        return t


def _mask_urls(obj: Any, redact: Any) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, str) and (k == "url" or k.endswith("_url") or k == "github_api"):
                obj[k] = redact(v)
            else:
                _mask_urls(v, redact)
    elif isinstance(obj, list):
        for v in obj:
            _mask_urls(v, redact)


# --------------------------------------------------------------------------- loading


def default_search_paths() -> list[Path]:
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path.cwd() / "raibid.yaml", Path(xdg) / "raibid" / "config.yaml"]


def find_config(explicit: str | os.PathLike[str] | None) -> Path | None:
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}", hint="check --config / RAIBID_CONFIG")
        return p
    for p in default_search_paths():
        if p.is_file():
            return p
    return None


def load_config(explicit: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Load the effective config: defaults, then the file, then env overrides."""
    env = os.environ if env is None else env
    path = find_config(explicit)
    data: dict[str, Any] = {}
    marks: dict[tuple[str, ...], int] = {}
    if path is not None:
        data, marks = _read_yaml(path)
    cfg = _build(Config, data, (), marks, path)
    _apply_env(cfg, env)
    cfg.source = path
    return cfg


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return {}, {}
            marks: dict[tuple[str, ...], int] = {}
            _collect_marks(node, (), marks)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of sections, got {type(data).__name__}")
    return data, marks


def _collect_marks(node: Any, path: tuple[str, ...], marks: dict[tuple[str, ...], int]) -> None:
    import yaml

    marks.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = str(k.value)
            marks[path + (key,)] = k.start_mark.line + 1
            _collect_marks(v, path + (key,), marks)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            marks[path + (str(i),)] = v.start_mark.line + 1
            _collect_marks(v, path + (str(i),), marks)


def _where(path: Path | None, marks: dict[tuple[str, ...], int], key: tuple[str, ...]) -> str:
    if path is None:
        return "<defaults>"
    line = marks.get(key)
    while line is None and key:
        key = key[:-1]
        line = marks.get(key)
    return f"{path}:{line}" if line else str(path)


def _build(cls: type, data: Any, path: tuple[str, ...], marks: dict, src: Path | None) -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types."""
    dotted = ".".join(path) or "<top level>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(src, marks, path)}: '{dotted}' must be a mapping, got {_tname(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_s = str(key)
        if key_s not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(
                f"{_where(src, marks, path + (key_s,))}: unknown key '{'.'.join(path + (key_s,))}'",
                hint=f"known keys here: {known}",
            )
        kwargs[key_s] = _coerce(hints[key_s], value, path + (key_s,), marks, src)
    return cls(**kwargs)


def _tname(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _coerce(tp: Any, value: Any, path: tuple[str, ...], marks: dict, src: Path | None) -> Any:
    dotted = ".".join(path)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{_where(src, marks, path)}: '{dotted}' must be {expected}, got {_tname(value)}")

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path, marks, src)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, marks, src)
    if origin is list:
        if not isinstance(value, list):
            raise bad("a list")
        return [_coerce(args[0], v, path + (str(i),), marks, src) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return {str(k): _coerce(args[1], v, path + (str(k),), marks, src) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    raise bad(str(tp))  # pragma: no cover - schema bug


def schema_keys(cls: type = Config, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any, Any]]:
    """Every non-section key of the schema, as (path, type, dataclass field), in file order."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(schema_keys(tp, prefix + (f.name,)))
        else:
            out.append((prefix + (f.name,), tp, f))
    return out


def leaf_keys() -> list[tuple[tuple[str, ...], Any]]:
    """The keys an env var can set: every scalar or list (maps such as agents.types are file-only)."""
    return [(path, tp) for path, tp, _ in schema_keys() if typing.get_origin(tp) is not dict]


def env_var_for(path: tuple[str, ...]) -> str:
    return "RAIBID_" + "_".join(path).upper()


def _apply_env(cfg: Config, env: typing.Mapping[str, str]) -> None:
    import yaml

    for path, tp in leaf_keys():
        name = env_var_for(path)
        if name not in env:
            continue
        raw = env[name]
        is_str = tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp))
        if is_str:
            value: Any = raw if raw != "" or tp is str else None
        else:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise ConfigError(f"env {name}: cannot parse {raw!r}") from None
        try:
            value = _coerce(tp, value, path, {}, None)
        except ConfigError as e:
            raise ConfigError(f"env {name}: {e.message.split(': ', 1)[1]}") from None
        target: Any = cfg
        for part in path[:-1]:
            target = getattr(target, part)
        setattr(target, path[-1], value)


# --------------------------------------------------------------------------- init file


def commented_default_yaml() -> str:
    """A complete, commented config file with every default."""
    import yaml

    lines = [
        "# raibid configuration. Every key is optional; these are the built-in defaults.",
        "# Any key can be overridden by an env var RAIBID_<SECTION>_<KEY>, e.g. RAIBID_REDIS_URL.",
        "# Secrets are never stored here: *_env keys name the env var that holds each secret.",
    ]

    def dump_scalar(v: Any) -> str:
        return yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()

    def walk(obj: Any, indent: int) -> None:
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            v = getattr(obj, f.name)
            help_ = f.metadata.get("help")
            pad = "  " * indent
            if help_:
                lines.append(f"{pad}# {help_}")
            if dataclasses.is_dataclass(v):
                lines.append(f"{pad}{f.name}:")
                walk(v, indent + 1)
            else:
                lines.append(f"{pad}{f.name}: {dump_scalar(v)}")

    walk(Config(), 0)
    lines.append("")
    return "\n".join(lines)
