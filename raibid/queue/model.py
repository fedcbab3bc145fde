"""The job model: what to run (JobSpec), a job's record (Job), a worker's hold on one (Claim), stats."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict, cast

from raibid.errors import ExitCode, QueueError, UsageError
from raibid.timeutil import parse_time

STATUSES = ("waiting-approval", "queued", "running", "succeeded", "failed", "cancelled", "dead")
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "dead"})
RETRYABLE = frozenset({"failed", "cancelled", "dead"})
SOURCES = ("cli", "mirror", "webhook", "retry")
EVENTS = ("push", "pull_request", "tag", "manual")
# What triggered a job, beyond repo/ref/commit: stored as hash fields of the same names, copied by a retry.
TRIGGER_FIELDS = ("event", "pipeline", "context", "pr", "base_ref", "head_ref", "origin")


class Trigger(TypedDict, total=False):
    """Trigger fields (``TRIGGER_FIELDS``) as keywords of ``JobSpec`` and ``Job``."""

    event: str | None
    pipeline: str | None
    context: str | None
    pr: str | None
    base_ref: str | None
    head_ref: str | None
    origin: str | None


TRIGGER_MAX = 1024  # characters in one trigger field
AGENT_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # used with fullmatch: no trailing newline slips through
REPO_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
DEDUPE_MAX = 512  # characters in a dedupe key
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def dedupe_key(repo: str, commit: str, agent: str) -> str:
    """The dedupe key of one CI trigger: one job per (repo, commit, agent type), "<repo>@<commit>:<agent>"."""
    return f"{repo}@{commit}:{agent}"


@dataclass
class JobSpec:
    """What to run. Validated before anything is written."""

    repo: str
    ref: str
    commit: str | None = None
    agent: str | None = None
    command: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: int | None = None
    source: str = "cli"
    dedupe: str | None = None  # a job with the same key within queue.dedupe_ttl is not submitted twice
    # The trigger (TRIGGER_FIELDS): None means not known, e.g. a job submitted before they existed.
    event: str | None = None  # push | pull_request | tag | manual
    pipeline: str | None = None  # the `.raibid.yml` pipeline this job runs (None: the file's only one)
    context: str | None = None  # the commit status context, stable across attempts (raibid/<pipeline>)
    pr: str | None = None  # the pull request number, for event pull_request
    base_ref: str | None = None  # the pull request's base branch
    head_ref: str | None = None  # the pull request's head branch
    origin: str | None = None  # where the commit came from, e.g. "github:OWNER/NAME" for a mirror
    # Held for approval (`agents.approval`): written as status waiting-approval, on no stream, until
    # `raibid queue approve` adds its stream entry (KEDA starts no agent for it before).
    hold: bool = False

    def trigger(self) -> Trigger:
        return trigger_fields(self)

    def validate(self) -> None:
        """Exact types (``bool`` is not an int, a list is not a string), then the values."""
        if not isinstance(self.repo, str) or not REPO_RE.fullmatch(self.repo):
            raise UsageError(f"invalid repo {self.repo!r}: expected OWNER/NAME")
        if not isinstance(self.ref, str) or not self.ref:
            raise UsageError("a ref (branch, tag or sha) is required, as a string")
        for name in ("ref", "commit", "command"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise UsageError(f"{name} must be a string, got {type(value).__name__}")
            if value is not None and ("\x1f" in value or "\x00" in value):
                raise UsageError(f"{name} contains a control character")
        if self.agent is not None:
            validate_agent(self.agent)
        if self.timeout is not None and (type(self.timeout) is not int or self.timeout <= 0):
            raise UsageError(f"invalid timeout {self.timeout!r}: a positive whole number of seconds")
        if not isinstance(self.source, str) or self.source not in SOURCES:
            raise UsageError(f"invalid source {self.source!r}")
        if not isinstance(self.env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in self.env.items()):
            raise UsageError("env must map names to string values")
        if type(self.hold) is not bool:
            raise UsageError("hold must be true or false")
        if self.event is not None and self.event not in EVENTS:
            raise UsageError(f"invalid event {self.event!r}: one of {', '.join(EVENTS)}")
        for name in TRIGGER_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str) or not value:
                raise UsageError(f"{name} must be a non-empty string")
            if len(value) > TRIGGER_MAX:
                raise UsageError(f"{name} longer than {TRIGGER_MAX} characters")
            if _CONTROL.search(value):
                raise UsageError(f"{name} contains a control character")
        if self.dedupe is not None:
            if not isinstance(self.dedupe, str) or not self.dedupe:
                raise UsageError("dedupe must be a non-empty string")
            if len(self.dedupe) > DEDUPE_MAX:
                raise UsageError(f"dedupe key longer than {DEDUPE_MAX} characters")
            if _CONTROL.search(self.dedupe):
                raise UsageError("dedupe contains a control character")


def trigger_fields(obj: JobSpec | Job) -> Trigger:
    """The trigger fields (``TRIGGER_FIELDS``) of a spec or job that are set, as they are stored."""
    return cast(Trigger, {k: getattr(obj, k) for k in TRIGGER_FIELDS if getattr(obj, k) is not None})


def validate_agent(agent: str) -> None:
    if not isinstance(agent, str) or not AGENT_RE.fullmatch(agent) or agent == "dead":
        raise UsageError(f"invalid agent type {agent!r}: lower-case letters, digits and '-', not 'dead'")


@dataclass
class Job:
    id: str
    repo: str
    ref: str
    agent: str
    status: str
    commit: str | None = None
    command: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: int = 3600
    source: str = "cli"
    submitted_at: str | None = None
    attempt: int = 1
    deliveries: int = 0
    stream_id: str | None = None
    agent_pod: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    heartbeat_at: str | None = None
    exit_code: int | None = None
    error: str | None = None
    retry_of: str | None = None
    retried_by: str | None = None
    cancel_requested: bool = False
    log_trimmed: bool = False  # its log was deleted to keep Redis under maxmemory (queue.log_high_water)
    dedupe: str | None = None
    event: str | None = None
    pipeline: str | None = None
    context: str | None = None
    pr: str | None = None
    base_ref: str | None = None
    head_ref: str | None = None
    origin: str | None = None
    approved_at: str | None = None  # when `raibid queue approve` moved it from waiting-approval to queued
    image: str | None = None  # what its `image:` steps built: <registry>/<name>:<tag>@<digest>, space-separated
    malformed: str | None = None  # why the stored record could not be read in full (None: it could)

    def trigger(self) -> Trigger:
        return trigger_fields(self)

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Job:
        """Read a stored record. Never raises: a field that cannot be read is left at its default
        and named in ``malformed``, so one bad record cannot break listing the others."""
        problems: list[str] = []
        names = {f.name for f in fields(cls)} - {"malformed", "env", "cancel_requested", "log_trimmed"}
        data: dict[str, Any] = {k: (v if v != "" else None) for k, v in h.items() if k in names}
        for k in ("id", "repo", "ref", "agent", "status"):
            if not data.get(k):
                problems.append(f"{k} missing")
                data[k] = ""
        for k in ("timeout", "attempt", "deliveries", "exit_code"):
            if data.get(k) is not None:
                try:
                    data[k] = int(data[k])
                except ValueError:
                    problems.append(f"{k} {data[k]!r} is not a whole number")
                    data.pop(k)
        for k in ("submitted_at", "started_at", "finished_at", "heartbeat_at", "approved_at"):
            if data.get(k) is not None:
                try:
                    parse_time(data[k])
                except ValueError:
                    problems.append(f"{k} {data[k]!r} is not a time")
                    data.pop(k)
        for k in ("attempt", "deliveries"):
            if data.get(k) is None:
                data[k] = 0 if k == "deliveries" else 1
        try:
            env = json.loads(h.get("env") or "{}")
        except ValueError:
            env = None
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            problems.append(f"env {h.get('env')!r} is not a JSON object of strings")
            env = {}
        data["env"] = env
        data["cancel_requested"] = h.get("cancel_requested") == "1"
        data["log_trimmed"] = h.get("log_trimmed") == "1"
        if data["status"] and data["status"] not in STATUSES:
            problems.append(f"unknown status {data['status']!r}")
        return cls(**data, malformed="; ".join(problems) or None)


@dataclass
class Claim:
    """A job a worker holds: what it must heartbeat, log to and finish."""

    job: Job
    stream: str
    stream_id: str
    consumer: str
    resumed: bool = False  # a retried claim returned the job this worker already held


@dataclass
class ConsumerInfo:
    name: str
    pending: int
    idle_ms: int


@dataclass
class StreamStats:
    agent: str
    stream: str
    length: int
    lag: int | None
    pending: int
    consumers: list[ConsumerInfo]
    oldest_queued_at: str | None
    oldest_queued_age_s: float | None
    group_exists: bool
    lag_count: int
    max_replicas: int
    keda_desired: int | None
    true_lag: int | None = None  # entries after the group's last-delivered-id: what lag must be


@dataclass
class QueueStats:
    streams: list[StreamStats]
    dead_letter: int
    redis_version: str
    lag_supported: bool
    warnings: list[str]


@dataclass
class DeadLetter:
    entry_id: str
    job_id: str
    reason: str
    stream: str
    at: str | None


@dataclass
class LagCheck:
    """A group's reported lag against the truth (entries after its last-delivered-id)."""

    stream: str
    state: str  # ok | wrong (found, not repaired) | repaired | missing (no stream or group)
    reported: int | None  # what XINFO GROUPS said (None: Redis reported no lag)
    true: int

    @property
    def repaired(self) -> bool:
        return self.state == "repaired"


