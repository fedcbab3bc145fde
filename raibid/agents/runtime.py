"""The one-job agent runtime: what `raibid agents run` does inside a KEDA-started pod.

Claim one job (stale ones first), heartbeat it from a background thread, clone
the repo from Gitea with the token passed through env-injected git config, run
the job's command or its ``.raibid.yml`` steps (each in its own process group
under ``bash -eo pipefail``), stream the combined output to the job's log in
pipelined batches, record the result and exit.

A failed build is a processed job (exit 0). SIGTERM (eviction, node drain)
stops the step and releases the job for redelivery without acking it. The exit
codes are in ``AgentExit`` and docs/agents.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

from raibid.agents.pipeline import FILE_NAME, PipelineError, Step, command_step, parse
from raibid.gitcreds import git_env, scrub, secret_forms, strip_git_auth

if TYPE_CHECKING:
    from raibid.queue import Claim, Queue


class AgentExit(IntEnum):
    """Exit codes of `raibid agents run` (the agent pod's exit code)."""

    OK = 0  # a job ran to a recorded result (succeeded, failed or cancelled), or none arrived in --wait
    LOST = 1  # the job was taken over by another agent, or its result could not be recorded
    UNREACHABLE = 5  # Redis or Gitea could not be reached; the job was released when possible
    TERMINATED = 143  # SIGTERM: the step was stopped and the job released for redelivery


# Environment an agent passes on to nothing it runs: the step gets the token as RAIBID_REGISTRY_TOKEN only.
_PRIVATE_ENV = ("RAIBID_REDIS_PASSWORD", "RAIBID_GITEA_TOKEN", "RAIBID_REDIS_URL")
KILL_GRACE_S = 5.0
SMALL_READ = 16 << 10
COALESCE_S = 0.002


@dataclass
class AgentSettings:
    agent: str
    consumer: str
    workdir: Path
    gitea_url: str
    token: str | None
    wait_s: float = 0.0
    heartbeat_s: float = 30.0
    registry: str = ""
    registry_user: str = ""
    git_user: str = "raibid"
    max_timeout: float | None = None
    log_batch: int = 5000
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    private_env: tuple[str, ...] = ()  # more env names no step may see (the configured secret vars)


@dataclass
class Outcome:
    """What happened to the claimed job (None job_id: nothing was claimed)."""

    exit: AgentExit
    job_id: str | None = None
    status: str | None = None  # succeeded, failed, cancelled, released, lost
    exit_code: int | None = None
    error: str | None = None
    first_output_s: float | None = None  # claim -> first step output line


class _Stop(Exception):
    """Why a step was stopped from outside."""


class LogSink:
    """Lines to the job's log: buffered here, written in pipelined batches by a flusher thread.

    The step's reader never waits for Redis unless the buffer is full (back-pressure).
    """

    def __init__(self, write: Callable[[list[str]], object], *, batch: int = 5000, max_buffer: int = 200_000,
                 interval: float = 0.05) -> None:
        self._write = write
        self._batch = batch
        self._max = max_buffer
        self._interval = interval
        self._buf: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self.written = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="raibid-log", daemon=True)
        self._thread.start()

    def add(self, lines: list[str]) -> None:
        if not lines:
            return
        with self._cond:
            while len(self._buf) >= self._max and self.error is None and not self._closed:
                self._cond.wait(0.5)
            self._buf.extend(lines)
            if len(self._buf) >= self._batch:
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._buf and not self._closed:
                    self._cond.wait(self._interval)
                if not self._buf and self._closed:
                    return
                chunk, self._buf = self._buf[: self._batch], self._buf[self._batch:]
                self._cond.notify_all()
            if not chunk:
                continue
            try:
                self._write(chunk)
                self.written += len(chunk)
            except Exception as e:  # Redis gone: keep the agent alive, report at the end
                self.error = e

    def close(self, timeout: float = 60.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)


class Heartbeat:
    """Heartbeats from a background thread; sets ``cancelled`` or ``lost`` and calls ``on_stop``."""

    def __init__(self, queue: Queue, claim: Claim, interval: float, on_stop: Callable[[], None],
                 log: Callable[[str], None]) -> None:
        self.queue, self.claim, self.interval = queue, claim, interval
        self.on_stop, self.log = on_stop, log
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raibid-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        from raibid.queue import LostJob

        while not self._done.wait(self.interval):
            try:
                if self.queue.heartbeat(self.claim):
                    self.cancelled.set()
                    self.on_stop()
                    return
            except LostJob:
                self.lost.set()
                self.on_stop()
                return
            except Exception as e:  # transient: the next beat retries; min_idle gives us time
                self.log(f"heartbeat failed: {e}")

    def check_now(self) -> None:
        """One synchronous beat (catches a cancel requested before the step starts)."""
        from raibid.queue import LostJob

        try:
            if self.queue.heartbeat(self.claim):
                self.cancelled.set()
        except LostJob:
            self.lost.set()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)


