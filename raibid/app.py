"""The composition root: config, terminal, and the clients built from them.

Commands get an ``Application`` through ``raibid.cli._common.pass_app``, which
builds it on first use, so `--help` and completion never build one. Clients are
created on first use too, so commands that need no cluster or Redis never
import or contact them. Domain packages never import this module: the
Application reads the config and hands them plain values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from raibid.config import Config, load_config
from raibid.settings import Settings
from raibid.terminal import Terminal

if TYPE_CHECKING:
    import redis

    from raibid.agents.trust import TrustPolicy
    from raibid.cluster.client import Kube
    from raibid.gitea import Gitea
    from raibid.github import GitHub
    from raibid.queue import Queue


@dataclass
class Application:
    settings: Settings = field(default_factory=Settings)
    config: Config | None = None
    terminal: Terminal | None = None
    _kube: Kube | None = field(default=None, repr=False)
    _redis: redis.Redis | None = field(default=None, repr=False)
    _gitea: Gitea | None = field(default=None, repr=False)
    _redis_endpoint: tuple[str, str | None] | None = field(default=None, repr=False)
    _queue: Queue | None = field(default=None, repr=False)
    _worker_queue: Queue | None = field(default=None, repr=False)
    _trust: TrustPolicy | None = field(default=None, repr=False)

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
        """The kubeconfig, or a KUBECONFIG list (``a:b``) that is merged as kubectl merges it."""
        if self.settings.kubeconfig:
            return os.pathsep.join(os.path.expanduser(p) for p in self.settings.kubeconfig.split(os.pathsep) if p)
        return os.path.expanduser("~/.kube/config")

    @property
    def kubeconfig_files(self) -> list[str]:
        """The files of ``kubeconfig_path`` that exist (empty: no kubeconfig)."""
        from raibid.cluster.client import kubeconfig_files

        return kubeconfig_files(self.kubeconfig_path)

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            from raibid.cluster.client import Kube

            self._kube = Kube.from_kubeconfig(self.kubeconfig_path, context=self.settings.context,
                                              timeout=self.cfg.cluster.request_timeout)
        return self._kube

    @property
    def redis(self) -> redis.Redis:
        """A redis.Redis client for ``redis.url`` (``auto`` resolves in-cluster)."""
        if self._redis is None:
            from raibid.queue import connect

            url, password = self.redis_endpoint()
            self._redis = connect(url, password, timeout=self.cfg.redis.timeout)
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
            from raibid.cluster.discovery import discover_redis

            url, found_password = discover_redis(self.kube, self.namespace)
            password = password or found_password
        return url, password

    @property
    def queue(self) -> Queue:
        """The job queue for one-shot commands: no retries, so a call fails within ``redis.timeout``.

        A person or a cron line runs the command again; waiting out a retry budget first
        would only hide that Redis is gone.
        """
        if self._queue is None:
            from raibid.queue.connection import no_retry

            self._queue = self._make_queue(no_retry())
        return self._queue

    @property
    def worker_queue(self) -> Queue:
        """The job queue for processes that run on (agents, the webhook receiver, a mirror sync's
        triggers): retry-safe calls ride out Redis being away for ``redis.retries`` backoffs."""
        if self._worker_queue is None:
            from raibid.queue.connection import retry_policy

            self._worker_queue = self._make_queue(retry_policy(self.cfg.redis.retries))
        return self._worker_queue

    def _make_queue(self, retry: object) -> Queue:
        from raibid.queue import Queue

        cfg = self.cfg
        url, _ = self.redis_endpoint()
        return Queue(self.redis, prefix=cfg.redis.prefix, url=url,
                     max_deliveries=cfg.queue.max_deliveries, min_idle_ms=int(cfg.queue.min_idle * 1000),
                     log_ttl=cfg.queue.log_ttl, log_maxlen=cfg.queue.log_maxlen,
                     default_agent=cfg.agents.default_type, default_timeout=cfg.queue.default_timeout,
                     dedupe_ttl=cfg.queue.dedupe_ttl, retention=cfg.queue.retention,
                     log_high_water=cfg.queue.log_high_water, retry=retry)

    def agent_pools(self) -> dict[str, tuple[int, int]]:
        """Pool (queue) name -> (KEDA lagCount, max replicas): both pools of every type that has one,
        ``<type>`` and ``<type>-untrusted``, so `queue init`, `stats`, `reap`, doctor and top see both."""
        from raibid.agents.types import pool_settings

        return pool_settings(self.cfg)

    @property
    def trust_policy(self) -> TrustPolicy:
        """``agents.trusted`` as the policy every enqueuer routes with (`raibid.agents.trust.route`).

        Read from today's config each process: a retry re-routes with it, so a repo taken out of
        ``agents.trusted`` also sends its retries to the untrusted pool.
        """
        if self._trust is None:
            from raibid.agents.trust import TrustPolicy

            self._trust = TrustPolicy.from_config(self.cfg.agents.trusted, self.cfg.agents.approval)
        return self._trust

    def gitea_token(self) -> tuple[str | None, str | None]:
        """(token, where it came from), looked up in the env, the token file, then the cluster Secret."""
        from raibid.gitea.credentials import resolve_token

        g = self.cfg.gitea
        kube = self.kube if self.kubeconfig_files else None
        return resolve_token(env_name=g.token_env, env_value=self.cfg.secret(g.token_env), token_file=g.token_file,
                             kube=kube, namespace=self.namespace)

    @property
    def gitea(self) -> Gitea:
        if self._gitea is None:
            token, source = self.gitea_token()
            self._gitea = self.gitea_client(token, token_source=source)
        return self._gitea

    def gitea_client(self, token: str | None = None, *, basic: tuple[str, str] | None = None,
                     token_source: str | None = None, retries: int | None = None) -> Gitea:
        """A Gitea client for ``gitea.url`` with these credentials (a role token, or the admin's Basic auth)."""
        from raibid.gitea import Gitea

        g = self.cfg.gitea
        return Gitea(g.url, token, timeout=g.timeout, retries=g.retries if retries is None else retries,
                     backoff=g.retry_backoff, total_timeout=g.total_timeout, token_source=token_source, basic=basic)

    # ------------------------------------------------------------------ GitHub (the mirror)
    def github(self, *, max_wait: float | None = None) -> GitHub:
        """A GitHub REST client for ``mirror.github_api`` with the token from ``mirror.github_token_env``."""
        from raibid.github import GitHub

        m = self.cfg.mirror
        return GitHub(m.github_api, self.cfg.secret(m.github_token_env),
                      max_wait=m.max_wait if max_wait is None else max_wait)

    @property
    def mirror_cache_dir(self) -> Path:
        """``mirror.cache_dir``, or ``$XDG_CACHE_HOME/raibid/mirror``."""
        if self.cfg.mirror.cache_dir:
            return Path(self.cfg.mirror.cache_dir).expanduser()
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(xdg) / "raibid" / "mirror"
