"""A local run: plan a checkout's pipelines, submit them to a queue, run them with local agents, follow them.

The jobs go through the real queue (an embedded Valkey, or a configured Redis under a key prefix
of their own) and the real agent runtime (`raibid.agents.runtime.Agent`, which clones the
snapshot over git and runs each step in a local step runner: a separate process with a
scrubbed environment). Each worker is a thread running one Agent per job, like one pod per job.
Logs are followed from the queue, as `raibid queue logs -f` does.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from raibid.agents.plan import PlannedJob, TriggerInfo
from raibid.errors import UsageError

if TYPE_CHECKING:
    from raibid.agents.runtime import Agent, AgentSettings
    from raibid.local.source import Snapshot
    from raibid.queue import Queue

RUN_PREFIX = "raibid-run-"  # a run's key prefix on a configured Redis: raibid-run-<hex>, never a real queue's


@dataclass
class JobResult:
    """One job of the run, as the summary shows it."""

    pipeline: str
    agent: str
    job_id: str
    result: str  # succeeded, failed, cancelled, or what the job was left at (queued, running)
    exit_code: int | None = None
    duration_s: float | None = None
    error: str | None = None


@dataclass
class RunSpec:
    """What to run and how: everything the command decided, as plain values."""

    trigger: TriggerInfo
    jobs: list[PlannedJob]
    snapshot: Snapshot | None = None  # set once the checkout is snapshotted, before LocalRun
    workers: int = 1
    secrets: dict[str, str] = field(default_factory=dict)  # --secret NAME -> its value from our environment
    timeout: int = 3600
    heartbeat_s: float = 30.0
    max_pids: int | None = 4096
    log_max_bytes: int = 64 << 20
    log_line_max_bytes: int = 16 << 10
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    masked: tuple[str, ...] = ()  # other values to mask (the configured Redis's password)


def run_prefix() -> str:
    return RUN_PREFIX + secrets.token_hex(8)


def describe(trigger: TriggerInfo) -> str:
    """The filter `when` was matched against, for a message: ``push on branch main``."""
    if trigger.event == "tag":
        return f"tag (tag {trigger.tag})"
    if trigger.event == "pull_request":
        return f"pull_request from {trigger.head_ref} into {trigger.base_ref}"
    return trigger.event + (f" on branch {trigger.branch}" if trigger.branch else " (no branch: detached HEAD)")


def select(planned: list[PlannedJob], names: tuple[str, ...], source: str, trigger: TriggerInfo) -> list[PlannedJob]:
    """The planned jobs ``--pipeline`` names (all when none); UsageError naming the filter when none is left."""
    if not names:
        if not planned:
            raise UsageError(f"{source}: no pipeline matches event {describe(trigger)}",
                             hint="see the pipelines' `when:`; choose another --event or --branch")
        return planned
    known = {p.pipeline for p in planned}
    missing = [n for n in names if n not in known]
    if missing:
        raise UsageError(f"{source}: --pipeline {', '.join(missing)}: no such pipeline matches event "
                         f"{describe(trigger)}", hint=f"matching: {', '.join(sorted(known)) or 'none'}")
    return [p for p in planned if p.pipeline in names]


class LocalRun:
    """Submit ``spec.jobs``, run them with ``spec.workers`` agents, follow their logs; :meth:`interrupt`
    from the main thread (Ctrl-C) stops every step and releases every job."""

    def __init__(self, queue: Queue, spec: RunSpec, workdir: Path, *,
                 on_line: Callable[[str, str], None], on_note: Callable[[str], None] = lambda msg: None) -> None:
        self.q = queue
        self.spec = spec
        self.work = workdir
        self.on_line = on_line
        self.on_note = on_note
        self.stopping = threading.Event()
        self._agents: set[Agent] = set()
        self._lock = threading.Lock()
        self._ids: list[tuple[PlannedJob, str]] = []
        self._done: set[str] = set()  # jobs an agent has finished with (their log is complete)
        self._agents_done = threading.Event()

    def submit(self) -> list[str]:
        """One job per planned pipeline, in the trusted pool of its agent type (the local repo is yours)."""
        from raibid.queue import JobSpec

        s, t = self.spec, self.spec.trigger
        assert s.snapshot is not None, "snapshot the checkout first"
        specs = [JobSpec(repo=s.snapshot.repo, ref=s.snapshot.ref, commit=s.snapshot.commit, agent=p.agent,
                         timeout=s.timeout, source="cli", event=t.event, pipeline=p.pipeline, context=p.context,
                         pr=t.pr, base_ref=t.base_ref, head_ref=t.head_ref) for p in s.jobs]
        self.q.init({p.agent for p in s.jobs})
        jobs = self.q.submit_many(specs)
        self._ids = [(p, j.id) for p, j in zip(s.jobs, jobs, strict=True)]
        return [j.id for j in jobs]

    def run(self) -> list[JobResult]:
        """Run every submitted job to a result (or until interrupted) and return the summary rows."""
        pools = [p.agent for p, _ in self._ids]
        followers = [threading.Thread(target=self._follow, args=(p.pipeline, job_id), daemon=True,
                                      name=f"raibid-follow-{job_id}") for p, job_id in self._ids]
        for t in followers:
            t.start()
        with ThreadPoolExecutor(max_workers=max(1, self.spec.workers), thread_name_prefix="raibid-agent") as pool:
            futures = [pool.submit(self._agent, i, agent) for i, agent in enumerate(pools)]
            try:
                for f in futures:
                    f.result()
            finally:
                self._agents_done.set()
        for t in followers:
            t.join()
        return self.results()

    def run_interruptible(self) -> list[JobResult] | None:
        """:meth:`run` in a thread; on KeyboardInterrupt (Ctrl-C) every step is stopped, every agent
        waited for, and None returned: nothing of the run is left running."""
        import signal

        box: list[list[JobResult]] = []
        errors: list[BaseException] = []

        def target() -> None:
            try:
                box.append(self.run())
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                errors.append(e)

        thread = threading.Thread(target=target, name="raibid-run")
        thread.start()
        interrupted = False
        while thread.is_alive():
            try:
                thread.join(0.2)
            except KeyboardInterrupt:
                interrupted = True
                if threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave steps behind
                self.interrupt()
        if errors:
            raise errors[0]
        return None if interrupted else box[0]

    def interrupt(self) -> None:
        """Stop every running step (as SIGTERM does in a pod: the agent kills the step and releases its job)."""
        self.stopping.set()
        with self._lock:
            agents = list(self._agents)
        for agent in agents:
            agent.on_sigterm()

    def _agent(self, index: int, pool: str) -> None:
        from raibid.agents.runtime import Agent

        if self.stopping.is_set():
            return
        agent = Agent(self.q, self._settings(index, pool), log=self.on_note)
        with self._lock:
            self._agents.add(agent)
        if self.stopping.is_set():  # interrupted between the check and the registration
            agent.terminating.set()
        try:
            outcome = agent.run()
            if outcome.job_id:
                self._done.add(outcome.job_id)
        finally:
            with self._lock:
                self._agents.discard(agent)
            shutil.rmtree(self.work / f"agent-{index}", ignore_errors=True)

    def _settings(self, index: int, pool: str) -> AgentSettings:
        from raibid.agents.runtime import AgentSettings
        from raibid.agents.trust import TrustPolicy

        s = self.spec
        assert s.snapshot is not None
        only_this_repo = (re.escape(s.snapshot.repo),)
        return AgentSettings(
            agent=pool, consumer=f"local-{os.getpid()}-{index}", workdir=self.work / f"agent-{index}",
            gitea_url=s.snapshot.base_url, token=None, wait_s=5.0, heartbeat_s=s.heartbeat_s,
            env=dict(s.env), masked=s.masked, policy=TrustPolicy.of(repos=only_this_repo),
            job_secrets={name: only_this_repo for name in s.secrets}, secrets_dir=self.work / "secrets",
            max_pids=s.max_pids, log_max_bytes=s.log_max_bytes, log_line_max_bytes=s.log_line_max_bytes)

    def _follow(self, pipeline: str, job_id: str) -> None:
        """Print the job's log as it is stored, until the job has a result (or the run stops)."""
        from raibid.queue import TERMINAL

        last = "0"
        while True:
            ended = job_id in self._done or self._agents_done.is_set()
            try:
                lines = self.q.wait_logs(job_id, last, block_ms=20, wake_on_event=True)
            except Exception as e:  # the queue went away: say so once, the summary says the rest
                self.on_note(f"log of {pipeline} ({job_id}) stopped: {e}")
                return
            for entry_id, line in lines:
                last = entry_id
                self.on_line(pipeline, line)
            if lines:
                continue
            if ended or self.q.get(job_id).status in TERMINAL:  # nothing more is written after the result
                for entry_id, line in self.q.logs(job_id, after=last if last != "0" else "-"):
                    last = entry_id
                    self.on_line(pipeline, line)
                return

    def results(self) -> list[JobResult]:
        from raibid.timeutil import parse_time

        out = []
        for p, job_id in self._ids:
            job = self.q.get(job_id)
            duration = None
            if job.started_at and job.finished_at:
                duration = (parse_time(job.finished_at) - parse_time(job.started_at)).total_seconds()  # type: ignore[operator]
            out.append(JobResult(p.pipeline, p.agent, job_id, job.status, job.exit_code, duration, job.error))
        return out

    def cleanup_keys(self) -> int:
        """Delete every key under this run's prefix (a configured Redis); how many were deleted."""
        prefix = self.q.keys.prefix
        if not prefix.startswith(RUN_PREFIX):
            raise ValueError(f"refusing to delete keys under {prefix!r}: not a local run's prefix")
        n = 0
        batch: list[str] = []
        for key in self.q.r.scan_iter(match=f"{prefix}:*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                n += self.q.r.unlink(*batch)
                batch = []
        if batch:
            n += self.q.r.unlink(*batch)
        return n


def write_secrets(directory: Path, values: Mapping[str, str]) -> None:
    """The --secret values as files named after them (as a trusted pod mounts them), 0600 in a 0700 dir."""
    directory.mkdir(mode=0o700)
    for name, value in values.items():
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value)


@contextlib.contextmanager
def private_tempdir() -> Iterator[Path]:
    """A 0700 temporary directory, removed at the end whatever happens."""
    path = Path(tempfile.mkdtemp(prefix="raibid-run-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
