"""Times and durations as raibid writes and reads them: RFC 3339 UTC, and ``1h30m``-style durations."""

from __future__ import annotations

import datetime as dt
import re

from raibid.errors import UsageError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")
_UNIT = {"h": 3600, "m": 60, "s": 1}


def now_rfc3339() -> str:
    """Now, RFC 3339 UTC with milliseconds (``2026-11-29T18:00:00.000Z``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def seconds_since(timestamp: str | None) -> float | None:
    """Seconds since an RFC 3339 timestamp (None for none)."""
    when = parse_time(timestamp)
    if when is None:
        return None
    return max(0.0, (dt.datetime.now(dt.UTC) - when).total_seconds())


def parse_duration(text: str) -> float:
    """'10m', '90s', '1h30m', '300' -> seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UsageError(f"invalid duration {text!r}: use e.g. 90s, 10m, 1h30m")
    return sum(float(n) * _UNIT[u] for n, u in parts)


def parse_interval(text: str, option: str) -> float:
    """A polling interval given as ``option``: a duration that must be more than 0 (0 would poll in a busy loop)."""
    value = parse_duration(text)
    if not value > 0:
        raise UsageError(f"invalid {option} {text!r}: it must be more than 0", hint=f"e.g. {option} 2s")
    return value
