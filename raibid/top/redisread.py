"""Read-only, pipelined reads of the job index for the dashboard.

Every read here costs a fixed number of Redis round trips whatever the number
of jobs: one pipeline for the index head and the mirror record, one for the
newest ``limit`` job records (HMGET of the fields the dashboard shows), one for
the last log line of each running job among them. ``Counting`` wraps the
client so the dashboard can report how many round trips a refresh took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raibid.queue.keys import Keys

if TYPE_CHECKING:
    import redis

# The job hash fields the dashboard reads; `step` is written by agents that report their current step.
JOB_FIELDS = ("id", "repo", "ref", "agent", "status", "attempt", "submitted_at", "started_at", "finished_at",
              "agent_pod", "step", "exit_code")


def mirror_key(keys: Keys) -> str:
    """Where the mirror records its last sync: JSON {time, counts: {action: n}, failed: [...]}."""
    return f"{keys.prefix}:mirror:last_sync"


class Counting:
    """A redis.Redis stand-in that counts round trips: one per command, one per pipeline execute."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.round_trips = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name == "pipeline":
            return lambda *a, **kw: _CountingPipeline(attr(*a, **kw), self)
        if not callable(attr):
            return attr

        def call(*a: Any, **kw: Any) -> Any:
            self.round_trips += 1
            return attr(*a, **kw)

        return call


class _CountingPipeline:
    def __init__(self, pipe: Any, owner: Counting) -> None:
        self._pipe, self._owner = pipe, owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __len__(self) -> int:
        return len(self._pipe)

    def execute(self) -> list:
        self._owner.round_trips += 1
        return self._pipe.execute()


@dataclass
class IndexHead:
    total: int  # ZCARD of the index
    records: list[dict[str, str | None]]  # the newest job records, newest first (missing hashes dropped)
    oldest_scanned_ms: int | None  # submit time (index score) of the oldest record read
    mirror: str | None  # the raw mirror record


def read_index_head(r: Any, keys: Keys, limit: int) -> IndexHead:
    """The newest ``limit`` job records and the mirror record, in two pipelined round trips."""
    pipe = r.pipeline(transaction=False)
    pipe.zcard(keys.index)
    pipe.zrevrange(keys.index, 0, max(limit, 1) - 1, withscores=True)
    pipe.get(mirror_key(keys))
    total, ids, mirror = pipe.execute()
    records: list[dict[str, str | None]] = []
    if ids:
        pipe = r.pipeline(transaction=False)
        for job_id, _ in ids:
            pipe.hmget(keys.job(job_id), JOB_FIELDS)
        for values in pipe.execute():
            if values[0] is None and values[4] is None:
                continue  # the record expired or was purged under the index
            records.append({k: (v if v != "" else None) for k, v in zip(JOB_FIELDS, values, strict=True)})
    return IndexHead(int(total or 0), records, int(ids[-1][1]) if ids else None, mirror)


def read_last_lines(r: Any, keys: Keys, job_ids: list[str]) -> dict[str, str]:
    """The last log line of each job, in one pipelined round trip (none when ``job_ids`` is empty)."""
    if not job_ids:
        return {}
    pipe = r.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.xrevrange(keys.log(job_id), "+", "-", count=1)
    out = {}
    for job_id, entries in zip(job_ids, pipe.execute(), strict=True):
        if entries:
            out[job_id] = entries[0][1].get("line", "")
    return out
