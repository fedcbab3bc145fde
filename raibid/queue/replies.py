"""redis-py's replies, typed for the queue: the one boundary between its loose types and ours.

redis-py types a reply as ``bytes | str`` (it cannot know that a client decodes), and a stream
read as nested lists or dicts of them. Every raibid client decodes (``connection.connect``), so these
functions only narrow; bytes from a client that does not decode are decoded the same way
(UTF-8, U+FFFD for what is not), so callers work with ``str`` and never meet ``bytes | str``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.typing import EncodableT

Loose = bytes | str
Fields = dict[str, str]
Entry = tuple[str, Fields]


def text(value: Loose | int | float) -> str:
    """One reply value as text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def text_or_none(value: Loose | int | float | None) -> str | None:
    return None if value is None else text(value)


def members(values: Iterable[object]) -> list[str]:
    """A reply of members (SMEMBERS; ZRANGE without scores, which redis-py types as maybe pairs)."""
    out = []
    for value in values:
        if not isinstance(value, bytes | str):
            raise TypeError(f"expected a member, got {type(value).__name__}")
        out.append(text(value))
    return out


def fields(h: Mapping[Loose, Loose] | None) -> Fields:
    """A hash (HGETALL) or a stream entry's fields; {} for none."""
    return {text(k): text(v) for k, v in (h or {}).items()}


def entries(page: Iterable[tuple[Loose | None, Mapping[Loose, Loose] | None]] | None) -> list[Entry]:
    """A stream range (XRANGE, XREVRANGE, one stream of XREAD): (entry id, fields) pairs."""
    return [(text_or_none(eid) or "", fields(f)) for eid, f in (page or [])]


def stream_reads(res: Any) -> list[tuple[str, list[Entry]]]:
    """An XREAD / XREADGROUP reply, in RESP2 (a list of [stream, entries]) or RESP3 (a dict) form:
    (stream, entries) pairs, empty when the read timed out. ``Any``: redis-py's own type for it is a
    union of both forms that no caller can index without narrowing first, which this does."""
    if not res:
        return []
    pairs = res.items() if isinstance(res, Mapping) else res
    return [(text(stream), entries(page)) for stream, page in pairs]


def to_write(values: Mapping[str, str]) -> dict[EncodableT, EncodableT]:
    """Fields to write (XADD, HSET mapping=): redis-py asks for a ``dict`` of its own union where any
    mapping of str would do, and a ``dict[str, str]`` is not one (dict is invariant)."""
    return {key: value for key, value in values.items()}
