"""The typed config model: one dataclass per section, with defaults and help text.

The help text of each field feeds `raibid config init` and docs/config.md.
Secrets never live here: the config names the env var holding each one.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field carrying the help text used by `config init` and the docs.

    ``kw`` adds checks made when the config is loaded (``loader.value_problem``):
    ``min``/``max`` (inclusive), ``gt`` (exclusive, for timeouts), ``url`` (allowed
    schemes) and ``also`` (other words accepted instead of a URL, e.g. ``auto``).
    """
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: _copy(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


@dataclass
class ClusterVersions:
    redis_image: str = _f("redis:7.4.2", "Official multi-arch Redis image (arm64 available)")
    gitea_chart: str = _f("12.3.0", "Gitea Helm chart version (https://dl.gitea.com/charts/); pins the Gitea image")
    keda_chart: str = _f("2.17.2", "KEDA Helm chart version (>= 2.17 for activationLagCount 0)")
    flux_chart: str = _f("2.12.4", "Community flux2 Helm chart version (fluxcd-community)")


@dataclass
class ClusterConfig:
    namespace: str = _f("raibid-ci", "Namespace for every raibid object")
    components: list[str] = _f(["redis", "gitea", "keda", "flux"], "Components that `cluster up` manages")
    storage_class: str = _f("local-path", "StorageClass for PVCs (k3s ships local-path)")
    node_ip: str = _f("127.0.0.1", "Node address that containerd and the host use to reach NodePorts")
    redis_storage: str = _f("5Gi", "Size of the Redis AOF volume")
    gitea_storage: str = _f("20Gi", "Size of the Gitea data volume")
    gitea_http_node_port: int = _f(30080, "NodePort for Gitea HTTP (and the OCI registry)", min=1, max=65535)
    gitea_ssh_node_port: int = _f(30022, "NodePort for Gitea SSH", min=1, max=65535)
    templates_dir: str | None = _f(None, "Use a customised copy of the templates folder (default: the built-in one)")
    mode: str = _f("apply", "How `cluster up` deploys: `apply` (server-side apply from this machine) or `gitops` "
                   "(commit to the config repo that Flux applies; see docs/gitops.md)", choices=("apply", "gitops"))
    versions: ClusterVersions = field(default_factory=ClusterVersions, metadata={"help": "Pinned versions"})


@dataclass
class RedisConfig:
    url: str = _f("redis://127.0.0.1:6379/0", "Redis URL, or `auto` to find raibid's Redis Service in the cluster",
                  url=("redis", "rediss", "unix"), also=("auto",))
    password_env: str = _f("RAIBID_REDIS_PASSWORD", "Env var holding the Redis password")
    prefix: str = _f("raibid", "Key prefix for every queue key")


@dataclass
class QueueConfig:
    max_deliveries: int = _f(3, "Deliveries before a job goes to the dead-letter queue", min=1)
    min_idle: int = _f(300, "Seconds a pending entry must be idle before another worker reclaims it",
                       min=1)
    heartbeat: int = _f(30, "Seconds between a running job's heartbeats", min=1)
    log_ttl: int = _f(7 * 24 * 3600, "Seconds a finished job's log stream is kept", min=1)
    log_maxlen: int = _f(100_000, "Approximate cap on log lines per job", min=1)
    default_timeout: int = _f(3600, "Job timeout in seconds when none is given", min=1)


@dataclass
class GiteaConfig:
    url: str = _f("http://127.0.0.1:30080", "Gitea base URL (ROOT_URL)", url=("http", "https"))
    token_env: str = _f("RAIBID_GITEA_TOKEN", "Env var holding the Gitea API token")
    token_file: str | None = _f(None, "File holding the Gitea API token (used when the env var is unset)")
    admin_user: str = _f("raibid-admin", "Gitea admin user name")
    timeout: float = _f(10.0, "Seconds one try of a Gitea API request may take", gt=0, max=86400)
    total_timeout: float = _f(30.0, "Seconds one Gitea API call may take in all, retries and waits included; "
                              "no retry starts that could end later", gt=0, max=86400)
    retries: int = _f(3, "Retries on connection errors, and for GET/PUT/DELETE also on read timeouts and "
                      "502/503/504 (never for POST/PATCH)", min=0)
    retry_backoff: float = _f(0.5, "Back-off factor in seconds: retries wait 0, 2x, 4x, ... this long "
                              "(a Retry-After header wins)", min=0, max=3600)


@dataclass
class AgentType:
    image: str = _f("ghcr.io/raibid-labs/raibid-agent:latest", "Agent image (must exist for arm64)")
    lag_count: int = _f(1, "KEDA lagCount: queued jobs per agent pod", min=1)
    max_replicas: int | None = _f(None, "Cap for this pool (defaults to agents.max_replicas)", min=1)
    cpu: str = _f("2", "CPU request")
    memory: str = _f("4Gi", "Memory request")


@dataclass
class AgentsConfig:
    default_type: str = _f("generic", "Agent type used when a job names none")
    max_replicas: int = _f(8, "Default maximum pods per agent pool", min=1)
    polling_interval: int = _f(5, "KEDA pollingInterval in seconds", min=1)
    types: dict[str, AgentType] = _f({}, "Agent pools by type name")


@dataclass
class TriggerConfig:
    enabled: bool = _f(True, "Enqueue CI jobs when a mirror sync finds changed refs")
    branches: str = _f("^(main|master)$", "Regex of branch names that trigger jobs")
    agent: str = _f("generic", "Agent type for triggered jobs")


@dataclass
class MirrorConfig:
    github_api: str = _f("https://api.github.com", "GitHub API base URL", url=("http", "https"))
    github_token_env: str = _f("GITHUB_TOKEN", "Env var holding the GitHub token")
    target_org: str = _f("mirrors", "Gitea org that receives mirrors")
    mode: str = _f("push", "`push` (raibid fetches and pushes) or `pull` (Gitea pull mirrors)")
    cache_dir: str | None = _f(None, "Bare-repo cache directory (default: XDG cache)")
    jobs: int = _f(4, "Repositories synced in parallel", min=1)
    repos: list[str] = _f([], "Single repos, as OWNER/NAME")
    lists: list[str] = _f([], "Files listing OWNER/NAME lines")
    orgs: list[Any] = _f([], "Orgs or users, with optional include/exclude regexes")
    trigger: TriggerConfig = field(default_factory=TriggerConfig, metadata={"help": "CI triggering"})


@dataclass
class GitopsConfig:
    repo: str | None = _f(None, "Gitea OWNER/NAME of the config repo Flux reconciles "
                                "(default: `{gitea.admin_user}/raibid-ci-config`)")
    branch: str = _f("main", "Branch of the config repo that Flux follows")
    path: str = _f("clusters/dgx-spark", "Folder in the config repo that raibid writes and Flux applies")
    interval: str = _f("1m", "How often Flux fetches the repo and re-applies the folder (Flux duration)")
    author_name: str = _f("raibid", "Author name of raibid's commits in the config repo")
    author_email: str = _f("raibid@localhost", "Author e-mail of raibid's commits in the config repo")


@dataclass
class Config:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    gitea: GiteaConfig = field(default_factory=GiteaConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    mirror: MirrorConfig = field(default_factory=MirrorConfig)
    gitops: GitopsConfig = field(default_factory=GitopsConfig)

    # Where the values came from; not part of the schema.
    source: Path | None = field(default=None, compare=False, metadata={"internal": True})

    def secret(self, env_name: str) -> str | None:
        """Read a secret from the env var the config names. Never stored, never printed."""
        value = os.environ.get(env_name)
        return value or None

    def to_dict(self, *, masked: bool = True) -> dict[str, Any]:
        from raibid.errors import redact_url

        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "source"}
        if masked:
            _mask_urls(out, redact_url)
        return out

    @property
    def gitops_repo(self) -> str:
        """The config repo as OWNER/NAME: ``gitops.repo``, else the admin user's ``raibid-ci-config``."""
        return self.gitops.repo or f"{self.gitea.admin_user}/raibid-ci-config"

    def agent_type(self, name: str) -> AgentType:
        t = self.agents.types.get(name)
        if t is None:
            t = AgentType()
        if t.max_replicas is None:
            t = dataclasses.replace(t, max_replicas=self.agents.max_replicas)
        return t


def _mask_urls(obj: Any, redact: Any) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, str) and (k == "url" or k.endswith("_url") or k == "github_api"):
                obj[k] = redact(v)
            else:
                _mask_urls(v, redact)
    elif isinstance(obj, list):
        for v in obj:
            _mask_urls(v, redact)
