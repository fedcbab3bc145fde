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
    """A dataclass field carrying the help text used by `config init` and the docs."""
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
    components: list[str] = _f(["redis", "gitea", "keda", "flux", "agents"], "Components that `cluster up` manages")
    storage_class: str = _f("local-path", "StorageClass for PVCs (k3s ships local-path)")
    node_ip: str = _f("127.0.0.1", "Node address that containerd and the host use to reach NodePorts")
    redis_storage: str = _f("5Gi", "Size of the Redis AOF volume")
    gitea_storage: str = _f("20Gi", "Size of the Gitea data volume")
    gitea_http_node_port: int = _f(30080, "NodePort for Gitea HTTP (and the OCI registry)")
    gitea_ssh_node_port: int = _f(30022, "NodePort for Gitea SSH")
    templates_dir: str | None = _f(None, "Use a customised copy of the templates folder (default: the built-in one)")
    versions: ClusterVersions = field(default_factory=ClusterVersions, metadata={"help": "Pinned versions"})


@dataclass
class RedisConfig:
    url: str = _f("redis://127.0.0.1:6379/0", "Redis URL, or `auto` to find raibid's Redis Service in the cluster")
    password_env: str = _f("RAIBID_REDIS_PASSWORD", "Env var holding the Redis password")
    prefix: str = _f("raibid", "Key prefix for every queue key")
    timeout: float = _f(5.0, "Seconds before a Redis command fails (connect or reply); "
                        "blocking reads add only their block time", gt=0)
    retries: int = _f(8, "Retries of retry-safe queue calls on connection errors, with exponential backoff "
                      "and jitter (0.1 s doubling, capped at 2 s)", min=0)


@dataclass
class QueueConfig:
    max_deliveries: int = _f(3, "Deliveries before a job goes to the dead-letter queue")
    min_idle: float = _f(300.0, "Seconds a pending entry must be idle before another worker reclaims it "
                         "(also how long an idle consumer without pending entries is kept)", gt=0)
    heartbeat: float = _f(30.0, "Seconds between a running job's heartbeats", gt=0)
    log_ttl: int = _f(7 * 24 * 3600, "Seconds a finished job's log stream is kept")
    log_maxlen: int = _f(100_000, "Approximate cap on log lines per job")
    default_timeout: int = _f(3600, "Job timeout in seconds when none is given")
    retention: int = _f(30 * 86400, "Seconds finished job records (and their index entries) are kept, by submit "
                        "time; trimmed by reap and finish. 0 keeps them for ever", min=0)
    dedupe_ttl: int = _f(86400, "Seconds a submitted job's dedupe key (e.g. repo@commit:agent) blocks duplicates",
                         min=1)


@dataclass
class GiteaConfig:
    url: str = _f("http://127.0.0.1:30080", "Gitea base URL (ROOT_URL)")
    token_env: str = _f("RAIBID_GITEA_TOKEN", "Env var holding the Gitea API token")
    token_file: str | None = _f(None, "File holding the Gitea API token (used when the env var is unset)")
    admin_user: str = _f("raibid-admin", "Gitea admin user name")
    timeout: float = _f(10.0, "Seconds before a Gitea API request times out")
    retries: int = _f(3, "Retries on connection errors and 502/503/504, with exponential backoff")
    retry_backoff: float = _f(0.5, "First retry delay in seconds (doubles each retry)")


@dataclass
class AgentType:
    """One agent type. Every field left unset is inherited from the built-in type of the same name,
    or from ``extends``; see docs/agents.md."""

    extends: str | None = _f(None, "Built-in (or entry-point) type a new type starts from")
    enabled: bool | None = _f(None, "Deploy a pool for this type (default: true for configured types)")
    image: str | None = _f(None, "Agent image, multi-arch (default: <agents.registry>/raibid/agent-<type>:<image_tag>)")
    lag_count: int | None = _f(None, "KEDA lagCount: queued jobs per agent pod (default 1)")
    max_replicas: int | None = _f(None, "Cap for this pool (defaults to agents.max_replicas)")
    cpu: str | None = _f(None, "CPU request (default 2)")
    memory: str | None = _f(None, "Memory request (default 4Gi)")
    cpu_limit: str | None = _f(None, "CPU limit (default: the request)")
    memory_limit: str | None = _f(None, "Memory limit (default: the request)")
    gpu: int | None = _f(None, "nvidia.com/gpu per agent; > 0 also sets runtimeClassName nvidia")
    runtime_class: str | None = _f(None, "Pod runtimeClassName (default: nvidia for GPU types)")
    env: dict[str, str] = _f({}, "Extra env for the agent, merged over the inherited env")
    caches: dict[str, str] = _f({}, "Cache directories on the type's cache PVC: name -> mount path")
    cache_size: str | None = _f(None, "Size of the type's cache PVC (default 20Gi)")


@dataclass
class AgentsConfig:
    default_type: str = _f("generic", "Agent type used when a job names none")
    pools: list[str] = _f(["generic", "rust", "python", "node", "go"],
                          "Built-in types that get a pool (types under agents.types get one unless enabled: false)")
    max_replicas: int = _f(8, "Default maximum pods per agent pool")
    polling_interval: int = _f(5, "KEDA pollingInterval in seconds")
    scaling_strategy: str = _f("accurate", "KEDA scalingStrategy: accurate, eager or default (see docs/agents.md)")
    registry: str | None = _f(None, "Registry host for agent images and RAIBID_REGISTRY (default: host of gitea.url)")
    image_tag: str = _f("latest", "Tag of the default agent images")
    gitea_url: str | None = _f(None, "Gitea URL agents clone from (default: the in-cluster Gitea Service)")
    max_timeout: int = _f(6 * 3600, "Longest job an agent runs, in seconds; the Job's activeDeadlineSeconds is above it")
    wait: int = _f(30, "Seconds a started agent waits for a job before exiting")
    job_ttl: int = _f(3600, "Seconds a finished agent Job is kept (ttlSecondsAfterFinished)")
    history_limit: int = _f(3, "Finished and failed agent Jobs KEDA keeps per pool")
    types: dict[str, AgentType] = _f({}, "Agent types: override a built-in or define a new one")


@dataclass
class TriggerConfig:
    enabled: bool = _f(True, "Enqueue CI jobs when a mirror sync finds changed refs")
    branches: str = _f("^(main|master)$", "Regex of branch names that trigger jobs")
    agent: str = _f("generic", "Agent type for triggered jobs")


@dataclass
class MirrorConfig:
    github_api: str = _f("https://api.github.com", "GitHub API base URL")
    github_token_env: str = _f("GITHUB_TOKEN", "Env var holding the GitHub token")
    target_org: str = _f("mirrors", "Gitea org that receives mirrors")
    mode: str = _f("push", "`push` (raibid fetches and pushes) or `pull` (Gitea pull mirrors)")
    cache_dir: str | None = _f(None, "Bare-repo cache directory (default: XDG cache)")
    jobs: int = _f(4, "Repositories synced in parallel")
    repos: list[str] = _f([], "Single repos, as OWNER/NAME")
    lists: list[str] = _f([], "Files listing OWNER/NAME lines")
    orgs: list[Any] = _f([], "Orgs or users, with optional include/exclude regexes")
    trigger: TriggerConfig = field(default_factory=TriggerConfig, metadata={"help": "CI triggering"})


@dataclass
class Config:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    gitea: GiteaConfig = field(default_factory=GiteaConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    mirror: MirrorConfig = field(default_factory=MirrorConfig)

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
