"""The admin side: reading jobs and logs, cancel and retry, reaping, the DLQ, purge and stats."""

from __future__ import annotations

import builtins
import datetime as dt
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from raibid.agents.trust import TrustPolicy, route, split_pool
from raibid.errors import NotFound, UsageError
from raibid.queue.base import no_job
from raibid.queue.connection import mapped, retried
from raibid.queue.ids import new_job_id
from raibid.queue.keys import GROUP
from raibid.queue.model import (
    STATUSES,
    TRIGGER_FIELDS,
    ConsumerInfo,
    DeadLetter,
    Job,
    QueueStats,
    ReapResult,
    StreamStats,
    validate_agent,
)
from raibid.queue.producer import Producer
from raibid.queue.replies import entries, fields, members, stream_reads, text
from raibid.queue.worker import Worker
from raibid.timeutil import now_rfc3339, parse_time

if TYPE_CHECKING:
    from redis.typing import KeyT, StreamIdT

LOG_PAGE = 10_000  # log entries per XRANGE


class Admin(Producer, Worker):
    """Reads and maintenance. Retry submits and reap requeues, so this side builds on the other two."""

    @mapped
    @retried
    def get(self, job_id: str) -> Job:
        return self._get_job(job_id)

    @mapped
    @retried
    def list(self, *, status: str | None = None, agent: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first, from the index; fetches records in pipelined batches. A record that cannot
        be read is listed with ``malformed`` set, not raised."""
        if status and status not in STATUSES:
            raise UsageError(f"unknown status {status!r}", hint="one of: " + ", ".join(STATUSES))
        out: list[Job] = []
        start, batch = 0, max(limit, 100)
        while len(out) < limit:
            ids = members(self.r.zrevrange(self.keys.index, start, start + batch - 1))
            if not ids:
                break
            pipe = self.r.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(self.keys.job(i))
            for h in pipe.execute():
                if not h:
                    continue
                job = Job.from_hash(fields(h))
                if (status and job.status != status) or (agent and job.agent != agent):
                    continue
                out.append(job)
                if len(out) >= limit:
                    break
            start += batch
        return out

    @mapped
    @retried
    def logs(self, job_id: str, after: str = "-", count: int | None = None) -> builtins.list[tuple[str, str]]:
        """(entry id, line) pairs after ``after`` (exclusive unless '-'), all of them without ``count``.

        Read in pages of ``LOG_PAGE`` entries: one XRANGE of a whole 64 MiB log makes Redis build a
        reply as large as the log, doubling its memory for a moment (a flooding build could then push
        a near-full Redis over ``maxmemory`` just by being read).
        """
        out: builtins.list[tuple[str, str]] = []
        start = "-" if after == "-" else f"({after}"
        while count is None or len(out) < count:
            want = LOG_PAGE if count is None else min(LOG_PAGE, count - len(out))
            page = entries(self.r.xrange(self.keys.log(job_id), start, "+", count=want))
            out.extend((eid, f.get("line", "")) for eid, f in page)
            if len(page) < want:
                break
            start = f"({page[-1][0]}"
        return out

    @mapped
    @retried
    def wait_logs(self, job_id: str, after: str, block_ms: int, *, wake_on_event: bool = False) -> builtins.list[tuple[str, str]]:
        """Log entries after ``after``, waiting up to ``block_ms`` for the first. With ``wake_on_event``
        the wait also ends (with no entries) when an event is added (a job's state changed, its end
        included): a follower sees the end at once, not when its wait times out."""
        log = self.keys.log(job_id)
        streams: dict[KeyT, StreamIdT] = {log: after, self.keys.events: "$"} if wake_on_event else {log: after}
        for block in self._block_slices(block_ms):
            res = stream_reads(self.r.xread(streams, block=block, count=1000))
            if res:
                return [(eid, f.get("line", "")) for key, entries in res if key == log for eid, f in entries]
        return []

    @mapped
    def cancel(self, job_id: str) -> str:
        """'cancelled' for a queued job; 'requested' for a running one (the agent polls)."""
        res = self._script("cancel")(keys=[self.keys.job(job_id), self.keys.events], args=[now_rfc3339(), self.log_ttl])
        if res == "missing":
            raise no_job(job_id)
        if not res.startswith("+"):
            raise UsageError(f"job {job_id} is already {res}; nothing to cancel")
        return res[1:]

    @mapped
    def approve(self, job_id: str) -> Job:
        """Move a job held for approval (``waiting-approval``) to ``queued``: its stream entry is added now.

        One script step (``approve.lua``), which also adds the ``kind=job`` event. A job that is not
        waiting is a usage error (exit 2) naming its status; an unknown id is not found (exit 3).
        """
        job = self._get_job(job_id)
        if job.status != "waiting-approval":
            raise UsageError(f"job {job_id} is {job.status or 'unreadable'}, not waiting-approval; nothing to approve")
        stream = self.keys.stream(job.agent)
        self._ensure_group(stream)  # KEDA's group must exist before the entry
        res = self._script("approve")(keys=[self.keys.job(job_id), stream, self.keys.events],
                                      args=[now_rfc3339(), job.agent])
        if res[0] == "missing":
            raise no_job(job_id)
        if res[0] == "status":
            raise UsageError(f"job {job_id} is {res[1]}, not waiting-approval; nothing to approve")
        return self._get_job(job_id)

    @mapped
    def retry(self, job_id: str, *, trust: TrustPolicy | None = None) -> Job:
        """Enqueue a failed, dead or cancelled job again as a new attempt linked to the old one.

        With ``trust`` the new attempt's pool is decided again, ``route(type, repo, trust)``:
        a repo no longer trusted retries in the untrusted pool (and one trusted since, in the
        trusted one). Without it the attempt keeps its pool. One script step: retrying the same
        job twice makes one new attempt (the second call fails naming it). Dedupe keys play no part.
        """
        return self._retry(job_id, dlq=False, trust=trust)

    def _retry(self, job_id: str, *, dlq: bool, trust: TrustPolicy | None) -> Job:
        old = self._get_job(job_id)
        pool = old.agent if trust is None else route(old.agent, old.repo, trust)
        if old.event == "pull_request" and not split_pool(old.agent)[1]:
            # A fork's or an untrusted author's PR: the record keeps no fork or author to decide again
            # from, and a trusted base repo must not lift it into the trusted pool.
            pool = old.agent
        validate_agent(pool)
        stream = self.keys.stream(pool)
        self._ensure_group(stream)  # a pool never used before: KEDA's group must exist before the entry
        new_id = new_job_id()
        now = now_rfc3339()
        score = str(int(parse_time(now).timestamp() * 1000))  # type: ignore[union-attr]
        res = self._script("retry")(
            keys=[self.keys.job(job_id), stream, self.keys.index, self.keys.agents,
                  self.keys.job(new_id), self.keys.dead, self.keys.events],
            args=[new_id, now, score, self.keys.job(""), "1" if dlq else "0", pool, "commit", "command",
                  *TRIGGER_FIELDS])
        state = res[0]
        if state == "missing":
            raise no_job(job_id)
        if state == "retried":
            raise UsageError(f"job {job_id} was already retried as {res[1]}",
                             hint=f"`raibid queue show {res[1]}`; retry that one if it failed too")
        if state == "status":
            raise UsageError(f"job {job_id} is {res[1]}; only failed, dead or cancelled jobs can be retried")
        if state == "not-dead":
            raise NotFound(f"job {job_id!r} is not in the dead-letter queue")
        return self._get_job(new_id)

    @mapped
    def reap(self, agents: Iterable[str] = (), *, min_idle_ms: int | None = None) -> ReapResult:
        """Requeue (or dead-letter) entries whose worker stopped heartbeating; make each group's lag
        true; delete idle consumers without pending entries; drop finished jobs past retention.

        Requeueing adds a fresh entry, so KEDA's lag sees the job again and starts
        an agent for it; a stuck pending entry alone is invisible to lag scaling.
        The requeue script re-checks owner and idle time, so a worker that heartbeated
        or reclaimed the entry after it was listed keeps its job (``skipped``).
        """
        idle = self.min_idle_ms if min_idle_ms is None else int(min_idle_ms)
        result = ReapResult()
        for agent in self.agent_types(agents):
            stream = self.keys.stream(agent)
            if not self.r.exists(stream):
                continue
            self._ensure_group(stream)
            if self.check_lag(stream).repaired:
                result.lag_repaired.append(agent)
            for p in self.r.xpending_range(stream, GROUP, min="-", max="+", count=10_000, idle=idle):
                sid = text(p["message_id"])
                consumer = text(p["consumer"])
                entry = entries(self.r.xrange(stream, sid, sid))
                job_id = entry[0][1].get("job") if entry else None
                if not job_id:
                    self.r.xack(stream, GROUP, sid)
                    result.acked_entries.append(sid)
                    continue
                outcome = self._requeue(stream, sid, job_id,
                                        f"worker {consumer} stopped heartbeating "
                                        f"(idle {text(p['time_since_delivered'])} ms)",
                                        consumer=consumer, min_idle_ms=idle)
                {"requeued": result.requeued, "dead": result.dead_lettered,
                 "skipped": result.skipped}.get(outcome, result.acked_jobs).append(job_id)
            gone = self._script("reap_consumers")(keys=[stream], args=[GROUP, idle])
            result.consumers_deleted += [f"{agent}/{name}" for name in gone]
        cutoff = self._retention_cutoff()
        if cutoff:
            for _ in range(100):  # at most 100,000 index entries per run
                n = self._script("retain_run")(keys=[self.keys.index], args=[self.keys.job(""), cutoff, 1000])
                result.expired += n
                if n == 0:
                    break
        return result

    @mapped
    @retried
    def dlq_list(self, limit: int = 100) -> builtins.list[DeadLetter]:
        return [DeadLetter(eid, f.get("job", ""), f.get("reason", ""), f.get("stream", ""), f.get("at"))
                for eid, f in entries(self.r.xrevrange(self.keys.dead, "+", "-", count=limit))]

    @mapped
    def dlq_retry(self, job_id: str, *, trust: TrustPolicy | None = None) -> Job:
        """Retry a dead-lettered job and remove its DLQ entry, in one script step; ``trust`` as for retry."""
        return self._retry(job_id, dlq=True, trust=trust)

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
    @retried
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
            true_lag: int | None = None
            pending = 0
            oldest_at = None
            if group is not None:
                pending = int(group.get("pending", 0))
                lag = group.get("lag") if lag_supported else None
                lag = int(lag) if lag is not None else None
                if lag_supported:
                    check = self.check_lag(stream, repair=False)
                    true_lag = check.true
                    if check.state == "wrong":
                        shown = "none" if lag is None else lag
                        warnings.append(f"{stream}: Redis reports lag {shown} but {check.true} entries are "
                                        f"undelivered (entries-read lost or stale, e.g. after an AOF reload), "
                                        f"so KEDA scales on the wrong number; `raibid queue reap` repairs it")
                consumers = [ConsumerInfo(c["name"], int(c["pending"]), int(c["idle"]))
                             for c in self.r.xinfo_consumers(stream, GROUP)]
                last = group.get("last-delivered-id", "0-0")
                nxt = entries(self.r.xrange(stream, f"({last}", "+", count=1))
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
                                   lag_count, max_replicas, desired, true_lag))
        return QueueStats(out, self.r.xlen(self.keys.dead), version, lag_supported, warnings)


def keda_desired(lag: int, lag_count: int, max_replicas: int) -> int:
    """KEDA's redis-streams lag mode: min(max, ceil(lag / lagCount)); active when lag > 0."""
    if lag <= 0:
        return 0
    return min(max_replicas, math.ceil(lag / max(lag_count, 1)))
