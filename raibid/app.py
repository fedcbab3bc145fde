"""The Application object: config, terminal and lazily built clients.

The root command builds one and puts it in ``ctx.obj``; tests may pass their
own. Clients are created on first use so commands that need no cluster or
Redis never import or contact them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid.config import Config, load_config
from raibid.output import Terminal

if TYPE_CHECKING:
    from raibid.kube import Kube


@dataclass
class Settings:
    """Global options, as given on the command line or by env."""

    config_path: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    verbosity: int = 0
    color: bool | None = None


@dataclass
class Application:
    settings: Settings = field(default_factory=Settings)
    config: Config | None = None
    terminal: Terminal | None = None
    _kube: Any = field(default=None, repr=False)
    _redis: Any = field(default=None, repr=False)
    _gitea: Any = field(default=None, repr=False)
    _redis_endpoint: tuple[str, str | None] | None = field(default=None, repr=False)
    _queue: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.terminal is None:
            self.terminal = Terminal(color=self.settings.color, verbosity=self.settings.verbosity)

    @property
    def term(self) -> Terminal:
        assert self.terminal is not None
        return self.terminal

    @property
    def cfg(self) -> Config:
        """The effective config, loaded on first use so `--help` never reads it."""
        if self.config is None:
            self.config = load_config(self.settings.config_path)
        return self.config

    @property
    def namespace(self) -> str:
        return self.settings.namespace or self.cfg.cluster.namespace

    @property
    def templates(self) -> Path | None:
        """A user's customised templates folder, or None for the built-in one."""
        d = self.cfg.cluster.templates_dir
        return Path(d).expanduser() if d else None

    # ------------------------------------------------------------------ clients
    @property
    def kubeconfig_path(self) -> str:
        if self.settings.kubeconfig:
            # KUBECONFIG may be a list; the first existing entry wins, like kubectl.
            for p in self.settings.kubeconfig.split(os.pathsep):
                if p and os.path.exists(os.path.expanduser(p)):
                    return os.path.expanduser(p)
            return os.path.expanduser(self.settings.kubeconfig.split(os.pathsep)[0])
        return os.path.expanduser("~/.kube/config")

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            from raibid.kube import Kube

            self._kube = Kube.from_kubeconfig(self.kubeconfig_path, context=self.settings.context)
        return self._kube

    @property
    def redis(self) -> Any:
        """A redis.Redis client for ``redis.url`` (``auto`` resolves in-cluster)."""
        if self._redis is None:
            from raibid.jobs import connect

            url, password = self.redis_endpoint()
            self._redis = connect(url, password)
        return self._redis

    def redis_endpoint(self) -> tuple[str, str | None]:
        """(url, password): ``redis.url`` plus the password env var, or found in-cluster for ``auto``."""
        if self._redis_endpoint is None:
            self._redis_endpoint = self._resolve_redis()
        return self._redis_endpoint

    def _resolve_redis(self) -> tuple[str, str | None]:
        url = self.cfg.redis.url
        password = self.cfg.secret(self.cfg.redis.password_env)
        if url == "auto":
            from raibid.kube import discover_redis

            url, found_password = discover_redis(self.kube, self.namespace)
            password = password or found_password
        return url, password

    @property
    def queue(self) -> Any:
        """The job queue (raibid.jobs.Queue) on this app's Redis."""
        if self._queue is None:
            from raibid.jobs import Queue

            self._queue = Queue.from_app(self)
        return self._queue

    def agent_pools(self) -> dict[str, tuple[int, int]]:
        """Agent type -> (KEDA lagCount, max replicas), for the default type and every configured one."""
        types = {self.cfg.agents.default_type, *self.cfg.agents.types}
        pools = {}
        for name in types:
            t = self.cfg.agent_type(name)  # already falls back to agents.max_replicas
            pools[name] = (t.lag_count, t.max_replicas)
        return pools

    @property
    def gitea(self) -> Any:
        if self._gitea is None:
            from raibid.gitea import Gitea

            self._gitea = Gitea.from_app(self)
        return self._gitea
