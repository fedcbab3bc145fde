"""The admin side: reading jobs and logs, cancel and retry, reaping, the DLQ, purge and stats."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

from raibid.errors import NotFound, UsageError
from raibid.queue.connection import mapped
from raibid.queue.keys import GROUP
from raibid.queue.model import (
    RETRYABLE,
    STATUSES,
    ConsumerInfo,
    DeadLetter,
    Job,
    JobSpec,
    QueueStats,
    ReapResult,
    StreamStats,
)
from raibid.queue.producer import Producer
from raibid.queue.worker import Worker
from raibid.timeutil import now_rfc3339


class Admin(Producer, Worker):
    """Reads and maintenance. Retry submits and reap requeues, so this side builds on the other two."""

    @mapped
    def get(self, job_id: str) -> Job:
        h = self.r.hgetall(self.keys.job(job_id))
        if not h:
            raise NotFound(f"no job {job_id!r}", hint="`raibid queue list` shows recent jobs")
        return Job.from_hash(h)

    @mapped
    def list(self, *, status: str | None = None, agent: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first, from the index; fetches records in pipelined batches."""
        if status and status not in STATUSES:
            raise UsageError(f"unknown status {status!r}", hint="one of: " + ", ".join(STATUSES))
        out: list[Job] = []
        start, batch = 0, max(limit, 100)
        while len(out) < limit:
            ids = self.r.zrevrange(self.keys.index, start, start + batch - 1)
            if not ids:
                break
            pipe = self.r.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(self.keys.job(i))
            for h in pipe.execute():
                if not h:
                    continue
                job = Job.from_hash(h)
                if (status and job.status != status) or (agent and job.agent != agent):
                    continue
                out.append(job)
                if len(out) >= limit:
                    break
            start += batch
        return out

    @mapped
    def logs(self, job_id: str, after: str = "-", count: int | None = None) -> list[tuple[str, str]]:
        """(entry id, line) pairs after ``after`` (exclusive unless '-')."""
        start = "-" if after == "-" else f"({after}"
        return [(eid, f.get("line", "")) for eid, f in self.r.xrange(self.keys.log(job_id), start, "+", count=count)]

    @mapped
    def wait_logs(self, job_id: str, after: str, block_ms: int) -> list[tuple[str, str]]:
        res = self.r.xread({self.keys.log(job_id): after}, block=block_ms, count=1000)
        return [(eid, f.get("line", "")) for _, entries in res for eid, f in entries]

    @mapped
    def cancel(self, job_id: str) -> str:
        """'cancelled' for a queued job; 'requested' for a running one (the agent polls)."""
        res = self._script("cancel")(keys=[self.keys.job(job_id)], args=[now_rfc3339()])
        if res == "missing":
            raise NotFound(f"no job {job_id!r}")
        if not res.startswith("+"):
            raise UsageError(f"job {job_id} is already {res}; nothing to cancel")
        return res[1:]

    @mapped
    def retry(self, job_id: str) -> Job:
        """Enqueue a failed, dead or cancelled job again as a new attempt linked to the old one."""
        old = self.get(job_id)
        if old.status not in RETRYABLE:
            raise UsageError(f"job {job_id} is {old.status}; only failed, dead or cancelled jobs can be retried")
        spec = JobSpec(repo=old.repo, ref=old.ref, commit=old.commit, agent=old.agent, command=old.command,
                       env=old.env, timeout=old.timeout, source=old.source)
        job = self._new_job(spec, attempt=old.attempt + 1, retry_of=old.id)
        self._write([job])
        self.r.hset(self.keys.job(old.id), "retried_by", job.id)
        return job

    @mapped
    def reap(self, agents: Iterable[str] = (), *, min_idle_ms: int | None = None) -> ReapResult:
        """Requeue (or dead-letter) entries whose worker stopped heartbeating.

        Requeueing adds a fresh entry, so KEDA's lag sees the job again and starts
        an agent for it; a stuck pending entry alone is invisible to lag scaling.
        """
        idle = self.min_idle_ms if min_idle_ms is None else min_idle_ms
        result = ReapResult([], [], [])
        for agent in self.agent_types(agents):
            stream = self.keys.stream(agent)
            if not self.r.exists(stream):
                continue
            self._ensure_group(stream)
            self.repair_lag(stream)
            if stream in self.lag_repaired:
                result.lag_repaired.append(agent)
            for p in self.r.xpending_range(stream, GROUP, min="-", max="+", count=10_000, idle=idle):
                sid = p["message_id"]
                entry = self.r.xrange(stream, sid, sid)
                job_id = entry[0][1].get("job") if entry else None
                if not job_id:
                    self.r.xack(stream, GROUP, sid)
                    result.acked.append(sid)
                    continue
                outcome = self._requeue(stream, sid, job_id,
                                        f"worker {p['consumer']} stopped heartbeating (idle {p['time_since_delivered']} ms)")
                {"requeued": result.requeued, "dead": result.dead_lettered}.get(outcome, result.acked).append(job_id)
        return result

    @mapped
    def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        return [DeadLetter(eid, f.get("job", ""), f.get("reason", ""), f.get("stream", ""), f.get("at"))
                for eid, f in self.r.xrevrange(self.keys.dead, "+", "-", count=limit)]

    @mapped
    def dlq_retry(self, job_id: str) -> Job:
        entries = [d for d in self.dlq_list(limit=100_000) if d.job_id == job_id]
        if not entries:
            raise NotFound(f"job {job_id!r} is not in the dead-letter queue")
        job = self.retry(job_id)
        self.r.xdel(self.keys.dead, *[d.entry_id for d in entries])
        return job

    @mapped
    def dlq_purge(self) -> int:
        n = self.r.xlen(self.keys.dead)
        self.r.delete(self.keys.dead)
        return n

    @mapped
    def purge(self) -> int:
        """Delete every key under the prefix: streams, jobs, logs, index. Dangerous."""
        n = 0
        batch: list[str] = []
        for key in self.r.scan_iter(match=f"{self.keys.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += self.r.unlink(*batch)
                batch.clear()
        if batch:
            n += self.r.unlink(*batch)
        self._groups_ok.clear()
        return n

    @mapped
    def stats(self, pools: dict[str, tuple[int, int]]) -> QueueStats:
        """Per agent stream: length, lag, pending, consumers, oldest queued age, and KEDA's view.

        ``pools`` maps agent type to (lagCount, max replicas).
        """
        version = str(self.r.info("server").get("redis_version", "0"))
        lag_supported = int(version.split(".")[0]) >= 7
        warnings = [] if lag_supported else [
            f"Redis {version} < 7: XINFO GROUPS has no lag, so KEDA cannot scale on lag; upgrade Redis"]
        out = []
        for agent in self.agent_types(pools):
            stream = self.keys.stream(agent)
            lag_count, max_replicas = pools.get(agent, (1, 1))
            length = self.r.xlen(stream)
            group = None
            if length or self.r.exists(stream):
                group = self.group_info(stream)
            consumers: list[ConsumerInfo] = []
            lag: int | None = None
            pending = 0
            oldest_at = None
            if group is not None:
                pending = int(group.get("pending", 0))
                lag = group.get("lag") if lag_supported else None
                lag = int(lag) if lag is not None else None
                if lag_supported and lag is None:
                    warnings.append(f"{stream}: Redis reports no lag (entries-read lost, e.g. after an AOF "
                                    f"reload), so KEDA sees 0; `raibid queue reap` repairs it")
                consumers = [ConsumerInfo(c["name"], int(c["pending"]), int(c["idle"]))
                             for c in self.r.xinfo_consumers(stream, GROUP)]
                last = group.get("last-delivered-id", "0-0")
                nxt = self.r.xrange(stream, f"({last}", "+", count=1)
                if nxt:
                    oldest_at = int(nxt[0][0].split("-")[0])
            elif length:
                warnings.append(f"{stream} has no consumer group {GROUP}: KEDA falls back to XLEN; "
                                f"run `raibid queue init`")
            age = None
            oldest = None
            if oldest_at is not None:
                when = dt.datetime.fromtimestamp(oldest_at / 1000, dt.UTC)
                oldest = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                age = max(0.0, (dt.datetime.now(dt.UTC) - when).total_seconds())
            desired = keda_desired(lag, lag_count, max_replicas) if lag is not None else None
            out.append(StreamStats(agent, stream, length, lag, pending, consumers, oldest, age, group is not None,
                                   lag_count, max_replicas, desired))
        return QueueStats(out, self.r.xlen(self.keys.dead), version, lag_supported, warnings)


def keda_desired(lag: int, lag_count: int, max_replicas: int) -> int:
    """KEDA's redis-streams lag mode: min(max, ceil(lag / lagCount)); active when lag > 0."""
    if lag <= 0:
        return 0
    return min(max_replicas, math.ceil(lag / max(lag_count, 1)))
