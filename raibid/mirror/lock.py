"""One mirror sync at a time per cache dir: an exclusive ``fcntl.flock`` on ``<cache>/mirror.lock``.

The lock belongs to the open file, so the kernel releases it when the process
dies, however it dies: a crashed cron run never leaves a stale lock. The file
says who holds it (pid, host, start time), for the message the loser prints.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from raibid.errors import Locked
from raibid.timeutil import now_rfc3339

LOCK_NAME = "mirror.lock"


class SyncLock:
    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> SyncLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "an unknown process"
            os.close(fd)
            raise Locked(f"another mirror sync is running ({holder}); lock file {self.path}",
                         hint="wait for it to finish; the lock is released when that process exits") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {now_rfc3339()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SyncLock:
        return self.acquire()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
