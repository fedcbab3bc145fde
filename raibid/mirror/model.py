"""What the mirror works on and what it reports, as plain dataclasses (the JSON is built from them)."""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIONS = ("created", "synced", "unchanged", "skipped", "archived", "deleted", "failed")
STATES = ("in-sync", "behind", "missing-target", "missing-source", "diverged")


@dataclass
class Resolved:
    """One repository to mirror, as the config resolves it."""

    source: str  # OWNER/NAME on GitHub
    target: str  # ORG/NAME on Gitea
    entry: str  # which config entry it came from: "repos[0]", "lists[FILE]", "orgs[NAME]"
    clone_url: str = ""  # from the API's answer, never built from a host name
    html_url: str = ""
    branches: str | None = None  # regex of mirrored branch names
    on_missing: str = "keep"
    gone: bool = False  # a mirror whose source disappeared upstream (org entries)
    error: str | None = None  # the source could not be looked up (or the whole entry failed)
    unreadable: bool = False  # with error: GitHub did not say (rate limit, 403, 5xx), not "it does not exist"


@dataclass
class RepoResult:
    source: str
    target: str
    action: str
    refs_changed: int = 0
    duration_s: float = 0.0
    error: str | None = None
    adopted: bool = False  # an existing Gitea repo was taken over instead of creating a duplicate
    note: str | None = None
    jobs: list[str] = field(default_factory=list)  # CI jobs triggered (new or existing via dedupe)


@dataclass
class Summary:
    started_at: str
    finished_at: str
    duration_s: float
    mode: str
    dry_run: bool
    totals: dict[str, int]
    repos: list[RepoResult]
    failed: list[str] = field(default_factory=list)  # sources of failed repos
    triggered: int = 0
    unreachable: bool = False  # every repo failed because a git server could not be reached (exit 5)
    recorded: bool | None = None  # the summary was written to Redis (None: not attempted)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class StatusRow:
    source: str
    target: str
    state: str
    differing: list[str] = field(default_factory=list)  # refs that differ
    error: str | None = None


@dataclass
class ListEntry:
    entry: str
    kind: str  # repo, list, org, user
    name: str
    repos: list[dict[str, str]] = field(default_factory=list)  # {"source", "target"}
    error: str | None = None


def totals(results: list[RepoResult]) -> dict[str, int]:
    counts = {a: 0 for a in ACTIONS}
    for r in results:
        counts[r.action] = counts.get(r.action, 0) + 1
    counts["total"] = len(results)
    return counts
