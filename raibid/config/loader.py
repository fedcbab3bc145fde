"""Loading the config: search order, deep merge over defaults, env overrides.

Search order: ``--config`` / ``$RAIBID_CONFIG``, ``./raibid.yaml``, then
``$XDG_CONFIG_HOME/raibid/config.yaml``. The file is merged deeply over the
built-in defaults, then ``RAIBID_<SECTION>_<KEY>`` env vars override single
values. Unknown keys and wrongly typed values are errors that name the file and
line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

from raibid import yamlio
from raibid.config.model import Config
from raibid.errors import ConfigError, redact_url

# --------------------------------------------------------------------------- loading

# Values (scalars, lists and mappings) the config may hold once YAML aliases are expanded. A complete
# config has a few hundred; a 1.4 KB alias bomb expands to billions.
MAX_NODES = 20_000


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


def load_config(explicit: str | os.PathLike[str] | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Load the effective config: defaults, then the file, then env overrides."""
    environ: typing.Mapping[str, str] = os.environ if env is None else env
    path = find_config(explicit)
    data: dict[str, Any] = {}
    marks: dict[tuple[str, ...], int] = {}
    if path is not None:
        data, marks = _read_yaml(path)
    cfg = _build(Config, data, (), marks, path)
    _apply_env(cfg, environ)
    _check_values(cfg)
    cfg.source = path
    return cfg


def _recheck_sections(obj: Any) -> None:
    """Run every section's own checks (``__post_init__``) again: env overrides are set after the file's
    sections were built, so ``RAIBID_AGENTS_TRUSTED_REPOS='["("]'`` must meet the same check as the file."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        post = getattr(obj, "__post_init__", None)
        if post is not None:
            post()
        for f in dataclasses.fields(obj):
            if not f.metadata.get("internal"):
                _recheck_sections(getattr(obj, f.name))
    elif isinstance(obj, list):
        for item in obj:
            _recheck_sections(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            _recheck_sections(item)


def _check_values(cfg: Config) -> None:
    """Values no single field can check: agent type names (the default and every configured type)."""
    _recheck_sections(cfg)
    from raibid.agents.trust import MAX_TYPE_NAME, UNTRUSTED_SUFFIX
    from raibid.errors import UsageError
    from raibid.queue.model import validate_agent

    for where, name in [("agents.default_type", cfg.agents.default_type),
                        *[(f"agents.types.{t}", t) for t in cfg.agents.types]]:
        try:
            validate_agent(name)
        except UsageError as e:
            raise ConfigError(f"{where}: {e.message}") from None
        if len(name) > MAX_TYPE_NAME:
            raise ConfigError(f"{where}: {name!r} is longer than {MAX_TYPE_NAME} characters (its untrusted pool "
                              f"{name + UNTRUSTED_SUFFIX!r} must fit Kubernetes' 63)")
        if name.endswith(UNTRUSTED_SUFFIX):
            raise ConfigError(f"{where}: {name!r} ends in {UNTRUSTED_SUFFIX!r}, the name of a type's pool for "
                              "untrusted builds", hint="choose another name; see docs/security.md")
    seen: set[str] = set()
    for entry in cfg.agents.secrets:
        if entry.name in seen:
            raise ConfigError(f"agents.secrets: {entry.name!r} is named twice", hint="one entry per secret name")
        seen.add(entry.name)
    _check_sizes_and_networks(cfg)
    # Ranges (timeouts, counts) are checked per field from their metadata, by value_problem.


def _check_sizes_and_networks(cfg: Config) -> None:
    """Redis's maxmemory below its container limit, and the CIDRs the agents' NetworkPolicy is built from."""
    import ipaddress

    from raibid.units import quantity_bytes, redis_bytes

    try:
        quantity_bytes(cfg.agents.workspace_size)
    except ValueError as e:
        raise ConfigError(f"agents.workspace_size: {e}") from None
    try:
        limit = quantity_bytes(cfg.redis.memory)
    except ValueError as e:
        raise ConfigError(f"redis.memory: {e}") from None
    try:
        maxmemory = redis_bytes(cfg.redis.maxmemory)
    except ValueError as e:
        raise ConfigError(f"redis.maxmemory: {e}") from None
    if not 0 < maxmemory < limit:
        raise ConfigError(f"redis.maxmemory ({cfg.redis.maxmemory}) must be above 0 and below redis.memory "
                          f"({cfg.redis.memory})",
                          hint="leave room for Redis's own overhead and AOF rewrites: about 3/4 of the limit")
    for where, cidr in [("cluster.pod_cidr", cfg.cluster.pod_cidr), ("cluster.service_cidr", cfg.cluster.service_cidr),
                        *[(f"agents.egress_allow[{i}]", c) for i, c in enumerate(cfg.agents.egress_allow)]]:
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError as e:
            raise ConfigError(f"{where}: {cidr!r} is not a network in CIDR notation ({e})") from None


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    import yaml

    from raibid.yamlio import loader_class

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: the config file is not UTF-8 text (byte 0x{raw[e.start]:02x})",
                          hint="save it as UTF-8") from None
    try:
        loader = loader_class()(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return {}, {}
            try:
                yamlio.check_expansion(node, MAX_NODES)
            except yamlio.ExpansionError as e:
                raise ConfigError(f"{path}:{e.line}: {e.problem}; refusing to load it",
                                  hint="a raibid config needs no such YAML aliases (an alias bomb?)") from None
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
        problem = value_problem(fields[key_s], kwargs[key_s])
        if problem:
            raise ConfigError(f"{_where(src, marks, path + (key_s,))}: '{'.'.join(path + (key_s,))}' {problem}")
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a section's own check (a bad regex, a bad entry): say where
        raise ConfigError(f"{_where(src, marks, path)}: {e.message}", hint=e.hint) from None


def value_problem(f: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with a well-typed value for field ``f`` (a range, a URL), or None.

    Field metadata says what to check: ``min``/``max`` (inclusive), ``gt`` (exclusive
    lower bound, for timeouts), ``url`` (allowed schemes) with ``also`` (other accepted
    words, e.g. ``auto``), ``choices`` (the only values allowed, e.g. ``cluster.mode``).
    """
    meta = f.metadata
    choices = meta.get("choices")
    if choices and value not in choices:
        return f"must be one of {', '.join(choices)}, got {value!r}"
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        # .inf passes every bound and then overflows the socket timeout (a traceback), .nan fails them oddly
        return f"must be a finite number, got {value}"
    if isinstance(value, (int, float)):
        if "gt" in meta and not value > meta["gt"]:
            return f"must be greater than {meta['gt']}, got {value}"
        if "min" in meta and value < meta["min"]:
            return f"must be at least {meta['min']}, got {value}"
        if "max" in meta and value > meta["max"]:
            return f"must be at most {meta['max']}, got {value}"
    if isinstance(value, str) and "url" in meta and value not in meta.get("also", ()):
        from raibid.http import url_problem

        problem = url_problem(value, meta["url"])
        if problem:
            return f"is not a usable URL ({problem}): {redact_url(value)}"
    return None


