"""One dashboard snapshot as plain dataclasses: what `top --json` prints and every view draws.

Each backend (Redis, Kubernetes, Gitea) has its own ``Backend`` state, so one
going away marks only its panels; the others keep their fresh numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backend:
    """How the last refresh of one backend went."""

    name: str  # redis, kubernetes, gitea
    ok: bool = True
    error: str | None = None
    hint: str | None = None
    exit_code: int = 0  # the typed error's exit code (5 unreachable, 4 auth, ...), 0 when ok
    stale: bool = False  # the panels show the data of the last good refresh
    last_ok_at: str | None = None
    round_trips: int = 0  # requests the last refresh sent to this backend
    elapsed_ms: float = 0.0


@dataclass
class PoolQueue:
    """One agent type's queue: the `queue stats` numbers plus recent throughput from the job index."""

    agent: str
    queued: int | None  # the consumer group's lag (what KEDA scales on); None on Redis < 7
    length: int
    running: int  # job records with status running (in the scanned window)
    pending: int  # delivered to an agent and not yet acked (XPENDING)
    oldest_queued_at: str | None
    oldest_queued_age_s: float | None
    keda_desired: int | None
    max_replicas: int
    finished_5m: int = 0
    succeeded_5m: int = 0
    success_rate_5m: float | None = None
    finished_60m: int = 0
    succeeded_60m: int = 0
    success_rate_60m: float | None = None


@dataclass
class QueuePanel:
    pools: list[PoolQueue] = field(default_factory=list)
    dead_letter: int = 0
    redis_version: str = ""
    warnings: list[str] = field(default_factory=list)
    jobs_total: int = 0  # entries in the job index
    scanned: int = 0  # job records read for running, the finished windows and the jobs panel
    window_complete: bool = True  # every job record was read (else the windows come from the scanned ones)


@dataclass
class JobRow:
    id: str
    status: str
    repo: str
    ref: str
    agent: str
    attempt: int = 1
    submitted_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None  # finished - started, or now - started while running
    agent_pod: str | None = None
    step: str | None = None
    exit_code: int | None = None
    last_log_line: str | None = None  # running jobs only


@dataclass
class AgentPod:
    name: str
    pool: str
    phase: str  # Running, Pending, Succeeded, Failed (or a waiting reason such as ImagePullBackOff)
    started_at: str | None = None
    job_id: str | None = None
    repo: str | None = None
    ref: str | None = None
    step: str | None = None
    elapsed_s: float | None = None


@dataclass
class Pool:
    """One KEDA ScaledJob, as `kubectl get scaledjob` shows it, plus its agent pods."""

    name: str
    agent_type: str
    ready: bool | None
    active: bool | None
    paused: bool
    running: int
    pending: int
    max_replicas: int
    jobs_active: int = 0


@dataclass
class AgentsPanel:
    keda_installed: bool = True
    message: str | None = None  # e.g. "KEDA is not installed"
    pools: list[Pool] = field(default_factory=list)
    pods: list[AgentPod] = field(default_factory=list)


@dataclass
class ComponentRow:
    component: str
    state: str  # healthy, progressing, degraded, missing
    ready: int
    desired: int
    version: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass
class GitOpsVerdict:
    """`raibid gitops status`'s verdict, by the same rule (``raibid.gitops.flux.verdict``)."""

    verdict: str  # in-sync, pending, failed, not-bootstrapped; unknown when Kubernetes or Gitea did not answer
    message: str = ""
    head: str | None = None  # the config repo's branch head
    applied: str | None = None  # the Kustomization's lastAppliedRevision


@dataclass
class MirrorSync:
    time: str | None
    age_s: float | None
    counts: dict[str, int] = field(default_factory=dict)  # action -> repositories (synced, unchanged, failed...)
    failed: list[str] = field(default_factory=list)


@dataclass
class ClusterPanel:
    components: list[ComponentRow] = field(default_factory=list)
    gitops: GitOpsVerdict | None = None  # only when cluster.mode is gitops
    mirror: MirrorSync | None = None  # only when the mirror has recorded a sync


@dataclass
class Header:
    cluster: str
    namespace: str
    redis: str  # URL without credentials
    gitea: str
    gitea_version: str | None = None
    refreshed_at: str = ""
    interval_s: float | None = None


@dataclass
class Snapshot:
    header: Header
    backends: dict[str, Backend]
    queue: QueuePanel
    agents: AgentsPanel
    jobs: list[JobRow]
    cluster: ClusterPanel

    @property
    def exit_code(self) -> int:
        """0 when every backend answered; 5 when any was unreachable; else the first failure's code."""
        codes = [b.exit_code or 1 for b in self.backends.values() if not b.ok]
        if not codes:
            return 0
        return 5 if 5 in codes else codes[0]
