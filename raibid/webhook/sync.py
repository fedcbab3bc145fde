"""What a GitHub push runs in the background: sync the one repo, then build what it brought.

Pull mode (``mirror.mode: pull``): Gitea's own mirror-sync of the target, then a wait until
Gitea has the pushed commit (a real Gitea syncs asynchronously), then, since Gitea sends no
webhook after a mirror sync, one job per pushed, matching branch for its last commit
(``BuildAfterSync``). Push mode: the mirror engine's sync of that one repository
(``EngineSync``), whose own trigger enqueues the builds.

Both enqueue with the mirror's dedupe key, so whichever path enqueues first wins and the
commit is built once.

A GitHub pull request takes the same paths. Push mode: the engine's sync finds the repo's open
PRs (one API request), pushes each moved ``refs/pull/<n>/head`` to Gitea and enqueues it. Pull
mode: Gitea's mirror-sync copies GitHub's ``refs/pull/*``; ``BuildAfterSync`` waits until
Gitea's ``refs/pull/<n>/head`` is the PR's head sha (read from Gitea's git ref advertisement),
then enqueues it with the same trigger and dedupe key the cron sync would use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid.errors import NotFound, RaibidError
from raibid.gitea.client import split_repo
from raibid.webhook.events import PullRequest, Push
from raibid.webhook.mirrors import MirrorSet
from raibid.webhook.trigger import BuildTrigger

if TYPE_CHECKING:
    from raibid.config.model import MirrorConfig
    from raibid.gitea import Gitea
    from raibid.mirror import Options

log = logging.getLogger("raibid.webhook")


class MirrorSyncFailed(RaibidError):
    pass


class GiteaPullSync:
    """``sync(source)``: Gitea's mirror-sync of the repo that mirrors GitHub ``source``."""

    def __init__(self, gitea: Gitea, mirrors: MirrorSet, *, wait: float = 60.0, interval: float = 0.5) -> None:
        self.gitea = gitea
        self.mirrors = mirrors
        self.wait = wait
        self.interval = interval

    def __call__(self, source: str) -> None:
        target = self.mirrors.target(source)  # a fork or archived repo never gets this far (receiver)
        if target is None:
            raise NotFound(f"{source} is not mirrored")
        self.gitea.mirror_sync(*split_repo(target))

    def pr_arrived(self, target: str, pr: PullRequest) -> str:
        """Wait until Gitea's ``refs/pull/<n>/head`` of ``target`` is ``pr.head_sha``: ``"arrived"``,
        ``"superseded"`` (it holds another commit that is not the one before: a later push to the PR
        cannot be told apart, so the later event builds), or ``"late"``. Read from Gitea's git ref
        advertisement (one request per look), since the API has no route for a PR ref of a mirror."""
        from raibid.mirror import gitengine as g

        owner, name = split_repo(target)
        remote = g.Remote(self.gitea.get_repo(owner, name).clone_url, self.gitea.token)
        deadline = time.monotonic() + self.wait
        while True:
            tip = g.ls_remote(remote).get(pr.ref)
            if tip == pr.head_sha:
                return "arrived"
            if time.monotonic() >= deadline:
                return "late" if tip is None else "superseded"
            time.sleep(self.interval)

    def arrived(self, target: str, push: Push) -> str:
        """Wait for the sync to reach Gitea: ``"arrived"`` (the branch is at ``push.after``),
        ``"superseded"`` (it moved past ``push.before`` to another commit: a later push), or
        ``"late"`` (still at ``before`` when the wait ran out). Gitea syncs in the background."""
        owner, name = split_repo(target)
        deadline = time.monotonic() + self.wait
        while True:
            tip = self.gitea.branch_head(owner, name, push.branch or "")
            if tip == push.after:
                return "arrived"
            if tip is not None and tip != push.before:
                return "superseded"
            if time.monotonic() >= deadline:
                return "late"
            time.sleep(self.interval)


