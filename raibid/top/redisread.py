"""Read-only, pipelined reads of the job index for the dashboard.

Every read here costs a fixed number of Redis round trips whatever the number
of jobs: three pipelines (see ``read_jobs``). Windows are bounded, so a refresh
reads at most ``head + window`` job records plus the pending entries' jobs. ``Counting`` wraps the
client so the dashboard can report how many round trips a refresh took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raibid.queue.keys import GROUP, Keys

if TYPE_CHECKING:
    import redis

# The job hash fields the dashboard reads; `step` is written by agents that report their current step.
JOB_FIELDS = ("id", "repo", "ref", "agent", "status", "attempt", "submitted_at", "started_at", "finished_at",
              "agent_pod", "step", "exit_code")


def mirror_key(keys: Keys) -> str:
    """Where the mirror records its last sync: the mirror's own key (raibid/mirror/record.py)."""
    from raibid.mirror.record import last_run_key

    return last_run_key(keys.prefix)


class Counting:
    """A redis.Redis stand-in that counts round trips: one per command, one per pipeline execute."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.round_trips = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name == "pipeline":
            return lambda *a, **kw: _CountingPipeline(attr(*a, **kw), self)
        if name == "register_script":  # registering is local; each call of the script is a round trip
            return lambda *a, **kw: _CountingScript(attr(*a, **kw), self)
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

    def execute(self, raise_on_error: bool = True) -> list:
        self._owner.round_trips += 1
        return self._pipe.execute(raise_on_error=raise_on_error)


class _CountingScript:
    def __init__(self, script: Any, owner: Counting) -> None:
        self._script, self._owner = script, owner

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self._owner.round_trips += 1
        return self._script(*a, **kw)


@dataclass
class JobsRead:
    total: int  # ZCARD of the index
    head: list[dict[str, str | None]]  # the newest job records by submit time, newest first
    records: dict[str, dict[str, str | None]]  # every record read: head, after-backlog window, pending
    pending: list[str]  # ids of the jobs whose stream entries are delivered and unacked (running)
    last_lines: dict[str, str]  # job id -> last log line, for the running jobs
    mirror: str | None  # the raw mirror record


def _hmget(pipe: Any, keys: Keys, job_id: str) -> None:
    pipe.hmget(keys.job(job_id), JOB_FIELDS)


def _record(job_id: str, values: list) -> dict[str, str | None] | None:
    if values is None or isinstance(values, Exception) or values[4] is None:
        return None  # the record expired or was purged under the index
    rec = {k: (v if v != "" else None) for k, v in zip(JOB_FIELDS, values, strict=True)}
    rec["id"] = rec["id"] or job_id
    return rec


def read_jobs(r: Any, keys: Keys, *, head: int, queued: int, window: int, streams: list[str],
              pending: int) -> JobsRead:
    """Job records and running jobs' last log lines in three pipelined round trips, whatever the number of jobs.

    1. The ``head`` newest job ids (the index, by submit time); the ``window``
       ids ranked just after the ``queued`` newest (the backlog, from
       `Queue.stats` lags): under FIFO delivery those started, and so finished,
       most recently; the pending entries (XPENDING, at most ``pending``) of
       each of ``streams``; the mirror record.
    2. Those job records (HMGET of the fields shown) and each pending entry's job id.
    3. The pending jobs' records, and the last log line of every running job.
    """
    pipe = r.pipeline(transaction=False)
    pipe.zcard(keys.index)
    pipe.zrevrange(keys.index, 0, max(head, 1) - 1)
    pipe.get(mirror_key(keys))
    pipe.zrevrange(keys.index, queued, queued + max(window, 1) - 1)
    for stream in streams:
        pipe.xpending_range(stream, GROUP, min="-", max="+", count=pending)
    res = pipe.execute(raise_on_error=False)
    total, head_ids, mirror, after, rest = res[0], res[1], res[2], res[3], res[4:]
    if isinstance(total, Exception):
        raise total  # the index itself is unreadable (e.g. WRONGTYPE): nothing below makes sense
    head_ids = head_ids if isinstance(head_ids, list) else []
    ids: list[str] = head_ids + (after if isinstance(after, list) else [])
    entries: list[tuple[str, str]] = []  # (stream, entry id) of each pending entry
    for stream, pel in zip(streams, rest, strict=True):
        entries += [(stream, p["message_id"]) for p in (pel if isinstance(pel, list) else [])]
    unique = list(dict.fromkeys(ids))

    pipe = r.pipeline(transaction=False)
    for job_id in unique:
        _hmget(pipe, keys, job_id)
    for stream, sid in entries:
        pipe.xrange(stream, sid, sid)
    res = pipe.execute(raise_on_error=False) if len(pipe) else []
    records: dict[str, dict[str, str | None]] = {}
    for job_id, values in zip(unique, res[:len(unique)], strict=True):
        rec = _record(job_id, values)
        if rec is not None:
            records[job_id] = rec
    running: list[str] = []
    for found in res[len(unique):]:
        if isinstance(found, list) and found and found[0][1].get("job"):
            running.append(found[0][1]["job"])
    running = list(dict.fromkeys(running))

    unread = [i for i in running if i not in records]
    lines_for = list(dict.fromkeys(running + [i for i, rec in records.items() if rec["status"] == "running"]))
    pipe = r.pipeline(transaction=False)
    for job_id in unread:
        _hmget(pipe, keys, job_id)
    for job_id in lines_for:
        pipe.xrevrange(keys.log(job_id), "+", "-", count=1)
    res = pipe.execute(raise_on_error=False) if len(pipe) else []
    for job_id, values in zip(unread, res[:len(unread)], strict=True):
        rec = _record(job_id, values)
        if rec is not None:
            records[job_id] = rec
    last_lines = {}
    for job_id, found in zip(lines_for, res[len(unread):], strict=True):
        if isinstance(found, list) and found:
            last_lines[job_id] = found[0][1].get("line", "")
    return JobsRead(int(total or 0), [records[i] for i in head_ids if i in records], records,
                    running, last_lines, mirror if isinstance(mirror, str) else None)