@dataclass
class ReapResult:
    """What one reap did. Job ids and stream entry ids are kept apart."""

    requeued: list[str] = field(default_factory=list)  # job ids given a fresh entry
    dead_lettered: list[str] = field(default_factory=list)  # job ids sent to the DLQ
    acked_jobs: list[str] = field(default_factory=list)  # job ids whose stale entry was acked (job had moved on)
    acked_entries: list[str] = field(default_factory=list)  # stream entry ids without a job, acked
    skipped: list[str] = field(default_factory=list)  # job ids a live worker took back before the requeue
    lag_repaired: list[str] = field(default_factory=list)  # agent types whose lag was made true
    consumers_deleted: list[str] = field(default_factory=list)  # "<agent>/<consumer>", idle, nothing pending
    expired: int = 0  # finished job records (and index entries) dropped past queue.retention


class LostJob(QueueError):
    """The worker no longer owns the entry (it was reclaimed, requeued or finished elsewhere)."""


class PartialSubmit(QueueError):
    """A (bulk) submit gave up: ``done`` are the ids known to be queued, ``jobs`` all the jobs with
    their ids. Submitting the same specs with ``ids=[j.id for j in jobs]`` writes only the rest."""

    def __init__(self, jobs: list[Job], done: set[str], cause: Exception, *, unreachable: bool) -> None:
        self.jobs = jobs
        self.done = [j.id for j in jobs if j.id in done]
        self.cause = cause
        if unreachable:
            self.exit_code = ExitCode.UNREACHABLE
        super().__init__(
            f"submitted {len(self.done)} of {len(jobs)} jobs for certain; the rest may or may not be in: {cause}",
            hint="submit the same jobs again with the same ids (nothing is written twice)")
