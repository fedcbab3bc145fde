"""The worker side, used by agents: claim, heartbeat, append_log, finish, release."""

from __future__ import annotations

from collections.abc import Iterable

from raibid.errors import UsageError
from raibid.queue.base import QueueBase
from raibid.queue.connection import mapped
from raibid.queue.keys import GROUP
from raibid.queue.model import TERMINAL, Claim, LostJob, validate_agent
from raibid.timeutil import now_rfc3339


class Worker(QueueBase):

    @mapped
    def claim(self, agent: str, consumer: str, *, block_ms: int = 0) -> Claim | None:
        """Take one job: stale entries first (XAUTOCLAIM), then new ones (XREADGROUP).

        ``block_ms`` > 0 waits that long for new work; 0 returns at once.
        """
        validate_agent(agent)
        stream = self.keys.stream(agent)
        self._ensure_group(stream)
        for _ in range(1000):  # skipped entries (cancelled, stale) do not count as work
            entry = self._reclaim_one(stream, consumer)
            if entry is None:
                res = self.r.xreadgroup(GROUP, consumer, {stream: ">"}, count=1,
                                        block=block_ms if block_ms > 0 else None)
                if not res or not res[0][1]:
                    return None
                entry = res[0][1][0]
            sid, data = entry
            job_id = (data or {}).get("job")
            if not job_id:
                self.r.xack(stream, GROUP, sid)
                continue
            state = self._script("start")(
                keys=[stream, self.keys.job(job_id), self.keys.dead],
                args=[GROUP, sid, consumer, now_rfc3339(), self.max_deliveries, job_id])
            if state == "ok":
                return Claim(self.get(job_id), stream, sid, consumer)
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
    def heartbeat(self, claim: Claim) -> bool:
        """Keep the entry ours (resets its idle time); True when a cancel was requested."""
        res = self._script("heartbeat")(
            keys=[claim.stream, self.keys.job(claim.job.id)],
            args=[GROUP, claim.stream_id, claim.consumer, now_rfc3339()])
        if res == -1:
            raise LostJob(f"job {claim.job.id} is no longer held by {claim.consumer}")
        return res == 1

    @mapped
    def append_log(self, job_id: str, lines: Iterable[str]) -> int:
        key = self.keys.log(job_id)
        pipe = self.r.pipeline(transaction=False)
        n = 0
        for line in lines:
            pipe.xadd(key, {"line": line}, maxlen=self.log_maxlen, approximate=True)
            n += 1
        if n:
            pipe.execute()
        return n

    @mapped
    def finish(self, claim: Claim, status: str, *, exit_code: int | None = None, error: str | None = None) -> bool:
        """Record a terminal state and ack. False when this worker had lost the job."""
        if status not in TERMINAL - {"dead"}:
            raise UsageError(f"cannot finish a job as {status!r}")
        res = self._script("finish")(
            keys=[claim.stream, self.keys.job(claim.job.id), self.keys.log(claim.job.id)],
            args=[GROUP, claim.stream_id, claim.consumer, now_rfc3339(), status,
                  "" if exit_code is None else str(exit_code), error or "", self.log_ttl])
        return res == 1

    @mapped
    def release(self, claim: Claim, reason: str) -> str:
        """Give a job back after a transient failure: requeued, or dead-lettered when out of deliveries."""
        return self._requeue(claim.stream, claim.stream_id, claim.job.id, reason)

    def _requeue(self, stream: str, sid: str, job_id: str, reason: str) -> str:
        return self._script("requeue")(
            keys=[stream, self.keys.job(job_id), self.keys.dead],
            args=[GROUP, sid, reason, now_rfc3339(), self.max_deliveries, job_id])
