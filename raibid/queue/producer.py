"""The producer side: submitting jobs, one or in bulk, in pipelined script calls."""

from __future__ import annotations

import json

from raibid.errors import UsageError
from raibid.queue.base import QueueBase
from raibid.queue.connection import call_retried, mapped
from raibid.queue.ids import new_job_id, new_job_ids
from raibid.queue.model import Job, JobSpec, PartialSubmit, trigger_fields
from raibid.queue.replies import text, to_write
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
                   submitted_at=submitted_at or now_rfc3339(),
                   status="waiting-approval" if spec.hold else "queued", attempt=attempt, retry_of=retry_of,
                   dedupe=spec.dedupe, **spec.trigger())

    def _write(self, jobs: list[Job], *, batch: int = 200) -> dict[str, str]:
        """Persist new jobs (grouped by agent type), one script call per batch, retrying the
        whole write under ``self.retrying``: ids are fixed before the first try and the script skips
        jobs whose record exists, so a retry after a lost reply writes nothing twice.

        Returns, for each job whose dedupe key was taken, its id -> the id of the job already
        submitted (nothing was written for those). Raises ``PartialSubmit`` (naming the jobs
        known to be in) when it gives up.
        """
        import redis

        confirmed: set[str] = set()
        dups: dict[str, str] = {}

        def attempt() -> None:
            self._write_once([j for j in jobs if j.id not in confirmed], batch, confirmed, dups)

        try:
            call_retried(self.retrying, attempt)
        except redis.AuthenticationError:
            raise
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as e:
            raise PartialSubmit(jobs, confirmed, e, unreachable=not isinstance(e, redis.ResponseError)) from None
        return dups

    def _write_once(self, jobs: list[Job], batch: int, confirmed: set[str], dups: dict[str, str]) -> None:
        """One try: batches are sent as soon as each is built and the replies read at the end, so
        Redis runs batch k while this process encodes batch k+1."""
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
                            + [self.keys.dedupe(j.dedupe) for j in chunk if j.dedupe] + [self.keys.events])
                    args = [_SEP.join((j.id, j.repo, j.ref, j.commit or "", j.command or "",
                                       json.dumps(j.env, sort_keys=True) if j.env else "{}", str(j.timeout),
                                       str(j.attempt), j.retry_of or "", j.dedupe or "",
                                       _trigger_json(j), "1" if j.status == "waiting-approval" else ""))
                            for j in chunk]
                    conn.send_command("EVALSHA", sha, len(keys), *keys, agent, first.submitted_at, score,
                                      first.source, str(self.dedupe_ttl), *args)
                    sent.append(chunk)
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
                        job.stream_id = sid or None  # "": held for approval, on no stream
                    confirmed.add(job.id)
        except BaseException:
            conn.disconnect()  # replies may be pending: never reuse this connection
            raise
        finally:
            self.r.connection_pool.release(conn)
        if failure is not None:
            raise failure

    def _submit_sha(self) -> str:
        # Loaded on every write: idempotent, and survives a Redis restart (empty script cache).
        return self.r.script_load(source("submit"))

    @mapped
    def post_status(self, repo: str, commit: str, context: str, state: str, description: str, *,
                    origin: str | None = None) -> str:
        """Add a commit status with no job behind it to the event stream (``kind=status``); its entry id.

        For what an enqueuer decides without queueing anything, e.g. ``error`` for a malformed
        ``.raibid.yml``. The reporter posts it like a job's states, in stream order.
        """
        from raibid.queue.events import EVENTS_MAXLEN, FORGE_STATES, StatusEvent
        from raibid.queue.model import REPO_RE

        if state not in FORGE_STATES:
            raise UsageError(f"invalid status state {state!r}: one of {', '.join(FORGE_STATES)}")
        if not REPO_RE.fullmatch(repo) or not commit or not context:
            raise UsageError("a status needs a repo (OWNER/NAME), a commit and a context")
        event = StatusEvent(repo, commit, context, state, description, origin)
        return text(self.r.xadd(self.keys.events, to_write(event.fields()), maxlen=EVENTS_MAXLEN,
                                approximate=True))

    @mapped
    def submit(self, spec: JobSpec, *, job_id: str | None = None) -> Job:
        """Queue one job; with ``spec.dedupe`` set and taken, the job already submitted under it."""
        return self.submit_deduped(spec, job_id=job_id)[0]

    @mapped
    def submit_deduped(self, spec: JobSpec, *, job_id: str | None = None) -> tuple[Job, bool]:
        """(job, created). With ``spec.dedupe`` set, the dedupe key is taken (SET NX, expiring after
        ``dedupe_ttl``) in the same script step that writes the job; when it is already taken
        nothing is written and the job submitted under it is returned with created=False.

        Retried on connection errors: the id is fixed first (or given as ``job_id``), and a job
        whose record exists is not written again.
        """
        spec.validate()
        job = self._new_job(spec, job_id=job_id)
        dups = self._write([job])
        if job.id in dups:
            return self._get_job(dups[job.id]), False
        return job, True

    @mapped
    def submit_many(self, specs: list[JobSpec], *, batch: int = 200, ids: list[str] | None = None) -> list[Job]:
        """Validate every spec first (nothing is written if one is bad), then submit in batches.

        A spec whose dedupe key is taken yields the job already submitted under it. Retry-safe:
        job ids are made before anything is sent (or passed as ``ids``, e.g. the ``jobs`` of a
        ``PartialSubmit``), and a job whose record exists is never written again.
        """
        return [job for job, _ in self.submit_many_deduped(specs, batch=batch, ids=ids)]

    @mapped
    def submit_many_deduped(self, specs: list[JobSpec], *, batch: int = 200,
                            ids: list[str] | None = None) -> list[tuple[Job, bool]]:
        """Like submit_many, with each job's created flag (False: its dedupe key was taken)."""
        for spec in specs:
            spec.validate()
        if ids is not None and (len(ids) != len(specs) or len(set(ids)) != len(ids)):
            raise UsageError("ids must give one distinct job id per spec")
        now = now_rfc3339()
        ids = ids if ids is not None else new_job_ids(len(specs))
        jobs = [self._new_job(s, submitted_at=now, job_id=i) for s, i in zip(specs, ids, strict=True)]
        dups = self._write(jobs, batch=batch)
        return [(self._get_job(dups[j.id]), False) if j.id in dups else (j, True) for j in jobs]


def _trigger_json(job: Job) -> str:
    """The job's trigger fields (``TRIGGER_FIELDS``) as one JSON object, "" when none is set."""
    fields = trigger_fields(job)
    return json.dumps(fields, sort_keys=True) if fields else ""
