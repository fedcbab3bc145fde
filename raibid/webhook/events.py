"""Push events from Gitea and GitHub payloads: the few fields a build or a sync needs."""

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
    ref, before, after = payload.get("ref"), payload.get("before"), payload.get("after")
    if not isinstance(repo, str) or not _NAME.fullmatch(repo):
        raise BadPayload("repository.full_name is missing or not OWNER/NAME")
    if not isinstance(ref, str) or not ref.startswith("refs/") or any(c in ref for c in "\x00\x1f\n"):
        raise BadPayload("ref is missing or not a full ref name")
    for name, value in (("before", before), ("after", after)):
        if not isinstance(value, str) or not _SHA.fullmatch(value):
            raise BadPayload(f"{name} is missing or not a commit id")
    deleted = bool(payload.get("deleted")) or set(after) == {"0"}
    r = payload["repository"]
    return Push(repo=repo, ref=ref, before=before, after=after, deleted=deleted, fork=r.get("fork") is True,
                archived=r.get("archived") is True, changed=changed_files(payload, before))
