"""The status reporter: the event stream (``raibid.queue.events``) turned into commit statuses.

It runs in the receiver pod, the one pod that holds the Gitea token it posts with and the
GitHub status token. The agents and the enqueuers only add events (in the same Lua step as
the state change); none of them ever waits for a forge, so an outage delays statuses, never a
build.

- **States.** ``queued`` -> ``pending`` "queued"; ``waiting-approval`` (a pull request held by
  ``agents.approval``) -> ``pending`` "waiting for approval"; ``running`` -> ``pending`` "running on <pod>";
  ``succeeded`` -> ``success``; ``failed`` with a step's exit code -> ``failure`` (the job's error
  names the step); ``failed`` with exit 124 (timed out) or no exit code (nothing ran: a clone
  failed, a malformed ``.raibid.yml``), ``cancelled`` and ``dead`` -> ``error``. Context:
  ``job.context`` or ``raibid/<agent type>``. A description is repo-controlled text: controls are
  shown escaped (``raibid.safetext``) and it is cut to 140 characters.
- **Delivery.** A consumer group (``raibid-reporter``, created at 0, so a reporter that was down
  catches up from the oldest entry kept) reads the stream. An entry is acked once every forge it
  goes to has taken it, or refused it for good (401/403/404/422: recorded as "gave up" with the
  reason). A transient failure (unreachable, 5xx, a rate limit) leaves it pending and blocks the
  later entries of the same (forge, repo, commit, context), so each commit's states reach each
  forge in stream order; other commits and the other forge go on. It is posted again after a
  back-off (1 s doubling to 60 s), or when GitHub's ``Retry-After`` / ``X-RateLimit-Reset`` says.
  The HTTP session never replays the POST itself (the shared rule); posting the same state twice
  is harmless, so the reporter's own retry is safe.
- **Newest wins.** A commit's checks (``Keys.commit_checks``) hold, per context, the newest job
  (job ids are time-ordered ULIDs, so a retry sorts after what it retries). An event of an older
  job for a context a newer job holds is not posted: it would overwrite a newer state.
- **Records.** What was posted where, per job (``Keys.job_statuses``, a list: the last 2 ×
  ``HISTORY`` posts) and per commit, for ``raibid queue show`` and ``raibid status``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from raibid.agents.trust import split_pool
from raibid.errors import AlreadyExists, AuthError, NotFound, RaibidError, UsageError
from raibid.queue.events import DESCRIPTION_MAX
from raibid.queue.keys import Keys
from raibid.queue.model import Job
from raibid.safetext import printable
from raibid.timeutil import now_rfc3339, parse_time

log = logging.getLogger("raibid.webhook.reporter")

GROUP = "raibid-reporter"
HISTORY = 20  # posts kept per job and forge
CHECKS_TTL = 30 * 86400  # a commit's checks expire a month after their last change
BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0


class Forge(Protocol):
    def post_status(self, full_name: str, sha: str, *, state: str, context: str, description: str = "",
                    target_url: str | None = None) -> dict: ...

    def commit_url(self, full_name: str, sha: str) -> str: ...


class GiteaForge:
    """The Gitea client seen as a forge (its post_status takes owner and name apart)."""

    def __init__(self, gitea: Any) -> None:
        self.gitea = gitea

    def post_status(self, full_name: str, sha: str, *, state: str, context: str, description: str = "",
                    target_url: str | None = None) -> dict:
        owner, _, name = full_name.partition("/")
        return self.gitea.post_status(owner, name, sha, state=state, context=context, description=description,
                                      target_url=target_url)

    def commit_url(self, full_name: str, sha: str) -> str:
        owner, _, name = full_name.partition("/")
        return self.gitea.commit_url(owner, name, sha)


@dataclass(frozen=True)
class Check:
    """One commit status, as decided from one event."""

    repo: str  # the Gitea OWNER/NAME
    commit: str
    context: str
    state: str  # pending | success | failure | error
    description: str
    origin: str | None = None  # github:OWNER/NAME: posted there too
    job: str | None = None
    attempt: int | None = None
    agent: str | None = None
    target_url: str | None = None

    def targets(self) -> list[tuple[str, str]]:
        """(forge, repo on that forge) pairs this status goes to."""
        out = [("gitea", self.repo)]
        if self.origin and self.origin.startswith("github:"):
            out.append(("github", self.origin.removeprefix("github:")))
        return out


def clean(text: str | None) -> str:
    """A description from repo-controlled text: controls shown escaped, at most 140 characters."""
    return printable(text or "", limit=DESCRIPTION_MAX)[:DESCRIPTION_MAX]


def context_of(job: Job) -> str:
    return job.context or f"raibid/{split_pool(job.agent)[0]}"


def describe(job: Job, status: str) -> tuple[str, str]:
    """(forge state, description) of a job that changed to queue status ``status``."""
    if status == "queued":
        return "pending", "queued"
    if status == "waiting-approval":  # a held PR build (agents.approval): as Gitea Actions shows a blocked run
        return "pending", "waiting for approval"
    if status == "running":
        return "pending", f"running on {job.agent_pod}" if job.agent_pod else "running"
    if status == "succeeded":
        return "success", "succeeded" + _took(job) + _image_note(job)
    if status == "failed":
        if job.exit_code == 124:
            return "error", job.error or "timed out (exit 124)"
        if job.exit_code is None:  # nothing ran: clone, .raibid.yml, trust, the step runner
            return "error", job.error or "failed before any step ran"
        return "failure", job.error or f"exited {job.exit_code}"
    if status == "cancelled":
        return "error", "cancelled" if not job.error or job.error == "cancelled before start" else job.error
    if status == "dead":
        return "error", f"dead-lettered: {job.error}" if job.error else "dead-lettered"
    return "error", status


def _image_note(job: Job) -> str:
    """``; image acme/app@sha256:0123456789ab`` (+N more): the first image the job built, short enough for a
    description (the full references are on the job page and in ``queue show``)."""
    refs = (job.image or "").split()
    if not refs:
        return ""
    path, _, digest = refs[0].partition("@")
    name = path.partition("/")[2].rpartition(":")[0] or path
    more = f" (+{len(refs) - 1} more)" if len(refs) > 1 else ""
    return f"; image {name}@{digest[:19]}{more}"


def _took(job: Job) -> str:
    try:
        start, end = parse_time(job.started_at), parse_time(job.finished_at)
    except (TypeError, ValueError):
        return ""
    if start is None or end is None:
        return ""
    return f" in {max(0.0, (end - start).total_seconds()):.0f}s"


@dataclass
class _Entry:
    eid: str
    check: Check | None  # None: nothing to post (the reason is in ``skip``)
    skip: str = ""
    done: set[str] = field(default_factory=set)  # forges that took it (or refused it for good)
    retrying: set[str] = field(default_factory=set)  # forges a "retrying" record was written for
    new: bool = True  # its decision is not yet recorded
    superseded: Check | None = None  # what would have been posted, had a newer job not held the context


def permanent(e: Exception) -> bool:
    """Whether posting again cannot help: the token, the repo or the request itself is refused."""
    if isinstance(e, (AuthError, NotFound, UsageError, AlreadyExists)):
        return True
    status = getattr(e, "status", None)
    if isinstance(status, int) and 400 <= status < 500 and status != 429:
        return True
    return isinstance(e, RaibidError) and e.message.startswith("Gitea rejected")  # Gitea's 422


class Reporter:
    """Posts the event stream's statuses to Gitea and, for GitHub mirrors, GitHub.

    ``gitea`` and ``github`` are the clients (None: that forge is not posted to); the GitHub
    client should have ``max_wait=0``, so a rate limit raises at once with its reset time
    instead of holding the loop. ``link(job_id)`` gives the ``target_url`` (None: no link).
    """

    def __init__(self, r: Any, keys: Keys, *, gitea: Any = None, github: Forge | None = None,
                 link: Callable[[str], str | None] | None = None, consumer: str = "reporter",
                 batch: int = 100, block_ms: int = 500, workers: int = 8,
                 clock: Callable[[], float] = time.time) -> None:
        self.r = r
        self.keys = keys
        self.forges: dict[str, Forge] = {}
        if gitea is not None:
            self.forges["gitea"] = GiteaForge(gitea)
        if github is not None:
            self.forges["github"] = github
        self.link = link
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._retry_at: dict[tuple, float] = {}  # (forge, repo, sha, context) -> when to post again
        self._backoff: dict[tuple, float] = {}
        self._forge_at: dict[str, float] = {}  # forge -> not before (a rate limit)
        self._decided: dict[tuple, str] = {}  # (repo, sha, context) -> the event its check shows
        self._holder: dict[tuple, str] = {}  # (repo, sha, context) -> the newest job decided for it
        self._pending = True  # entries read but not acked may exist (at start: an earlier run's)
        self.workers = workers  # commits posted at once (each commit's states stay in order)
        self._pool: Any = None
        self._records: dict[str, dict] = {}  # job records read ahead for one round
        self._group_ok = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.posted = 0  # statuses a forge took, for health and tests
        self.idle = False  # the last round found nothing to do

    # ------------------------------------------------------------------ the loop
    def start(self) -> Reporter:
        self._thread = threading.Thread(target=self.run, name="raibid-reporter", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def run(self) -> None:
        """Until stopped: a Redis or forge failure is logged and tried again, never raised."""
        import redis

        delay = BACKOFF_MIN
        while not self._stop.is_set():
            try:
                self.run_once()
                delay = BACKOFF_MIN
            except redis.RedisError as e:
                log.warning("reporter: Redis: %s; trying again in %.0fs", e, delay)
                self._group_ok = False
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            except Exception:  # a bug must not end statuses for good: say so, and go on after a pause
                log.exception("reporter: unexpected error; trying again in %.0fs", delay)
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def ensure_group(self) -> None:
        import redis

        if self._group_ok:
            return
        try:  # at 0: the first reporter posts every event kept, so nothing before it is lost
            self.r.xgroup_create(self.keys.events, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ok = True

    def run_once(self, block_ms: int | None = None) -> int:
        """One round: this consumer's pending entries (in order), then new ones. How many were acked."""
        self.ensure_group()
        pending = self._read("0", count=self.batch * 10) if self._pending or self._entries else []
        now = self.clock()
        waiting = [self._next_try(eid) for eid, _ in pending]
        if pending and min(waiting) <= now:
            block = None  # work is due now
        else:
            due = (min(waiting) - now) * 1000 if pending else float("inf")
            block = max(1, int(min(self.block_ms if block_ms is None else block_ms, due)))
        fresh = self._read(">", block=block) if len(pending) < self.batch * 10 else []
        self.idle = not pending and not fresh
        entries = pending + fresh
        self._decide_all([(eid, data) for eid, data in entries if eid not in self._entries])
        lanes: dict[tuple, list[str]] = {}  # one lane per (repo, commit, context): in order within, parallel across
        for eid, _ in entries:
            check = self._entries[eid].check or self._entries[eid].superseded
            lanes.setdefault(self._ck(check) if check else ("", eid, ""), []).append(eid)
        if len(lanes) <= 1 or self.workers <= 1:
            acked = sum(self._lane(eids) for eids in lanes.values())
        else:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="raibid-reporter-post")
            acked = sum(self._pool.map(self._lane, lanes.values()))
        self._pending = bool(self._entries)
        return acked

    def _lane(self, eids: list[str]) -> int:
        blocked: set[tuple] = set()
        return sum(1 for eid in eids if self._handle(eid, blocked))

    def _decide_all(self, items: list[tuple[str, dict]]) -> None:
        """Decide new entries in stream order, their job records and earlier decisions read in two round trips."""
        jobs = [data["job"] for _, data in items if data.get("kind") == "job" and data.get("job")]
        if jobs:
            pipe = self.r.pipeline(transaction=False)
            for job_id in jobs:
                pipe.hgetall(self.keys.job(job_id))
            self._records = dict(zip(jobs, pipe.execute(), strict=True))
        try:
            decided = [(eid, self._decide(eid, data)) for eid, data in items]
        finally:
            self._records = {}
        for eid, entry in decided:
            self._entries[eid] = entry

    def drain(self, timeout: float = 10.0) -> None:
        """Run rounds until nothing is pending for this consumer and nothing new came (tests, the benchmark)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.run_once(block_ms=1)
            if self.idle:
                return
        raise TimeoutError("the reporter did not catch up in time")

    def _read(self, start: str, *, block: int | None = None, count: int | None = None) -> list[tuple[str, dict]]:
        res = self.r.xreadgroup(GROUP, self.consumer, {self.keys.events: start}, count=count or self.batch,
                                block=block)
        entries = res[0][1] if res else []
        out = []
        for eid, data in entries:
            if data is None:  # trimmed away under the pending list
                self.r.xack(self.keys.events, GROUP, eid)
                self._entries.pop(eid, None)
                continue
            out.append((eid, data))
        return out

    def _next_try(self, eid: str) -> float:
        entry = self._entries.get(eid)
        if entry is None or entry.check is None:
            return 0.0
        times = [max(self._retry_at.get(self._key(f, entry.check, repo), 0.0), self._forge_at.get(f, 0.0))
                 for f, repo in entry.check.targets() if f in self.forges and f not in entry.done]
        return min(times, default=0.0)

    # ------------------------------------------------------------------ one entry
    def _handle(self, eid: str, blocked: set[tuple]) -> bool:
        """Post one entry where it is due; its records and its ack go in one pipeline (one round trip)."""
        pipe = self.r.pipeline(transaction=False)
        entry = self._entries[eid]
        if entry.new:
            entry.new = False
            if entry.check is not None:
                self._record_commit(pipe, entry.check, eid)
            elif entry.superseded is not None:
                for forge, _ in entry.superseded.targets():
                    self._record_job(pipe, entry.superseded, forge, None, f"not posted: {entry.skip}", eid)
        check = entry.check
        done = True
        if check is not None:
            for forge, repo in check.targets():
                if forge in entry.done:
                    continue
                if forge not in self.forges:
                    entry.done.add(forge)
                    self._record_job(pipe, check, forge, None, f"not posted: no {forge} token", eid)
                    continue
                key = self._key(forge, check, repo)
                now = self.clock()
                if key in blocked or self._retry_at.get(key, 0.0) > now or self._forge_at.get(forge, 0.0) > now:
                    blocked.add(key)  # later entries of this commit and context wait behind it
                    continue
                if self._post(pipe, forge, repo, check, entry):
                    entry.done.add(forge)
                    self._retry_at.pop(key, None)
                    self._backoff.pop(key, None)
                else:
                    blocked.add(key)
            done = all(f in entry.done for f, _ in check.targets())
        elif entry.skip:
            log.info("reporter: event %s not posted: %s", eid, entry.skip)
        if done:
            pipe.xack(self.keys.events, GROUP, eid)
            self._entries.pop(eid, None)
        if len(pipe):
            pipe.execute()
        return done

    def _key(self, forge: str, check: Check, repo: str) -> tuple:
        return (forge, repo.lower(), check.commit, check.context)

    def _decide(self, eid: str, data: dict) -> _Entry:
        kind = data.get("kind")
        if kind == "status":
            check = Check(repo=data.get("repo", ""), commit=data.get("commit", ""), context=data.get("context", ""),
                          state=data.get("state", "error"), description=clean(data.get("description")),
                          origin=data.get("origin"))
            if not (check.repo and check.commit and check.context):
                return _Entry(eid, None, "a status event without repo, commit or context")
            return _Entry(eid, check)
        if kind != "job":
            return _Entry(eid, None, f"unknown event kind {kind!r}")
        job_id = data.get("job") or ""
        h = self._records.get(job_id) if job_id in self._records else (
            self.r.hgetall(self.keys.job(job_id)) if job_id else {})
        if not h:
            return _Entry(eid, None, f"job {job_id} has no record (expired or purged)")
        job = Job.from_hash(h)
        if not job.commit:
            return _Entry(eid, None, f"job {job_id} names no commit (submitted with a ref only)")
        state, description = describe(job, data.get("status", ""))
        check = Check(repo=job.repo, commit=job.commit, context=clean(context_of(job)), state=state,
                      description=clean(description), origin=job.origin, job=job.id, attempt=job.attempt,
                      agent=job.agent, target_url=self.link(job.id) if self.link else None)
        newer = self._newer_job(check)
        if newer:
            return _Entry(eid, None, f"superseded by job {newer}", superseded=check)
        self._holder[self._ck(check)] = job.id  # decided in stream order: a later, older job's event sees it
        return _Entry(eid, check)

    def _newer_job(self, check: Check) -> str | None:
        held = self._holder.get(self._ck(check))
        if held is None:  # not decided by this process: what an earlier reporter decided
            raw = self.r.hget(self.keys.commit_checks(check.repo, check.commit), check.context)
            try:
                held = (json.loads(raw) or {}).get("job") if raw else None
            except (ValueError, AttributeError):
                held = None
        return held if held and check.job and held > check.job else None

    def _ck(self, check: Check) -> tuple[str, str, str]:
        return (check.repo.lower(), check.commit, check.context)

    def _post(self, pipe: Any, forge: str, repo: str, check: Check, entry: _Entry) -> bool:
        """Post to one forge: True when it is done with (posted, or refused for good)."""
        client = self.forges[forge]
        key = self._key(forge, check, repo)
        try:
            client.post_status(repo, check.commit, state=check.state, context=check.context,
                               description=check.description, target_url=check.target_url)
        except Exception as e:  # noqa: BLE001 - every failure is either given up on or retried, never raised
            if isinstance(e, RaibidError) and permanent(e):
                log.warning("reporter: %s %s@%s %s: gave up: %s", forge, repo, check.commit[:12], check.context,
                            e.message)
                self._record_job(pipe, check, forge, client, f"gave up: {e.message}", entry.eid)
                return True
            message = e.message if isinstance(e, RaibidError) else f"{type(e).__name__}: {e}"
            retry_at = getattr(e, "retry_at", None)
            now = self.clock()
            if retry_at:
                self._forge_at[forge] = float(retry_at)
                wait = float(retry_at) - now
            else:
                wait = min(self._backoff.get(key, BACKOFF_MIN / 2) * 2, BACKOFF_MAX)
                self._backoff[key] = wait
                self._retry_at[key] = now + wait
            log.warning("reporter: %s %s@%s %s: %s; posting again in %.0fs", forge, repo, check.commit[:12],
                        check.context, message, max(wait, 0))
            if forge not in entry.retrying:  # one "retrying" line per post, not one per try
                entry.retrying.add(forge)
                self._record_job(pipe, check, forge, client, f"retrying: {message}", entry.eid)
            return False
        self.posted += 1
        self._record_job(pipe, check, forge, client, "posted", entry.eid)
        return True

    # ------------------------------------------------------------------ records (added to the entry's pipeline)
    def _record_job(self, pipe: Any, check: Check, forge: str, client: Forge | None, result: str, eid: str) -> None:
        url = client.commit_url(_repo_on(check, forge), check.commit) if client is not None else None
        if check.job:
            entry = {"forge": forge, "state": check.state, "context": check.context,
                     "description": check.description, "target_url": check.target_url, "url": url,
                     "result": result, "at": now_rfc3339()}
            key = self.keys.job_statuses(check.job)
            pipe.rpush(key, json.dumps(entry))
            pipe.ltrim(key, -HISTORY * 2, -1)
        if self._decided.get(self._ck(check)) == eid:  # the commit's check still shows this event
            ck = self.keys.commit_checks(check.repo, check.commit)
            pipe.hset(ck, f"{check.context}{_SEP}{forge}", json.dumps({"result": result, "url": url}))

    def _record_commit(self, pipe: Any, check: Check, eid: str) -> None:
        ck = self.keys.commit_checks(check.repo, check.commit)
        value = {**asdict(check), "event": eid, "at": now_rfc3339()}
        pipe.hset(ck, mapping={check.context: json.dumps(value),
                               **{f"{check.context}{_SEP}{f}": json.dumps({"result": "to be posted", "url": None})
                                  for f, _ in check.targets()}})
        pipe.expire(ck, CHECKS_TTL)
        self._decided[self._ck(check)] = eid
        if len(self._decided) > 10_000:  # a cache: Redis holds the truth
            self._decided.clear()
            self._holder.clear()
            self._decided[self._ck(check)] = eid


_SEP = "\x1f"  # commit checks: "<context>" holds the decision, "<context>\x1f<forge>" what that forge said


def _repo_on(check: Check, forge: str) -> str:
    return dict(check.targets()).get(forge, check.repo)


def _loads(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


# ---------------------------------------------------------------------- readers (queue show, status)
@dataclass
class PostedStatus:
    forge: str
    state: str
    context: str
    description: str
    result: str
    at: str | None
    url: str | None
    target_url: str | None


def job_statuses(r: Any, keys: Keys, job_id: str) -> list[PostedStatus]:
    """What the reporter posted for one job, oldest first, per forge (gitea, then github)."""
    out = []
    for raw in r.lrange(keys.job_statuses(job_id), 0, -1) or []:
        d = _loads(raw)
        if not isinstance(d, dict):
            continue
        out.append(PostedStatus(forge=str(d.get("forge", "")), state=str(d.get("state", "")),
                                context=str(d.get("context", "")), description=str(d.get("description", "")),
                                result=str(d.get("result", "")), at=d.get("at"), url=d.get("url"),
                                target_url=d.get("target_url")))
    return sorted(out, key=lambda p: p.forge != "gitea")


@dataclass
class CommitCheck:
    context: str
    state: str
    description: str
    job: str | None
    attempt: int | None
    agent: str | None
    target_url: str | None
    at: str | None
    forges: dict[str, dict[str, Any]]


def commit_checks(r: Any, keys: Keys, repo: str, commit: str) -> list[CommitCheck]:
    """A commit's checks, by context, as the reporter last decided them (no forge is asked)."""
    h = r.hgetall(keys.commit_checks(repo, commit)) or {}
    out = []
    for context in sorted(k for k in h if _SEP not in k):
        d = _loads(h[context])
        if not isinstance(d, dict):
            continue
        forges = {}
        for k, v in h.items():
            ctx, sep, forge = k.partition(_SEP)
            if sep and ctx == context and isinstance(_loads(v), dict):
                forges[forge] = _loads(v)
        out.append(CommitCheck(context=context, state=str(d.get("state", "")),
                               description=str(d.get("description", "")), job=d.get("job"),
                               attempt=d.get("attempt"), agent=d.get("agent"), target_url=d.get("target_url"),
                               at=d.get("at"), forges=forges))
    return out
