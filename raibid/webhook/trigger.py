"""Which pushes build, and the enqueue that makes each commit's pipelines one job each whichever way they came.

Every trigger (a Gitea webhook, a GitHub webhook followed by a sync, the cron mirror sync) enqueues
through ``BuildTrigger.enqueue``:

1. read ``.raibid.yml`` at the commit (``read``: the mirror's bare cache in push mode, Gitea's
   contents API otherwise; `cache_reader`, `gitea_reader`);
2. plan (`raibid.agents.plan.plan`): the pipelines whose ``when`` matches the trigger, each with
   its agent type (``agent:``, else ``mirror.trigger.agent``) and context ``raibid/<pipeline>``;
   a malformed file posts one ``error`` status (``raibid/<repo name>``, the message naming
   file:line) and queues nothing; no match queues nothing and posts nothing;
3. queue one job per planned pipeline on the pool ``route(type, repo, policy)`` with the
   process's ``agents.trusted`` (`raibid.agents.trust`), under the dedupe key
   ``<repo>@<commit>:<pool>/<pipeline>``. A pull request routes by its fork and author too
   (``route(..., pr=True, fork=, author=)``), and ``agents.approval`` may hold its jobs in
   ``waiting-approval``; its key is a push's, so a PR head also pushed as a branch builds once.

The receiver's and the CronJob's configs carry the same ``agents.trusted``, so both pick the same
pool, land on the same key, and the queue keeps the first: one job per pipeline per commit.

A commit without ``.raibid.yml`` (or a trigger with no reader) is queued as before the file was
read at enqueue: one job naming no pipeline, whose agent fails it with a message saying the file
is missing. A tag without the file queues nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from raibid.agents.pipeline import FILE_NAME, MAX_BYTES, PipelineError
from raibid.agents.plan import TriggerInfo, default_name, plan
from raibid.agents.trust import TrustPolicy, route, split_pool
from raibid.errors import ConfigError

if TYPE_CHECKING:
    from raibid.gitea import Gitea
    from raibid.mirror.sync import Build
    from raibid.queue import Job, JobSpec

log = logging.getLogger("raibid.webhook")

# (repo, commit) -> the text of .raibid.yml at that commit, None when the commit has none;
# PipelineError when it is there but cannot be used (a symlink, too large, not UTF-8).
Reader = Callable[[str, str], "str | None"]


class PostStatus(Protocol):
    def __call__(self, repo: str, commit: str, context: str, state: str, description: str, *,
                 origin: str | None = None) -> object: ...


@dataclass
class Enqueued:
    job_id: str
    repo: str
    ref: str
    commit: str
    agent: str  # the pool the job went to: <type> or <type>-untrusted
    created: bool  # False: a job for this commit, pipeline and pool existed already
    pipeline: str | None = None
    context: str | None = None
    waiting: bool = False  # held in waiting-approval (agents.approval) until `raibid queue approve`


@dataclass
class Triggered:
    """What one trigger led to: the jobs (new or found by their dedupe key), or the error status posted."""

    repo: str
    ref: str
    commit: str
    event: str
    jobs: list[Enqueued] = field(default_factory=list)
    error: str | None = None  # a malformed .raibid.yml: the description of the `error` status posted

    @property
    def created(self) -> bool:
        return any(j.created for j in self.jobs)

    @property
    def job_ids(self) -> list[str]:
        return [j.job_id for j in self.jobs]

    @property
    def waiting(self) -> bool:
        return any(j.waiting for j in self.jobs)


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{where}: invalid regex {pattern!r}: {e}") from None


def pipeline_text(kind: str, data: bytes | None, size: int, where: str) -> str:
    """The text of a ``.raibid.yml`` found as ``kind``, or PipelineError saying why it cannot be used."""
    if kind == "symlink":
        raise PipelineError(f"{FILE_NAME}: is a symbolic link; raibid reads only a regular file ({where})")
    if kind != "file":
        raise PipelineError(f"{FILE_NAME}: is a {kind}, not a file ({where})")
    if data is None or size > MAX_BYTES or len(data) > MAX_BYTES:
        raise PipelineError(f"{FILE_NAME}: the file is larger than {MAX_BYTES >> 10} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"{FILE_NAME}: not UTF-8 text") from None


def cache_reader(cache: Path) -> Reader:
    """Read the file from a mirror's bare cache (``git ls-tree`` + ``git cat-file``, no clone)."""
    from raibid.mirror.gitengine import read_file_at

    def read(repo: str, commit: str) -> str | None:
        found = read_file_at(cache, commit, FILE_NAME, max_bytes=MAX_BYTES)
        return None if found is None else pipeline_text(found.kind, found.data, found.size, "the mirror cache")

    return read


