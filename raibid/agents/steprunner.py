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
- agent -> runner ``K`` kill ``{"reason"}``: SIGTERM everything the step started,
  SIGKILL after :data:`KILL_GRACE_S`;
- runner -> agent ``X`` exit ``{"code", "terminated"}`` once the step's shell
  has exited, everything it started is killed (the runner is their subreaper)
  and its output is drained (for :data:`DRAIN_S` at most); ``terminated`` says
  the runner itself was sent SIGTERM (the agent believes it only with its own);
- runner -> agent ``E`` error ``{"message"}``: the step could not start.

The runner serves one agent: it stops listening once the agent is connected,
and when the connection closes (the agent exited or died) it kills everything
the running step started and exits. The agent does not rely on it: a runner
that has not ended a stopped step within :data:`EXIT_GRACE_S` is given up on
(:meth:`StepRunnerClient.abandon`).
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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

PROTOCOL = 1
KILL_GRACE_S = 5.0  # a stopped step: SIGTERM, then SIGKILL after this
SWEEP_S = 2.0  # how long the runner keeps killing what a step left (a fork bomb ends in a few passes)
DRAIN_S = 1.0  # after the step's processes are gone: how long its output is still read, waiting for EOF
ORPHAN_REAP_S = 1.0  # how often a running step's orphaned zombies are reaped
# The agent's side: how long after a kill it waits for the exit frame before it gives up on the runner.
EXIT_GRACE_S = KILL_GRACE_S + SWEEP_S + DRAIN_S + 2.0
# In a pod, SIGTERM reaches both containers at once; how long the agent waits for its own once the runner
# reports one (without it, a step signalled its runner, and the step simply failed).
TERM_GRACE_S = 2.0
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

    def read(self) -> tuple[bytes, bytes | bytearray] | None:
        header = self._exactly(_HEADER.size, at_start=True)
        if header is None:
            return None
        kind, length = _HEADER.unpack(header)
        if length > MAX_FRAME:
            raise ProtocolError(f"frame of {length} bytes is larger than {MAX_FRAME}")
        payload = self._exactly(length) if length else bytearray()
        if payload is None:  # not at the start of a frame: _exactly raised instead
            raise ProtocolError("the connection closed in the middle of a frame")
        return kind, bytes(payload) if length < 4096 else payload  # a large frame is not copied


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


def scrub_environ(names: Iterable[str]) -> None:
    """Overwrite the values of ``names`` where the kernel shows them (/proc/<pid>/environ is the block
    the process was started with: ``os.environ.pop`` leaves it as it was), then drop them from
    ``os.environ``. Linux only (elsewhere the pop). Call it before any thread starts: it writes to
    memory libc's ``getenv`` reads."""
    names = [n for n in dict.fromkeys(names) if n]
    if sys.platform.startswith("linux") and names:
        import ctypes

        prefixes = [n.encode() + b"=" for n in names]

        def wipe(addr: int) -> None:
            entry = ctypes.string_at(addr)
            for prefix in prefixes:
                if entry.startswith(prefix) and len(entry) > len(prefix):
                    ctypes.memset(addr + len(prefix), 0, len(entry) - len(prefix))

        # What libc's environ points at (the start-up block, or copies setenv made), then the whole
        # start-up block, which still holds entries libc no longer points at.
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(ctypes.CDLL(None), "environ")
        i = 0
        while environ[i]:
            wipe(environ[i])
            i += 1
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 48:  # env_start and env_end (fields 50 and 51), Linux >= 3.5
            start, end = int(fields[47]), int(fields[48])
            block = ctypes.string_at(start, end - start)
            offset = 0
            while offset < len(block):
                nul = block.find(b"\0", offset)
                nul = len(block) if nul < 0 else nul
                if nul > offset:
                    wipe(start + offset)
                offset = nul + 1
    for name in names:
        os.environ.pop(name, None)


