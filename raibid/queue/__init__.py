"""The job queue on Redis Streams (see docs/queue.md).

Delivery is at-least-once: a worker claims with XREADGROUP (after reclaiming
stale entries with XAUTOCLAIM), keeps its entry alive with heartbeats, and the
entry is acked only when the job reaches a terminal state. A job delivered
``max_deliveries`` times without finishing goes to the dead-letter stream.
State changes that must not race are single Lua scripts (``lua/``).

Modules: ``keys`` (every key name), ``ids``, ``model``, ``connection``, and the
``producer``, ``worker`` and ``admin`` sides over one connection. ``Queue`` is
all three, for callers that need more than one side.
"""

from __future__ import annotations

from raibid.queue.admin import Admin, keda_desired
from raibid.queue.connection import connect, redis_errors, retry_policy
from raibid.queue.ids import new_job_id, new_job_ids
from raibid.queue.keys import GROUP, Keys
from raibid.queue.model import (
    RETRYABLE,
    STATUSES,
    TERMINAL,
    Claim,
    Job,
    JobSpec,
    LagCheck,
    LostJob,
    PartialSubmit,
    QueueStats,
    ReapResult,
    StreamStats,
    dedupe_key,
    validate_agent,
)


class Queue(Admin):
    """The whole queue API: producer, worker and admin sides on one Redis connection."""


__all__ = [
    "GROUP", "RETRYABLE", "STATUSES", "TERMINAL", "Claim", "Job", "JobSpec", "Keys", "LagCheck", "LostJob",
    "PartialSubmit", "Queue", "QueueStats", "ReapResult", "StreamStats", "connect", "dedupe_key", "keda_desired",
    "new_job_id", "new_job_ids", "redis_errors", "retry_policy", "validate_agent",
]