class BuildAfterSync:
    """The worker's ``after`` hook (pull mode): the jobs `.raibid.yml` plans for each pushed, matching
    branch and each pushed tag, read through Gitea's contents API once Gitea has the commit; the
    changed files come from the GitHub payload's commits."""

    def __init__(self, trigger: BuildTrigger, mirrors: MirrorSet, *, pull: GiteaPullSync | None = None) -> None:
        self.trigger = trigger
        self.mirrors = mirrors
        self.pull = pull

    def __call__(self, source: str, pushes: list[Push | PullRequest]) -> None:
        target = self.mirrors.target(source)
        if target is None:
            return
        for push in pushes:
            if isinstance(push, PullRequest):
                self._pull_request(source, target, push)
                continue
            tag = push.tag
            if push.deleted or (tag is None and not self.trigger.wants(target, push.branch)):
                continue
            ref = tag or push.branch or ""
            state = (self.pull.arrived(target, push) if self.pull is not None and tag is None else "arrived")
            if state == "superseded":
                log.info("%s: %s moved past %s; the later push builds", target, ref, push.after[:12])
                continue
            if state == "late":
                log.warning("%s: Gitea does not have %s on %s yet; the cron sync will build it", target,
                            push.after[:12], ref)
                continue
            t = self.trigger.enqueue(target, ref, push.after, event="push" if tag is None else "tag",
                                     before=push.before, changed=push.changed, origin=f"github:{source}")
            log.info("%s@%s (%s): %s", target, push.after[:12], ref,
                     t.error or (", ".join(f"{j.pipeline or '-'} {'queued' if j.created else 'already queued as'} "
                                           f"{j.job_id}" for j in t.jobs) or "no pipeline matches"))


    def _pull_request(self, source: str, target: str, pr: PullRequest) -> None:
        if not self.trigger.wants(target, pr.base_ref):
            return
        state = self.pull.pr_arrived(target, pr) if self.pull is not None else "arrived"
        if state != "arrived":
            log.warning("%s: Gitea's %s is not %s (%s); the cron sync or a later event builds it", target,
                        pr.ref, pr.head_sha[:12], state)
            return
        t = self.trigger.enqueue(target, pr.ref, pr.head_sha, event="pull_request", pr=str(pr.number),
                                 base_ref=pr.base_ref, head_ref=pr.head_ref, origin=f"github:{source}",
                                 fork=pr.fork, author=pr.author)
        log.info("%s#%d@%s: %s", target, pr.number, pr.head_sha[:12],
                 t.error or (", ".join(f"{j.pipeline or '-'} {'queued' if j.created else 'already queued as'} "
                                       f"{j.job_id}{' (waiting for approval)' if j.waiting else ''}"
                                       for j in t.jobs) or "no pipeline matches"))


class EngineSync:
    """``sync(source)`` through the mirror engine (`raibid.mirror`): that one repository, either mode.

    The engine's own trigger (``opts.trigger``) enqueues the builds for the refs the sync moved,
    with the same dedupe key as the cron sync, so the receiver adds no jobs of its own here.

    ``github`` makes a GitHub client; each sync gets its own, so ``mirror.max_wait`` is a
    budget per sync, as for one `mirror sync` run (one client for the receiver's lifetime
    would add up every rate-limit wait since it started and then refuse to wait at all),
    and the worker threads share no client.
    """

    def __init__(self, gitea: Gitea, github: Callable[[], Any], mirror: MirrorConfig, opts: Options, *,
                 base_dir: Path | None = None) -> None:
        self.gitea = gitea
        self.github = github
        self.mirror = mirror
        self.opts = opts
        self.base_dir = base_dir

    def __call__(self, source: str) -> None:
        import dataclasses

        from raibid.mirror import Syncer, TargetIndex, resolve

        github = self.github()
        resolved, _ = resolve(self.mirror, github, None, repos=(source,), base_dir=self.base_dir, jobs=1)
        mine = [r for r in resolved if r.source.lower() == source.lower()]
        if not mine:
            raise NotFound(f"{source}: the mirror config does not resolve it")
        opts = dataclasses.replace(self.opts, github=github if self.mirror.pull_requests else None)
        result = Syncer(self.gitea, TargetIndex(self.gitea), opts).sync_one(mine[0])
        if result.action == "failed":
            raise MirrorSyncFailed(f"{source}: {result.error}")
        log.info("%s -> %s: %s, %d ref(s) moved, jobs %s", source, result.target, result.action,
                 result.refs_changed, ", ".join(result.jobs) or "none")
