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
                   submitted_at=submitted_at or now_rfc3339(), status="queued", attempt=attempt, retry_of=retry_of,
                   dedupe=spec.dedupe)

    def _write(self, jobs: list[Job], *, batch: int = 200) -> dict[str, str]:
        """Persist new jobs (grouped by agent type), one script call per batch.

        Batches are sent as soon as each is built and the replies read at the end,
        so Redis runs batch k while this process encodes batch k+1. Returns, for each
        job whose dedupe key was taken, its id -> the id of the job already submitted
        (nothing was written for those).
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
                    keys = (head + [self.keys.job(j.id) for j in chunk]
                            + [self.keys.dedupe(j.dedupe) for j in chunk if j.dedupe])
                    args = [_SEP.join((j.id, j.repo, j.ref, j.commit or "", j.command or "",
                                       json.dumps(j.env, sort_keys=True) if j.env else "{}", str(j.timeout),
                                       str(j.attempt), j.retry_of or "", j.dedupe or "")) for j in chunk]
                    conn.send_command("EVALSHA", sha, len(keys), *keys, agent, first.submitted_at, score,
                                      first.source, str(self.dedupe_ttl), *args)
                    sent.append(chunk)
            done = 0
            dups: dict[str, str] = {}
            failure: Exception | None = None
            for chunk in sent:
                try:
                    sids = conn.read_response()
                except redis.ResponseError as e:
                    failure = failure or e
                    continue
                for job, sid in zip(chunk, sids, strict=True):
                    if sid.startswith("="):
                        dups[job.id] = sid[1:]
                    else:
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
        return dups

    def _submit_sha(self) -> str:
        # Loaded on every write: idempotent, and survives a Redis restart (empty script cache).
        return self.r.script_load(source("submit"))

    @mapped
    def submit(self, spec: JobSpec) -> Job:
        """Queue one job; with ``spec.dedupe`` set and taken, the job already submitted under it."""
        return self.submit_deduped(spec)[0]

    @mapped
    def submit_deduped(self, spec: JobSpec) -> tuple[Job, bool]:
        """(job, created). With ``spec.dedupe`` set, the dedupe key is taken (SET NX, expiring after
        ``dedupe_ttl``) in the same script step that writes the job; when it is already taken
        nothing is written and the job submitted under it is returned with created=False.
        """
        spec.validate()
        job = self._new_job(spec)
        dups = self._write([job])
        if job.id in dups:
            return self._read_job(dups[job.id]), False
        return job, True

    def _read_job(self, job_id: str) -> Job:
        h = self.r.hgetall(self.keys.job(job_id))
        if not h:
            raise QueueError(f"job {job_id} (the earlier submit of this dedupe key) has no record")
        return Job.from_hash(h)

    @mapped
    def submit_many(self, specs: list[JobSpec], *, batch: int = 200) -> list[Job]:
        """Validate every spec first (nothing is written if one is bad), then submit in batches.

        A spec whose dedupe key is taken yields the job already submitted under it.
        """
        return [job for job, _ in self.submit_many_deduped(specs, batch=batch)]

    @mapped
    def submit_many_deduped(self, specs: list[JobSpec], *, batch: int = 200) -> list[tuple[Job, bool]]:
        """Like submit_many, with each job's created flag (False: its dedupe key was taken)."""
        for spec in specs:
            spec.validate()
        now = now_rfc3339()
        ids = new_job_ids(len(specs))
        jobs = [self._new_job(s, submitted_at=now, job_id=i) for s, i in zip(specs, ids, strict=True)]
        dups = self._write(jobs, batch=batch)
        return [(self._read_job(dups[j.id]), False) if j.id in dups else (j, True) for j in jobs]
