"""The sync orchestration: each resolved repository in parallel, each with its own deadline.

Push mode, per repository: read both sides' refs (the fast path: equal means
``unchanged``, no fetch, no push); otherwise create or adopt the target, fetch
into the cache and force-push the differing branches and tags, deleting those
gone upstream. With ``Options.github`` (PR discovery) each repository also costs one
paginated ``GET /repos/{o}/{r}/pulls?state=open``: an open pull request whose
``refs/pull/<n>/head`` on Gitea is not its head sha is fetched and pushed there (and
built, as a ``pull_request`` job); when every head is in place that is all, no git
work. Pull mode hands the work to Gitea (``repos/migrate`` with ``mirror: true``,
then ``mirror-sync``; Gitea's pull mirror copies ``refs/pull/*`` itself). Repositories gone upstream get their
org entry's ``on_missing`` policy. One repository failing never stops the others.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid.agents.plan import MAX_CHANGED
from raibid.errors import NotFound, RaibidError
from raibid.mirror import gitengine as g
from raibid.mirror.model import RepoResult, Resolved, StatusRow, Summary, totals
from raibid.mirror.pending import LocalPending, Owed, PendingStore
from raibid.mirror.resolve import TargetIndex, description_for, source_of
from raibid.timeutil import now_rfc3339

if TYPE_CHECKING:
    from raibid.gitea import Gitea
    from raibid.gitea.models import Repo as GiteaRepo

@dataclass
class Build:
    """One moved ref the engine asks its trigger to build."""

    repo: str  # the Gitea target, as Gitea spells it
    ref: str  # the branch name, the tag name for event "tag", refs/pull/<n>/head for "pull_request"
    commit: str  # the commit (an annotated tag peeled)
    event: str = "push"  # push | tag | pull_request
    before: str | None = None  # the target's old tip, when this run moved it
    changed: tuple[str, ...] | None = None  # files changed since ``before``; None: unknown
    origin: str | None = None  # "github:OWNER/NAME" of the source
    cache: Path | None = None  # the bare cache holding the commit (push mode), for reading .raibid.yml
    # A pull request's: its number, base and head branches, whether its head is in a fork, its author.
    pr: str | None = None
    base_ref: str | None = None
    head_ref: str | None = None
    fork: bool = False
    author: str | None = None


# A moved ref -> the ids of its jobs (new, or found by their dedupe keys).
Submit = Callable[[Build], list[str]]
TAG_PREFIX = "refs/tags/"  # an owed tag is written down as its full ref; an owed branch by its name


@dataclass
class Trigger:
    branches: str
    submit: Submit
    on_create: bool = False
    # Where owed jobs are written down (`raibid.mirror.pending.PendingTriggers`: Redis, so they outlive the
    # pod); None keeps them in memory for this process only.
    pending: PendingStore | None = None


@dataclass
class Options:
    cache_dir: Path
    mode: str = "push"
    jobs: int = 4
    timeout: float = 600.0
    dry_run: bool = False
    allow_delete: bool = False
    github_token: str | None = None
    gitea_token: str | None = None
    trigger: Trigger | None = None
    # PR discovery (`raibid.github.GitHub`, or anything with ``list_open_pulls(owner, name)``); None: off.
    github: Any = None


class _Failed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message



def _pull_build(repo: str, ref: str, commit: str, trigger: str, cache: Path | None) -> Build:
    """The `Build` of an owed pull request head (``trigger``: the JSON `Syncer._owed_pulls` wrote down)."""
    try:
        t = json.loads(trigger)
    except ValueError:
        t = None
    if not isinstance(t, dict):
        t = {}

    def text(key: str) -> str | None:
        v = t.get(key)
        return v if isinstance(v, str) else None

    return Build(repo, ref, commit, "pull_request", origin=text("origin"), cache=cache, pr=text("pr"),
                 base_ref=text("base_ref"), head_ref=text("head_ref"), fork=t.get("fork") is not False,
                 author=text("author"))


class Syncer:
    def __init__(self, gitea: Gitea, targets: TargetIndex, opts: Options) -> None:
        self.gitea = gitea
        self.targets = targets
        self.opts = opts
        self._org_lock = threading.Lock()
        self._org_errors: dict[str, str | None] = {}
        self._unreachable: set[int] = set()  # results that failed because a git server was unreachable
        trigger = opts.trigger
        self._pending: PendingStore = (trigger.pending if trigger is not None and trigger.pending is not None
                                       else LocalPending())
        self._pending_unreadable = False  # a read failed this run: unchanged repos stop asking (a hung Redis)

    # ------------------------------------------------------------------ the run
    def run(self, resolved: list[Resolved],
            on_result: Callable[[RepoResult], None] | None = None) -> Summary:
        started, t0 = now_rfc3339(), time.monotonic()
        lock = threading.Lock()

        def one(r: Resolved) -> RepoResult:
            result = self.sync_one(r)
            if on_result is not None:
                with lock:
                    on_result(result)
            return result

        pool = ThreadPoolExecutor(max_workers=max(1, self.opts.jobs), thread_name_prefix="mirror")
        try:
            results = list(pool.map(one, resolved))
        except BaseException:  # Ctrl-C: start no further repo (running git commands end by their deadline)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return Summary(started_at=started, finished_at=now_rfc3339(), duration_s=round(time.monotonic() - t0, 3),
                       mode=self.opts.mode, dry_run=self.opts.dry_run, totals=totals(results), repos=results,
                       failed=[r.source for r in results if r.action == "failed"],
                       triggered=sum(len(r.jobs) for r in results),
                       unreachable=bool(results) and all(id(r) in self._unreachable for r in results))

    def sync_one(self, r: Resolved) -> RepoResult:
        t0 = time.monotonic()
        deadline = t0 + self.opts.timeout
        result = RepoResult(source=r.source, target=r.target, action="failed")
        try:
            if r.error:
                raise _Failed(r.error)
            if r.gone:
                self._missing(r, result)
            elif self.opts.mode == "pull":
                self._pull(r, result, deadline)
            else:
                self._push(r, result, deadline)
        except _Failed as e:
            result.action, result.error = "failed", e.message
        except g.RemoteUnreachable as e:
            result.action, result.error = "failed", e.message
            with self._org_lock:
                self._unreachable.add(id(result))
        except RaibidError as e:
            result.action, result.error = "failed", e.message
        except Exception as e:  # a bug in one repo must not stop the rest; the message still says what
            result.action, result.error = "failed", f"internal error: {type(e).__name__}: {e}"
        if result.action == "failed" and time.monotonic() > deadline:
            result.error = f"timed out after {self.opts.timeout:.0f}s ({result.error})"
        result.duration_s = round(time.monotonic() - t0, 3)
        return result

    # ------------------------------------------------------------------ pieces
    def _ensure_org(self, org: str) -> None:
        with self._org_lock:
            if org.lower() in self._org_errors:
                error = self._org_errors[org.lower()]
                if error:
                    raise _Failed(error)
                return
            error = None
            if self.targets.repos(org) is None and not self.opts.dry_run:
                try:
                    self.gitea.create_org(org, exist_ok=True)
                    self.targets.mark_org(org)
                except RaibidError as e:
                    error = f"cannot create the Gitea org {org!r}: {e.message}"
            self._org_errors[org.lower()] = error
            if error:
                raise _Failed(error)

    def _find_target(self, r: Resolved, result: RepoResult) -> GiteaRepo | None:
        found = self.targets.find(r.target, [r.clone_url, r.html_url])
        if found is not None and found.full_name.lower() != r.target.lower():
            result.adopted = True
            result.note = f"adopted {found.full_name} (its original_url is the source)"
        if found is not None:
            # Gitea's spelling, not the config's ("Mirrors/App" finds mirrors/app): jobs and their dedupe
            # keys must name the repo as Gitea's push webhooks do, or one commit is queued twice.
            result.target = found.full_name
        return found

    def _owed(self, moves: dict[str, tuple[str | None, str | None]], first_time: bool) -> list[Owed]:
        """One build per moved trigger branch and per new or moved tag (none on a repo's first sync unless
        on_create); `.raibid.yml` then says which pipelines each gets. A deleted ref builds nothing."""
        t = self.opts.trigger
        if t is None or (first_time and not t.on_create):
            return []
        rx = re.compile(t.branches)
        return [(ref[11:] if ref.startswith("refs/heads/") else ref, new) for ref, (_, new) in sorted(moves.items())
                if new is not None and ((ref.startswith("refs/heads/") and rx.search(ref[11:]))
                                        or ref.startswith(TAG_PREFIX))]

    def _open_pulls(self, r: Resolved) -> list[Any] | None:
        """The source's open pull requests (one paginated API request), or None with discovery off."""
        if self.opts.github is None:
            return None
        owner, _, name = r.source.partition("/")
        return self.opts.github.list_open_pulls(owner, name)

    def _listed_pulls(self, r: Resolved, result: RepoResult) -> list[Any]:
        """The open PRs, or none when GitHub would not list them (a note says so): the branches and tags
        still sync, and the next run lists again."""
        try:
            return self._open_pulls(r) or []
        except RaibidError as e:
            result.note = f"open pull requests not listed: {e.message}"
            return []

    def _owed_pulls(self, r: Resolved, pulls: list[Any], heads: dict[str, str], first_time: bool) -> list[Owed]:
        """One ``pull_request`` job per moved PR head whose base branch matches the trigger."""
        t = self.opts.trigger
        if t is None or (first_time and not t.on_create):
            return []
        rx = re.compile(t.branches)
        out: list[Owed] = []
        for p in pulls:
            ref = f"refs/pull/{p.number}/head"
            if ref not in heads or not rx.search(p.base_ref):
                continue
            fork = p.head_repo is None or p.head_repo.lower() != r.source.lower()
            trigger = {"event": "pull_request", "pr": str(p.number), "base_ref": p.base_ref,
                       "head_ref": p.head_ref, "origin": f"github:{r.source}", "fork": fork, "author": p.author}
            out.append((ref, heads[ref], json.dumps(trigger, sort_keys=True)))
        return out

    def _owe(self, result: RepoResult, owed: list[Owed]) -> None:
        """Write down the jobs this push will owe before pushing; when that is impossible, push nothing."""
        if not owed:
            return
        try:
            self._pending.add(result.target, owed)
        except RaibidError as e:
            raise _Failed(f"cannot record the CI job(s) this sync would trigger ({e.message}); nothing was "
                          "pushed, the next run syncs it again") from None

    def _pay(self, result: RepoResult, *, owed_now: bool, r: Resolved | None = None,
             moves: dict[str, tuple[str | None, str | None]] | None = None) -> None:
        """Enqueue every job owed to this repo, this run's and any earlier run's (dedupe makes a repeat a
        no-op); each is crossed off once queued, and what cannot be queued stays owed for the next run.

        In push mode the trigger reads `.raibid.yml` from the bare cache, and the changed files of a ref
        this run moved are ``git diff --name-only old new`` there (bounded; a new branch, a ref an
        earlier run moved, or a diff too long: unknown, and every `path:` condition matches)."""
        t = self.opts.trigger
        if t is None or self.opts.dry_run or (self._pending_unreadable and not owed_now):
            return
        try:
            owed = self._pending.items(result.target)
        except RaibidError as e:
            if owed_now:
                raise _Failed(f"could not enqueue the CI jobs (kept for the next run): {e.message}") from None
            self._pending_unreadable = True
            return  # an unchanged repo: whatever an earlier run owes waits for a run that can read it
        if not owed:
            return
        cache = g.cache_path(self.opts.cache_dir, r.clone_url, r.source) if r is not None else None
        if cache is not None and not (cache / "HEAD").exists():
            cache = None
        origin = f"github:{r.source}" if r is not None else None
        for item in owed:
            branch, sha = item[0], item[1]
            tag = branch.startswith(TAG_PREFIX)
            ref = f"refs/tags/{branch[len(TAG_PREFIX):]}" if tag else f"refs/heads/{branch}"
            name = branch[len(TAG_PREFIX):] if tag else branch
            try:
                if len(item) > 2:  # a pull request's head, with the trigger written down when it was owed
                    job_ids = t.submit(_pull_build(result.target, branch, sha, item[2], cache))
                else:
                    commit = g.peel(cache, sha) if tag and cache is not None else sha
                    old = (moves or {}).get(ref, (None, None))[0]
                    changed = (g.changed_files(cache, old, commit, limit=MAX_CHANGED)
                               if cache is not None and not tag and old is not None else None)
                    job_ids = t.submit(Build(result.target, name, commit, "tag" if tag else "push", old, changed,
                                             origin, cache))
            except RaibidError as e:
                raise _Failed(f"could not enqueue the CI job for {name} (kept for the next run): "
                              f"{e.message}") from None
            result.jobs.extend(job_ids)
            try:
                self._pending.done(result.target, item)
            except RaibidError:
                pass  # stays owed: the next run enqueues it again and finds the job by its dedupe key

    def _push(self, r: Resolved, result: RepoResult, deadline: float) -> None:
        if self.opts.dry_run:  # writes nothing, not even a lock file
            self._push_locked(r, result, deadline)
            return
        with g.repo_lock(g.cache_path(self.opts.cache_dir, r.clone_url, r.source), deadline=deadline):
            self._push_locked(r, result, deadline)

    def _push_locked(self, r: Resolved, result: RepoResult, deadline: float) -> None:
        opts = self.opts
        branches = re.compile(r.branches) if r.branches else None
        src = g.Remote(r.clone_url, opts.github_token)
        try:
            want = g.mirrored(g.ls_remote(src, deadline=deadline), branches)
        except g.SourceGone:
            raise _Failed("source repository not found (deleted upstream, or the token cannot read it)") from None
        pulls = self._listed_pulls(r, result)
        org, name = r.target.split("/", 1)
        self._ensure_org(org)
        target = self._find_target(r, result)
        have: dict[str, str] = {}
        pulls_moved: dict[str, str] = {f"refs/pull/{p.number}/head": p.head_sha for p in pulls}
        if target is not None:
            if target.mirror:
                raise _Failed(f"{target.full_name} is a Gitea pull mirror; push mode cannot write to it "
                              "(use mirror.mode: pull, or convert it in Gitea)")
            if target.archived:
                raise _Failed(f"{target.full_name} is archived in Gitea; unarchive it to mirror into it")
            have_refs = g.ls_remote(g.Remote(target.clone_url, opts.gitea_token), deadline=deadline)
            have = g.mirrored(have_refs)
            pulls_moved = {ref: sha for ref, sha in pulls_moved.items() if have_refs.get(ref) != sha}
            if want == have and not pulls_moved:
                result.action = "unchanged"
                self._pay(result, owed_now=False, r=r)
                return
        first_time = target is None or not have
        moves = g.changes(want, have)
        if opts.dry_run:
            result.action = "created" if target is None else "synced"
            result.refs_changed = len(moves) + len(pulls_moved)
            result.note = "dry run: " + (f"would create {r.target}" if target is None else
                                         f"would move {len(moves)} ref(s)")
            return
        created = False
        if target is None:
            target, created = self.gitea.create_repo(org, name, description=description_for(r.html_url or r.clone_url),
                                                     exist_ok=True)
            self.targets.add(target)
            result.target = target.full_name
        elif source_of(target) != r.source.lower():
            was = source_of(target)
            result.adopted = True
            result.note = result.note or (f"adopted the existing {target.full_name}"
                                          + (f" (it mirrored {was})" if was else ""))
            if not target.description:
                self.gitea.edit_repo(target.owner, target.name, description=description_for(r.html_url or r.clone_url))
        cache = g.cache_path(opts.cache_dir, r.clone_url, r.source)
        g.fetch(cache, src, deadline=deadline)
        local = g.mirrored(g.local_refs(cache), branches)
        moves = g.changes(local, have)
        heads = g.fetch_pull_heads(cache, src, sorted(pulls_moved), deadline=deadline) if pulls_moved else {}
        owed = self._owed(moves, first_time) + self._owed_pulls(r, pulls, heads, first_time)
        self._owe(result, owed)  # before the push: a run that dies after it leaves the jobs owed, not lost
        remote = g.Remote(target.clone_url, opts.gitea_token)
        g.push(cache, remote, moves, deadline=deadline)
        # After the branches: a PR head is usually a descendant of one, so its push carries few objects.
        g.push(cache, remote, {ref: (None, sha) for ref, sha in heads.items()}, deadline=deadline)
        result.refs_changed = len(moves) + len(heads)
        result.action = "created" if created else ("synced" if moves or heads else "unchanged")
        self._pay(result, owed_now=bool(owed), r=r, moves=moves)

    def _pull(self, r: Resolved, result: RepoResult, deadline: float) -> None:
        opts = self.opts
        org, name = r.target.split("/", 1)
        self._ensure_org(org)
        target = self._find_target(r, result)
        if target is None:
            result.action = "created"
            if opts.dry_run:
                result.note = f"dry run: would create the pull mirror {r.target}"
                return
            repo = self.gitea.migrate(r.clone_url, org, name, mirror=True, auth_token=opts.github_token,
                                      description=description_for(r.html_url or r.clone_url))
            self.targets.add(repo)
            return
        if not target.mirror:
            raise _Failed(f"{target.full_name} exists and is not a pull mirror (mode pull adopts only pull mirrors)")
        branches = re.compile(r.branches) if r.branches else None
        try:
            want = g.mirrored(g.ls_remote(g.Remote(r.clone_url, opts.github_token), deadline=deadline), branches)
        except g.SourceGone:
            raise _Failed("source repository not found") from None
        have_refs = g.ls_remote(g.Remote(target.clone_url, opts.gitea_token), deadline=deadline)
        moves = g.changes(want, g.mirrored(have_refs))
        # Gitea's pull mirror copies GitHub's refs/pull/* itself: an open PR whose head it lacks needs a sync.
        pulls_moved = [p for p in self._listed_pulls(r, result)
                       if have_refs.get(f"refs/pull/{p.number}/head") != p.head_sha]
        if not moves and not pulls_moved:
            result.action = "unchanged"
            return
        result.action, result.refs_changed = "synced", len(moves) + len(pulls_moved)
        if opts.dry_run:
            result.note = "dry run: would ask Gitea to sync"
            return
        self.gitea.mirror_sync(target.owner, target.name)

    def _missing(self, r: Resolved, result: RepoResult) -> None:
        opts = self.opts
        policy = r.on_missing
        target = self.targets.find(r.target, [])
        prefix = "dry run: " if opts.dry_run else ""
        if target is None:
            result.action, result.note = "unchanged", "gone upstream, and no longer in Gitea"
            return
        if policy == "archive":
            if target.archived:
                result.action, result.note = "unchanged", "gone upstream; already archived"
                return
            result.action, result.note = "archived", f"{prefix}gone upstream (on_missing: archive)"
            if not opts.dry_run:
                self.gitea.edit_repo(target.owner, target.name, archived=True)
            return
        if policy == "delete":
            if not opts.allow_delete:
                result.action = "skipped"
                result.note = "gone upstream; on_missing is delete but --allow-delete was not given"
                return
            result.action, result.note = "deleted", f"{prefix}gone upstream (on_missing: delete)"
            if not opts.dry_run:
                try:
                    self.gitea.delete_repo(target.owner, target.name)
                except NotFound:
                    pass
            return
        result.action, result.note = "skipped", "gone upstream; kept (on_missing: keep)"

    # ------------------------------------------------------------------ status
    def status(self, resolved: list[Resolved]) -> list[StatusRow]:
        with ThreadPoolExecutor(max_workers=max(1, self.opts.jobs), thread_name_prefix="mirror") as pool:
            return list(pool.map(self._status_one, resolved))

    def _status_one(self, r: Resolved) -> StatusRow:
        row = StatusRow(source=r.source, target=r.target, state="missing-source")
        if r.error and r.unreadable:  # GitHub did not answer the lookup: unknown, not missing
            row.state, row.error = "diverged", r.error
            return row
        if r.error or r.gone:
            row.error = r.error or "gone upstream"
            return row
        deadline = time.monotonic() + self.opts.timeout
        branches = re.compile(r.branches) if r.branches else None
        try:
            want = g.mirrored(g.ls_remote(g.Remote(r.clone_url, self.opts.github_token), deadline=deadline),
                              branches)
        except g.SourceGone:
            row.error = "source repository not found"
            return row
        except RaibidError as e:
            row.state, row.error = "diverged", e.message  # unknown: counted as drift, with the reason
            return row
        target = self.targets.find(r.target, [r.clone_url, r.html_url])
        if target is None:
            row.state = "missing-target"
            return row
        row.target = target.full_name
        try:
            have = g.mirrored(g.ls_remote(g.Remote(target.clone_url, self.opts.gitea_token), deadline=deadline))
        except RaibidError as e:
            row.state, row.error = "diverged", e.message
            return row
        moves = g.changes(want, have)
        row.differing = sorted(moves)
        if not moves:
            row.state = "in-sync"
            return row
        # Behind: every target-side commit that differs is known history of the source (in the cache).
        cache = g.cache_path(self.opts.cache_dir, r.clone_url, r.source)
        if not (cache / "HEAD").exists():
            row.state = "behind"  # never fetched here: nothing to tell the two apart
            return row
        behind = all(old is None or g.has_object(cache, old) for old, _ in moves.values())
        row.state = "behind" if behind else "diverged"
        return row
