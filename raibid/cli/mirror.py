"""`raibid mirror`: GitHub -> Gitea mirroring (sync, status, list).

The in-cluster CronJob is the cluster component `mirror` (templates/mirror/).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from raibid.cli._common import json_option, pass_app
from raibid.errors import Exit, ExitCode, RaibidError

if TYPE_CHECKING:
    from raibid.app import Application
    from raibid.mirror import RepoResult, Resolved, Syncer
    from raibid.mirror.sync import Build


@click.group()
def mirror() -> None:
    """Mirror GitHub repos, lists and whole orgs (regex-filtered) into Gitea."""


repo_option = click.option("--repo", "repos", multiple=True, metavar="OWNER/NAME",
                           help="Only this GitHub repo (repeatable; need not be configured).")
org_option = click.option("--org", "orgs", multiple=True, metavar="NAME",
                          help="Only this GitHub org or user entry (repeatable).")
jobs_option = click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None,
                           help="Repos in parallel (default: mirror.jobs).")
max_wait_option = click.option("--max-wait", type=click.FloatRange(0), default=None, metavar="SECONDS",
                               help="Longest wait for a GitHub rate limit (default: mirror.max_wait).")


def _prepare(app: Application, repos: tuple[str, ...], orgs: tuple[str, ...], jobs: int | None,
             max_wait: float | None, *, dry_run: bool = False, allow_delete: bool = False,
             trigger: bool = False) -> tuple[Syncer, list[Resolved]]:
    from pathlib import Path

    from raibid.mirror import Options, Syncer, TargetIndex, Trigger, resolve
    from raibid.mirror.pending import PendingTriggers

    cfg = app.cfg
    m = cfg.mirror
    m.__post_init__()  # env overrides (RAIBID_MIRROR_*) are set after the file's checks ran
    m.trigger.__post_init__()
    gitea = app.gitea
    gitea.current_user()  # fail once, early, with the Gitea auth or reachability error
    jobs = jobs or m.jobs
    targets = TargetIndex(gitea)
    base_dir = Path(cfg.source).resolve().parent if cfg.source else Path.cwd()
    resolved, _ = resolve(m, app.github(max_wait=max_wait), targets, repos=repos, orgs=orgs, base_dir=base_dir,
                          jobs=jobs)
    opts = Options(cache_dir=app.mirror_cache_dir, mode=m.mode, jobs=jobs, timeout=float(m.timeout),
                   dry_run=dry_run, allow_delete=allow_delete, github_token=cfg.secret(m.github_token_env),
                   gitea_token=gitea.token, github=app.github(max_wait=max_wait) if m.pull_requests else None,
                   trigger=Trigger(m.trigger.branches, _submitter(app), m.trigger.on_create,
                                   pending=PendingTriggers(lambda: app.worker_queue)) if trigger else None)
    return Syncer(gitea, targets, opts), resolved


def _submitter(app: Application) -> Callable[[Build], list[str]]:
    """Plan and enqueue the CI jobs of one moved ref (`raibid.webhook.trigger.BuildTrigger`): the
    `.raibid.yml` at the commit, read from the bare cache (Gitea's contents API when the cache lacks
    the commit), one job per matching pipeline, routed by ``agents.trusted`` and deduped exactly as
    the webhook receiver does, so a cron run and a webhook for the same commit make one job each."""
    import threading

    from raibid.queue import Job, JobSpec
    from raibid.webhook.trigger import BuildTrigger, gitea_reader

    m = app.cfg.mirror
    first_use = threading.Lock()  # repos finish in parallel; the Queue (and its Redis client) is built once

    def queue():  # noqa: ANN202 - the Queue type is imported lazily
        with first_use:
            return app.worker_queue

    def submit(spec: JobSpec) -> tuple[Job, bool]:
        return queue().submit_deduped(spec)

    def post_status(repo: str, commit: str, context: str, state: str, description: str, *,
                    origin: str | None = None) -> object:
        return queue().post_status(repo, commit, context, state, description, origin=origin)

    trigger = BuildTrigger(submit, branches=m.trigger.branches, agent=m.trigger.agent, policy=app.trust_policy,
                           source="mirror", read=gitea_reader(app.gitea), post_status=post_status)
    return trigger.submit_for_engine


@contextmanager
def _progress(app: Application, total: int) -> Iterator[Callable[[RepoResult], None]]:
    """A Rich bar on stderr when it is a terminal; one line per repo otherwise (never on stdout)."""
    term = app.term

    def line(r: RepoResult) -> str:
        extra = f" ({r.refs_changed} refs)" if r.refs_changed else ""
        why = f": {r.error}" if r.error else (f" - {r.note}" if r.note else "")
        return f"{r.action:9} {r.source} -> {r.target}{extra}{why}"

    if term.stderr_is_tty and term.verbosity >= 0:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from raibid.safetext import markup_escaped, printable

        console = Console(file=term.stderr, no_color=not term.color, highlight=False)
        with Progress(TextColumn("mirror"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=console, transient=True) as bar:
            task = bar.add_task("", total=total)

            def tick(r: RepoResult) -> None:
                bar.update(task, advance=1, description=markup_escaped(r.source))  # TextColumn reads markup
                if r.action == "failed":
                    bar.console.print(printable(line(r)), markup=False)  # git's and GitHub's words, escaped

            yield tick
        return

    def each(r: RepoResult) -> None:
        (term.warn if r.action == "failed" else term.info)(line(r))

    yield each


@mirror.command()
@repo_option
@org_option
@click.option("--dry-run", is_flag=True, help="Resolve and compare, print what would happen; write nothing.")
@jobs_option
@click.option("--no-trigger", is_flag=True, help="Enqueue no CI jobs for moved branches.")
@click.option("--allow-delete", is_flag=True, help="Let on_missing: delete delete Gitea repos gone upstream.")
@max_wait_option
@json_option
@pass_app
def sync(app: Application, repos: tuple[str, ...], orgs: tuple[str, ...], dry_run: bool, jobs: int | None,
         no_trigger: bool, allow_delete: bool, max_wait: float | None, as_json: bool) -> None:
    """Mirror everything configured (or the --repo/--org selection) into Gitea.

    Holds a lock in the cache dir: a second run exits 6 at once. Exit codes: 0 all
    ok, 1 some repos failed (the others still synced), 2 usage/config, 4 auth,
    5 GitHub or Gitea unreachable, 6 locked.
    """
    from raibid.mirror import SyncLock

    m = app.cfg.mirror
    lock = None if dry_run else SyncLock(app.mirror_cache_dir).acquire()
    try:
        trigger = m.trigger.enabled and not no_trigger and not dry_run
        syncer, resolved = _prepare(app, repos, orgs, jobs, max_wait, dry_run=dry_run, allow_delete=allow_delete,
                                       trigger=trigger)
        with _progress(app, len(resolved)) as tick:
            summary = syncer.run(resolved, on_result=tick)
    finally:
        if lock is not None:
            lock.release()
    if not dry_run:
        summary.recorded = _record(app, summary)

    def render() -> None:
        t = summary.totals
        counts = ", ".join(f"{t[a]} {a}" for a in ("created", "synced", "unchanged", "skipped", "archived",
                                                    "deleted", "failed") if t.get(a))
        app.term.line(f"{'dry run: ' if dry_run else ''}{t['total']} repos: {counts or 'nothing to do'}"
                      f"{f'; {summary.triggered} CI job(s)' if summary.triggered else ''} in {summary.duration_s:.1f}s")
        for r in summary.repos:
            if r.action == "failed":
                app.term.line(f"failed: {r.source}: {r.error}")

    app.term.emit(summary, as_json, render)
    if summary.unreachable:
        raise Exit(ExitCode.UNREACHABLE)
    if summary.failed:
        raise Exit(ExitCode.FAILURE)


def _record(app: Application, summary: object) -> bool:
    """Write the summary to Redis; a sync without Redis still works and says it could not record."""
    from raibid.mirror.record import record_last_run
    from raibid.queue.connection import redis_errors

    try:
        url, _ = app.redis_endpoint()
        with redis_errors(url):
            record_last_run(app.redis, app.cfg.redis.prefix, summary)  # type: ignore[arg-type]
    except RaibidError as e:
        app.term.warn(f"could not record the sync summary in Redis: {e.message}")
        return False
    return True


@mirror.command()
@repo_option
@org_option
@jobs_option
@max_wait_option
@json_option
@pass_app
def status(app: Application, repos: tuple[str, ...], orgs: tuple[str, ...], jobs: int | None,
           max_wait: float | None, as_json: bool) -> None:
    """Compare source and target heads: in-sync, behind, missing-target, missing-source or diverged.

    Writes nothing. Exits 1 when any repo is not in-sync, so it can drive monitoring.
    """
    syncer, resolved = _prepare(app, repos, orgs, jobs, max_wait)
    rows = syncer.status(resolved)

    def render() -> None:
        app.term.table(["source", "target", "state", "detail"],
                       [(r.source, r.target, r.state, r.error or (", ".join(r.differing[:3])
                                                                  + (" ..." if len(r.differing) > 3 else "")))
                        for r in rows])

    app.term.emit(rows, as_json, render)
    if any(r.state != "in-sync" for r in rows):
        raise Exit(ExitCode.FAILURE)


@mirror.command("list")
@repo_option
@org_option
@max_wait_option
@json_option
@pass_app
def list_(app: Application, repos: tuple[str, ...], orgs: tuple[str, ...], max_wait: float | None,
          as_json: bool) -> None:
    """The configured entries and the repos they resolve to (orgs expanded, regexes applied)."""
    from pathlib import Path

    from raibid.mirror import resolve

    cfg = app.cfg
    base_dir = Path(cfg.source).resolve().parent if cfg.source else Path.cwd()
    _, entries = resolve(cfg.mirror, app.github(max_wait=max_wait), None, repos=repos, orgs=orgs,
                         base_dir=base_dir, jobs=cfg.mirror.jobs)

    def render() -> None:
        rows = []
        for e in entries:
            if e.error:
                rows.append((e.entry, "", "", e.error))
            for r in e.repos:
                rows.append((e.entry, r["source"], r["target"], r.get("error", "")))
        app.term.table(["entry", "source", "target", "error"], rows)

    app.term.emit({"entries": entries, "repos": sum(len(e.repos) for e in entries)}, as_json, render)

