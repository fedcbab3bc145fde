"""The producer side: submitting jobs, one or in bulk, in pipelined script calls."""

from __future__ import annotations

import json

from raibid.errors import QueueError
from raibid.queue.base import QueueBase
from raibid.queue.connection import mapped
from raibid.queue.ids import new_job_id, new_job_ids
from raibid.queue.model import Job, JobSpec
from raibid.queue.scripts import source
from raibid.timeutil import now_rfc3339, parse_time

# Field separator inside one job's script argument; validation bans it in every field.
_SEP = "\x1f"


class Producer(QueueBase):

    def _new_job(self, spec: JobSpec, *, attempt: int = 1, retry_of: str | None = None,
                 submitted_at: str | None = None, job_id: str | None = None) -> Job:
        return Job(id=job_id or new_job_id(), repo=spec.repo, ref=spec.ref, commit=spec.commit,
                   agent=spec.agent or self.default_agent, command=spec.command, env=dict(spec.env),
                   timeout=spec.timeout or self.default_timeout, source=spec.source,
                   submitted_at=submitted_at or now_rfc3339(), status="queued", attempt=attempt, retry_of=retry_of)

    def _write(self, jobs: list[Job], *, batch: int = 200) -> None:
        """Persist new jobs (grouped by agent type), one script call per batch.

        Batches are sent as soon as each is built and the replies read at the end,
        so Redis runs batch k while this process encodes batch k+1.
        """
        import redis

        by_agent: dict[str, list[Job]] = {}
        for job in jobs:
            by_agent.setdefault(job.agent, []).append(job)
        for agent in by_agent:
            self._ensure_group(self.keys.stream(agent))
        sha = self._submit_sha()
        sent: list[list[Job]] = []
        conn = self.r.connection_pool.get_connection()
        try:
            for agent, group in by_agent.items():
                head = [self.keys.stream(agent), self.keys.index, self.keys.agents]
                for start in range(0, len(group), batch):
                    chunk = group[start:start + batch]
                    first = chunk[0]
                    score = str(int(parse_time(first.submitted_at).timestamp() * 1000))  # type: ignore[union-attr]
                    keys = head + [self.keys.job(j.id) for j in chunk]
                    args = [_SEP.join((j.id, j.repo, j.ref, j.commit or "", j.command or "",
                                       json.dumps(j.env, sort_keys=True) if j.env else "{}", str(j.timeout),
                                       str(j.attempt), j.retry_of or "")) for j in chunk]
                    conn.send_command("EVALSHA", sha, len(keys), *keys, agent, first.submitted_at, score,
                                      first.source, *args)
                    sent.append(chunk)
            done = 0
            failure: Exception | None = None
            for chunk in sent:
                try:
                    sids = conn.read_response()
                except redis.ResponseError as e:
                    failure = failure or e
                    continue
                for job, sid in zip(chunk, sids, strict=True):
                    job.stream_id = sid
                done += len(chunk)
        except BaseException:
            conn.disconnect()  # replies may be pending: never reuse this connection
            raise
        finally:
            self.r.connection_pool.release(conn)
        if failure is not None:
            raise QueueError(f"submitted {done} of {len(jobs)} jobs; Redis refused the rest: {failure}",
                             hint="jobs without a stream_id in --json output were not queued")

    def _submit_sha(self) -> str:
        # Loaded on every write: idempotent, and survives a Redis restart (empty script cache).
        return self.r.script_load(source("submit"))

    @mapped
    def submit(self, spec: JobSpec) -> Job:
        spec.validate()
        job = self._new_job(spec)
        self._write([job])
        return job

    @mapped
    def submit_many(self, specs: list[JobSpec], *, batch: int = 200) -> list[Job]:
        """Validate every spec first (nothing is written if one is bad), then submit in batches."""
        for spec in specs:
            spec.validate()
        now = now_rfc3339()
        ids = new_job_ids(len(specs))
        jobs = [self._new_job(s, submitted_at=now, job_id=i) for s, i in zip(specs, ids, strict=True)]
        self._write(jobs, batch=batch)
        return jobs
