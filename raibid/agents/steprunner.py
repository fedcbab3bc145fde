"""The step runner: the process that runs a build's steps and holds no raibid secret.

The trusted agent (claim, clone with the token, log, result) never runs a step
itself. It asks a step runner over a unix stream socket: in the pod the
``build`` container runs ``raibid agents step-runner --socket
/run/raibid/steps.sock`` and the agent connects to it; without
``--step-runner`` the agent starts this module as a child process with a
scrubbed environment (:func:`spawn_local`) and talks to it over a socketpair.
Same protocol either way.

Protocol (one connection, one agent; frames are ``type`` (1 byte), ``length``
(4 bytes, big-endian), payload):

- runner -> agent ``H`` hello ``{"protocol": 1, "pid": ...}`` once, on connect;
- agent -> runner ``R`` run ``{"run", "cwd", "env", "max_pids"}``: one step,
  ``bash -eo pipefail -c <run>`` in its own process group, env = the runner's
  own environment plus ``env``; stdout and stderr combined;
- runner -> agent ``O`` output bytes, as they come (coalesced);
- agent -> runner ``K`` kill ``{"reason"}``: SIGTERM the group, SIGKILL after
  :data:`KILL_GRACE_S`;
- runner -> agent ``X`` exit ``{"code", "terminated"}`` once the step's shell
  has exited, what it left in its group is killed and its output is drained;
  ``terminated`` says the runner itself was sent SIGTERM (pod shutdown);
- runner -> agent ``E`` error ``{"message"}``: the step could not start.

The runner serves one agent: it stops listening once the agent is connected,
and when the connection closes (the agent exited or died) it kills the running
step's group and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

PROTOCOL = 1
KILL_GRACE_S = 5.0
SMALL_READ = 16 << 10
COALESCE_S = 0.002
READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ of the step's output pipe: fewer, larger reads under a flood
MAX_FRAME = 64 << 20  # a request (script and env) or an output chunk; anything bigger is a protocol error
_HEADER = struct.Struct(">cI")

# What a local runner inherits from the agent's environment: nothing that could hold a credential.
SAFE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TMP", "TEMP")


class ProtocolError(Exception):
    """The other side sent something that is not a frame of this protocol, or went away."""


# ----------------------------------------------------------------------------- framing


def send_frame(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    if len(payload) < 4096:
        sock.sendall(_HEADER.pack(kind, len(payload)) + payload)
    else:  # no copy of a large chunk just to prepend five bytes
        sock.sendall(_HEADER.pack(kind, len(payload)))
        sock.sendall(payload)


def send_json(sock: socket.socket, kind: bytes, obj: Mapping[str, Any]) -> None:
    send_frame(sock, kind, json.dumps(obj).encode())


class FrameReader:
    """Frames from a stream socket; ``None`` at a clean end of the stream."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def _exactly(self, n: int, *, at_start: bool = False) -> bytearray | None:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if not k:
                if at_start and not got:
                    return None
                raise ProtocolError("the connection closed in the middle of a frame")
            got += k
        return buf

    def read(self) -> tuple[bytes, bytes] | None:
        header = self._exactly(_HEADER.size, at_start=True)
        if header is None:
            return None
        kind, length = _HEADER.unpack(header)
        if length > MAX_FRAME:
            raise ProtocolError(f"frame of {length} bytes is larger than {MAX_FRAME}")
        payload = self._exactly(length) if length else bytearray()
        return kind, bytes(payload) if length < 4096 else payload  # type: ignore[return-value]


# ----------------------------------------------------------------------------- the runner


def no_dump() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``: /proc/<pid>/{environ,mem,fd,...} become root's, and ptrace is refused
    to a process of the same UID. Linux only; a no-op elsewhere. Reset by execve, so children are unaffected."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


