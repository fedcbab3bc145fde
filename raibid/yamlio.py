"""The one place raibid reads and writes YAML.

libyaml's C loader and dumper are used when PyYAML was built with them (same
output, about five times faster); the pure-Python classes otherwise. ``yaml``
is imported only when a value actually needs parsing or dumping.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def loader_class() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@lru_cache(maxsize=1)
def _dumper_class() -> Any:
    """A safe dumper that writes multi-line strings (configs, chart values) as readable ``|`` blocks."""
    import yaml

    base = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class BlockDumper(base):  # type: ignore[misc, valid-type]
        pass

    def str_block(dumper: Any, data: str) -> Any:
        style = "|" if "\n" in data and not data.startswith(" ") else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    BlockDumper.add_representer(str, str_block)
    return BlockDumper


def load(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=loader_class())  # noqa: S506 - a safe loader


def load_all(text: str) -> list[Any]:
    import yaml

    return list(yaml.load_all(text, Loader=loader_class()))  # noqa: S506 - a safe loader


def dump(data: Any, *, sort_keys: bool = False) -> str:
    """Block-style YAML with multi-line strings as ``|`` blocks."""
    import yaml

    return yaml.dump(data, Dumper=_dumper_class(), sort_keys=sort_keys, default_flow_style=False)


def dump_documents(docs: Iterable[Any]) -> str:
    """Multi-document YAML, each document introduced by ``---``."""
    return "".join("---\n" + dump(d) for d in docs)


def dump_scalar(value: Any) -> str:
    """One value in flow style on one line (for commented config files)."""
    import yaml

    return yaml.dump(value, Dumper=_dumper_class(), default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()


def error_where(e: Exception) -> tuple[int | None, int | None, str]:
    """(line, column, problem) of a YAMLError, 1-based, for messages that name the place."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is None:
        return None, None, problem
    return mark.line + 1, mark.column + 1, problem
