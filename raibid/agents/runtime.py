"""The one-job agent runtime: what `raibid agents run` does inside a KEDA-started pod.

Claim one job (stale ones first), heartbeat it from a background thread, clone
the repo from Gitea with the token passed through env-injected git config, have
the step runner (raibid/agents/steprunner.py: the pod's ``build`` container, or
a local child process with a scrubbed environment) run the job's command or its
``.raibid.yml`` steps, stream the combined output, masked and capped in bytes,
to the job's log in pipelined batches, record the result and exit. The agent
holds the credentials and never runs a step itself.

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

from raibid.agents.pipeline import (
    FILE_NAME,
    MAX_BYTES,
    ImageSpec,
    Pipeline,
    PipelineError,
    Step,
    command_step,
    expand_tags,
    parse_pipeline,
)
from raibid.agents.steprunner import EXIT_GRACE_S, TERM_GRACE_S, RunnerGone, StepRunnerClient, StepStartFailed
from raibid.agents.trust import TrustPolicy, secret_allowed, split_pool
from raibid.gitcreds import git_env, mask, mask_forms, scrub

if TYPE_CHECKING:
    from raibid.queue import Claim, Queue


class AgentExit(IntEnum):
    """Exit codes of `raibid agents run` (the agent pod's exit code)."""

    OK = 0  # a job ran to a recorded result (succeeded, failed or cancelled), or none arrived in --wait
    LOST = 1  # the job was taken over by another agent, or its result could not be recorded
    UNREACHABLE = 5  # Redis or Gitea could not be reached; the job was released when possible
    TERMINATED = 143  # SIGTERM: the step was stopped and the job released for redelivery


# Environment an agent passes on to nothing it runs (git gets the token through its own config only).
_PRIVATE_ENV = ("RAIBID_REDIS_PASSWORD", "RAIBID_GITEA_TOKEN", "RAIBID_REDIS_URL")
DEFAULT_SECRETS_DIR = Path("/var/run/raibid/secrets")
NOTE_RESERVE = 1 << 20  # raibid's own lines are stored past agents.log_max_bytes, up to this much more
MAX_PIPELINE_BYTES = MAX_BYTES  # a larger .raibid.yml is refused before it is parsed (as at enqueue)
# The push credential of image steps: the agents.secrets entry of this name (its `repos` say which repos may
# push), read only for a trusted image step with push: true; never put in a step's environment.
PUSH_SECRET = "RAIBID_REGISTRY_PUSH"
BUILDKIT_ADDR = "tcp://127.0.0.1:1234"  # the image pool's buildkitd sidecar, on the pod's loopback (templates/agents)
MAX_METADATA_BYTES = 1 << 20
_DIGEST_RE = __import__("re").compile(r"sha256:[0-9a-f]{64}")


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
    git_user: str = "raibid"
    max_timeout: float | None = None
    log_batch: int = 5000
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    private_env: tuple[str, ...] = ()  # more env names git and the local step runner never get
    masked: tuple[str, ...] = ()  # other secret values the agent holds (the Redis password): masked in the log
    step_runner: str | None = None  # unix:PATH of the build container's runner; None: a local child process
    step_runner_timeout: float = 300.0
    policy: TrustPolicy = field(default_factory=TrustPolicy)  # agents.trusted
    job_secrets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # agents.secrets: name -> repos
    secrets_dir: Path = DEFAULT_SECRETS_DIR
    push_user: str = "raibid-ci"  # the registry user of the push credential (gitea.ci_user) unless it says USER:
    registry_insecure: bool = False  # the registry speaks plain HTTP (gitea.url is http): registry.insecure=true
    max_pids: int | None = 4096
    log_max_bytes: int = 64 << 20
    log_line_max_bytes: int = 16 << 10


@dataclass
class Outcome:
    """What happened to the claimed job (None job_id: nothing was claimed)."""

    exit: AgentExit
    job_id: str | None = None
    status: str | None = None  # succeeded, failed, cancelled, released, lost
    exit_code: int | None = None
    error: str | None = None
    first_output_s: float | None = None  # claim -> first step output line
    images: list[str] = field(default_factory=list)  # <registry>/<name>:<tag>@<digest> of each image built


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


class LogCutter:
    """Step output (bytes, in any pieces) to masked log lines, capped in bytes per line and per job.

    Secrets are masked on whole lines (a line is assembled before it is masked), and a line cut
    for length is masked with enough of what follows to catch a value across the cut. Once the
    job's log holds ``job_max`` bytes, further output is counted and dropped: the step is never
    held up by it. raibid's own lines (:meth:`note`) get a small reserve past the cap.
    """

    def __init__(self, sink: LogSink, forms: list[bytes], *, job_max: int, line_max: int) -> None:
        self.sink = sink
        self.job_max = job_max
        self.line_max = line_max
        self.set_forms(forms)
        self.stored = 0
        self.dropped = 0
        self.full = False
        self._rest = b""
        self._skip_line = False  # inside a line already cut: drop until its newline

    def set_forms(self, forms: list[bytes]) -> None:
        """What is masked (longest first); a cut line keeps enough after the cut to mask the longest."""
        self.forms = forms
        self._keep = max((len(f) for f in forms), default=1) - 1

    def note(self, msg: str) -> None:
        """A ``raibid: ...`` line (truncated and masked like output; within the reserve past the cap)."""
        data = mask(msg.encode(), self.forms)
        line = self._cut(data) if len(data) > self.line_max else data
        if self.stored + len(line) + 1 > self.job_max + NOTE_RESERVE:
            return
        self.stored += len(line) + 1
        self.sink.add(["raibid: " + line.decode("utf-8", "replace")])

    def feed(self, data: bytes) -> None:
        if self.full:
            self.dropped += len(data)
            return
        if self._skip_line:
            nl = data.find(b"\n")
            if nl < 0:
                self.dropped += len(data)
                return
            self.dropped += nl + 1
            data = data[nl + 1:]
            self._skip_line = False
        data = self._rest + data if self._rest else data
        cut = data.rfind(b"\n")
        if cut >= 0:
            self._lines(data[:cut])
            data = data[cut + 1:]
        if len(data) > self.line_max + self._keep and not self.full:
            self.dropped += len(data) - self.line_max
            self._store([self._cut(mask(data, self.forms))])
            self._skip_line = True
            data = b""
        self._rest = data if not self.full else b""

    def end_step(self) -> None:
        """The step's output ended: store its unterminated last line."""
        if self._rest and not self.full:
            self._lines(self._rest)
        self._rest, self._skip_line = b"", False

    def _cut(self, line: bytes) -> bytes:
        return line[:self.line_max] + f" [log truncated: line longer than {self.line_max} bytes]".encode()

    def _lines(self, block: bytes) -> None:
        """Complete lines joined by newlines (no trailing one): masked, cut, stored."""
        if self.full:
            self.dropped += len(block) + 1
            return
        block = mask(block, self.forms)
        lines = block.split(b"\n")
        if self.stored + len(block) + 1 <= self.job_max and max(map(len, lines)) <= self.line_max:
            self.stored += len(block) + 1  # the common case: one decode, no per-line work
            self.sink.add(block.decode("utf-8", "replace").replace("\r\n", "\n").split("\n"))
            return
        for i, line in enumerate(lines):
            if len(line) > self.line_max:
                self.dropped += len(line) - self.line_max
                lines[i] = self._cut(line)
        self._store(lines)

    def _store(self, lines: list[bytes]) -> None:
        out: list[str] = []
        for i, line in enumerate(lines):
            if self.stored + len(line) + 1 > self.job_max:
                self.full = True
                self.dropped += sum(len(rest) + 1 for rest in lines[i:])
                out.append(f"raibid: [log truncated: this job's log reached {self.job_max} bytes "
                           "(agents.log_max_bytes); further output is not stored]")
                break
            self.stored += len(line) + 1
            out.append(line.rstrip(b"\r").decode("utf-8", "replace"))
        self.sink.add(out)


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
    """One agent process: claims and runs at most one job, its steps in the step runner."""

    def __init__(self, queue: Queue, settings: AgentSettings, *, log: Callable[[str], None] | None = None,
                 runner: StepRunnerClient | None = None) -> None:
        self.q = queue
        self.s = settings
        self.log = log or (lambda msg: None)
        self.terminating = threading.Event()
        self.runner = runner
        self._running = False  # a step is running in the runner
        self._stop_reason: str | None = None
        self._give_up: threading.Timer | None = None  # armed by a kill: the runner must end the step by then
        self._step_dirs: dict[str, str] | None = None  # HOME and TMPDIR of this job's steps
        self._lock = threading.Lock()
        self._secrets = [settings.token, *settings.masked]

    # ------------------------------------------------------------------ signals
    def on_sigterm(self, *_: object) -> None:
        self.terminating.set()
        # The handler runs on the main thread, maybe in the middle of a frame to the runner: the
        # kill frame goes from another thread, after it.
        threading.Thread(target=self._kill_step, args=("terminated",), name="raibid-sigterm", daemon=True).start()

    def _kill_step(self, reason: str) -> None:
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            if self._running and self.runner is not None:
                self.runner.kill()
                if self._give_up is None:  # whatever the step did to its runner, the agent's deadline holds
                    self._give_up = threading.Timer(EXIT_GRACE_S, self.runner.abandon)
                    self._give_up.daemon = True
                    self._give_up.start()

    # ------------------------------------------------------------------ main
    def run(self) -> Outcome:
        from raibid.errors import Unreachable

        if self.runner is None:
            try:
                # A local runner starts while the agent claims and clones (its hello is awaited before
                # the first step); the build container's must answer before a job is claimed.
                self.runner = StepRunnerClient.start(self.s.step_runner, self.s.env, timeout=self.s.step_runner_timeout,
                                                     stop=self.terminating.is_set, wait=self.s.step_runner is not None)
            except (TimeoutError, RunnerGone, OSError) as e:
                if self.s.step_runner is None:
                    msg = f"cannot start the local step runner: {e}"
                else:
                    msg = (f"no step runner at {self.s.step_runner} within {self.s.step_runner_timeout:g}s ({e}); "
                           "the build container must run `raibid agents step-runner --socket "
                           f"{self.s.step_runner.partition(':')[2]}`")
                self.log(msg)
                return Outcome(AgentExit.UNREACHABLE, error=msg)
        try:
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
        finally:
            self.runner.close()

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
        cutter = LogCutter(sink, mask_forms(self._secrets, self.s.git_user), job_max=self.s.log_max_bytes,
                           line_max=self.s.log_line_max_bytes)
        hb = Heartbeat(self.q, claim, self.s.heartbeat_s, lambda: self._kill_step("heartbeat"), self.log)
        first_output: list[float] = []
        outcome: Outcome
        try:
            hb.check_now()
            hb.start()
            try:
                outcome = self._execute(claim, cutter, hb, first_output, t_claim)
            except Exception as e:  # a bug or a broken workdir: fail the job with a message, not silently
                import traceback

                self.log("agent error:\n" + scrub(traceback.format_exc(), self._secrets))
                cutter.note(f"agent error: {e}")
                outcome = Outcome(AgentExit.OK, status="failed", error=scrub(f"agent error: {e}", self._secrets))
            if cutter.dropped:
                cutter.note(f"[log truncated: {cutter.dropped} bytes of output were not stored "
                            f"(agents.log_max_bytes {self.s.log_max_bytes}, agents.log_line_max_bytes "
                            f"{self.s.log_line_max_bytes})]")
        finally:
            hb.stop()
            sink.close()
            self._remove_step_dirs()
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
            self.log(f"released job {job_id} ({outcome.error or 'released'}): {where}")
            return outcome
        try:
            ok = self.q.finish(claim, outcome.status or "failed", exit_code=outcome.exit_code, error=outcome.error,
                               image=" ".join(outcome.images) or None)
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
    def _execute(self, claim: Claim, cutter: LogCutter, hb: Heartbeat, first_output: list[float],
                 t_claim: float) -> Outcome:
        job = claim.job
        agent_type, trusted_pool = split_pool(self.s.agent)
        timeout = float(job.timeout or 3600)
        if self.s.max_timeout:
            timeout = min(timeout, self.s.max_timeout)
        deadline = t_claim + timeout
        say = cutter.note
        say(f"agent {self.s.consumer} ({self.s.agent}) running job {job.id}, delivery {job.deliveries}")
        if not self.s.policy.admits(job.repo, self.s.agent):
            msg = (f"{job.repo} is not trusted (agents.trusted) but its job is in the trusted pool {self.s.agent}; "
                   f"nothing was run: untrusted repos build in {agent_type}-untrusted")
            say(msg)
            return Outcome(AgentExit.OK, status="failed", error=msg)

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

        try:
            pipeline = (Pipeline(command_step(job.command)) if job.command
                        else _read_pipeline(src, job.repo, sha, job.pipeline))
            secrets = self._job_secrets(job.repo, pipeline.secrets, trusted_pool, say)
        except PipelineError as e:
            say(e.message)
            return Outcome(AgentExit.OK, status="failed", error=e.message)
        if secrets:
            cutter.set_forms(mask_forms([*self._secrets, *secrets.values()], self.s.git_user))

        try:
            self.runner.ready()  # type: ignore[union-attr]
        except RunnerGone as e:
            say(f"{e}; the job is released")
            return Outcome(AgentExit.UNREACHABLE, status="released", error=str(e))
        env = self._step_env(job, sha, agent_type)
        steps = pipeline.steps
        images: list[str] = []
        for i, step in enumerate(steps, 1):
            remaining = deadline - time.monotonic()
            step_timeout = min(step.timeout, remaining) if step.timeout else remaining
            image = None
            if step.image is not None:
                try:
                    image = self._image_build(step, job, env, trusted_pool, i)
                except PipelineError as e:
                    say(e.message)
                    return Outcome(AgentExit.OK, status="failed", error=e.message, images=images)
                step = image.step
                if image.token:
                    cutter.set_forms(sorted({*cutter.forms, *mask_forms([image.token], image.user or self.s.push_user)},
                                            key=len, reverse=True))
                say(f"step {step.name} ({i}/{len(steps)}): {step.image.describe()}")  # type: ignore[union-attr]
            else:
                say(f"step {step.name} ({i}/{len(steps)}): {step.run.splitlines()[0] if step.run else ''}")
            try:
                if image is not None:
                    image.write_auth()
                try:
                    code, why, elapsed = self._run_step(step, {**env, **step.env, **secrets, **(image.env if image
                                                        else {})}, src, max(step_timeout, 0.0), cutter, first_output)
                finally:
                    if image is not None:
                        image.remove_auth()
            except (RunnerGone, StepStartFailed) as e:
                stopped = self._stopped_outcome(hb)
                if stopped:
                    return stopped
                msg = f"step {step.name}: {e}"
                if isinstance(e, RunnerGone):
                    msg += " (the build container stopped: out of memory?)"
                say(msg)
                return Outcome(AgentExit.OK, status="failed", error=msg)
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
                if image is not None and code == 127:
                    say(f"step {step.name}: no buildctl in the build container; image steps run in the `image` "
                        "agent type (`agent: image`)")
                return Outcome(AgentExit.OK, status="failed", exit_code=code,
                               error=f"step {step.name} exited {code}", images=images)
            if image is not None:
                built = image.result()
                for ref in built:
                    say(f"image {ref}")
                if not built:
                    say(f"step {step.name}: BuildKit wrote no image digest to its metadata file")
                images.extend(built)
        return Outcome(AgentExit.OK, status="succeeded", exit_code=0, images=images)

    def _image_build(self, step: Step, job: object, env: dict[str, str], trusted_pool: bool,
                     index: int) -> _ImageBuild:
        """An image step as the buildctl command the build container runs, and its push credential:
        PipelineError when it may not run (push from an untrusted build, another owner's name, a tag that
        does not expand to a tag, no credential)."""
        spec = step.image
        assert spec is not None
        repo: str = job.repo  # type: ignore[attr-defined]
        owner = repo.partition("/")[0].lower()
        where = f"{FILE_NAME} step {step.name}"
        if spec.name.partition("/")[0] != owner:
            raise PipelineError(f"{where}: image {spec.name} is not under {owner}/; a repo publishes only under "
                                "its own owner; nothing was built")
        if spec.push and not trusted_pool:
            raise PipelineError(f"{where}: push: true, but this build runs in the untrusted pool {self.s.agent} "
                                f"({repo} is not in agents.trusted); an untrusted build may only build, with "
                                "push: false; nothing was built")
        if not self.s.registry:
            raise PipelineError(f"{where}: no registry is known (agents.registry); nothing was built")
        try:
            tags = expand_tags(spec.tags, env)
        except ValueError as e:
            raise PipelineError(f"{where}: {e}; nothing was built") from None
        token = user = None
        if spec.push:
            found = self._job_secrets_or_none(repo)
            if found is None:
                raise PipelineError(f"{where}: push: true needs the push credential, the agents.secrets entry "
                                    f"{PUSH_SECRET} (a write:package token) allowing {repo}; nothing was built")
            user, _, token = found.partition(":") if ":" in found else (self.s.push_user, "", found)
        dirs = self._fresh_step_dirs()
        base = f"{self.s.registry}/{spec.name}"
        insecure = ",registry.insecure=true" if self.s.registry_insecure else ""
        meta = Path(dirs["TMPDIR"]) / f"raibid-image-{index}.json"
        context = spec.context
        dockerfile_dir, _, dockerfile = spec.dockerfile.rpartition("/")
        argv = ["buildctl", "--addr", BUILDKIT_ADDR, "build", "--frontend", "dockerfile.v0",
                "--local", f"context={context}", "--local", f"dockerfile={dockerfile_dir or '.'}",
                "--opt", f"filename={dockerfile}", "--opt", f"platform={','.join(spec.platforms)}",
                "--output", f'type=image,"name={",".join(f"{base}:{t}" for t in tags)}",'
                            f'push={"true" if spec.push else "false"}{insecure}',
                "--metadata-file", str(meta), "--progress", "plain"]
        if spec.cache:
            if spec.push:  # writing the cache is a push: trusted builds only
                argv += ["--export-cache", f"type=registry,ref={base}:buildcache,mode=max{insecure}"]
            argv += ["--import-cache", f"type=registry,ref={base}:buildcache{insecure}"]
        import shlex

        run = Step(step.name, shlex.join(argv), step.timeout, step.env, spec)
        docker = Path(dirs["HOME"]) / ".docker"
        return _ImageBuild(run, spec, base, tags, meta, docker, self.s.registry, user, token)

    def _job_secrets_or_none(self, repo: str) -> str | None:
        """The push credential for ``repo``, or None when there is none it may use."""
        repos = self.s.job_secrets.get(PUSH_SECRET)
        if repos is None or not secret_allowed(repos, repo):
            return None
        try:
            value = (self.s.secrets_dir / PUSH_SECRET).read_bytes().decode("utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return value if value and "\0" not in value and "\n" not in value else None

    def _stopped_outcome(self, hb: Heartbeat) -> Outcome | None:
        if self.terminating.is_set():
            return Outcome(AgentExit.TERMINATED, status="released", error="agent terminated (SIGTERM)")
        if hb.lost.is_set():
            return Outcome(AgentExit.LOST, status="lost")
        if hb.cancelled.is_set():
            return Outcome(AgentExit.OK, status="cancelled", error="cancelled while running")
        return None

    def _job_secrets(self, repo: str, names: list[str], trusted_pool: bool,
                     say: Callable[[str], None]) -> dict[str, str]:
        """The values of the secrets a ``.raibid.yml`` asks for: none for an untrusted build (the log
        says which were withheld); PipelineError naming the secret for a trusted build that may not have it."""
        if not names:
            return {}
        if not trusted_pool:
            for name in names:
                say(f"secret {name} withheld: this build runs in the untrusted pool {self.s.agent} ({repo} is not "
                    "in agents.trusted); job secrets go to trusted builds only")
            return {}
        out: dict[str, str] = {}
        for name in names:
            if name == PUSH_SECRET:
                raise PipelineError(f"{FILE_NAME} asks for secret {PUSH_SECRET}, the registry push credential: it "
                                    "goes to `image:` steps only (push: true), never to a step's environment; "
                                    "nothing was run")
            repos = self.s.job_secrets.get(name)
            if repos is None:
                known = ", ".join(sorted(self.s.job_secrets)) or "none"
                raise PipelineError(f"{FILE_NAME} asks for secret {name}, but no agents.secrets entry is named "
                                    f"{name} (configured: {known}); nothing was run")
            if not secret_allowed(repos, repo):
                raise PipelineError(f"{FILE_NAME} asks for secret {name}, but the agents.secrets entry {name} does "
                                    f"not allow {repo} (repos: {', '.join(repos)}); nothing was run")
            path = self.s.secrets_dir / name
            try:
                value = path.read_bytes().decode("utf-8")
            except FileNotFoundError:
                raise PipelineError(f"secret {name}: {path} does not exist (the trusted pool's pod mounts each "
                                    "agents.secrets entry there); nothing was run") from None
            except (OSError, UnicodeDecodeError) as e:
                raise PipelineError(f"secret {name}: cannot read {path}: {e}; nothing was run") from None
            if "\0" in value or not value:
                raise PipelineError(f"secret {name}: {path} is empty or holds a NUL byte; nothing was run")
            out[name] = value
        return out

    def _step_env(self, job: object, sha: str, agent_type: str) -> dict[str, str]:
        """What a step sees besides the runner's own environment: no credential, ever."""
        env = dict(job.env or {})  # type: ignore[attr-defined]
        env.update({
            "CI": "true", "RAIBID": "1",
            "RAIBID_JOB_ID": job.id, "RAIBID_REPO": job.repo, "RAIBID_REF": job.ref,  # type: ignore[attr-defined]
            "RAIBID_COMMIT": sha, "RAIBID_AGENT_TYPE": agent_type, "RAIBID_REGISTRY": self.s.registry,
        })
        # What triggered it (the job's trigger fields), each only when the job has it.
        trigger = {"RAIBID_EVENT": getattr(job, "event", None), "RAIBID_PR": getattr(job, "pr", None),
                   "RAIBID_BASE_REF": getattr(job, "base_ref", None), "RAIBID_HEAD_REF": getattr(job, "head_ref", None)}
        env.update({k: v for k, v in trigger.items() if v})
        return env

    def _run_step(self, step: Step, env: dict[str, str], cwd: Path, timeout: float, cutter: LogCutter,
                  first_output: list[float]) -> tuple[int, str | None, float]:
        """(exit code, why it was stopped or None, seconds). Output streams to ``cutter`` as it comes."""
        assert self.runner is not None
        t0 = time.monotonic()
        env = {**env, **self._fresh_step_dirs()}
        why: str | None
        with self._lock:  # a kill frame (timeout, cancel, SIGTERM) can only follow the run frame
            if self._stop_reason is not None:
                why, self._stop_reason = self._stop_reason, None
                return -1, why, 0.0
            self.runner.begin(step.run, cwd, env, max_pids=self.s.max_pids)
            self._running = True
        timer = threading.Timer(timeout, self._kill_step, args=("timeout",))
        timer.daemon = True
        timer.start()

        def output(chunk: bytes) -> None:
            if not first_output:
                first_output.append(time.monotonic())
            cutter.feed(chunk)

        try:
            code, runner_terminated = self.runner.wait(output)
        except RunnerGone:
            if not self.runner.abandoned:
                raise
            code, runner_terminated = -1, False  # stopped, and the runner did not end it in time: given up on
        finally:
            timer.cancel()
            with self._lock:
                self._running = False
                why, self._stop_reason = self._stop_reason, None
                if self._give_up is not None:
                    self._give_up.cancel()
                    self._give_up = None
            cutter.end_step()
        if runner_terminated and why is None:
            # The runner was sent SIGTERM. In a pod shutting down, so is this agent, maybe a moment later;
            # if not, a step signalled its runner (`kill -TERM $PPID`), and the step simply failed.
            self.terminating.wait(TERM_GRACE_S)
        if why is None and self.terminating.is_set():
            why = "terminated"
        return code, why, time.monotonic() - t0

    def _fresh_step_dirs(self) -> dict[str, str]:
        """HOME and TMPDIR of this job's steps: new directories in the workdir, made before its first step
        and removed after the job, so what a build writes there (~/.gitconfig, ~/.npmrc, ~/.cargo) never
        reaches a later job."""
        if self._step_dirs is None:
            home, tmp = self.s.workdir / "home", self.s.workdir / "tmp"
            for path in (home, tmp):
                _remove_tree(path)  # a previous agent's, if it was killed
                path.mkdir(mode=0o700, parents=True)
            self._step_dirs = {"HOME": str(home), "TMPDIR": str(tmp), "TMP": str(tmp), "TEMP": str(tmp)}
        return self._step_dirs

    def _remove_step_dirs(self) -> None:
        if self._step_dirs is not None:
            for key in ("HOME", "TMPDIR"):
                _remove_tree(Path(self._step_dirs[key]))
            self._step_dirs = None

    # ------------------------------------------------------------------ git
    def _clone(self, repo: str, ref: str, commit: str | None, dest: Path, say: Callable[[str], None]) -> str:
        """Fetch one commit into ``dest``. git is the only process that gets the token (in its env, for
        the clone's duration, before any step runs); ``--end-of-options`` keeps a ref from being an option."""
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
            self._git(["fetch", "-q", "--no-tags", "--depth", "1", "--end-of-options", "origin", want], dest, env)
            target = "FETCH_HEAD"
        except _CloneFailed as e:
            if not commit or e.transient:
                raise
            # Servers that refuse a fetch by sha: fetch the ref, then find the commit in it.
            self._git(["fetch", "-q", "--no-tags", "--end-of-options", "origin", ref], dest, env)
            target = commit
        # Resolved first: checkout takes no --end-of-options, and a sha cannot be an option.
        sha = self._git(["rev-parse", "-q", "--verify", "--end-of-options", f"{target}^{{commit}}"], dest, env).strip()
        self._git(["checkout", "-q", "--detach", sha], dest, env)
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


@dataclass
class _ImageBuild:
    """One image step being run: its buildctl step, where its credential and metadata go."""

    step: Step
    spec: ImageSpec
    base: str  # <registry>/<name>
    tags: list[str]
    metadata: Path
    docker_dir: Path  # DOCKER_CONFIG: in the step's private HOME, for the image step only
    registry: str
    user: str | None
    token: str | None

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_CONFIG": str(self.docker_dir)}

    def write_auth(self) -> None:
        """config.json with the push credential (none for push: false); what a previous step left is removed,
        never followed."""
        import base64
        import json

        _remove_tree(self.docker_dir)
        _remove_tree(self.metadata)
        self.docker_dir.mkdir(mode=0o700)
        auths = {}
        if self.token:
            auths[self.registry] = {"auth": base64.b64encode(f"{self.user}:{self.token}".encode()).decode()}
        fd = os.open(self.docker_dir / "config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": auths}, f)

    def remove_auth(self) -> None:
        _remove_tree(self.docker_dir)

    def result(self) -> list[str]:
        """``<base>:<tag>@<digest>`` for each tag, from BuildKit's metadata file (written by the build, so
        read as hostile: a regular file, capped, the digest checked); [] when it has none."""
        import json

        try:
            fd = os.open(self.metadata, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return []
        with os.fdopen(fd, "rb") as f:
            import stat

            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return []
            data = f.read(MAX_METADATA_BYTES + 1)
        _remove_tree(self.metadata)
        try:
            meta = json.loads(data) if len(data) <= MAX_METADATA_BYTES else None
        except ValueError:
            meta = None
        digest = meta.get("containerimage.digest") if isinstance(meta, dict) else None
        if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
            return []
        return [f"{self.base}:{tag}@{digest}" for tag in self.tags]


def _remove_tree(path: Path) -> None:
    """Remove a directory a build wrote to, even where it took away its own permissions; a symlink put
    in its place is removed, never followed."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
        return
    if not path.exists():
        return
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            sub = os.path.join(root, name)
            if not os.path.islink(sub):
                with contextlib.suppress(OSError):
                    os.chmod(sub, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _read_pipeline(src: Path, repo: str, sha: str, name: str | None = None) -> Pipeline:
    """The checkout's ``.raibid.yml``, read by the agent before any step runs: a regular file only (a
    symlink could point the agent at a file only it may read), and at most MAX_PIPELINE_BYTES. The
    job's ``pipeline`` picks one of its pipelines (None: the file's only one); what runs is what the
    commit holds, so a pipeline renamed or removed since the job was queued fails it by name."""
    import errno
    import stat

    path = src / FILE_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise PipelineError(f"the job has no command and {repo} has no {FILE_NAME} at {sha[:12]}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PipelineError(f"{FILE_NAME} is a symbolic link; it must be a regular file") from None
        raise PipelineError(f"cannot read {FILE_NAME}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PipelineError(f"{FILE_NAME} is not a regular file")
        data = f.read(MAX_PIPELINE_BYTES + 1)
    if len(data) > MAX_PIPELINE_BYTES:
        raise PipelineError(f"{FILE_NAME} is larger than {MAX_PIPELINE_BYTES} bytes")
    return parse_pipeline(data.decode("utf-8", errors="replace"), FILE_NAME, name)


_TRANSIENT = ("Could not resolve host", "Failed to connect", "Connection refused", "Connection timed out",
              "The requested URL returned error: 502", "The requested URL returned error: 503",
              "The requested URL returned error: 504", "Operation timed out", "Empty reply from server")


class _CloneFailed(Exception):
    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


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
