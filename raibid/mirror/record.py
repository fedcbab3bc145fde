"""The last sync's summary in Redis, under the queue's key prefix, for `raibid top` and monitoring.

The key and the record's format are defined here, once: the mirror writes them
(``record_last_run``) and every reader (``raibid top``, monitoring) reads them
back through ``last_run_key`` and ``parse_last_run``. The key uses the same
``redis.prefix`` as every queue key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from raibid.mirror.model import ACTIONS, Summary


def last_run_key(prefix: str) -> str:
    return f"{prefix}:mirror:last"


def summary_record(summary: Summary) -> dict[str, Any]:
    """What is kept: when, how long, counts per action, and which repos failed (with why)."""
    return {"started_at": summary.started_at, "finished_at": summary.finished_at,
            "duration_s": summary.duration_s, "mode": summary.mode, "totals": summary.totals,
            "triggered": summary.triggered,
            "failed": [{"source": r.source, "target": r.target, "error": r.error}
                       for r in summary.repos if r.action == "failed"]}


def record_last_run(client: Any, prefix: str, summary: Summary) -> None:
    client.set(last_run_key(prefix), json.dumps(summary_record(summary)))


@dataclass
class LastRun:
    """A recorded sync as readers see it: when it finished, repos per action (non-zero), failed sources."""

    finished_at: str | None
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    triggered: int = 0


def parse_last_run(raw: str | bytes | None) -> LastRun | None:
    """Decode what ``record_last_run`` wrote; None when nothing is recorded, ValueError when unreadable."""
    if raw is None or raw == "" or raw == b"":
        return None
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("the mirror record is not a JSON object")
    when = data.get("finished_at")
    totals_raw = data.get("totals")
    totals = totals_raw if isinstance(totals_raw, dict) else {}
    counts = {a: totals[a] for a in ACTIONS if isinstance(totals.get(a), int) and totals[a] > 0}
    failed = [str(f.get("source")) if isinstance(f, dict) else str(f) for f in data.get("failed") or []]
    triggered = data.get("triggered")
    return LastRun(when if isinstance(when, str) else None, counts, failed,
                   triggered if isinstance(triggered, int) else 0)


def read_last_run(client: Any, prefix: str) -> LastRun | None:
    return parse_last_run(client.get(last_run_key(prefix)))
