"""Push events from Gitea and GitHub payloads: the few fields a build or a sync needs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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

    @property
    def branch(self) -> str | None:
        return self.ref[len("refs/heads/"):] if self.ref.startswith("refs/heads/") else None


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
                archived=r.get("archived") is True)
