"""The CI triggers a mirror sync owes, kept in Redis so that they outlive the pod that made them.

A sync that moves a trigger branch owes one job per moved branch head. The debt is
written down *before* the push (:meth:`PendingTriggers.add`), and each entry is
crossed off once its job is enqueued (:meth:`PendingTriggers.done`), so whichever way
a run ends (the enqueue fails, the pod is killed after the push), the next run, in a
new pod with an empty cache, finds the entry and enqueues it; the dedupe key makes a
repeat a no-op. When the debt cannot be written (Redis is down) nothing is pushed: the
next run sees the same difference and starts again. The mirror CronJob's cache is an
emptyDir, so a file there (what this replaced) died with the pod.

One Redis set per target repository (`raibid.queue.keys.Keys.mirror_pending`), members
``["<branch>", "<commit>"]`` as JSON, or for a pull request ``["refs/pull/<n>/head", "<commit>",
"<trigger>"]`` where ``<trigger>`` is the JSON of the enqueue's keyword arguments (``event``,
``pr``, ``base_ref``, ``head_ref``, ``origin``, ``fork``, ``author``); set operations make the CronJob and the webhook
receiver, which sync the same repos from different pods, safe together. A set expires
:data:`PENDING_TTL` after its last addition: a trigger owed for a week is not a build
anyone waits for.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from raibid.queue.base import QueueBase
    from raibid.queue.keys import Keys

PENDING_TTL = 7 * 86400
Owed = tuple[str, ...]  # (branch, commit), or (refs/pull/<n>/head, commit, trigger JSON) for a pull request


class PendingStore(Protocol):
    def add(self, target: str, owed: list[Owed]) -> None: ...
    def items(self, target: str) -> list[Owed]: ...
    def done(self, target: str, item: Owed) -> None: ...


def _member(item: Owed) -> str:
    return json.dumps(list(item))


def _parse(member: str | bytes) -> Owed | None:
    try:
        value = json.loads(member)
    except ValueError:
        return None
    if isinstance(value, list) and len(value) in (2, 3) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


class PendingTriggers:
    """The owed triggers in Redis; every method raises a typed error (`raibid.queue.redis_errors`) on failure.

    ``queue`` builds the Queue whose client, key prefix and URL it uses, on first use (the
    trigger's own queue: nothing connects before a repo needs it).
    """

    def __init__(self, queue: Callable[[], QueueBase], *, ttl: int = PENDING_TTL) -> None:
        self._make = queue
        self._queue: QueueBase | None = None
        self._lock = threading.Lock()
        self.ttl = ttl

    def _parts(self) -> tuple[Any, Keys, str]:
        with self._lock:
            if self._queue is None:
                self._queue = self._make()
            q = self._queue
        return q.r, q.keys, q.url

    def add(self, target: str, owed: list[Owed]) -> None:
        from raibid.queue.connection import redis_errors

        if not owed:
            return
        r, keys, url = self._parts()
        key = keys.mirror_pending(target)
        with redis_errors(url):
            pipe = r.pipeline(transaction=True)
            pipe.sadd(key, *(_member(o) for o in owed))
            pipe.expire(key, self.ttl)
            pipe.execute()

    def items(self, target: str) -> list[Owed]:
        """What ``target`` is owed, in a stable order (unreadable members are dropped)."""
        from raibid.queue.connection import redis_errors

        r, keys, url = self._parts()
        key = keys.mirror_pending(target)
        with redis_errors(url):
            members = r.smembers(key)
            bad = [m for m in members if _parse(m) is None]
            if bad:
                r.srem(key, *bad)
        return sorted(o for o in map(_parse, members) if o is not None)

    def done(self, target: str, item: Owed) -> None:
        from raibid.queue.connection import redis_errors

        r, keys, url = self._parts()
        with redis_errors(url):
            r.srem(keys.mirror_pending(target), _member(item))


class LocalPending:
    """The same bookkeeping in memory, for one process (a Syncer built without Redis: tests, the dry path)."""

    def __init__(self) -> None:
        self._owed: dict[str, set[Owed]] = {}
        self._lock = threading.Lock()

    def add(self, target: str, owed: list[Owed]) -> None:
        with self._lock:
            self._owed.setdefault(target.lower(), set()).update(owed)

    def items(self, target: str) -> list[Owed]:
        with self._lock:
            return sorted(self._owed.get(target.lower(), ()))

    def done(self, target: str, item: Owed) -> None:
        with self._lock:
            self._owed.get(target.lower(), set()).discard(item)
