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


def load(text: str, *, max_nodes: int | None = None) -> Any:
    """One YAML document; with ``max_nodes``, refused (ExpansionError) when its aliases expand past it."""
    import yaml

    if max_nodes is None:
        return yaml.load(text, Loader=loader_class())  # noqa: S506 - a safe loader
    loader = loader_class()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node, max_nodes)
        return loader.construct_document(node)
    finally:
        loader.dispose()


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


class ExpansionError(ValueError):
    """A YAML document whose aliases expand to too many values, or refer to themselves."""

    def __init__(self, problem: str, line: int) -> None:
        super().__init__(problem)
        self.problem, self.line = problem, line


def check_expansion(node: Any, limit: int) -> int:
    """The number of values a composed YAML node holds with every alias expanded; ExpansionError past ``limit``.

    Aliases point at shared nodes, so the count is memoised per node and takes time
    linear in the document, however large the expansion (a "billion laughs" document
    is 1.4 KB). A node that contains itself is refused too: walking it never ends.
    """
    import yaml

    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(n: Any) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in busy:
            raise ExpansionError("a YAML alias refers to the node that contains it", n.start_mark.line + 1)
        busy.add(key)
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in n.value)
        else:
            total = 1
        busy.discard(key)
        if total > limit:
            raise ExpansionError(f"YAML aliases expand to more than {limit} values", n.start_mark.line + 1)
        sizes[key] = total
        return total

    return size(node)


def error_where(e: Exception) -> tuple[int | None, int | None, str]:
    """(line, column, problem) of a YAMLError, 1-based, for messages that name the place."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is None:
        return None, None, problem
    return mark.line + 1, mark.column + 1, problem
