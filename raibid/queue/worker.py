"""The worker side, used by agents: claim, heartbeat, append_log, finish, release.

Retry-safety (docs/queue.md): ``claim``, ``heartbeat`` and ``finish`` are retried
on connection errors and timeouts (``connection.retried``) because repeating them
after a lost reply changes nothing: a retried claim resumes the entry this worker
already holds, a retried finish of the same status reports success. ``append_log``
and ``release`` are not retried (see their docstrings).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from raibid.errors import UsageError
from raibid.queue.base import QueueBase
from raibid.queue.connection import mapped, retried
from raibid.queue.keys import GROUP
from raibid.queue.model import TERMINAL, Claim, LostJob, validate_agent
from raibid.queue.replies import Entry, entries, stream_reads, text
from raibid.timeutil import now_rfc3339

# One append_log script call carries at most this many lines or bytes (Redis runs each call atomically).
LOG_BATCH_LINES = 1000
LOG_BATCH_BYTES = 1 << 20


class Worker(QueueBase):

    @mapped
    @retried
    def claim(self, agent: str, consumer: str, *, block_ms: int = 0) -> Claim | None:
        """Take one job: what this consumer already holds first, then stale entries (XAUTOCLAIM),
        then new ones (XREADGROUP).

        ``block_ms`` > 0 waits that long for new work; 0 returns at once. Safe to retry after a
        lost reply: the entry (and the job, with its delivery counted once) this consumer
        already holds is returned again, with ``resumed`` set. So use one consumer name per
        job slot, and call claim again only after finishing or releasing the job it returned.
        """
        validate_agent(agent)
        stream = self.keys.stream(agent)
        self._ensure_group(stream)
        if stream not in self._lag_checked:  # a worker's start: make KEDA's lag true
            self.check_lag(stream)
            self._lag_checked.add(stream)
        held = self._held(stream, consumer)
        if held is not None:
            return held
        slices = self._block_slices(block_ms) if block_ms > 0 else None
        for _ in range(1000):  # skipped entries (cancelled, stale) do not count as work
            entry = self._reclaim_one(stream, consumer)
            if entry is None:
                entry = self._read_new(stream, consumer, slices)
                if entry is None:
                    return None
            claim = self._start(stream, consumer, *entry)
            if claim is not None:
                return claim
        return None

    def _held(self, stream: str, consumer: str) -> Claim | None:
        """An entry already pending for this consumer (its earlier claim's reply was lost), started
        or resumed."""
        for p in self.r.xpending_range(stream, GROUP, min="-", max="+", count=100, consumername=consumer):
            sid = text(p["message_id"])
            entry = entries(self.r.xrange(stream, sid, sid))
            if not entry:  # trimmed away underneath the PEL
                self.r.xack(stream, GROUP, sid)
                continue
            claim = self._start(stream, consumer, sid, entry[0][1])
            if claim is not None:
                return claim
        return None

    def _read_new(self, stream: str, consumer: str, slices: Iterator[int] | None) -> Entry | None:
        if slices is None:
            res = stream_reads(self.r.xreadgroup(GROUP, consumer, {stream: ">"}, count=1))
            return res[0][1][0] if res and res[0][1] else None
        for block in slices:
            res = stream_reads(self.r.xreadgroup(GROUP, consumer, {stream: ">"}, count=1, block=block))
            if res and res[0][1]:
                return res[0][1][0]
        return None

    def _start(self, stream: str, consumer: str, sid: str, data: dict | None) -> Claim | None:
        job_id = (data or {}).get("job")
        if not job_id:
            self.r.xack(stream, GROUP, sid)
            return None
        state = self._script("start")(
            keys=[stream, self.keys.job(job_id), self.keys.dead, self.keys.events],
            args=[GROUP, sid, consumer, now_rfc3339(), self.max_deliveries, job_id, self.claim_token, self.log_ttl])
        if state in ("ok", "resumed"):
            return Claim(self._get_job(job_id), stream, sid, consumer, resumed=state == "resumed")
        return None

    def _reclaim_one(self, stream: str, consumer: str) -> tuple[str, dict] | None:
        start = "0-0"
        while True:
            res = self.r.xautoclaim(stream, GROUP, consumer, self.min_idle_ms, start_id=start, count=1)
            next_start, entries = res[0], res[1]
            for sid in (res[2] if len(res) > 2 else []):  # deleted under the PEL (Redis 7)
                self.r.xack(stream, GROUP, sid)
            for sid, data in entries:
                if data is None:  # trimmed away underneath the PEL
                    self.r.xack(stream, GROUP, sid)
                    continue
                return sid, data
            if next_start == "0-0":
                return None
            start = next_start

    @mapped
    @retried
    def heartbeat(self, claim: Claim) -> bool:
        """Keep the entry ours (resets its idle time); True when a cancel was requested. Idempotent."""
        res = self._script("heartbeat")(
            keys=[claim.stream, self.keys.job(claim.job.id)],
            args=[GROUP, claim.stream_id, claim.consumer, now_rfc3339()])
        if res == -1:
            raise LostJob(f"job {claim.job.id} is no longer held by {claim.consumer}")
        return res == 1

    @mapped
    def append_log(self, job_id: str, lines: Iterable[str]) -> int:
        """Append lines, one log entry each, in pipelined batches (lua/append_log.lua). Not retried:
        after Unreachable some lines may be in; sending them again would repeat them."""
        key = self.keys.log(job_id)
        keys = [key, self.keys.job(job_id), self.keys.index]
        head = [self.log_maxlen, self.log_high_water, self.keys.job("")]
        script = self._script("append_log")
        pipe = self.r.pipeline(transaction=False)
        n = 0
        batch: list[str] = []
        size = 0

        def send() -> None:
            joined = "\n".join(batch)
            if joined.count("\n") == len(batch) - 1:  # no line holds a newline: one argument per batch
                script(keys=keys, args=[*head, "joined", joined], client=pipe)
            else:
                script(keys=keys, args=[*head, "each", *batch], client=pipe)

        for line in lines:
            batch.append(line)
            size += len(line)
            n += 1
            if len(batch) >= LOG_BATCH_LINES or size >= LOG_BATCH_BYTES:
                send()
                batch, size = [], 0
        if batch:
            send()
        if n:
            pipe.execute()
        return n

    @mapped
    @retried
    def finish(self, claim: Claim, status: str, *, exit_code: int | None = None, error: str | None = None,
               image: str | None = None) -> bool:
        """Record a terminal state and ack. False when this worker had lost the job. ``image``: the images the
        job built (``<ref>@<digest>``, space-separated), stored as its ``image`` field.

        Idempotent for the same consumer and status: a repeat after a lost reply returns True.
        """
        if status not in TERMINAL - {"dead"}:
            raise UsageError(f"cannot finish a job as {status!r}")
        res = self._script("finish")(
            keys=[claim.stream, self.keys.job(claim.job.id), self.keys.log(claim.job.id), self.keys.index,
                  self.keys.events],
            args=[GROUP, claim.stream_id, claim.consumer, now_rfc3339(), status,
                  "" if exit_code is None else str(exit_code), error or "", self.log_ttl,
                  self._retention_cutoff(), self.keys.job(""), image or ""])
        return res == 1

    @mapped
    def release(self, claim: Claim, reason: str) -> str:
        """Give a job back after a transient failure: 'requeued', or 'dead' when out of deliveries.

        Raises LostJob when this worker no longer holds the entry. Not retried: after
        Unreachable, calling it again either releases the job or raises LostJob because the
        first call already did; either way the job is not lost.
        """
        res = self._requeue(claim.stream, claim.stream_id, claim.job.id, reason, consumer=claim.consumer)
        if res not in ("requeued", "dead"):
            raise LostJob(f"job {claim.job.id} is no longer held by {claim.consumer}")
        return res

    def _requeue(self, stream: str, sid: str, job_id: str, reason: str, *, consumer: str,
                 min_idle_ms: int = 0) -> str:
        """Requeue or dead-letter, after re-checking in the same script step that ``consumer`` still
        holds the entry and that it has been idle ``min_idle_ms``: 'requeued', 'dead', 'acked' (the job
        had moved on) or 'skipped' (held by another consumer, or not idle: nothing written)."""
        return self._script("requeue")(
            keys=[stream, self.keys.job(job_id), self.keys.dead, self.keys.events],
            args=[GROUP, sid, reason, now_rfc3339(), self.max_deliveries, job_id, consumer, int(min_idle_ms),
                  self.log_ttl])
