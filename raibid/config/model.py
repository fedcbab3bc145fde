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
        return field(default_factory=lambda: _copy(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


@dataclass
class ClusterVersions:
    redis_image: str = _f("redis:7.4.2", "Official multi-arch Redis image (arm64 available)")
    gitea_chart: str = _f("12.3.0", "Gitea Helm chart version (https://dl.gitea.com/charts/); pins the Gitea image")
    keda_chart: str = _f("2.17.2", "KEDA Helm chart version (>= 2.17 for activationLagCount 0)")
    flux_chart: str = _f("2.18.3", "Community flux2 Helm chart version (fluxcd-community); 2.18.3 ships Flux 2.8.5")


@dataclass
class ClusterConfig:
    namespace: str = _f("raibid-ci", "Namespace for every raibid object")
    components: list[str] = _f(["redis", "gitea", "keda", "flux", "agents"], "Components that `cluster up` manages")
    storage_class: str = _f("local-path", "StorageClass for PVCs (k3s ships local-path)")
    node_ip: str = _f("127.0.0.1", "Node address that containerd and the host use to reach NodePorts")
    pod_cidr: str = _f("10.42.0.0/16", "The cluster's pod CIDR (k3s --cluster-cidr); agent pods' internet rule "
                       "excludes it")
    service_cidr: str = _f("10.43.0.0/16", "The cluster's Service CIDR (k3s --service-cidr); agent pods' internet "
                           "rule excludes it")
    redis_storage: str = _f("5Gi", "Size of the Redis AOF volume")
    gitea_storage: str = _f("20Gi", "Size of the Gitea data volume")
    gitea_http_node_port: int = _f(30080, "NodePort for Gitea HTTP (and the OCI registry)", min=1, max=65535)
    gitea_ssh_node_port: int = _f(30022, "NodePort for Gitea SSH", min=1, max=65535)
    templates_dir: str | None = _f(None, "Use a customised copy of the templates folder (default: the built-in one)")
    mode: str = _f("apply", "How `cluster up` deploys: `apply` (server-side apply from this machine) or `gitops` "
                   "(commit to the config repo that Flux applies; see docs/gitops.md)", choices=("apply", "gitops"))
    request_timeout: float = _f(30.0, "Seconds before a Kubernetes API request times out (connecting: at most 5)",
                                gt=0)
    versions: ClusterVersions = field(default_factory=ClusterVersions, metadata={"help": "Pinned versions"})


@dataclass
class RedisConfig:
    url: str = _f("redis://127.0.0.1:6379/0", "Redis URL, or `auto` to find raibid's Redis Service in the cluster",
                  url=("redis", "rediss", "unix"), also=("auto",))
    password_env: str = _f("RAIBID_REDIS_PASSWORD", "Env var holding the Redis password")
    prefix: str = _f("raibid", "Key prefix for every queue key")
    timeout: float = _f(5.0, "Seconds before a Redis command fails (connect or reply); "
                        "blocking reads add only their block time", gt=0)
    retries: int = _f(8, "Retries of retry-safe queue calls on connection errors, with exponential backoff "
                      "and jitter (0.1 s doubling, capped at 2 s)", min=0)
    memory: str = _f("2Gi", "Memory limit (and request) of the in-cluster Redis container")
    maxmemory: str = _f("1536mb", "Redis maxmemory, below redis.memory: with noeviction a full Redis refuses "
                        "writes (OOM errors) instead of being OOM-killed, and never evicts a job record")


@dataclass
class QueueConfig:
    max_deliveries: int = _f(3, "Deliveries before a job goes to the dead-letter queue", min=1)
    min_idle: float = _f(300.0, "Seconds a pending entry must be idle before another worker reclaims it "
                         "(also how long an idle consumer without pending entries is kept)", gt=0)
    heartbeat: float = _f(30.0, "Seconds between a running job's heartbeats", gt=0)
    log_ttl: int = _f(7 * 24 * 3600, "Seconds a finished job's log stream is kept", min=1)
    log_maxlen: int = _f(100_000, "Approximate cap on log lines per job", min=1)
    log_high_water: float = _f(0.75, "Fraction of Redis's maxmemory above which the logs of finished jobs are "
                               "deleted, oldest first, and new log lines refused, so job records always fit "
                               "(0: never)", min=0, max=0.95)
    default_timeout: int = _f(3600, "Job timeout in seconds when none is given", min=1)
    retention: int = _f(30 * 86400, "Seconds finished job records (and their index entries) are kept, by submit "
                        "time; trimmed by reap and finish. 0 keeps them for ever", min=0)
    dedupe_ttl: int = _f(86400, "Seconds a submitted job's dedupe key (e.g. repo@commit:agent) blocks duplicates",
                         min=1)


@dataclass
class GiteaConfig:
    url: str = _f("http://127.0.0.1:30080", "Gitea base URL (ROOT_URL)", url=("http", "https"))
    token_env: str = _f("RAIBID_GITEA_TOKEN", "Env var holding the Gitea API token")
    token_file: str | None = _f(None, "File holding the Gitea API token (used when the env var is unset)")
    admin_user: str = _f("raibid-admin", "Gitea admin user name")
    ci_user: str = _f("raibid-ci", "Non-admin Gitea user whose scoped tokens the agents, the mirror and the "
                      "webhook receiver hold (`raibid gitea bootstrap` creates it)")
    require_signin_view: bool = _f(True, "Gitea's [service] REQUIRE_SIGNIN_VIEW: only signed-in users see "
                                   "repositories (keeps mirrors of private repos private)")
    timeout: float = _f(10.0, "Seconds one try of a Gitea API request may take", gt=0, max=86400)
    total_timeout: float = _f(30.0, "Seconds one Gitea API call may take in all, retries and waits included; "
                              "no retry starts that could end later", gt=0, max=86400)
    retries: int = _f(3, "Retries on connection errors, and for GET/PUT/DELETE also on read timeouts and "
                      "502/503/504 (never for POST/PATCH)", min=0)
    retry_backoff: float = _f(0.5, "Back-off factor in seconds: retries wait 0, 2x, 4x, ... this long "
                              "(a Retry-After header wins)", min=0, max=3600)


@dataclass
class AgentType:
    """One agent type. Every field left unset is inherited from the built-in type of the same name,
    or from ``extends``; see docs/agents.md."""

    extends: str | None = _f(None, "Built-in (or entry-point) type a new type starts from")
    enabled: bool | None = _f(None, "Deploy a pool for this type (default: true for configured types)")
    image: str | None = _f(None, "Agent image, multi-arch (default: <agents.registry>/raibid/agent-<type>:<image_tag>)")
    lag_count: int | None = _f(None, "KEDA lagCount: queued jobs per agent pod (default 1)", min=1)
    max_replicas: int | None = _f(None, "Cap for this pool (defaults to agents.max_replicas)", min=1)
    cpu: str | None = _f(None, "CPU request (default 2)")
    memory: str | None = _f(None, "Memory request (default 4Gi)")
    cpu_limit: str | None = _f(None, "CPU limit (default: the request)")
    memory_limit: str | None = _f(None, "Memory limit (default: the request)")
    gpu: int | None = _f(None, "nvidia.com/gpu per agent; > 0 also sets runtimeClassName nvidia", min=0)
    runtime_class: str | None = _f(None, "Pod runtimeClassName (default: nvidia for GPU types)")
    env: dict[str, str] = _f({}, "Extra env for the agent, merged over the inherited env")
    caches: dict[str, str] = _f({}, "Cache directories on the type's cache PVC: name -> mount path")
    cache_size: str | None = _f(None, "Size of the type's cache PVC (default 20Gi)")


@dataclass
class TrustedConfig:
    """Which repositories are the operator's own code. Everything else is untrusted (docs/security.md)."""

    owners: list[str] = _f([], "Gitea owners (users or orgs) whose repositories are trusted; exact names")
    repos: list[str] = _f([], "Regexes of trusted Gitea repositories, OWNER/NAME, matched in full (not searched)")
    authors: list[str] = _f([], "Pull request authors (GitHub or Gitea logins) whose same-repo PRs build trusted; "
                            "empty: any author of a same-repo PR (a fork PR is never trusted)")

    def __post_init__(self) -> None:
        for i, rx in enumerate(self.repos):
            _check_regex(rx, f"agents.trusted.repos[{i}]")


@dataclass
class JobSecret:
    """One secret a trusted build may ask for by name in its `.raibid.yml` (`secrets: [NAME]`)."""

    name: str = _f("", "The name a `.raibid.yml` asks for; also the env var the step sees")
    secret: str = _f("", "Kubernetes Secret (in the raibid namespace) holding the value")
    key: str = _f("", "Key of that Secret (default: the name)")
    repos: list[str] = _f([], "Regexes of trusted repositories (OWNER/NAME, matched in full) allowed this secret")

    def __post_init__(self) -> None:
        import re

        from raibid.errors import ConfigError

        if not self.name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ConfigError(f"agents.secrets entry {self.name!r}: 'name' must be an env var name")
        if not self.secret:
            raise ConfigError(f"agents.secrets entry {self.name!r}: 'secret' (a Kubernetes Secret name) is required")
        if len(self.secret) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
                                                      self.secret):
            raise ConfigError(f"agents.secrets entry {self.name!r}: secret {self.secret!r} is not a Kubernetes "
                              "object name (lower-case letters, digits, '-' and '.')")
        if not self.key:
            self.key = self.name
        if len(self.key) > 253 or not re.fullmatch(r"[-._a-zA-Z0-9]+", self.key) or self.key in (".", ".."):
            raise ConfigError(f"agents.secrets entry {self.name!r}: key {self.key!r} is not a Secret key "
                              "(letters, digits, '-', '_' and '.')")
        if not self.repos:
            raise ConfigError(f"agents.secrets entry {self.name!r}: 'repos' must name at least one repo pattern",
                              hint="a secret no repo may use is a mistake; use '.*' for every trusted repo")
        for i, rx in enumerate(self.repos):
            _check_regex(rx, f"agents.secrets entry {self.name!r} repos[{i}]")


@dataclass
class AgentsConfig:
    default_type: str = _f("generic", "Agent type used when a job names none")
    pools: list[str] = _f(["generic", "rust", "python", "node", "go"],
                          "Built-in types that get a pool (types under agents.types get one unless enabled: false)")
    max_replicas: int = _f(8, "Default maximum pods per agent pool", min=1)
    polling_interval: int = _f(5, "KEDA pollingInterval in seconds", min=1)
    scaling_strategy: str = _f("accurate", "KEDA scalingStrategy: accurate, eager or default (see docs/agents.md)",
                               choices=("accurate", "eager", "default"))
    registry: str | None = _f(None, "Registry host for agent images and RAIBID_REGISTRY (default: host of gitea.url)")
    image_tag: str | None = _f(None, "Tag of raibid's images (default: <raibid version>-<hash of the build context>, "
                                     "what `raibid images build` pushes)")
    gitea_url: str | None = _f(None, "Gitea URL agents clone from (default: the in-cluster Gitea Service)")
    max_timeout: int = _f(6 * 3600, "Longest job an agent runs, in seconds; the Job's activeDeadlineSeconds is above it",
                         min=1)
    wait: int = _f(30, "Seconds a started agent waits for a job before exiting", min=0)
    max_pids: int = _f(4096, "RLIMIT_NPROC of the step runner and its steps (counts every process of the UID)",
                       min=16)
    log_max_bytes: int = _f(64 << 20, "Bytes of output stored per job; the rest is drained, not stored, "
                            "after a [log truncated] line", min=1024)
    log_line_max_bytes: int = _f(16 << 10, "Bytes stored per log line; a longer line is cut with a "
                                 "[log truncated] marker", min=80)
    job_ttl: int = _f(3600, "Seconds a finished agent Job is kept (ttlSecondsAfterFinished)", min=0)
    history_limit: int = _f(3, "Finished and failed agent Jobs KEDA keeps per pool", min=0)
    types: dict[str, AgentType] = _f({}, "Agent types: override a built-in or define a new one")
    trusted: TrustedConfig = field(default_factory=TrustedConfig, metadata={
        "help": "Trusted repositories: only their builds get job secrets and the trusted pools' caches"})
    secrets: list[JobSecret] = _f([], "Job secrets trusted builds may ask for (name, secret, key, repos)")
    approval: str = _f("forks", "Pull request builds that wait in waiting-approval until `raibid queue approve`: "
                       "forks (fork PRs), untrusted (every untrusted PR build) or none",
                       choices=("forks", "untrusted", "none"))
    workspace_size: str = _f("20Gi", "sizeLimit of an agent pod's /workspace and of its build container's /tmp "
                             "(and the build container's ephemeral-storage limit)")
    internet: bool = _f(True, "Agent pods may reach the internet (package downloads); never the cluster's, "
                        "the node's or private ranges (see docs/cluster.md)")
    egress_allow: list[str] = _f([], "Extra CIDRs agent pods may reach, e.g. a package mirror on the LAN")


@dataclass
class TriggerConfig:
    enabled: bool = _f(True, "Enqueue CI jobs when a mirror sync finds changed refs")
    branches: str = _f("^(main|master)$", "Regex of branch names that trigger jobs")
    agent: str = _f("generic", "Agent type for triggered jobs")
    on_create: bool = _f(False, "Also trigger for a repo mirrored for the first time (off: a first org sync "
                         "starts no builds)")

    def __post_init__(self) -> None:
        _check_regex(self.branches, "mirror.trigger.branches")


MIRROR_MODES = ("push", "pull")
ON_MISSING = ("keep", "archive", "delete")
OWNER_KINDS = ("org", "user")


def _check_regex(pattern: str | None, where: str) -> None:
    """A bad regex is a config error naming the entry it is in (raised while the file loads)."""
    import re

    from raibid.errors import ConfigError

    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{where}: invalid regex {pattern!r}: {e}") from None


def _check_choice(value: str, choices: tuple[str, ...], where: str) -> None:
    from raibid.errors import ConfigError

    if value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")


def _check_full_name(value: str | None, where: str) -> None:
    from raibid.errors import ConfigError

    if value is None:
        return
    owner, sep, name = value.partition("/")
    if not sep or not owner or not name or "/" in name or any(c.isspace() for c in value):
        raise ConfigError(f"{where}: {value!r} is not OWNER/NAME")


@dataclass
class MirrorRepo:
    """One `mirror.repos` entry written as a mapping (a plain `OWNER/NAME` string is the short form)."""

    source: str = _f("", "GitHub repository, OWNER/NAME")
    target: str | None = _f(None, "Gitea repository, ORG/NAME (default: mirror.target_org/NAME)")
    branches: str | None = _f(None, "Regex of branch names to mirror (default: every branch)")

    def __post_init__(self) -> None:
        from raibid.errors import ConfigError

        if not self.source:
            raise ConfigError("mirror.repos entry: 'source' is required")
        where = f"mirror.repos entry {self.source!r}"
        _check_full_name(self.source, where)
        _check_full_name(self.target, f"{where} target")
        _check_regex(self.branches, f"{where} branches")


@dataclass
class MirrorOrg:
    """One `mirror.orgs` entry: every repository of a GitHub org or user, filtered by regex."""

    name: str = _f("", "GitHub org or user login")
    kind: str = _f("org", "`org` or `user`")
    include: list[str] = _f([], "Regexes of repo names to mirror (default: all); searched, so anchor them")
    exclude: list[str] = _f([], "Regexes of repo names to leave out (wins over include)")
    target_org: str | None = _f(None, "Gitea org for this entry (default: mirror.target_org)")
    forks: bool = _f(False, "Also mirror forks")
    archived: bool = _f(False, "Also mirror archived repositories")
    on_missing: str = _f("keep", "A mirrored repo gone upstream: `keep`, `archive` or `delete` "
                         "(delete also needs --allow-delete)")
    branches: str | None = _f(None, "Regex of branch names to mirror (default: every branch)")

    def __post_init__(self) -> None:
        from raibid.errors import ConfigError

        if not self.name:
            raise ConfigError("mirror.orgs entry: 'name' is required")
        where = f"mirror.orgs entry {self.name!r}"
        _check_choice(self.kind, OWNER_KINDS, f"{where} kind")
        _check_choice(self.on_missing, ON_MISSING, f"{where} on_missing")
        for i, rx in enumerate(self.include):
            _check_regex(rx, f"{where} include[{i}]")
        for i, rx in enumerate(self.exclude):
            _check_regex(rx, f"{where} exclude[{i}]")
        _check_regex(self.branches, f"{where} branches")


@dataclass
class MirrorConfig:
    github_api: str = _f("https://api.github.com", "GitHub API base URL (GitHub Enterprise: https://HOST/api/v3)",
                         url=("http", "https"))
    github_token_env: str = _f("GITHUB_TOKEN", "Env var holding the GitHub token")
    target_org: str = _f("mirrors", "Gitea org that receives mirrors")
    mode: str = _f("push", "`push` (raibid fetches and pushes) or `pull` (Gitea pull mirrors)",
                   choices=MIRROR_MODES)
    cache_dir: str | None = _f(None, "Bare-repo cache directory (default: XDG cache)")
    jobs: int = _f(4, "Repositories synced in parallel", min=1)
    timeout: int = _f(600, "Seconds one repository may take before it is marked failed", min=1)
    max_wait: int = _f(300, "Seconds to wait for a GitHub rate limit to reset before failing that entry", min=0)
    repos: list[str | MirrorRepo] = _f([], "Single repos: OWNER/NAME, or {source, target, branches}")
    lists: list[str] = _f([], "Files listing OWNER/NAME lines (# comments allowed)")
    orgs: list[MirrorOrg] = _f([], "Orgs or users: {name, kind, include, exclude, target_org, forks, archived, "
                               "on_missing}")
    schedule: str = _f("*/15 * * * *", "Cron schedule of the in-cluster CronJob (component `mirror`)")
    image: str | None = _f(None, "Image of the CronJob (default: raibid's image, <registry>/raibid/raibid:<tag>)")
    trigger: TriggerConfig = field(default_factory=TriggerConfig, metadata={"help": "CI triggering"})
    pull_requests: bool = _f(True, "Find open pull requests (one GitHub API request per repo per sync), mirror "
                             "their refs/pull/<n>/head and build them; pull mode relies on Gitea's own copy")

    def __post_init__(self) -> None:
        for entry in self.repos:
            if isinstance(entry, str):
                _check_full_name(entry, f"mirror.repos entry {entry!r}")


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
class WebhookConfig:
    listen: str = _f("0.0.0.0:8080", "HOST:PORT the receiver (`raibid webhook serve`, in the pod) listens on")
    secret_env: str = _f("RAIBID_WEBHOOK_SECRET", "Env var holding the shared HMAC secret of the Gitea and GitHub hooks")
    public_url: str | None = _f(None, "Public base URL GitHub posts to (e.g. https://ci.example.com); "
                                      "hooks go to <public_url>/hooks/github")
    internal_url: str | None = _f(None, "Base URL Gitea posts to (default: http://raibid-webhook.<namespace>.svc:<port>)")
    max_body: int = _f(1024 * 1024, "Largest request body accepted, in bytes (larger: 413)", min=1)
    image: str | None = _f(None, "Image of the receiver pod (default: raibid's image, <registry>/raibid/raibid:<tag>)")
    ingress_host: str | None = _f(None, "Host name of a Traefik Ingress for the receiver (none when unset)")
    sync_workers: int = _f(2, "Background threads syncing mirrored repos after GitHub pushes", min=1)
    max_pending: int = _f(256, "Repos waiting for a sync before further pushes are dropped (the cron sync catches up)",
                          min=1)
    gitea_repos: list[str] = _f([], "Gitea repos (OWNER/NAME) that get their own hook besides the mirror org's")
    branches: dict[str, str] = _f({}, "Per-repo branch regex overriding mirror.trigger.branches, by Gitea OWNER/NAME")
    report: bool = _f(True, "Post commit statuses (Gitea, and GitHub for mirrors) from the event stream, in the "
                            "receiver pod (docs/statuses.md)")
    github_status_token_env: str = _f("RAIBID_GITHUB_STATUS_TOKEN",
                                      "Env var holding the GitHub token commit statuses are posted with (classic "
                                      "repo:status, or fine-grained Commit statuses: write); Secret raibid-github-status")
    page_url: str | None = _f(None, "Base URL of the job page links in commit statuses (<page_url>/jobs/<id>?k=...); "
                                    "default: webhook.public_url, else webhook.internal_url, else the in-cluster "
                                    "Service URL", url=("http", "https"))
    page_key_env: str = _f("RAIBID_WEBHOOK_PAGE_KEY",
                           "Env var holding the key that signs job page links (Secret raibid-webhook, key page-key)")
    max_followers: int = _f(2, "Job logs followed at once (GET /jobs/<id>/log?follow=1); more get 503. Each holds "
                               "one of the receiver's HTTP threads, so keep it below `webhook serve --threads`",
                            min=0)
    follow_max: float = _f(600.0, "Seconds a followed job log stays open before the server ends it", gt=0)


@dataclass
class Config:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    gitea: GiteaConfig = field(default_factory=GiteaConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    mirror: MirrorConfig = field(default_factory=MirrorConfig)
    gitops: GitopsConfig = field(default_factory=GitopsConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)

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
