"""The bounded background worker that syncs one mirrored repository per GitHub push.

A request only records the push and returns; a fixed number of threads run the syncs.
Pushes to a repository that is already waiting merge into its entry (the last push per
ref wins), and a repository being synced gets at most one follow-up sync for everything
that arrived meanwhile, so a burst of pushes costs at most two syncs. The number of
waiting repositories is capped: beyond it a push is dropped with a log line, and the cron
mirror sync picks it up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from raibid.webhook.events import PullRequest, Push

log = logging.getLogger("raibid.webhook")

SyncFn = Callable[[str], None]  # sync one source repository, by OWNER/NAME
Event = Push | PullRequest  # what a sync is for: pushes and pull requests merge per ref (refs/pull/<n>/head)
AfterFn = Callable[[str, list[Event]], None]  # called after a successful sync with the merged events


@dataclass
class WorkerStats:
    accepted: int = 0
    coalesced: int = 0
    dropped: int = 0
    syncs: int = 0
    failures: int = 0


class SyncWorker:
    def __init__(self, sync: SyncFn, after: AfterFn | None = None, *, threads: int = 2,
                 max_pending: int = 256) -> None:
        self.sync = sync
        self.after = after
        self.threads = max(1, threads)
        self.max_pending = max(1, max_pending)
        self.stats = WorkerStats()
        self._cond = threading.Condition()
        self._pending: dict[str, dict[str, Event]] = {}  # repo -> ref -> latest push
        self._ready: deque[str] = deque()  # waiting repos that no thread is syncing
        self._running: set[str] = set()
        self._stopping = False
        self._pool: list[threading.Thread] = []

    def start(self) -> SyncWorker:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, name=f"raibid-webhook-sync-{n}", daemon=True)
            t.start()
            self._pool.append(t)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._pool:
            t.join(max(0.0, deadline - time.monotonic()))

    def submit(self, repo: str, push: Event) -> bool:
        """Record a push for ``repo``; False when the backlog is full (the cron sync is the safety net)."""
        with self._cond:
            waiting = self._pending.get(repo)
            if waiting is not None:
                waiting[push.ref] = push
                self.stats.coalesced += 1
                return True
            if len(self._pending) >= self.max_pending:
                self.stats.dropped += 1
                return False
            self._pending[repo] = {push.ref: push}
            self.stats.accepted += 1
            if repo not in self._running:
                self._ready.append(repo)
                self._cond.notify()
            return True

    def idle(self) -> bool:
        with self._cond:
            return not self._pending and not self._running

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                repo = self._ready.popleft()
                pushes = list(self._pending.pop(repo).values())
                self._running.add(repo)
            try:
                self._sync(repo, pushes)
            finally:
                with self._cond:
                    self._running.discard(repo)
                    if repo in self._pending:
                        self._ready.append(repo)  # what arrived during the sync: one more
                    self._cond.notify_all()

    def _sync(self, repo: str, pushes: list[Event]) -> None:
        started = time.monotonic()
        try:
            self.sync(repo)
        except Exception as e:  # a failed sync must not kill the worker; the cron sync retries
            with self._cond:
                self.stats.failures += 1
            log.warning("sync of %s failed (%s); the cron mirror sync will pick it up", repo, _brief(e))
            return
        with self._cond:
            self.stats.syncs += 1
        log.info("synced %s in %.2fs (%d ref(s) pushed)", repo, time.monotonic() - started, len(pushes))
        if self.after is not None:
            try:
                self.after(repo, pushes)
            except Exception as e:
                log.warning("after syncing %s: enqueue failed (%s)", repo, _brief(e))


def _brief(e: Exception) -> str:
    return getattr(e, "message", None) or f"{type(e).__name__}: {e}"
