"""Every Redis key raibid uses. Change names here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

# The one consumer group every agent type's stream has (KEDA reads its lag).
GROUP = "raibid-agents"


@dataclass
class Keys:
    """Every Redis key raibid uses. Change names here and nowhere else."""

    prefix: str = "raibid"

    def stream(self, agent: str) -> str:
        return f"{self.prefix}:jobs:{agent}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def log(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:log"

    def dedupe(self, key: str) -> str:
        """Holds the id of the job submitted under dedupe key ``key`` (expires after queue.dedupe_ttl)."""
        return f"{self.prefix}:dedupe:{key}"

    def webhook_delivery(self, host: str, delivery_id: str) -> str:
        """Set once a webhook delivery (``X-GitHub-Delivery``) is handled; expires after the redelivery window."""
        return f"{self.prefix}:webhook:delivery:{host}:{delivery_id}"

    def mirror_pending(self, target: str) -> str:
        """Set of the ``[branch, commit]`` CI triggers a mirror sync of ``target`` (OWNER/NAME, lower case)
        owes: kept in Redis so a run in a new pod still enqueues what an earlier run could not."""
        return f"{self.prefix}:mirror:pending:{target.lower()}"

    def job_statuses(self, job_id: str) -> str:
        """List of what the reporter posted for one job, where (JSON entries, capped; dropped with the job by retention)."""
        return f"{self.prefix}:job:{job_id}:statuses"

    def commit_checks(self, repo: str, commit: str) -> str:
        """Hash of a commit's checks, context -> the newest attempt's state (``raibid status``)."""
        return f"{self.prefix}:checks:{repo.lower()}@{commit}"

    @property
    def events(self) -> str:
        """Stream of state changes (``raibid.queue.events``): what the reporter turns into commit statuses."""
        return f"{self.prefix}:events"

    @property
    def dead(self) -> str:
        return f"{self.prefix}:jobs:dead"

    @property
    def index(self) -> str:
        """Sorted set of job ids by submit time (ms): listing never scans the keyspace."""
        return f"{self.prefix}:jobs:index"

    @property
    def agents(self) -> str:
        """Set of agent types that have a stream."""
        return f"{self.prefix}:agents"