def gitea_reader(gitea: Gitea) -> Reader:
    """Read the file through Gitea's contents API (``GET .../contents/.raibid.yml?ref=<sha>``)."""
    from raibid.gitea.names import split_repo

    def read(repo: str, commit: str) -> str | None:
        found = gitea.file_at(*split_repo(repo), FILE_NAME, commit)
        return None if found is None else pipeline_text(found.type, found.content, found.size, "Gitea")

    return read


class BuildTrigger:
    """Branch filter plus planned, routed, deduplicated enqueue; ``submit`` is `Queue.submit_deduped`.

    ``agent`` is the default type (``mirror.trigger.agent``), used when the file names none;
    ``policy`` (``agents.trusted``) picks its pool per repo (the default trusts nothing).
    ``source`` labels the jobs (``webhook``, ``mirror``, ``cli``). ``read`` reads the file (None:
    no planning, one job naming no pipeline); ``post_status`` is `Queue.post_status`, for the
    ``error`` status of a malformed file; ``agent_types`` (when given) refuses an ``agent:`` the
    config does not know, as a malformed file.
    """

    def __init__(self, submit: Callable[[JobSpec], tuple[Job, bool]], *, branches: str, agent: str,
                 overrides: Mapping[str, str] | None = None, policy: TrustPolicy | None = None,
                 source: str = "webhook", read: Reader | None = None, post_status: PostStatus | None = None,
                 agent_types: Collection[str] | None = None) -> None:
        self.submit = submit
        self.agent = agent
        self.policy = policy if policy is not None else TrustPolicy()
        self.source = source
        self.read = read
        self.post_status = post_status
        self.agent_types = agent_types
        self.branches = _compile(branches, "mirror.trigger.branches")
        self.overrides = {repo.lower(): _compile(rx, f"webhook.branches[{repo}]")
                          for repo, rx in (overrides or {}).items()}

    def wants(self, repo: str, branch: str | None) -> bool:
        """Whether a push to ``branch`` of ``repo`` builds (per-repo regex first, then the global one)."""
        if branch is None:
            return False
        return bool(self.overrides.get(repo.lower(), self.branches).search(branch))

    def pool(self, repo: str, agent: str | None = None, *, pr: bool = False, fork: bool = False,
             author: str | None = None) -> str:
        """The pool a job of ``repo`` (Gitea OWNER/NAME, as the agent clones it) and type goes to; a pull
        request (``pr``) routes by ``fork`` and ``author`` too (`raibid.agents.trust.route`)."""
        return route(agent or self.agent, repo, self.policy, pr=pr, fork=fork, author=author)

    def _hold(self, pr: bool, fork: bool, pool: str) -> bool:
        """Whether a job on ``pool`` waits in ``waiting-approval`` (``agents.approval``; pull requests only)."""
        return pr and self.policy.needs_approval(fork=fork, trusted=split_pool(pool)[1])

    def enqueue(self, repo: str, ref: str, commit: str, *, event: str = "push", pipeline: str | None = None,
                context: str | None = None, pr: str | None = None, base_ref: str | None = None,
                head_ref: str | None = None, origin: str | None = None, before: str | None = None,
                changed: tuple[str, ...] | None = None, read: Reader | None = None, fork: bool = False,
                author: str | None = None) -> Triggered:
        """Plan and queue what ``commit`` of ``repo`` gets for ``event`` (the trigger fields of
        `raibid.queue.model.TRIGGER_FIELDS` as keywords). ``ref`` is the branch (push, manual, a PR's
        head branch) or the tag name (tag). ``pipeline`` keeps only that pipeline; ``context`` is used
        only for a job that names no pipeline. ``changed``: the files changed since ``before`` (None:
        unknown, and every ``path:`` condition matches). ``read`` overrides the trigger's reader.

        A pull request (``event="pull_request"``, ``ref`` its ``refs/pull/<n>/head``, ``head_ref`` its
        head branch) routes by ``fork`` and ``author`` too, and may be held for approval
        (``agents.approval``); its dedupe key is a push's, so a PR head that is also a pushed branch tip
        builds each pipeline once."""
        from raibid.queue import JobSpec, dedupe_key

        out = Triggered(repo, ref, commit, event)
        reader = read or self.read
        is_pr = event == "pull_request"
        branch = None if event == "tag" else (head_ref or ref) if is_pr else ref
        info = TriggerInfo(event=event, repo=repo, commit=commit, branch=branch,
                           tag=ref if event == "tag" else None, before=before, changed=changed, pr=pr,
                           base_ref=base_ref, head_ref=head_ref, origin=origin)
        try:
            text = reader(repo, commit) if reader is not None else None
            planned = (plan(text, FILE_NAME, info, default_agent=self.agent, agent_types=self.agent_types)
                       if text is not None else None)
        except PipelineError as e:
            out.error = e.message[:500]
            if self.post_status is not None:
                self.post_status(repo, commit, f"raibid/{default_name(repo)}", "error", out.error, origin=origin)
            log.info("%s@%s: %s; no job queued", repo, commit[:12], out.error)
            return out
        if planned is None:  # no file (or no reader): the one job of before, which names no pipeline
            if event == "tag":
                return out
            pool = self.pool(repo, pr=is_pr, fork=fork, author=author)
            spec = JobSpec(repo=repo, ref=ref, commit=commit, agent=pool, source=self.source,
                           dedupe=dedupe_key(repo, commit, pool), context=context,
                           hold=self._hold(is_pr, fork, pool), event=event, pr=pr, base_ref=base_ref,
                           head_ref=head_ref, origin=origin)
            job, created = self.submit(spec)
            out.jobs.append(Enqueued(job.id, repo, ref, commit, job.agent, created, None, context,
                                     job.status == "waiting-approval"))
            return out
        for p in planned:
            if pipeline is not None and p.pipeline != pipeline:
                continue
            pool = self.pool(repo, p.agent, pr=is_pr, fork=fork, author=author)
            spec = JobSpec(repo=repo, ref=ref, commit=commit, agent=pool, source=self.source,
                           dedupe=f"{dedupe_key(repo, commit, pool)}/{p.pipeline}", pipeline=p.pipeline,
                           context=p.context, hold=self._hold(is_pr, fork, pool), event=event, pr=pr,
                           base_ref=base_ref, head_ref=head_ref, origin=origin)
            job, created = self.submit(spec)
            out.jobs.append(Enqueued(job.id, repo, ref, commit, job.agent, created, p.pipeline, p.context,
                                     job.status == "waiting-approval"))
        return out

    def submit_for_engine(self, build: Build) -> list[str]:
        """The mirror engine's ``Trigger.submit`` (`raibid.mirror.sync.Submit`; the engine has matched
        the branch already): the ids of the jobs queued (or found) for one moved ref. The file is read
        from the engine's bare cache when it has the commit, else with this trigger's reader (Gitea)."""
        from raibid.mirror.gitengine import has_object

        read = cache_reader(build.cache) if build.cache is not None and has_object(build.cache, build.commit) \
            else None
        t = self.enqueue(build.repo, build.ref, build.commit, event=build.event, before=build.before,
                         changed=build.changed, origin=build.origin, read=read, pr=build.pr,
                         base_ref=build.base_ref, head_ref=build.head_ref, fork=build.fork, author=build.author)
        return t.job_ids