class Agent:
    """One agent process: claims and runs at most one job."""

    def __init__(self, queue: Queue, settings: AgentSettings, *, log: Callable[[str], None] | None = None) -> None:
        self.q = queue
        self.s = settings
        self.log = log or (lambda msg: None)
        self.terminating = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._stop_reason: str | None = None
        self._lock = threading.RLock()  # the SIGTERM handler may run while the main thread holds it
        self._secrets = secret_forms(settings.token, settings.git_user)

    # ------------------------------------------------------------------ signals
    def on_sigterm(self, *_: object) -> None:
        self.terminating.set()
        self._kill_step("terminated")

    def _kill_step(self, reason: str) -> None:
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            proc = self._proc
        if proc is not None and proc.poll() is None:
            _kill_group(proc)

    # ------------------------------------------------------------------ main
    def run(self) -> Outcome:
        from raibid.errors import Unreachable

        try:
            claim = self._claim()
        except Unreachable as e:
            self.log(f"cannot claim: {e.message}")
            return Outcome(AgentExit.UNREACHABLE, error=e.message)
        if claim is None:
            if self.terminating.is_set():
                self.log("terminated while waiting for a job; nothing was claimed")
            else:
                self.log(f"no {self.s.agent} job within {self.s.wait_s:g}s; exiting")
            return Outcome(AgentExit.OK)
        self.log(f"claimed job {claim.job.id} ({claim.job.repo}@{claim.job.ref}, delivery {claim.job.deliveries})")
        return self._run_claimed(claim)

    def _claim(self) -> Claim | None:
        deadline = time.monotonic() + self.s.wait_s
        while not self.terminating.is_set():
            remaining = deadline - time.monotonic()
            block = int(max(0.0, min(remaining, 1.0)) * 1000)
            claim = self.q.claim(self.s.agent, self.s.consumer, block_ms=block)
            if claim is not None:
                if self.terminating.is_set():  # SIGTERM arrived while the claim was in flight
                    self.q.release(claim, "agent terminated before starting")
                    return None
                return claim
            if remaining <= 0:
                return None
        return None

    def _run_claimed(self, claim: Claim) -> Outcome:
        job = claim.job
        t_claim = time.monotonic()
        sink = LogSink(lambda lines: self.q.append_log(job.id, lines), batch=self.s.log_batch)
        hb = Heartbeat(self.q, claim, self.s.heartbeat_s, lambda: self._kill_step("heartbeat"), self.log)
        first_output: list[float] = []
        outcome: Outcome
        try:
            hb.check_now()
            hb.start()
            try:
                outcome = self._execute(claim, sink, hb, first_output, t_claim)
            except Exception as e:  # a bug or a broken workdir: fail the job with a message, not silently
                import traceback

                self.log("agent error:\n" + traceback.format_exc())
                sink.add([f"raibid: agent error: {e}"])
                outcome = Outcome(AgentExit.OK, status="failed", error=f"agent error: {e}")
        finally:
            hb.stop()
            sink.close()
        if sink.error is not None:
            self.log(f"some log lines were not stored: {sink.error}")
        outcome.job_id = job.id
        outcome.first_output_s = (first_output[0] - t_claim) if first_output else None
        return self._record(claim, outcome, hb)

    def _record(self, claim: Claim, outcome: Outcome, hb: Heartbeat) -> Outcome:
        job_id = claim.job.id
        if hb.lost.is_set() or outcome.status == "lost":
            self.log(f"job {job_id} was taken over by another agent; not recording a result")
            return Outcome(AgentExit.LOST, job_id, "lost", error="the claim was lost",
                           first_output_s=outcome.first_output_s)
        if outcome.status == "released":
            from raibid.queue import LostJob

            try:
                where = self.q.release(claim, outcome.error or "released")
            except LostJob:
                self.log(f"job {job_id} was taken over by another agent before it could be released")
                return Outcome(outcome.exit, job_id, "lost", error="the claim was lost")
            except Exception as e:
                self.log(f"could not release job {job_id}: {e}; it is redelivered after queue.min_idle")
                where = "left pending"
            self.log(f"released job {job_id}: {where}")
            return outcome
        try:
            ok = self.q.finish(claim, outcome.status or "failed", exit_code=outcome.exit_code, error=outcome.error)
        except Exception as e:
            self.log(f"could not record the result of job {job_id}: {e}")
            return Outcome(AgentExit.UNREACHABLE, job_id, outcome.status, outcome.exit_code, str(e),
                           outcome.first_output_s)
        if not ok:
            self.log(f"job {job_id} was no longer ours when finishing; result not recorded")
            return Outcome(AgentExit.LOST, job_id, "lost", outcome.exit_code, outcome.error, outcome.first_output_s)
        self.log(f"job {job_id} {outcome.status}" + ("" if outcome.exit_code is None else f" (exit {outcome.exit_code})"))
        return outcome

    # ------------------------------------------------------------------ the job
    def _execute(self, claim: Claim, sink: LogSink, hb: Heartbeat, first_output: list[float],
                 t_claim: float) -> Outcome:
        job = claim.job
        timeout = float(job.timeout or 3600)
        if self.s.max_timeout:
            timeout = min(timeout, self.s.max_timeout)
        deadline = t_claim + timeout
        say = lambda msg: sink.add([f"raibid: {msg}"])  # noqa: E731
        say(f"agent {self.s.consumer} ({self.s.agent}) running job {job.id}, delivery {job.deliveries}")

        stopped = self._stopped_outcome(hb)
        if stopped:
            return stopped
        src = self.s.workdir / "src"
        try:
            sha = self._clone(job.repo, job.ref, job.commit, src, say)
        except _CloneFailed as e:
            say(f"clone failed: {e.message}")
            if e.transient:
                return Outcome(AgentExit.UNREACHABLE, status="released", error=f"clone failed: {e.message}")
            return Outcome(AgentExit.OK, status="failed", error=f"clone failed: {e.message}")
        stopped = self._stopped_outcome(hb)
        if stopped:
            return stopped

        if job.command:
            steps = command_step(job.command)
        else:
            path = src / FILE_NAME
            if not path.is_file():
                msg = f"the job has no command and {job.repo} has no {FILE_NAME} at {sha[:12]}"
                say(msg)
                return Outcome(AgentExit.OK, status="failed", error=msg)
            try:
                steps = parse(path.read_text(encoding="utf-8", errors="replace"), FILE_NAME)
            except PipelineError as e:
                say(e.message)
                return Outcome(AgentExit.OK, status="failed", error=e.message)

        env = self._step_env(job, sha)
        for i, step in enumerate(steps, 1):
            remaining = deadline - time.monotonic()
            step_timeout = min(step.timeout, remaining) if step.timeout else remaining
            say(f"step {step.name} ({i}/{len(steps)}): {step.run.splitlines()[0] if step.run else ''}")
            code, why, elapsed = self._run_step(step, {**env, **step.env}, src, max(step_timeout, 0.0), sink,
                                                first_output)
            if why == "timeout":
                limit = step.timeout if step.timeout and step.timeout <= remaining else timeout
                what = f"step {step.name}" if step.timeout and step.timeout <= remaining else "job"
                msg = f"{what} timed out after {limit:g}s"
                say(msg)
                return Outcome(AgentExit.OK, status="failed", exit_code=124, error=msg)
            if why is not None:
                return self._stopped_outcome(hb) or Outcome(AgentExit.OK, status="failed", exit_code=code,
                                                             error=f"step {step.name} stopped")
            say(f"step {step.name} exited {code} after {elapsed:.1f}s")
            if code != 0:
                return Outcome(AgentExit.OK, status="failed", exit_code=code,
                               error=f"step {step.name} exited {code}")
        return Outcome(AgentExit.OK, status="succeeded", exit_code=0)

    def _stopped_outcome(self, hb: Heartbeat) -> Outcome | None:
        if self.terminating.is_set():
            return Outcome(AgentExit.TERMINATED, status="released", error="agent terminated (SIGTERM)")
        if hb.lost.is_set():
            return Outcome(AgentExit.LOST, status="lost")
        if hb.cancelled.is_set():
            return Outcome(AgentExit.OK, status="cancelled", error="cancelled while running")
        return None

    def _step_env(self, job: object, sha: str) -> dict[str, str]:
        private = set(_PRIVATE_ENV) | set(self.s.private_env)
        env = {k: v for k, v in strip_git_auth(self.s.env).items() if k not in private}
        env.update(job.env or {})  # type: ignore[attr-defined]
        env.update({
            "CI": "true", "RAIBID": "1",
            "RAIBID_JOB_ID": job.id, "RAIBID_REPO": job.repo, "RAIBID_REF": job.ref,  # type: ignore[attr-defined]
            "RAIBID_COMMIT": sha, "RAIBID_AGENT_TYPE": self.s.agent,
            "RAIBID_REGISTRY": self.s.registry, "RAIBID_REGISTRY_USER": self.s.registry_user,
            "RAIBID_REGISTRY_TOKEN": self.s.token or "",
        })
        return env

    def _run_step(self, step: Step, env: dict[str, str], cwd: Path, timeout: float, sink: LogSink,
                  first_output: list[float]) -> tuple[int, str | None, float]:
        """(exit code, why it was stopped or None, seconds). Output streams to ``sink`` as it comes."""
        t0 = time.monotonic()
        with self._lock:
            if self._stop_reason is not None:
                return -1, self._stop_reason, 0.0
            proc = subprocess.Popen(["bash", "-eo", "pipefail", "-c", step.run], cwd=cwd, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            self._proc = proc
        if self._stop_reason is not None:  # stopped (e.g. SIGTERM) while the step was starting
            _kill_group(proc)
        timer = threading.Timer(timeout, self._kill_step, args=("timeout",))
        timer.daemon = True
        timer.start()
        # When the step's shell exits, what it left running in its group (a daemon holding the
        # output pipe open) is killed, so the step ends with its shell, as on hosted CI runners.
        reaper = threading.Thread(target=_reap_group, args=(proc,), name="raibid-reaper", daemon=True)
        reaper.start()
        try:
            _pump(proc.stdout, sink, first_output)  # type: ignore[arg-type]
            code = proc.wait()
        finally:
            timer.cancel()
            with self._lock:
                self._proc = None
                why, self._stop_reason = self._stop_reason, None
            if proc.stdout:
                proc.stdout.close()
        if why is None and self.terminating.is_set():
            why = "terminated"
        return code, why, time.monotonic() - t0

    # ------------------------------------------------------------------ git
    def _clone(self, repo: str, ref: str, commit: str | None, dest: Path, say: Callable[[str], None]) -> str:
        url = f"{self.s.gitea_url.rstrip('/')}/{repo}.git"
        private = set(_PRIVATE_ENV) | set(self.s.private_env)
        env = git_env({url: self.s.token}, username=self.s.git_user,
                      base={k: v for k, v in self.s.env.items() if k not in private})
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        want = commit or ref
        say(f"fetching {repo} {want}")
        self._git(["init", "-q"], dest, env)
        self._git(["remote", "add", "origin", url], dest, env)
        try:
            self._git(["fetch", "-q", "--no-tags", "--depth", "1", "origin", want], dest, env)
            target = "FETCH_HEAD"
        except _CloneFailed as e:
            if not commit or e.transient:
                raise
            # Servers that refuse a fetch by sha: fetch the ref, then find the commit in it.
            self._git(["fetch", "-q", "--no-tags", "origin", ref], dest, env)
            target = commit
        self._git(["checkout", "-q", "--detach", target], dest, env)
        sha = self._git(["rev-parse", "HEAD"], dest, env).strip()
        say(f"checked out {sha}")
        return sha

    def _git(self, args: list[str], cwd: Path, env: dict[str, str]) -> str:
        try:
            p = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise _CloneFailed(f"git {args[0]} timed out", transient=True) from None
        if p.returncode != 0:
            text = scrub((p.stderr or p.stdout).strip(), self._secrets)
            transient = any(s in text for s in _TRANSIENT)
            raise _CloneFailed(f"git {args[0]}: {text.splitlines()[-1] if text else f'exit {p.returncode}'}",
                               transient=transient)
        return p.stdout


_TRANSIENT = ("Could not resolve host", "Failed to connect", "Connection refused", "Connection timed out",
              "The requested URL returned error: 502", "The requested URL returned error: 503",
              "The requested URL returned error: 504", "Operation timed out", "Empty reply from server")


class _CloneFailed(Exception):
    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


def _pump(stream: object, sink: LogSink, first_output: list[float]) -> None:
    """Read the step's combined output until EOF; hand complete lines to the sink."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    rest = b""
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        if not first_output:
            first_output.append(time.monotonic())
        if len(chunk) < SMALL_READ:
            # A step that writes line by line would cost one read (and one hand-over) per line; a
            # short pause lets the pipe gather a batch. At most COALESCE_S of added latency.
            time.sleep(COALESCE_S)
        data = rest + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            if len(rest) > 1 << 16:  # a very long line: store it in pieces
                sink.add([rest.decode("utf-8", "replace")])
                rest = b""
            continue
        rest = data[cut + 1:]
        sink.add(data[:cut].decode("utf-8", "replace").replace("\r\n", "\n").split("\n"))
    if rest:
        sink.add([rest.decode("utf-8", "replace")])


def _reap_group(proc: subprocess.Popen) -> None:
    proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the step's process group, then SIGKILL it after a grace period."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)

    def hard() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    t = threading.Timer(KILL_GRACE_S, hard)
    t.daemon = True
    t.start()


def default_consumer() -> str:
    """The pod name (downward API), else host-pid: unique per agent process."""
    import socket

    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def run_agent(queue: Queue, settings: AgentSettings, *, log: Callable[[str], None] | None = None) -> Outcome:
    """Run one agent to completion, with SIGTERM handled (main thread only)."""
    agent = Agent(queue, settings, log=log)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, agent.on_sigterm)
    try:
        return agent.run()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
