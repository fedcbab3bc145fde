"""What every side of the queue shares: the client, key names, scripts and consumer groups."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from raibid.queue.connection import mapped
from raibid.queue.keys import GROUP, Keys
from raibid.queue.model import validate_agent
from raibid.queue.scripts import source

if TYPE_CHECKING:
    import redis


class QueueBase:
    """One Redis connection and the settings the producer, worker and admin sides read."""

    def __init__(self, client: redis.Redis, *, prefix: str = "raibid", url: str = "redis://?",
                 max_deliveries: int = 3, min_idle_ms: int = 300_000, log_ttl: int = 7 * 24 * 3600,
                 log_maxlen: int = 100_000, default_agent: str = "generic", default_timeout: int = 3600,
                 dedupe_ttl: int = 86400) -> None:
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
        self._groups_ok: set[str] = set()
        self.lag_repaired: set[str] = set()  # streams whose lost entries-read this instance restored
        self._scripts: dict[str, Any] = {}

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
            self.repair_lag(stream)
        self._groups_ok.add(stream)
        return created

    def repair_lag(self, stream: str) -> bool:
        """Restore the group's entries-read when Redis lost it (see lua/repair_lag.lua); True if repaired."""
        repaired = bool(self._script("repair_lag")(keys=[stream], args=[GROUP]))
        if repaired:
            self.lag_repaired.add(stream)
        return repaired

    def agent_types(self, extra: Iterable[str] = ()) -> list[str]:
        return sorted(set(self.r.smembers(self.keys.agents)) | set(extra))

    @mapped
    def group_info(self, stream: str) -> dict | None:
        """The raibid-agents entry of XINFO GROUPS (name, pending, lag, ...), or None without the group."""
        return next((g for g in self.r.xinfo_groups(stream) if g["name"] == GROUP), None)
