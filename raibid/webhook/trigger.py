"""Which pushes build, and the enqueue that makes each commit one job whichever way it came.

Every trigger (a Gitea webhook, a GitHub webhook followed by a sync, the cron mirror sync)
enqueues through ``BuildTrigger.enqueue``: the pool is ``route(type, repo, policy)`` with the
process's ``agents.trusted`` (`raibid.agents.trust`), and the dedupe key is
``<repo>@<commit>:<pool>`` (`raibid.queue.dedupe_key`). The receiver's
and the CronJob's configs carry the same ``agents.trusted``, so both pick the same pool, land
on the same key, and the queue keeps the first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raibid.agents.trust import TrustPolicy, route, split_pool
from raibid.errors import ConfigError

if TYPE_CHECKING:
    from raibid.queue import Job, JobSpec


@dataclass
class Enqueued:
    job_id: str
    repo: str
    ref: str
    commit: str
    agent: str  # the pool the job went to: <type> or <type>-untrusted
    created: bool  # False: a job for this commit and pool existed already
    waiting: bool = False  # held in waiting-approval (agents.approval) until `raibid queue approve`


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{where}: invalid regex {pattern!r}: {e}") from None


class BuildTrigger:
    """Branch filter plus routed, deduplicated enqueue; ``submit`` is `Queue.submit_deduped` (or a test's).

    ``agent`` is the type (``mirror.trigger.agent``); ``policy`` (``agents.trusted``) picks its
    pool per repo. The default policy trusts nothing. ``source`` labels the jobs (``webhook``,
    ``mirror``).
    """

    def __init__(self, submit: Callable[[JobSpec], tuple[Job, bool]], *, branches: str, agent: str,
                 overrides: Mapping[str, str] | None = None, policy: TrustPolicy | None = None,
                 source: str = "webhook") -> None:
        self.submit = submit
        self.agent = agent
        self.policy = policy if policy is not None else TrustPolicy()
        self.source = source
        self.branches = _compile(branches, "mirror.trigger.branches")
        self.overrides = {repo.lower(): _compile(rx, f"webhook.branches[{repo}]")
                          for repo, rx in (overrides or {}).items()}

    def wants(self, repo: str, branch: str | None) -> bool:
        """Whether a push to ``branch`` of ``repo`` builds (per-repo regex first, then the global one)."""
        if branch is None:
            return False
        return bool(self.overrides.get(repo.lower(), self.branches).search(branch))

    def pool(self, repo: str) -> str:
        """The pool a job of ``repo`` (Gitea OWNER/NAME, as the agent clones it) goes to."""
        return route(self.agent, repo, self.policy)

    def enqueue(self, repo: str, branch: str, commit: str, *, event: str | None = None, pr: str | None = None,
                base_ref: str | None = None, head_ref: str | None = None, origin: str | None = None,
                fork: bool = False, author: str | None = None) -> Enqueued:
        """One job for ``commit``. A pull request (``event="pull_request"``, ``branch`` its
        ``refs/pull/<n>/head``) routes by ``fork`` and ``author`` too, and may be held for approval;
        its dedupe key is the push's, so a PR head that is also a pushed branch tip builds once."""
        from raibid.queue import JobSpec, dedupe_key

        is_pr = event == "pull_request"
        pool = route(self.agent, repo, self.policy, pr=is_pr, fork=fork, author=author)
        hold = is_pr and self.policy.needs_approval(fork=fork, trusted=split_pool(pool)[1])
        spec = JobSpec(repo=repo, ref=branch, commit=commit, agent=pool, source=self.source,
                       dedupe=dedupe_key(repo, commit, pool), event=event, pr=pr, base_ref=base_ref,
                       head_ref=head_ref, origin=origin, hold=hold)
        job, created = self.submit(spec)
        return Enqueued(job.id, repo, branch, commit, job.agent, created, job.status == "waiting-approval")

    def submit_for_engine(self, repo: str, branch: str, commit: str, **trigger: Any) -> tuple[str, bool]:
        """The mirror engine's ``Trigger.submit`` (`raibid.mirror.sync.Submit`; the engine has matched
        the branch already; a pull request's trigger comes as keywords)."""
        e = self.enqueue(repo, branch, commit, **trigger)
        return e.job_id, e.created