class Runner:
    """Serves one agent connection: one step at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.terminated = False

    def _send(self, kind: bytes, payload: bytes = b"") -> None:
        with self._send_lock:
            send_frame(self.sock, kind, payload)

    def on_sigterm(self, *_: object) -> None:
        self.terminated = True
        self.kill()

    def kill(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            _kill_group(proc)

    def serve(self) -> int:
        reader = FrameReader(self.sock)
        self._send(b"H", json.dumps({"protocol": PROTOCOL, "pid": os.getpid()}).encode())
        step: threading.Thread | None = None
        try:
            while True:
                try:
                    frame = reader.read()
                except (ProtocolError, OSError):
                    frame = None
                if frame is None:
                    return 0  # the agent went away: the finally kills what runs
                kind, payload = frame
                if kind == b"R":
                    if step is not None:  # it has sent its exit frame (the agent waits for it): all but returned
                        step.join()
                    # Started here, not in the thread: a kill frame that follows finds the step.
                    proc = self._start(json.loads(payload))
                    if proc is not None:
                        step = threading.Thread(target=self._finish, args=(proc,), name="raibid-step", daemon=True)
                        step.start()
                elif kind == b"K":
                    self.kill()
        finally:
            self.kill()
            if step is not None:
                step.join(KILL_GRACE_S + 5)

    def _start(self, req: dict[str, Any]) -> subprocess.Popen | None:
        env = {**os.environ, **{str(k): str(v) for k, v in (req.get("env") or {}).items()}}
        _limit_pids(req.get("max_pids"))
        try:
            proc = subprocess.Popen(["bash", "-eo", "pipefail", "-c", str(req["run"])], cwd=req.get("cwd") or None,
                                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            self._send(b"E", json.dumps({"message": f"cannot start the step: {e}"}).encode())
            return None
        with self._lock:
            self._proc = proc
        if self.terminated:
            _kill_group(proc)
        with contextlib.suppress(OSError, AttributeError):  # Linux; the default 64 KiB elsewhere
            import fcntl

            fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[union-attr]
        return proc

    def _finish(self, proc: subprocess.Popen) -> None:
        # When the step's shell exits, what it left running in its group (a daemon holding the
        # output pipe open) is killed, so the step ends with its shell, as on hosted CI runners.
        reaper = threading.Thread(target=_reap_group, args=(proc,), name="raibid-reaper", daemon=True)
        reaper.start()
        try:
            self._pump(proc.stdout)
        except OSError:  # the agent went away: stop the step; serve() sees the end of the connection
            _kill_group(proc)
        code = proc.wait()
        if proc.stdout:
            proc.stdout.close()
        with self._lock:
            self._proc = None
        with contextlib.suppress(OSError):
            self._send(b"X", json.dumps({"code": code, "terminated": self.terminated}).encode())

    def _pump(self, stream: Any) -> None:
        fd = stream.fileno()
        while True:
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                return
            if len(chunk) < SMALL_READ:
                # A step that writes line by line would cost one read (and one frame) per line; a
                # short pause lets the pipe gather a batch. At most COALESCE_S of added latency.
                time.sleep(COALESCE_S)
                chunk += _read_ready(fd, READ_SIZE - len(chunk))
            self._send(b"O", chunk)


def _read_ready(fd: int, n: int) -> bytes:
    """What the pipe holds now, without blocking (EOF shows up on the next blocking read)."""
    import select

    if n <= 0 or not select.select([fd], [], [], 0)[0]:
        return b""
    return os.read(fd, n)


def _limit_pids(max_pids: object) -> None:
    """RLIMIT_NPROC for this runner and the steps it starts (it counts every process of the UID)."""
    import resource

    if not isinstance(max_pids, int) or max_pids <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    limit = max_pids if hard == resource.RLIM_INFINITY else min(max_pids, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


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


def _serve_connection(sock: socket.socket) -> int:
    no_dump()
    runner = Runner(sock)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, runner.on_sigterm)
    try:
        return runner.serve()
    finally:
        sock.close()


def serve_socket(path: Path, *, accept_timeout: float | None = None) -> int:
    """``raibid agents step-runner --socket PATH``: listen, take one agent, serve it, exit.

    The socket is removed once the agent is connected, so nothing else (a step) can connect.
    """
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(1)
    listener.settimeout(accept_timeout)
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        raise ProtocolError(f"no agent connected to {path} within {accept_timeout:g}s") from None
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    conn.settimeout(None)
    return _serve_connection(conn)


def serve_fd(fd: int) -> int:
    """The local runner (a child of the agent): serve the socketpair end inherited as ``fd``."""
    return _serve_connection(socket.socket(fileno=fd))


# ----------------------------------------------------------------------------- the agent's side


def scrubbed_env(env: Mapping[str, str]) -> dict[str, str]:
    """The basics a local runner (and so every step) inherits: PATH, HOME, locale, time zone, temp dir."""
    return {k: v for k, v in env.items() if k in SAFE_ENV or k.startswith("LC_")}


# The local runner imports this module from where the agent found it (an install or a checkout),
# with nothing from the agent's environment (no PYTHONPATH), and the standard library only.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from raibid.agents.steprunner import main; sys.exit(main())"


def spawn_local(env: Mapping[str, str]) -> tuple[subprocess.Popen, socket.socket]:
    """Start this module as a child with a scrubbed environment; the agent's end of the socketpair."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen([sys.executable, "-c", _BOOT, _PACKAGE_ROOT, "--fd", str(theirs.fileno())],
                                env=scrubbed_env(env), stdin=subprocess.DEVNULL, close_fds=True,
                                pass_fds=(theirs.fileno(),), start_new_session=True)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours


def connect_unix(path: str, timeout: float, stop: Callable[[], bool] = lambda: False) -> socket.socket:
    """Connect to a runner's socket, waiting up to ``timeout`` for it to appear (the build container
    may start after the agent's). Raises TimeoutError with what was tried."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            last = e
        except OSError:
            sock.close()
            raise
        if time.monotonic() >= deadline or stop():
            raise TimeoutError(f"{last.strerror if last else 'no answer'}")
        time.sleep(0.05)  # waiting for another container to create the socket, bounded by the deadline


class RunnerGone(Exception):
    """The step runner closed the connection or broke the protocol (its container was killed, say)."""


class StepStartFailed(Exception):
    """The runner could not start the step (no bash, a missing directory)."""


class StepRunnerClient:
    """The agent's end of the protocol: one step at a time; ``kill`` may be called from any thread."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen | None = None, where: str = "local") -> None:
        self.sock = sock
        self.proc = proc  # the local runner child, if this agent started it
        self.where = where
        self._reader = FrameReader(sock)
        self._send_lock = threading.Lock()
        self._timeout = 60.0
        self.hello: dict[str, Any] = {}

    @classmethod
    def start(cls, url: str | None, env: Mapping[str, str], *, timeout: float,
              stop: Callable[[], bool] = lambda: False, wait: bool = True) -> StepRunnerClient:
        """``unix:PATH`` (the pod's build container), or None for a local child process. With ``wait``,
        waits for the hello; else :meth:`ready` does, before the first step."""
        if url is None:
            proc, sock = spawn_local(env)
            client = cls(sock, proc)
        else:
            scheme, _, path = url.partition(":")
            if scheme != "unix" or not path:
                raise ValueError(f"--step-runner must be unix:PATH, not {url!r}")
            client = cls(connect_unix(path, timeout, stop), where=url)
        client._timeout = timeout
        if wait:
            try:
                client.ready()
            except RunnerGone:
                client.close()
                raise
        return client

    def ready(self) -> None:
        """Wait for the runner's hello (once). RunnerGone when it does not come within the timeout."""
        if self.hello:
            return
        self.sock.settimeout(self._timeout)
        try:
            frame = self._reader.read()
        except (OSError, ProtocolError) as e:
            raise RunnerGone(f"the step runner ({self.where}) did not say hello: {e}") from None
        if frame is None or frame[0] != b"H":
            raise RunnerGone(f"the step runner ({self.where}) did not say hello")
        self.sock.settimeout(None)
        hello = json.loads(frame[1])
        if hello.get("protocol") != PROTOCOL:
            raise RunnerGone(f"the step runner speaks protocol {hello.get('protocol')!r}, "
                             f"this agent {PROTOCOL}: use the same raibid version in both containers")
        self.hello = hello

    def _send(self, kind: bytes, obj: Mapping[str, Any]) -> None:
        with self._send_lock:
            send_json(self.sock, kind, obj)

    def begin(self, script: str, cwd: Path, env: Mapping[str, str], *, max_pids: int | None = None) -> None:
        """Ask for one step; then :meth:`wait` for it. RunnerGone when the runner is not there."""
        try:
            self._send(b"R", {"run": script, "cwd": str(cwd), "env": dict(env), "max_pids": max_pids})
        except OSError as e:
            raise RunnerGone(f"the step runner ({self.where}) went away: {e}") from None

    def wait(self, on_output: Callable[[bytes], None]) -> tuple[int, bool]:
        """The step's end: (exit code, whether the runner was sent SIGTERM). ``on_output(bytes)`` gets the
        output as it comes. RunnerGone or StepStartFailed when it cannot run."""
        while True:
            try:
                frame = self._reader.read()
            except (OSError, ProtocolError) as e:
                raise RunnerGone(f"the step runner ({self.where}) went away: {e}") from None
            if frame is None:
                raise RunnerGone(f"the step runner ({self.where}) went away")
            kind, payload = frame
            if kind == b"O":
                on_output(payload)
            elif kind == b"X":
                done = json.loads(payload)
                return int(done["code"]), bool(done.get("terminated"))
            elif kind == b"E":
                raise StepStartFailed(json.loads(payload).get("message", "the step could not start"))

    def kill(self) -> None:
        """Stop the running step (SIGTERM to its group, SIGKILL after the grace period); no-op when none runs."""
        with contextlib.suppress(OSError):
            self._send(b"K", {"reason": "stop"})

    def close(self) -> None:
        """Hang up: the runner kills what is left and exits."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self.proc is not None:
            try:
                self.proc.wait(KILL_GRACE_S + 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="raibid.agents.steprunner")
    ap.add_argument("--fd", type=int, required=True)
    args = ap.parse_args(argv)
    return serve_fd(args.fd)


if __name__ == "__main__":
    sys.exit(main())