class Runner:
    """Serves one agent connection: one step at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._step: _Step | None = None
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
            step = self._step
        if step is not None:
            step.stop()

    def serve(self) -> int:
        reader = FrameReader(self.sock)
        try:
            self._send(b"H", json.dumps({"protocol": PROTOCOL, "pid": os.getpid()}).encode())
        except OSError:  # the agent finished (or died) before this runner was up: nothing to serve
            return 0
        thread: threading.Thread | None = None
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
                    if thread is not None:  # it has sent its exit frame (the agent waits for it): all but returned
                        thread.join()
                    # Started here, not in the thread: a kill frame that follows finds the step.
                    step = self._start(json.loads(payload))
                    if step is not None:
                        thread = threading.Thread(target=self._finish, args=(step,), name="raibid-step", daemon=True)
                        thread.start()
                elif kind == b"K":
                    self.kill()
        finally:
            self.kill()
            if thread is not None:
                thread.join(KILL_GRACE_S + SWEEP_S + DRAIN_S + 5)
            kill_descendants(os.getpid(), reap=True)  # whatever is left, with or without a step

    def _start(self, req: dict[str, Any]) -> _Step | None:
        env = {**os.environ, **{str(k): str(v) for k, v in (req.get("env") or {}).items()}}
        _limit_pids(req.get("max_pids"))
        try:
            proc = subprocess.Popen(["bash", "-eo", "pipefail", "-c", str(req["run"])], cwd=req.get("cwd") or None,
                                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            self._send(b"E", json.dumps({"message": f"cannot start the step: {e}"}).encode())
            return None
        step = _Step(proc)
        with self._lock:
            self._step = step
        if self.terminated:
            step.stop()
        with contextlib.suppress(OSError, AttributeError):  # Linux; the default 64 KiB elsewhere
            import fcntl

            fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[union-attr]
        return step

    def _finish(self, step: _Step) -> None:
        # The watcher ends the step with its shell: when the shell exits, everything it started (in its
        # group or not: a `setsid` daemon, a double fork) is killed, as on hosted CI runners. Then the
        # output is read to its end, for DRAIN_S at most (a process outside this runner could hold it).
        watcher = threading.Thread(target=step.watch, name="raibid-watch", daemon=True)
        watcher.start()
        try:
            self._pump(step)
        except OSError:  # the agent went away: stop the step; serve() sees the end of the connection
            step.stop()
        watcher.join()
        with self._lock:
            self._step = None
        step.close()
        with contextlib.suppress(OSError):
            self._send(b"X", json.dumps({"code": step.proc.returncode, "terminated": self.terminated}).encode())

    def _pump(self, step: _Step) -> None:
        fd = step.proc.stdout.fileno()  # type: ignore[union-attr]
        while True:
            if not step.readable(fd):
                return
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                return
            if len(chunk) < SMALL_READ:
                # A step that writes line by line would cost one read (and one frame) per line; a
                # short pause lets the pipe gather a batch. At most COALESCE_S of added latency.
                time.sleep(COALESCE_S)
                chunk += _read_ready(fd, READ_SIZE - len(chunk))
            self._send(b"O", chunk)


class _Step:
    """One running step: its shell, and the watcher's schedule for stopping it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self._stop = threading.Event()
        self._fds_lock = threading.RLock()  # stop() (a signal handler too) never writes to a closed fd
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()  # stop() -> the watcher
        os.set_blocking(self._wake_r, False)
        self._ended_r, self._ended_w = os.pipe()  # the watcher -> the pump: the shell and what it left are gone
        self._drain_until: float | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(proc.pid)  # readable when the shell exits (Linux >= 5.3)
        except (AttributeError, OSError):
            self._pidfd = None

    def stop(self) -> None:
        """Ask the watcher to stop the step (any thread, or a signal handler)."""
        self._stop.set()
        with self._fds_lock, contextlib.suppress(OSError):
            if not self._closed:
                os.write(self._wake_w, b"k")

    def watch(self) -> None:
        """Until the shell exits: reap orphans that reparented to this runner, and on stop() SIGTERM the
        step and everything it started, SIGKILL after KILL_GRACE_S. Then kill whatever is left."""
        import select

        proc, me = self.proc, os.getpid()
        hard_at: float | None = None
        while proc.poll() is None:
            now = time.monotonic()
            if self._stop.is_set() and hard_at is None:
                if not signal_descendants(me, signal.SIGTERM):  # no /proc (not Linux): the group at least
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGTERM)
                hard_at = now + KILL_GRACE_S
            elif hard_at is not None and now >= hard_at:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                kill_descendants(me, reap=True, spare=proc.pid)
                hard_at = now + 1.0  # the shell is dying; if it is not gone by then, again
            _reap_orphans(proc.pid)
            wait = ORPHAN_REAP_S if hard_at is None else max(0.0, hard_at - time.monotonic())
            fds = [self._wake_r] if self._pidfd is None else [self._wake_r, self._pidfd]
            if select.select(fds, [], [], wait if self._pidfd is not None else min(wait, 0.05))[0]:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # no /proc (not Linux): the group at least
            os.killpg(proc.pid, signal.SIGKILL)
        kill_descendants(me, reap=True)
        self._drain_until = time.monotonic() + DRAIN_S
        with contextlib.suppress(OSError):
            os.write(self._ended_w, b"e")

    def readable(self, fd: int) -> bool:
        """Wait for output on ``fd``; False once the step has ended and DRAIN_S has passed without its EOF."""
        import select

        while True:
            until = self._drain_until
            wait = None if until is None else until - time.monotonic()
            if wait is not None and wait <= 0:
                return False
            ready = select.select([fd] if until is not None else [fd, self._ended_r], [], [], wait)[0]
            if fd in ready:
                return True

    def close(self) -> None:
        with self._fds_lock:
            self._closed = True
            for fd in (self._wake_r, self._wake_w, self._ended_r, self._ended_w, self._pidfd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        if self.proc.stdout:
            self.proc.stdout.close()


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


# ----------------------------------------------------------------------------- processes a step leaves


def subreaper() -> None:
    """``prctl(PR_SET_CHILD_SUBREAPER, 1)``: a process a step orphans (``setsid cmd &``, a double fork)
    is reparented to this runner, not to init, so the runner can find and kill it. Linux only; PID 1 of a
    container is the reaper of its namespace already."""
    if not sys.platform.startswith("linux") or os.getpid() == 1:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER, 1) failed")


