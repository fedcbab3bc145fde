"""Which pushes build, and the enqueue that makes each commit one job whichever way it came.

The dedupe key is the mirror's (``<repo>@<commit>:<agent>``, `raibid.queue.dedupe_key`), so a
Gitea webhook, a GitHub webhook followed by a sync, and the cron mirror sync all land on the
same key and the queue keeps the first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raibid.errors import ConfigError

if TYPE_CHECKING:
    from raibid.queue import Job, JobSpec


@dataclass
class Enqueued:
    job_id: str
    repo: str
    ref: str
    commit: str
    agent: str
    created: bool  # False: a job for this commit and agent type existed already


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{where}: invalid regex {pattern!r}: {e}") from None


class BuildTrigger:
    """Branch filter plus deduplicated enqueue; ``submit`` is `Queue.submit_deduped` (or a test's)."""

    def __init__(self, submit: Callable[[JobSpec], tuple[Job, bool]], *, branches: str, agent: str,
                 overrides: Mapping[str, str] | None = None) -> None:
        self.submit = submit
        self.agent = agent
        self.branches = _compile(branches, "mirror.trigger.branches")
        self.overrides = {repo.lower(): _compile(rx, f"webhook.branches[{repo}]")
                          for repo, rx in (overrides or {}).items()}

    def wants(self, repo: str, branch: str | None) -> bool:
        """Whether a push to ``branch`` of ``repo`` builds (per-repo regex first, then the global one)."""
        if branch is None:
            return False
        return bool(self.overrides.get(repo.lower(), self.branches).search(branch))

    def enqueue(self, repo: str, branch: str, commit: str) -> Enqueued:
        from raibid.queue import JobSpec, dedupe_key

        spec = JobSpec(repo=repo, ref=branch, commit=commit, agent=self.agent, source="webhook",
                       dedupe=dedupe_key(repo, commit, self.agent))
        job, created = self.submit(spec)
        return Enqueued(job.id, repo, branch, commit, self.agent, created)

    def submit_for_engine(self, repo: str, branch: str, commit: str) -> tuple[str, bool]:
        """The mirror engine's ``Trigger.submit`` (`raibid.mirror.sync.Submit`; the engine has matched
        the branch already): a webhook job."""
        e = self.enqueue(repo, branch, commit)
        return e.job_id, e.created
