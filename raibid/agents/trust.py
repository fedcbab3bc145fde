"""Trust levels: which repositories are the operator's own code, and which pool builds a job.

A build is hostile code unless its repository is trusted (``agents.trusted``).
Each agent type has two pools: ``<type>`` for trusted builds (job secrets, the
type's cache) and ``<type>-untrusted`` for everything else (no job secret, no
registry credential, a cache of its own). The pool is the job's queue name
(``Job.agent``), chosen once at enqueue by :func:`route`, and checked again by
the agent that claims the job (:meth:`TrustPolicy.admits`). See docs/security.md.

A pull request is trusted only when its base repository is trusted, its head is in that
same repository (not a fork: ``fork``), and, when ``agents.trusted.authors`` lists anyone,
its author is one of them. An untrusted PR build can also be held for approval
(``agents.approval``, :meth:`TrustPolicy.needs_approval`), as Woodpecker's "require
approval for" and Gitea Actions' fork-PR approval do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

UNTRUSTED_SUFFIX = "-untrusted"
APPROVAL = ("forks", "untrusted", "none")  # agents.approval
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
    authors: frozenset[str] = frozenset()  # PR authors (forge logins, lower case); empty: any author
    approval: str = "forks"  # which PR builds wait for `raibid queue approve`: forks | untrusted | none

    @classmethod
    def of(cls, owners: Iterable[str] = (), repos: Iterable[str] = (), *, authors: Iterable[str] = (),
           approval: str = "forks") -> TrustPolicy:
        if approval not in APPROVAL:
            raise ValueError(f"approval {approval!r}: one of {', '.join(APPROVAL)}")
        return cls(frozenset(o.lower() for o in owners), tuple(re.compile(rx, re.IGNORECASE) for rx in repos),
                   frozenset(a.lower() for a in authors), approval)

    @classmethod
    def from_config(cls, trusted: object, approval: str = "forks") -> TrustPolicy:
        """From an ``agents.trusted`` section (``owners``, ``repos``, ``authors``) and ``agents.approval``."""
        return cls.of(getattr(trusted, "owners", ()), getattr(trusted, "repos", ()),
                      authors=getattr(trusted, "authors", ()), approval=approval)

    def trusts_pr(self, repo: str, *, fork: bool, author: str | None) -> bool:
        """A PR into ``repo``: its repo trusted, its head not in a fork, its author listed (when any are)."""
        if fork or not self.is_trusted(repo):
            return False
        return not self.authors or (author or "").lower() in self.authors

    def needs_approval(self, *, fork: bool, trusted: bool) -> bool:
        """Whether a PR build waits in ``waiting-approval``: ``forks`` holds fork PRs, ``untrusted`` every
        PR built untrusted (fork, author not listed, or repo not trusted), ``none`` nothing."""
        if self.approval == "forks":
            return fork
        if self.approval == "untrusted":
            return not trusted
        return False

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


def route(agent_type: str, repo: str, policy: TrustPolicy, *, pr: bool = False, fork: bool = False,
          author: str | None = None) -> str:
    """The pool a new job goes to: the one function every enqueuer (CLI, mirror, webhook) uses.

    With ``pr`` the job builds a pull request's head: ``fork`` (its head repository is not
    ``repo``) and ``author`` (its opener's login) count too (:meth:`TrustPolicy.trusts_pr`).
    """
    base, _ = split_pool(agent_type)
    trusted = policy.trusts_pr(repo, fork=fork, author=author) if pr else policy.is_trusted(repo)
    return pool_name(base, trusted)


def secret_allowed(patterns: Iterable[str], repo: str) -> bool:
    """Does a job secret's ``repos`` list (regexes, matched in full, ignoring case as Gitea names do)
    allow ``repo``? The same rule as :meth:`TrustPolicy.is_trusted`, so a trusted repo is never refused a
    secret for the case it is written in."""
    return any(re.fullmatch(rx, repo, re.IGNORECASE) for rx in patterns)
