"""A repository's ``.raibid.yml``: the steps an agent runs when a job names no command.

::

    env:                 # optional, for every step
      CARGO_TERM_COLOR: never
    secrets: [CRATES_TOKEN]  # optional: job secrets (agents.secrets), trusted builds only
    steps:
      - name: test
        run: cargo test --locked
        timeout: 20m     # optional: seconds or a duration (90s, 10m, 1h30m)
        env:             # optional, for this step
          RUST_LOG: debug

A malformed file is a failed job whose message names the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raibid.errors import RaibidError

FILE_NAME = ".raibid.yml"
_STEP_KEYS = {"name", "run", "timeout", "env"}
_TOP_KEYS = {"steps", "env", "secrets"}
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class PipelineError(RaibidError):
    """The ``.raibid.yml`` cannot be used; the message names the line."""


@dataclass
class Step:
    name: str
    run: str
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Pipeline:
    steps: list[Step]
    secrets: list[str] = field(default_factory=list)  # names of agents.secrets entries, in file order


def command_step(command: str) -> list[Step]:
    """A job's ``command`` as the single step it runs."""
    return [Step("command", command)]


def parse(text: str, source: str = FILE_NAME) -> list[Step]:
    """The steps of a ``.raibid.yml``, or PipelineError naming ``source:line``."""
    return parse_pipeline(text, source).steps


def parse_pipeline(text: str, source: str = FILE_NAME) -> Pipeline:
    """A ``.raibid.yml``: its steps and the secrets it asks for, or PipelineError naming ``source:line``."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise PipelineError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None

    def fail(node: Any, msg: str) -> PipelineError:
        return PipelineError(f"{source}:{node.start_mark.line + 1}: {msg}")

    if root is None:
        raise PipelineError(f"{source}: the file is empty; it needs a `steps:` list")
    top = _mapping(root, "the top level", fail)
    for key in top:
        if key not in _TOP_KEYS:
            raise fail(top[key][0], f"unknown key {key!r} (expected {', '.join(sorted(_TOP_KEYS))})")
    common = _env(top["env"][1], "env", fail) if "env" in top else {}
    secrets = _secrets(top["secrets"][1], fail) if "secrets" in top else []
    if "steps" not in top:
        raise fail(root, "no `steps:` list")
    steps_node = top["steps"][1]
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise fail(steps_node, "`steps` must be a non-empty list")
    steps: list[Step] = []
    names: set[str] = set()
    for i, node in enumerate(steps_node.value, 1):
        m = _mapping(node, f"step {i}", fail)
        for key in m:
            if key not in _STEP_KEYS:
                raise fail(m[key][0], f"step {i}: unknown key {key!r} (expected {', '.join(sorted(_STEP_KEYS))})")
        if "run" not in m:
            raise fail(node, f"step {i}: `run` is required")
        run = _string(m["run"][1], f"step {i}: `run`", fail)
        name = _string(m["name"][1], f"step {i}: `name`", fail) if "name" in m else f"step-{i}"
        if name in names:
            raise fail(m["name"][1], f"step {i}: duplicate step name {name!r}")
        names.add(name)
        timeout = _timeout(m["timeout"][1], f"step {name!r}: `timeout`", fail) if "timeout" in m else None
        env = {**common, **(_env(m["env"][1], f"step {name!r}: `env`", fail) if "env" in m else {})}
        steps.append(Step(name, run, timeout, env))
    return Pipeline(steps, secrets)


def _secrets(node: Any, fail: Any) -> list[str]:
    import re

    import yaml

    if not isinstance(node, yaml.SequenceNode):
        raise fail(node, "`secrets` must be a list of names, e.g. [CRATES_TOKEN]")
    out: list[str] = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode) or item.tag.endswith((":null", ":bool", ":int", ":float")) \
                or not re.fullmatch(_NAME, item.value):
            what = repr(item.value[:60]) if isinstance(item, yaml.ScalarNode) else "an item"
            raise fail(item, f"`secrets`: {what} is not a secret name (letters, digits and _, not starting "
                             "with a digit)")
        if item.value in out:
            raise fail(item, f"`secrets`: {item.value} is listed twice")
        out.append(item.value)
    return out


def _mapping(node: Any, what: str, fail: Any) -> dict[str, tuple[Any, Any]]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise fail(node, f"{what} must be a mapping")
    out: dict[str, tuple[Any, Any]] = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            raise fail(k, f"{what}: keys must be names")
        out[k.value] = (k, v)
    return out


def _string(node: Any, what: str, fail: Any) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode) or node.tag.endswith((":null", ":bool")) or node.value == "":
        raise fail(node, f"{what} must be a non-empty string")
    return node.value


def _timeout(node: Any, what: str, fail: Any) -> float:
    import yaml

    from raibid.errors import UsageError
    from raibid.timeutil import parse_duration

    if not isinstance(node, yaml.ScalarNode):
        raise fail(node, f"{what} must be seconds or a duration such as 10m")
    try:
        value = parse_duration(node.value)
    except UsageError:
        raise fail(node, f"{what}: invalid duration {node.value!r} (use e.g. 90s, 10m, 1h30m)") from None
    if value <= 0:
        raise fail(node, f"{what} must be positive")
    return value


def _env(node: Any, what: str, fail: Any) -> dict[str, str]:
    import re

    import yaml

    m = _mapping(node, what, fail)
    out = {}
    for key, (knode, vnode) in m.items():
        if not re.fullmatch(_NAME, key):
            raise fail(knode, f"{what}: invalid variable name {key!r}")
        if not isinstance(vnode, yaml.ScalarNode):
            raise fail(vnode, f"{what}: {key} must be a string")
        out[key] = vnode.value
    return out
