"""Which webhook deliveries were handled already: a delivery id in Redis, so a redelivery does nothing.

GitHub keeps the ``X-GitHub-Delivery`` id of a delivery when it is redelivered (by hand or
through the API, for up to three days), so the id says "this one again". The first
delivery of an id claims it with ``SET NX EX``; a later one with the same id finds the key
and is answered 200 without being handled. The key lives in Redis, so it outlives a
receiver restart, and expires after :data:`DELIVERY_TTL`. A delivery whose handling failed
(5xx) gives its claim back, so that its redelivery is handled.

The id is not covered by the signature (only the body is), so this is deduplication, not
replay protection: a replayed body with a new id is handled again, which is harmless here
(a sync is idempotent and a commit is one job).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raibid.queue.keys import Keys

# Longer than GitHub's redelivery window (deliveries of the past 3 days can be redelivered).
DELIVERY_TTL = 4 * 86400
# GitHub's ids are GUIDs; anything else that is not a short token is treated as no id (never a key).
DELIVERY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def usable_id(delivery: str | None) -> str | None:
    """``delivery`` if it can name a key (fullmatch: no newline, no ``:``), else None."""
    return delivery if delivery and DELIVERY_ID.fullmatch(delivery) else None


class Deliveries:
    """Claims on delivery ids in Redis; every call is one command with the client's timeout."""

    def __init__(self, client: Any, keys: Keys, *, url: str = "redis://?", ttl: int = DELIVERY_TTL) -> None:
        self.r = client
        self.keys = keys
        self.url = url
        self.ttl = ttl

    def claim(self, host: str, delivery_id: str) -> bool:
        """True the first time ``delivery_id`` is seen for ``host``; a typed error when Redis does not answer."""
        from raibid.queue.connection import redis_errors

        with redis_errors(self.url):
            return bool(self.r.set(self.keys.webhook_delivery(host, delivery_id), "1", nx=True, ex=self.ttl))

    def release(self, host: str, delivery_id: str) -> None:
        """Forget a claim (its handling failed), so the redelivery of that id is handled."""
        from raibid.queue.connection import redis_errors

        with redis_errors(self.url):
            self.r.delete(self.keys.webhook_delivery(host, delivery_id))
