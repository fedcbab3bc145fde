"""The last sync's summary in Redis, under the queue's key prefix, for `raibid top` and monitoring.

The key is defined here (not in raibid/queue/keys.py) so the mirror owns its
one key; it uses the same ``redis.prefix`` as every queue key.
"""

from __future__ import annotations

import json
from typing import Any

from raibid.mirror.model import Summary


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


def read_last_run(client: Any, prefix: str) -> dict[str, Any] | None:
    raw = client.get(last_run_key(prefix))
    if raw is None:
        return None
    return json.loads(raw)
