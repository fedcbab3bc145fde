"""What a trigger enqueues: the pipelines of a ``.raibid.yml`` whose ``when`` matches it.

Woodpecker's semantics (``pipeline/frontend/yaml/constraint/constraint.go``), so habits carry over:
``when`` is OR between its items and AND inside one; no ``when`` matches every event;
``event`` must list the trigger's event when set; ``branch`` is not checked for a tag, and
for a pull request it is the base (target) branch; ``path`` is checked for push and
pull_request only, and changed files that are unknown or empty match (Woodpecker's
``Path.Match``: "no commit files" gives ``on_empty``, default true).

Planning is pure: the enqueuer reads the file, calls `plan`, and queues one job per
`PlannedJob` (`raibid.webhook.trigger.BuildTrigger`). The local runner plans the same way.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from raibid.agents.pipeline import (
    EVENTS,
    FILE_NAME,
    Condition,
    Pipeline,
    PipelineError,
    parse_file,
)

__all__ = ["DEFAULT_AGENT", "PlannedJob", "PipelineError", "TriggerInfo", "context_for", "matches", "plan"]

DEFAULT_AGENT = "generic"  # agents.default_type's and mirror.trigger.agent's default
MAX_CHANGED = 2000  # changed files an enqueuer keeps for `path:`; more is unknown (every `path:` matches)


@dataclass(frozen=True)
class TriggerInfo:
    """What happened: the values ``when`` is matched against, and what the jobs will carry."""

    event: str  # push | pull_request | tag | manual
    repo: str  # OWNER/NAME in Gitea, as the agent clones it
    commit: str
    branch: str | None = None  # the pushed branch (push, manual) or the PR's head branch
    tag: str | None = None  # the tag name, for event tag
    before: str | None = None  # the previous tip (push), None when new or unknown
    changed: tuple[str, ...] | None = None  # files changed between before and commit; None: unknown
    pr: str | None = None
    base_ref: str | None = None  # the PR's base (target) branch: what `branch:` matches for a PR
    head_ref: str | None = None
    origin: str | None = None  # github:OWNER/NAME for a GitHub mirror

    @property
    def ref(self) -> str:
        """The ref a job records: the branch, the tag, else the commit."""
        return self.branch or self.tag or self.commit


@dataclass(frozen=True)
class PlannedJob:
    """One job to queue: a pipeline of the file, its agent type and its commit status context."""

    pipeline: str  # the pipeline's name (the one-pipeline format: the repo's name part)
    agent: str  # the agent type (not the pool: `raibid.agents.trust.route` picks that)
    context: str  # raibid/<pipeline>
    line: int = 1  # where the pipeline starts in the file
    steps: tuple[str, ...] = ()  # step names, for a summary (the agent re-reads the steps at run time)
    secrets: tuple[str, ...] = ()  # the job secrets it asks for (granted to trusted builds only)
    env: dict[str, str] = field(default_factory=dict)  # the pipeline-wide env
    definition: Pipeline | None = field(default=None, compare=False, repr=False)  # the parsed pipeline


def context_for(pipeline: str) -> str:
    return f"raibid/{pipeline}"


def default_name(repo: str) -> str:
    """The name of the one pipeline of a file without ``pipelines:``: the repo's name part."""
    return repo.rsplit("/", 1)[-1]


def plan(text: str, source: str, trigger: TriggerInfo, *, default_agent: str = DEFAULT_AGENT,
         agent_types: Collection[str] | None = None) -> list[PlannedJob]:
    """The jobs ``trigger`` gets from the ``.raibid.yml`` ``text`` (``source`` names it in messages).

    An empty list: nothing matches (no job and no status). A malformed file, or an ``agent:`` not in
    ``agent_types`` (when given): `PipelineError` naming ``source:line``.
    """
    if trigger.event not in EVENTS:
        raise ValueError(f"unknown event {trigger.event!r}")
    f = parse_file(text, source or FILE_NAME, default_name=default_name(trigger.repo))
    known = set(agent_types) if agent_types is not None else None
    out: list[PlannedJob] = []
    for p in f.pipelines:
        agent = p.agent or default_agent
        if known is not None and p.agent is not None and agent not in known:
            raise PipelineError(f"{source}:{p.line}: pipeline {p.name!r}: agent type {agent!r} is not "
                                f"configured here (known: {', '.join(sorted(known))})")
        if not matches(p.when, trigger):
            continue
        out.append(PlannedJob(p.name, agent, context_for(p.name), p.line, tuple(s.name for s in p.steps),
                              tuple(p.secrets), dict(p.env), p))
    return out


def matches(when: list[Condition], trigger: TriggerInfo) -> bool:
    """Woodpecker's ``When.Match``: no condition matches everything, else any one must hold."""
    return not when or any(_holds(c, trigger) for c in when)


def _holds(c: Condition, t: TriggerInfo) -> bool:
    if c.events and t.event not in c.events:
        return False
    if c.path is not None and t.event in ("push", "pull_request") and not c.path.match_files(t.changed):
        return False
    if c.branch is not None and t.event != "tag":
        branch = t.base_ref if t.event == "pull_request" else t.branch
        if branch is None or not c.branch.match(branch):
            return False
    return True