def _tname(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _type_word(tp: Any) -> str:
    return "a mapping" if dataclasses.is_dataclass(tp) else _tname(tp()) if tp in (str, int, float, bool) else str(tp)


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
        if len(inner) > 1:  # e.g. `str | MirrorRepo`: a mapping picks the dataclass, anything else the first
            mapped = [a for a in inner if dataclasses.is_dataclass(a)]
            if isinstance(value, dict) and mapped:
                return _coerce(mapped[0], value, path, marks, src)
            if not isinstance(value, dict):
                for other in (a for a in inner if not dataclasses.is_dataclass(a)):
                    try:
                        return _coerce(other, value, path, marks, src)
                    except ConfigError:
                        continue
            raise bad(" or ".join(_type_word(a) for a in inner))
        return _coerce(inner[0], value, path, marks, src)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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

    for path, tp, f in schema_keys():
        if typing.get_origin(tp) is dict:
            continue  # maps such as agents.types are file-only
        name = env_var_for(path)
        if name not in env:
            continue
        raw = env[name]
        is_str = tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp))
        if is_str:
            value: Any = raw if raw != "" or tp is str else None
        else:
            try:
                value = yamlio.load(raw, max_nodes=MAX_NODES)
            except yaml.YAMLError:
                raise ConfigError(f"env {name}: cannot parse {raw!r}") from None
            except yamlio.ExpansionError as e:
                raise ConfigError(f"env {name}: {e.problem}") from None
        try:
            value = _coerce(tp, value, path, {}, None)
        except ConfigError as e:
            raise ConfigError(f"env {name}: {e.message.split(': ', 1)[1]}") from None
        problem = value_problem(f, value)
        if problem:
            raise ConfigError(f"env {name}: '{'.'.join(path)}' {problem}")
        target: Any = cfg
        for part in path[:-1]:
            target = getattr(target, part)
        setattr(target, path[-1], value)