def _processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (ppid, state) of every process in /proc (empty without /proc)."""
    out: dict[int, tuple[int, bytes]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone already
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ": comm may hold spaces and parens
        if len(fields) > 1:
            out[int(name)] = (int(fields[1]), fields[0])
    return out


def descendants(root: int) -> tuple[list[int], list[int]]:
    """(live descendants of ``root``, its own children that are zombies)."""
    children: dict[int, list[int]] = {}
    procs = _processes()
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    live: list[int] = []
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if procs[pid][1] not in (b"Z", b"X"):
            live.append(pid)
        todo.extend(children.get(pid, ()))
    zombies = [pid for pid in children.get(root, ()) if procs[pid][1] in (b"Z", b"X")]
    return live, zombies


def signal_descendants(root: int, sig: int) -> int:
    """Send ``sig`` once to every live descendant of ``root``; how many there were."""
    live = descendants(root)[0]
    for pid in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return len(live)


def kill_descendants(root: int, *, reap: bool = False, spare: int | None = None, within: float | None = None) -> int:
    """SIGKILL every descendant of ``root`` until none is left, for ``within`` seconds at most (SWEEP_S);
    the number still alive then. A fork bomb ends: what a killed process forked before it died is
    found on the next pass. With ``reap`` (``root`` is this process), its zombie children are reaped,
    but ``spare`` (a child a Popen waits for)."""
    deadline = time.monotonic() + (SWEEP_S if within is None else within)
    pause = 0.001
    while True:
        live, zombies = descendants(root)
        if reap:
            for pid in zombies:
                if pid != spare:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
        if not live:
            if reap:  # zombies that reparented here while the last pass read /proc
                _reap_children(spare)
            return 0
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            return len(live)
        time.sleep(pause)  # the killed die; what they forked meanwhile shows up on the next pass
        pause = min(pause * 2, 0.05)


def _reap_children(spare: int | None) -> None:
    """Reap every zombie child of this process but ``spare``, without blocking."""
    if spare is not None:
        _reap_orphans(spare)
        return
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _reap_orphans(spare: int) -> None:
    """Reap the zombie children of this process other than ``spare`` (the running step's shell, which its
    Popen reaps), without blocking: orphans reparented here must not pile up against the PID limit."""
    wnowait = getattr(os, "WNOWAIT", None)
    if wnowait is None:
        return
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | wnowait)
        except ChildProcessError:
            return
        if info is None or info.si_pid in (0, spare):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)


def _serve_connection(sock: socket.socket) -> int:
    no_dump()
    subreaper()
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
        # -I: no user site-packages (a step could plant a .pth in ~/.local) and no PYTHON* variables.
        proc = subprocess.Popen([sys.executable, "-I", "-c", _BOOT, _PACKAGE_ROOT, "--fd", str(theirs.fileno())],
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
        self.abandoned = False

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
                on_output(bytes(payload))  # on_output's bytes: a large chunk arrives as a bytearray
            elif kind == b"X":
                done = json.loads(payload)
                return int(done["code"]), bool(done.get("terminated"))
            elif kind == b"E":
                raise StepStartFailed(json.loads(payload).get("message", "the step could not start"))

    def kill(self) -> None:
        """Stop the running step (SIGTERM to it and all it started, SIGKILL after the grace period); no-op
        when none runs. The exit frame follows within :data:`EXIT_GRACE_S`, or :meth:`abandon`."""
        with contextlib.suppress(OSError):
            self._send(b"K", {"reason": "stop"})

    def abandon(self) -> None:
        """Give up on a runner that did not end a stopped step in time (a step stopped it with SIGSTOP,
        say): :meth:`wait` returns RunnerGone, the connection is closed, and a local runner is killed
        with everything it started. Any thread."""
        self.abandoned = True
        self._kill_local()  # first: once wait() returns, nothing of the step writes to the workdir any more
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _kill_local(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # Its descendants first, while it is there to hold them (it is their subreaper), then itself.
        kill_descendants(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """Hang up: the runner kills what is left and exits (a local one is killed if it does not)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self.proc is not None and not wait_exit(self.proc, EXIT_GRACE_S):
            self._kill_local()


def wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Reap ``proc`` within ``timeout`` seconds: True when it exited (and was reaped). On Linux a pidfd
    wakes the wait the moment it exits; ``Popen.wait(timeout)`` polls with a doubling sleep, which cost
    a local run up to 30 ms after a runner that took 3 ms to exit."""
    import select

    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or already reaped
        pidfd = None
    if pidfd is not None:
        try:
            poller = select.poll()  # not select(): a descriptor number above FD_SETSIZE is fine
            poller.register(pidfd, select.POLLIN)
            ready = poller.poll(max(0, int(timeout * 1000)))
        finally:
            os.close(pidfd)
        if not ready:
            return proc.poll() is not None
        proc.wait()  # it has exited: reaps at once
        return True
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="raibid.agents.steprunner")
    ap.add_argument("--fd", type=int, required=True)
    args = ap.parse_args(argv)
    return serve_fd(args.fd)


if __name__ == "__main__":
    sys.exit(main())
