"""The job model: what to run (JobSpec), a job's record (Job), a worker's hold on one (Claim), stats."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from typing import Any

from raibid.errors import QueueError, UsageError

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "dead")
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "dead"})
RETRYABLE = frozenset({"failed", "cancelled", "dead"})
SOURCES = ("cli", "mirror", "webhook", "retry")
AGENT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
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

    def validate(self) -> None:
        if not REPO_RE.match(self.repo or ""):
            raise UsageError(f"invalid repo {self.repo!r}: expected OWNER/NAME")
        if not self.ref:
            raise UsageError("a ref (branch, tag or sha) is required")
        for name in ("ref", "commit", "command"):
            value = getattr(self, name)
            if value is not None and ("\x1f" in value or "\x00" in value):
                raise UsageError(f"{name} contains a control character")
        if self.agent is not None:
            validate_agent(self.agent)
        if self.timeout is not None and (not isinstance(self.timeout, int) or self.timeout <= 0):
            raise UsageError(f"invalid timeout {self.timeout!r}: a positive number of seconds")
        if self.source not in SOURCES:
            raise UsageError(f"invalid source {self.source!r}")
        if not isinstance(self.env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in self.env.items()):
            raise UsageError("env must map names to string values")
        if self.dedupe is not None:
            if not isinstance(self.dedupe, str) or not self.dedupe:
                raise UsageError("dedupe must be a non-empty string")
            if len(self.dedupe) > DEDUPE_MAX:
                raise UsageError(f"dedupe key longer than {DEDUPE_MAX} characters")
            if _CONTROL.search(self.dedupe):
                raise UsageError("dedupe contains a control character")


def validate_agent(agent: str) -> None:
    if not AGENT_RE.match(agent) or agent == "dead":
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
    dedupe: str | None = None

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Job:
        names = {f.name for f in fields(cls)}
        data: dict[str, Any] = {k: (v if v != "" else None) for k, v in h.items() if k in names}
        for k in ("timeout", "attempt", "deliveries", "exit_code"):
            if data.get(k) is not None:
                data[k] = int(data[k])
        data["env"] = json.loads(h.get("env") or "{}")
        data["cancel_requested"] = h.get("cancel_requested") == "1"
        for k in ("attempt", "deliveries"):
            data.setdefault(k, 0 if k == "deliveries" else 1)
            if data[k] is None:
                data[k] = 0
        return cls(**data)


@dataclass
class Claim:
    """A job a worker holds: what it must heartbeat, log to and finish."""

    job: Job
    stream: str
    stream_id: str
    consumer: str


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
class ReapResult:
    requeued: list[str]
    dead_lettered: list[str]
    acked: list[str]
    lag_repaired: list[str] = field(default_factory=list)


class LostJob(QueueError):
    """The worker no longer owns the entry (it was reclaimed, requeued or finished elsewhere)."""
