"""What every side of the queue shares: the client, key names, scripts and consumer groups."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from raibid.errors import NotFound
from raibid.queue.connection import mapped
from raibid.queue.keys import GROUP, Keys
from raibid.queue.model import Job, LagCheck, validate_agent
from raibid.queue.replies import fields, members
from raibid.queue.scripts import source

if TYPE_CHECKING:
    import redis


def no_job(job_id: str) -> NotFound:
    """The one not-found error for a job id, with the same hint wherever it is raised."""
    return NotFound(f"no job {job_id!r}", hint="`raibid queue list` shows recent jobs")


class QueueBase:
    """One Redis connection and the settings the producer, worker and admin sides read.

    The client's own command retries are switched off (``set_retry``): the queue retries
    whole retry-safe calls under ``retry`` instead (docs/queue.md, *Retry-safety*).
    """

    def __init__(self, client: redis.Redis, *, prefix: str = "raibid", url: str = "redis://?",
                 max_deliveries: int = 3, min_idle_ms: int = 300_000, log_ttl: int = 7 * 24 * 3600,
                 log_maxlen: int = 100_000, default_agent: str = "generic", default_timeout: int = 3600,
                 dedupe_ttl: int = 86400, retention: float = 30 * 86400, log_high_water: float = 0.75,
                 retry: Any = None) -> None:
        from raibid.queue.connection import no_retry, retry_policy

        # Commands are never retried one by one (a lost reply would resend a write); whole
        # retry-safe calls are, under self.retrying (see connection.retried).
        client.set_retry(no_retry())
        self.r = client
        self.url = url
        self.keys = Keys(prefix)
        self.max_deliveries = max_deliveries
        self.min_idle_ms = min_idle_ms
        self.log_ttl = log_ttl
        self.log_maxlen = log_maxlen
        self.default_agent = default_agent
        self.default_timeout = default_timeout
        self.dedupe_ttl = dedupe_ttl
        self.retention = retention
        self.log_high_water = log_high_water  # of the server's maxmemory: finished logs are trimmed above it
        self.retrying = retry if retry is not None else retry_policy()  # for retry-safe calls
        self._groups_ok: set[str] = set()
        self._lag_checked: set[str] = set()  # streams this worker checked at its start
        # Marks the claims of this object, so its own retried claim resumes instead of counting
        # another delivery, while a new process reusing a consumer name still counts one.
        self.claim_token = os.urandom(8).hex()
        self._scripts: dict[str, Any] = {}

    def _block_slices(self, block_ms: int) -> Iterator[int]:
        """Split a blocking read's wait into slices that each return within the one-shot socket
        timeout (half of it), so a hung Redis is noticed within ``redis.timeout`` even while blocking,
        and the whole read takes at most its block time plus that timeout."""
        timeout = self.r.connection_pool.connection_kwargs.get("socket_timeout")
        step = block_ms if not timeout else max(50, int(timeout * 500))
        deadline = time.monotonic() + block_ms / 1000
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                return
            yield min(step, left)

    def _script(self, name: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.r.register_script(source(name))
        return self._scripts[name]

    @mapped
    def init(self, agents: Iterable[str]) -> list[str]:
        """Create each stream's consumer group (at id 0, so earlier entries are kept)."""
        created = []
        for agent in agents:
            validate_agent(agent)
            if self._ensure_group(self.keys.stream(agent)):
                created.append(agent)
            self.r.sadd(self.keys.agents, agent)
        return created

    def _ensure_group(self, stream: str) -> bool:
        import redis

        if stream in self._groups_ok:
            return False
        try:
            # 0, not $: a job queued before the group existed must not be lost.
            self.r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            created = True
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
            created = False
        self._groups_ok.add(stream)
        return created

    @mapped
    def check_lag(self, stream: str, *, repair: bool = True) -> LagCheck:
        """Compare the group's reported lag with the true number of undelivered entries.

        With ``repair`` a wrong lag is corrected (``XGROUP SETID … ENTRIESREAD``), in one
        script step; entries-read is never written when the lag is already true.
        See lua/lag_check.lua.
        """
        state, reported, true = self._script("lag_check")(keys=[stream], args=[GROUP, "1" if repair else "0"])
        return LagCheck(stream, state, None if int(reported) < 0 else int(reported), int(true))

    def _retention_cutoff(self) -> str:
        """Index score (submit time, ms) below which finished jobs are deleted; '' keeps them for ever."""
        if not self.retention or self.retention <= 0:
            return ""
        return str(int((time.time() - self.retention) * 1000))

    def _get_job(self, job_id: str) -> Job:
        h = fields(self.r.hgetall(self.keys.job(job_id)))
        if not h:
            raise no_job(job_id)
        return Job.from_hash(h)

    def agent_types(self, extra: Iterable[str] = ()) -> list[str]:
        return sorted(set(members(self.r.smembers(self.keys.agents))) | set(extra))

    @mapped
    def group_info(self, stream: str) -> dict | None:
        """The raibid-agents entry of XINFO GROUPS (name, pending, lag, ...), or None without the group."""
        return next((g for g in self.r.xinfo_groups(stream) if g["name"] == GROUP), None)
