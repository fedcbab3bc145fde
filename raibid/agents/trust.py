"""Trust levels: which repositories are the operator's own code, and which pool builds a job.

A build is hostile code unless its repository is trusted (``agents.trusted``).
Each agent type has two pools: ``<type>`` for trusted builds (job secrets, the
type's cache) and ``<type>-untrusted`` for everything else (no job secret, no
registry credential, a cache of its own). The pool is the job's queue name
(``Job.agent``), chosen once at enqueue by :func:`route`, and checked again by
the agent that claims the job (:meth:`TrustPolicy.admits`). See docs/security.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

UNTRUSTED_SUFFIX = "-untrusted"
MAX_TYPE_NAME = 63 - len(UNTRUSTED_SUFFIX)  # a pool name is a queue and a label value: 63 at most


def pool_name(agent_type: str, trusted: bool) -> str:
    """The queue (stream and KEDA pool) a job of ``agent_type`` goes to at this trust level."""
    return agent_type if trusted else agent_type + UNTRUSTED_SUFFIX


def split_pool(name: str) -> tuple[str, bool]:
    """``(agent type, trusted)`` of a pool or queue name: ``rust-untrusted`` -> ``("rust", False)``."""
    if name.endswith(UNTRUSTED_SUFFIX) and len(name) > len(UNTRUSTED_SUFFIX):
        return name[: -len(UNTRUSTED_SUFFIX)], False
    return name, True


@dataclass(frozen=True)
class TrustPolicy:
    """``agents.trusted`` as a predicate on Gitea ``OWNER/NAME``. The empty policy trusts nothing."""

    owners: frozenset[str] = frozenset()
    patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def of(cls, owners: Iterable[str] = (), repos: Iterable[str] = ()) -> TrustPolicy:
        return cls(frozenset(o.lower() for o in owners), tuple(re.compile(rx, re.IGNORECASE) for rx in repos))

    @classmethod
    def from_config(cls, trusted: object) -> TrustPolicy:
        """From an ``agents.trusted`` section (``owners``, ``repos``)."""
        return cls.of(getattr(trusted, "owners", ()), getattr(trusted, "repos", ()))

    def is_trusted(self, repo: str) -> bool:
        """Gitea names compare case-insensitively, as Gitea does (owners and regexes alike); regexes match the
        whole name."""
        owner, sep, name = repo.partition("/")
        if not sep or not owner or not name or "/" in name or "\n" in repo:
            return False
        if owner.lower() in self.owners:
            return True
        return any(p.fullmatch(repo) for p in self.patterns)

    def admits(self, repo: str, pool: str) -> bool:
        """May a job of ``repo`` run in ``pool``? Untrusted pools take any repo; trusted ones only trusted repos."""
        _, trusted_pool = split_pool(pool)
        return not trusted_pool or self.is_trusted(repo)


def route(agent_type: str, repo: str, policy: TrustPolicy) -> str:
    """The pool a new job goes to: the one function every enqueuer (CLI, mirror, webhook) uses."""
    base, _ = split_pool(agent_type)
    return pool_name(base, policy.is_trusted(repo))


def secret_allowed(patterns: Iterable[str], repo: str) -> bool:
    """Does a job secret's ``repos`` list (regexes, matched in full, ignoring case as Gitea names do)
    allow ``repo``? The same rule as :meth:`TrustPolicy.is_trusted`, so a trusted repo is never refused a
    secret for the case it is written in."""
    return any(re.fullmatch(rx, repo, re.IGNORECASE) for rx in patterns)
