"""Push and pull request events from Gitea and GitHub payloads: the few fields a build or a sync needs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from raibid.agents.plan import MAX_CHANGED

# Used with fullmatch: "$" would let a trailing newline through ("mirrors/app\n" is not a repository).
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # SHA-1, or SHA-256 object format
_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class BadPayload(ValueError):
    """A body that is JSON but not a push event we can act on (answered with 400)."""


@dataclass(frozen=True)
class Push:
    repo: str  # OWNER/NAME on the host that sent the event
    ref: str  # refs/heads/main, refs/tags/v1
    before: str
    after: str
    deleted: bool
    fork: bool = False  # GitHub's repository.fork / .archived (the mirror skips those unless asked)
    archived: bool = False
    changed: tuple[str, ...] | None = None  # files the pushed commits touch (`changed_files`); None: unknown

    @property
    def branch(self) -> str | None:
        return self.ref[len("refs/heads/"):] if self.ref.startswith("refs/heads/") else None

    @property
    def tag(self) -> str | None:
        return self.ref[len("refs/tags/"):] if self.ref.startswith("refs/tags/") else None


def changed_files(payload: dict[str, Any], before: str) -> tuple[str, ...] | None:
    """The union of the pushed commits' ``added``, ``modified`` and ``removed`` (Gitea and GitHub), or
    None when the payload cannot tell: no ``commits`` list, a new branch (``before`` all zeros: the
    list is not relative to anything), a force push (``forced``: the list misses what was dropped), a
    list the sender cut (Gitea's ``total_commits`` above its length; GitHub's 2048-commit cap), a
    malformed entry, or more than MAX_CHANGED files."""
    commits = payload.get("commits")
    if not isinstance(commits, list) or set(before) == {"0"} or payload.get("forced") is True:
        return None
    total = payload.get("total_commits")
    if (isinstance(total, int) and total > len(commits)) or len(commits) >= 2048:
        return None
    files: dict[str, None] = {}
    for c in commits:
        if not isinstance(c, dict):
            return None
        for key in ("added", "modified", "removed"):
            names = c.get(key) or []
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                return None
            files.update(dict.fromkeys(names))
            if len(files) > MAX_CHANGED:
                return None
    return tuple(files)


def parse_push(payload: Any) -> Push:
    """The push in a Gitea or GitHub ``push`` payload (both use the same field names)."""
    if not isinstance(payload, dict):
        raise BadPayload("the payload is not a JSON object")
    repo = (payload.get("repository") or {}).get("full_name") if isinstance(payload.get("repository"), dict) else None
    ref = payload.get("ref")
    if not isinstance(repo, str) or not _NAME.fullmatch(repo):
        raise BadPayload("repository.full_name is missing or not OWNER/NAME")
    if not isinstance(ref, str) or not ref.startswith("refs/") or any(c in ref for c in "\x00\x1f\n"):
        raise BadPayload("ref is missing or not a full ref name")
    before, after = _commit_id(payload, "before"), _commit_id(payload, "after")
    deleted = bool(payload.get("deleted")) or set(after) == {"0"}
    r = payload["repository"]
    return Push(repo=repo, ref=ref, before=before, after=after, deleted=deleted, fork=r.get("fork") is True,
                archived=r.get("archived") is True, changed=changed_files(payload, before))


# GitHub says "synchronize", Gitea "synchronized" (a new head commit); both say "opened" and "reopened".
PR_ACTIONS = frozenset({"opened", "synchronize", "synchronized", "reopened"})
_MAX_REF = 255  # bytes of a branch name git accepts in one path component chain, as Gitea caps it


@dataclass(frozen=True)
class PullRequest:
    """A pull request event: build ``head_sha`` of the base repository's ``refs/pull/<number>/head``."""

    repo: str  # the base repository, OWNER/NAME on the host that sent the event
    number: int
    action: str
    head_sha: str
    head_ref: str  # the head branch (in the head repository)
    base_ref: str  # the branch it merges into
    head_repo: str | None  # None: the head repository is gone (a deleted fork)
    author: str | None  # pull_request.user.login
    repo_fork: bool = False  # repository.fork / .archived: the mirror skips those unless asked
    repo_archived: bool = False

    @property
    def fork(self) -> bool:
        """The head is not in the base repository (a fork, or a fork deleted since)."""
        return self.head_repo is None or self.head_repo.lower() != self.repo.lower()

    @property
    def ref(self) -> str:
        return f"refs/pull/{self.number}/head"

    @property
    def builds(self) -> bool:
        return self.action in PR_ACTIONS


def _commit_id(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not _SHA.fullmatch(value):
        raise BadPayload(f"{name} is missing or not a commit id")
    return value


def _branch(value: Any, what: str) -> str:
    if (not isinstance(value, str) or not value or len(value.encode()) > _MAX_REF
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)):
        raise BadPayload(f"{what} is missing or not a branch name")
    return value


def parse_pull_request(payload: Any) -> PullRequest:
    """The fields of a GitHub or Gitea ``pull_request`` payload a build needs (both use these names):
    ``action``, ``number``, ``repository.full_name``, ``pull_request.head.{sha,ref,repo.full_name}``,
    ``pull_request.base.ref`` and ``pull_request.user.login``."""
    if not isinstance(payload, dict):
        raise BadPayload("the payload is not a JSON object")
    repository, pr = payload.get("repository"), payload.get("pull_request")
    if not isinstance(repository, dict) or not isinstance(pr, dict):
        raise BadPayload("repository or pull_request is missing")
    repo = repository.get("full_name")
    if not isinstance(repo, str) or not _NAME.fullmatch(repo):
        raise BadPayload("repository.full_name is missing or not OWNER/NAME")
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise BadPayload("action is missing")
    number = payload.get("number", pr.get("number"))
    if type(number) is not int or not 0 < number < 1 << 31:
        raise BadPayload("number is missing or not a pull request number")
    head, base = pr.get("head"), pr.get("base")
    if not isinstance(head, dict) or not isinstance(base, dict):
        raise BadPayload("pull_request.head or .base is missing")
    sha = head.get("sha")
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise BadPayload("pull_request.head.sha is missing or not a commit id")
    head_repo_obj = head.get("repo")
    head_repo = head_repo_obj.get("full_name") if isinstance(head_repo_obj, dict) else None
    if head_repo is not None and (not isinstance(head_repo, str) or not _NAME.fullmatch(head_repo)):
        raise BadPayload("pull_request.head.repo.full_name is not OWNER/NAME")
    user = pr.get("user")
    author = user.get("login") if isinstance(user, dict) and isinstance(user.get("login"), str) else None
    return PullRequest(repo=repo, number=number, action=action, head_sha=sha,
                       head_ref=_branch(head.get("ref"), "pull_request.head.ref"),
                       base_ref=_branch(base.get("ref"), "pull_request.base.ref"), head_repo=head_repo,
                       author=author, repo_fork=repository.get("fork") is True,
                       repo_archived=repository.get("archived") is True)
