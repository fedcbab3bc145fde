"""Collectors: one per backend, each with its own error state, joined into one Snapshot.

A collector never raises a ``RaibidError``: it records the failure in its
``Backend`` and keeps the data of its last good refresh, marked stale, so the
other panels keep refreshing. Clients are built through factories on first use
(and again after a failure), so a backend that was down at start-up is picked
up when it comes back.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raibid.errors import NotFound, RaibidError
from raibid.top.model import (
    AgentPod,
    AgentsPanel,
    Backend,
    ClusterPanel,
    ComponentRow,
    GitOpsVerdict,
    Header,
    JobRow,
    MirrorSync,
    Pool,
    PoolQueue,
    QueuePanel,
    Snapshot,
)

if TYPE_CHECKING:
    from raibid.cluster.client import Kube
    from raibid.cluster.render import Manifest
    from raibid.gitops import Target
    from raibid.gitops.flux import ObjectStatus
    from raibid.queue import Queue

Clock = Callable[[], float]

FINISHED = ("succeeded", "failed", "cancelled", "dead")
RATED = ("succeeded", "failed", "dead")  # cancelled jobs count as finished but not in the success rate


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _int(value: str | None, default: int | None = None) -> int | None:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


class Collector:
    """Shared error handling: run ``_fetch``, record success or the typed failure, keep the last data."""

    name = ""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self.backend = Backend(self.name)
        self.last: Any = None

    def _empty(self) -> Any:
        raise NotImplementedError

    def _fetch(self) -> Any:
        raise NotImplementedError

    def _round_trips(self) -> int:
        return 0

    def collect(self) -> Any:
        t0 = time.perf_counter()
        try:
            data = self._fetch()
        except RaibidError as e:
            self._failed(e)
            data = self.last if self.last is not None else self._empty()
            self.backend.stale = self.last is not None
        else:
            self.backend = Backend(self.name, last_ok_at=rfc3339(self.clock()))
            self.last = data
        self.backend.round_trips = self._round_trips()
        self.backend.elapsed_ms = round((time.perf_counter() - t0) * 1000, 2)
        return data

    def _failed(self, e: RaibidError) -> None:
        self.backend = Backend(self.name, ok=False, error=e.message, hint=e.hint, exit_code=int(e.exit_code),
                               last_ok_at=self.backend.last_ok_at)


# ----------------------------------------------------------------------------- Redis


@dataclass
class RedisData:
    queue: QueuePanel = field(default_factory=QueuePanel)
    newest: list[JobRow] = field(default_factory=list)  # the newest jobs by submit time
    running: list[JobRow] = field(default_factory=list)  # every running job read, for the agent pods
    mirror: MirrorSync | None = None


class RedisCollector(Collector):
    """Queue stats (exactly `queue stats`), the newest job records and the mirror's last sync.

    Round trips: `Queue.stats` (3 plus at most 5 per agent type, whatever the
    number of jobs) and at most 3 pipelines (``redisread``).
    """

    name = "redis"

    def __init__(self, queue: Callable[[], Queue], pools: Callable[[], dict[str, tuple[int, int]]], *,
                 head: int = 200, window: int = 500, pending: int = 200, clock: Clock = time.time) -> None:
        super().__init__(clock)
        self._queue_factory = queue
        self._pools = pools
        self.head, self.window, self.pending = head, window, pending
        self._queue: Queue | None = None
        self._counting: Any = None

    def _empty(self) -> RedisData:
        return RedisData()

    def _round_trips(self) -> int:
        return self._counting.round_trips if self._counting is not None else 0

    def _connect(self) -> Queue:
        if self._queue is None:
            from raibid.queue import Queue
            from raibid.queue.connection import no_retry
            from raibid.top.redisread import Counting

            base = self._queue_factory()
            self._counting = Counting(base.r)
            # No retries inside a refresh: the next refresh, two seconds on, is the retry.
            self._queue = Queue(self._counting, prefix=base.keys.prefix, url=base.url, retry=no_retry())
        self._counting.round_trips = 0
        return self._queue

    def _fetch(self) -> RedisData:
        from raibid.queue import redis_errors
        from raibid.top.redisread import read_jobs

        try:
            q = self._connect()
        except RaibidError:
            self._queue = None
            raise
        stats = q.stats(self._pools())
        now = self.clock()
        queued = sum(st.lag if st.lag is not None else st.length for st in stats.streams)
        with redis_errors(q.url):
            read = read_jobs(q.r, q.keys, head=self.head, queued=queued, window=self.window, pending=self.pending,
                             streams=[st.stream for st in stats.streams if st.group_exists])
        records = {i: self._row(h, now) for i, h in read.records.items()}
        for i, line in read.last_lines.items():
            if i in records:
                records[i].last_log_line = line
        newest = [records[i] for i in (h.get("id") for h in read.head) if i is not None and i in records]
        running = [j for j in records.values() if j.status == "running"]
        return RedisData(self._queue_panel(stats, list(records.values()), read.total, now), newest, running,
                         self._mirror(read.mirror, now))

    @staticmethod
    def _row(h: dict[str, str | None], now: float) -> JobRow:
        started, finished = _epoch(h.get("started_at")), _epoch(h.get("finished_at"))
        duration = None
        if started is not None:
            duration = max(0.0, (finished if finished is not None else now) - started)
        return JobRow(id=h.get("id") or "", status=h.get("status") or "", repo=h.get("repo") or "",
                      ref=h.get("ref") or "", agent=h.get("agent") or "", attempt=_int(h.get("attempt"), 1) or 1,
                      submitted_at=h.get("submitted_at"), started_at=h.get("started_at"),
                      finished_at=h.get("finished_at"), duration_s=duration, agent_pod=h.get("agent_pod"),
                      step=h.get("step"), exit_code=_int(h.get("exit_code")))

    def _queue_panel(self, stats: Any, records: list[JobRow], total: int, now: float) -> QueuePanel:
        pools = []
        for st in stats.streams:
            mine = [j for j in records if j.agent == st.agent]
            p = PoolQueue(agent=st.agent, queued=st.lag, length=st.length,
                          running=sum(j.status == "running" for j in mine), pending=st.pending,
                          oldest_queued_at=st.oldest_queued_at, oldest_queued_age_s=st.oldest_queued_age_s,
                          keda_desired=st.keda_desired, max_replicas=st.max_replicas)
            for minutes in (5, 60):
                done = [j for j in mine if j.status in FINISHED
                        and (_epoch(j.finished_at) or 0) >= now - minutes * 60]
                ok = sum(j.status == "succeeded" for j in done)
                rated = sum(j.status in RATED for j in done)
                setattr(p, f"finished_{minutes}m", len(done))
                setattr(p, f"succeeded_{minutes}m", ok)
                setattr(p, f"success_rate_{minutes}m", round(ok / rated, 4) if rated else None)
            pools.append(p)
        return QueuePanel(pools, stats.dead_letter, stats.redis_version, list(stats.warnings), total,
                          len(records), len(records) >= total)

    @staticmethod
    def _mirror(raw: str | None, now: float) -> MirrorSync | None:
        """The mirror's record, decoded by the mirror's own reader (raibid/mirror/record.py)."""
        from raibid.mirror.record import parse_last_run

        try:
            run = parse_last_run(raw)
        except ValueError:
            return MirrorSync(None, None, {}, ["unreadable mirror record"])
        if run is None:
            return None
        at = _epoch(run.finished_at) if run.finished_at else None
        return MirrorSync(run.finished_at, None if at is None else max(0.0, now - at), run.counts, run.failed)


# ----------------------------------------------------------------------------- Kubernetes

KEDA = ("keda.sh/v1alpha1", "ScaledJob")
AGENT_LABEL = "scaledjob.keda.sh/name"
POOL_SELECTOR = "app.kubernetes.io/managed-by=raibid,raibid.dev/component=agents"
PAUSED_ANNOTATION = "autoscaling.keda.sh/paused"


@dataclass
class KubeData:
    agents: AgentsPanel = field(default_factory=AgentsPanel)
    components: list[ComponentRow] = field(default_factory=list)
    flux: tuple[ObjectStatus, ObjectStatus] | None = None  # GitRepository, Kustomization (gitops mode)


class _CountingKube:
    """Counts the requests the dashboard makes through a Kube (discovery is cached and not counted)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.requests = 0

    def list(self, *a: Any, **kw: Any) -> list[dict]:
        self.requests += 1
        return self.kube.list(*a, **kw)

    def get(self, *a: Any, **kw: Any) -> dict | None:
        self.requests += 1
        return self.kube.get(*a, **kw)


class KubeCollector(Collector):
    """Agent pools (ScaledJobs, their Jobs and pods) and component status, from bounded LISTs.

    Per refresh: LIST ScaledJob, Job and Pod in the namespace (agents); LIST
    StatefulSet and Deployment in all namespaces, PersistentVolumeClaim in the
    namespace and HelmChart in each HelmChart namespace (components); one GET of
    each HelmChart's helm-install Job; GET of raibid's GitRepository and
    Kustomization when cluster.mode is gitops (what `gitops status` reads). None
    of it grows with the number of pods or jobs.
    """

    name = "kubernetes"

    def __init__(self, kube: Callable[[], Kube], namespace: str, manifests: Callable[[], list[Manifest]], *,
                 gitops: bool = False, clock: Clock = time.time) -> None:
        super().__init__(clock)
        self._kube_factory = kube
        self.namespace = namespace
        self._manifests_factory = manifests
        self._manifests: list[Manifest] | None = None
        self.gitops = gitops
        self._kube: _CountingKube | None = None
        self._absent: dict[tuple[str, str], float] = {}

    # A kind the cluster does not serve is asked for again only after this long: each miss makes the
    # client re-run discovery (a dozen requests), which a 2-second refresh must not pay every time.
    ABSENT_RECHECK_S = 60.0

    def _empty(self) -> KubeData:
        return KubeData()

    def _list_optional(self, kube: _CountingKube, api_version: str, kind: str, namespace: str | None,
                       label_selector: str | None = None) -> list[dict]:
        """LIST a kind a component's CRD provides; NotFound (remembered for a while) when it is not served."""
        return self._optional(kube.list, api_version, kind, namespace, label_selector=label_selector)

    def _optional(self, call: Callable[..., Any], api_version: str, kind: str, *args: Any, **kw: Any) -> Any:
        until = self._absent.get((api_version, kind))
        if until is not None and self.clock() < until:
            raise NotFound(f"the cluster does not serve {kind} ({api_version})")
        try:
            out = call(api_version, kind, *args, **kw)
        except NotFound:
            self._absent[(api_version, kind)] = self.clock() + self.ABSENT_RECHECK_S
            raise
        self._absent.pop((api_version, kind), None)
        return out

    def _round_trips(self) -> int:
        return self._kube.requests if self._kube is not None else 0

    def _fetch(self) -> KubeData:
        if self._kube is None:
            self._kube = _CountingKube(self._kube_factory())
        self._kube.requests = 0
        if self._manifests is None:
            self._manifests = self._manifests_factory()
        agents = self._agents(self._kube)
        components = self._components(self._kube, self._manifests)
        flux = self._flux(self._kube) if self.gitops else None
        return KubeData(agents, components, flux)

    # ------------------------------------------------------------------ agents
    def _agents(self, kube: _CountingKube) -> AgentsPanel:
        self._scaledjobs: list[dict] = []
        try:
            scaledjobs = self._list_optional(kube, *KEDA, self.namespace, label_selector=POOL_SELECTOR)
        except NotFound:
            return AgentsPanel(keda_installed=False,
                               message="KEDA is not installed (the cluster serves no ScaledJob); "
                                       "`raibid cluster up -c keda` installs it")
        self._scaledjobs = scaledjobs  # the agents component's status reuses this LIST
        jobs = kube.list("batch/v1", "Job", self.namespace, label_selector=AGENT_LABEL)
        pods = kube.list("v1", "Pod", self.namespace, label_selector=AGENT_LABEL)
        now = self.clock()
        pools = []
        for sj in sorted(scaledjobs, key=lambda o: o["metadata"]["name"]):
            meta, spec = sj["metadata"], sj.get("spec") or {}
            name = meta["name"]
            conds = {c.get("type"): c.get("status") for c in (sj.get("status") or {}).get("conditions") or []}
            mine = [p for p in pods if _labels(p).get(AGENT_LABEL) == name]
            paused = (meta.get("annotations") or {}).get(PAUSED_ANNOTATION) == "true" or conds.get("Paused") == "True"
            pools.append(Pool(
                name=name, agent_type=_agent_type(sj), ready=_tristate(conds.get("Ready")),
                active=_tristate(conds.get("Active")), paused=paused,
                running=sum(_pod_phase(p) == "Running" for p in mine),
                pending=sum((p.get("status") or {}).get("phase", "Pending") == "Pending" for p in mine),
                max_replicas=int(spec.get("maxReplicaCount", 100)),
                jobs_active=sum(int((j.get("status") or {}).get("active") or 0) > 0 for j in jobs
                                if _labels(j).get(AGENT_LABEL) == name)))
        rows = []
        for p in pods:
            phase = (p.get("status") or {}).get("phase", "Pending")
            if phase not in ("Running", "Pending"):
                continue
            started = (p.get("status") or {}).get("startTime")
            at = _epoch(started)
            rows.append(AgentPod(name=p["metadata"]["name"], pool=_labels(p).get(AGENT_LABEL, ""),
                                 phase=_pod_phase(p), started_at=started,
                                 elapsed_s=None if at is None else max(0.0, now - at)))
        rows.sort(key=lambda r: (r.pool, r.name))
        return AgentsPanel(True, None, pools, rows)

    # ------------------------------------------------------------------ components
    def _components(self, kube: _CountingKube, manifests: list[Manifest]) -> list[ComponentRow]:
        from raibid.cluster.components import BASE
        from raibid.cluster.readiness import BOUND_ON_USE, helm_job_state

        by_comp: dict[str, list[Manifest]] = {}
        for m in manifests:
            if m.component != BASE and m.kind in ("StatefulSet", "Deployment", "PersistentVolumeClaim", "HelmChart",
                                                  "ScaledJob"):
                by_comp.setdefault(m.component, []).append(m)
        kinds = {m.kind for ms in by_comp.values() for m in ms}
        live: dict[tuple[str, str, str], dict] = {}
        workloads: list[dict] = []
        for api_version, kind in (("apps/v1", "StatefulSet"), ("apps/v1", "Deployment")):
            for obj in kube.list(api_version, kind, None):
                workloads.append(obj)
                live[(kind, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj
        if "PersistentVolumeClaim" in kinds:
            for obj in kube.list("v1", "PersistentVolumeClaim", self.namespace):
                live[("PersistentVolumeClaim", self.namespace, obj["metadata"]["name"])] = obj
        for obj in getattr(self, "_scaledjobs", []):
            live[("ScaledJob", obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj
        charts_ns = sorted({m.namespace or "" for ms in by_comp.values() for m in ms if m.kind == "HelmChart"})
        helm_missing = False
        for ns in charts_ns:
            try:
                for obj in self._list_optional(kube, "helm.cattle.io/v1", "HelmChart", ns):
                    live[("HelmChart", ns, obj["metadata"]["name"])] = obj
            except NotFound:
                helm_missing = True  # not k3s: no helm-controller
        rows = []
        for comp, ms in by_comp.items():
            ready = desired = missing = 0
            version = ""
            problems: list[str] = []
            for m in ms:
                found = live.get((m.kind, m.namespace or "", m.name))
                if found is None:
                    missing += 1
                    problems.append(f"{m.ref} missing" + (" (the cluster serves no HelmChart)"
                                                         if m.kind == "HelmChart" and helm_missing else ""))
                    continue
                spec, status = found.get("spec") or {}, found.get("status") or {}
                if m.kind in ("StatefulSet", "Deployment"):
                    want = spec.get("replicas", 1)
                    desired += want
                    ready += min(status.get("readyReplicas", 0), want)
                    image = ((spec.get("template") or {}).get("spec") or {}).get("containers", [{}])[0].get(
                        "image", "")
                    version = image.rsplit(":", 1)[-1] if ":" in image else image
                elif m.kind == "PersistentVolumeClaim":
                    phase = status.get("phase", "Pending")
                    if phase != "Bound" and _labels(found, "annotations").get(BOUND_ON_USE) != "true":
                        problems.append(f"{m.ref} is {phase}")
                elif m.kind == "ScaledJob":
                    pass  # present is all `cluster status` asks of it
                else:  # HelmChart: its helm-install Job, then the release's workloads
                    version = spec.get("version", "")
                    done, _, why = helm_job_state(kube, found)  # type: ignore[arg-type]
                    if not done:
                        problems.append(why)
                    target = spec.get("targetNamespace") or m.namespace
                    for w in workloads:
                        if w["metadata"].get("namespace") == target and _labels(w).get(
                                "app.kubernetes.io/instance") == m.name:
                            want = (w.get("spec") or {}).get("replicas", 1)
                            desired += want
                            ready += min((w.get("status") or {}).get("readyReplicas", 0), want)
            if missing == len(ms):
                state = "missing"
            elif any("CrashLoopBackOff" in p or "ImagePull" in p or "failed" in p for p in problems):
                state = "degraded"
            elif problems or ready < desired:
                state = "progressing"
            else:
                state = "healthy"
            rows.append(ComponentRow(comp, state, ready, desired, version, problems))
        return rows

    # ------------------------------------------------------------------ gitops
    def _flux(self, kube: _CountingKube) -> tuple[ObjectStatus, ObjectStatus]:
        """raibid's GitRepository and Kustomization, read as `gitops status` reads them (a missing CRD: missing)."""
        from raibid.gitops.flux import FLUX_NAMESPACE, KUSTOMIZE_API, NAME, SOURCE_API, object_status

        found = []
        for api_version, kind in ((SOURCE_API, "GitRepository"), (KUSTOMIZE_API, "Kustomization")):
            try:
                obj = self._optional(kube.get, api_version, kind, NAME, FLUX_NAMESPACE)
            except NotFound:  # Flux is not installed
                obj = None
            found.append(object_status(kind, obj))
        return found[0], found[1]


def _labels(obj: dict, which: str = "labels") -> dict[str, str]:
    """An object's labels (or, with ``which="annotations"``, its annotations)."""
    return (obj.get("metadata") or {}).get(which) or {}


def _tristate(value: str | None) -> bool | None:
    return None if value in (None, "Unknown") else value == "True"


def _agent_type(sj: dict) -> str:
    """The agent type a pool runs: its label, else `--type T` in the container args, else its name."""
    labelled = _labels(sj).get("raibid.dev/agent-type")
    if labelled:
        return labelled
    template = (((sj.get("spec") or {}).get("jobTargetRef") or {}).get("template") or {}).get("spec") or {}
    for c in template.get("containers") or []:
        argv = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        for i, a in enumerate(argv):
            if a == "--type" and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith("--type="):
                return a.split("=", 1)[1]
    return sj["metadata"]["name"]


def _pod_phase(pod: dict) -> str:
    """The phase, or the reason a container is stuck waiting (ImagePullBackOff, CrashLoopBackOff, ...)."""
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
        if reason and reason not in ("ContainerCreating", "PodInitializing"):
            return reason
    return status.get("phase", "Pending")


# ----------------------------------------------------------------------------- Gitea


@dataclass
class GiteaData:
    version: str | None = None
    head: str | None = None  # the config repo's branch head (gitops mode)
    head_read: bool = False  # head is known (None then means: no such repo or branch)


class GiteaCollector(Collector):
    """Is Gitea answering? One anonymous GET /api/v1/version per refresh, no retries.

    With ``head`` (cluster.mode gitops) also the config repo's branch head, the
    one request `gitops status` makes to Gitea.
    """

    name = "gitea"

    def __init__(self, version: Callable[[], str], clock: Clock = time.time, *,
                 head: Callable[[], str | None] | None = None) -> None:
        super().__init__(clock)
        self._version = version
        self._head = head

    def _empty(self) -> GiteaData:
        return GiteaData()

    def _round_trips(self) -> int:
        return self._requests

    _requests = 0  # requests made by the last refresh (a failed version request stops it there)

    def _fetch(self) -> GiteaData:
        self._requests = 1
        version = self._version()
        if self._head is None:
            return GiteaData(version)
        self._requests = 2
        return GiteaData(version, self._head(), True)


# ----------------------------------------------------------------------------- the dashboard


@dataclass
class Dashboard:
    """The three collectors and what the header names; ``refresh()`` gives one Snapshot."""

    redis: RedisCollector
    kube: KubeCollector
    gitea: GiteaCollector
    header: Header
    jobs_shown: int = 20
    clock: Clock = time.time
    gitops: Target | None = None  # cluster.mode gitops: the config repo whose verdict the Cluster panel shows
    flux_url: str | None = None  # the in-cluster URL Flux should follow (as `gitops status` checks)

    def refresh(self) -> Snapshot:
        rd: RedisData = self.redis.collect()
        kd: KubeData = self.kube.collect()
        gd: GiteaData = self.gitea.collect()
        now = self.clock()
        header = Header(**{**self.header.__dict__, "gitea_version": gd.version, "refreshed_at": rfc3339(now)})
        by_pod = {j.agent_pod: j for j in rd.running if j.agent_pod}
        pods = []
        for p in kd.agents.pods:
            job = by_pod.get(p.name)
            if job is not None:
                started = _epoch(job.started_at)
                p = AgentPod(p.name, p.pool, p.phase, p.started_at, job.id, job.repo, job.ref, job.step,
                             None if started is None else max(0.0, now - started))
            pods.append(p)
        agents = AgentsPanel(kd.agents.keda_installed, kd.agents.message, kd.agents.pools, pods)
        cluster = ClusterPanel(kd.components, self._verdict(kd, gd), rd.mirror)
        backends = {c.name: c.backend for c in (self.redis, self.kube, self.gitea)}
        return Snapshot(header, backends, rd.queue, agents, rd.newest[:self.jobs_shown], cluster)

    def _verdict(self, kd: KubeData, gd: GiteaData) -> GitOpsVerdict | None:
        """`gitops status`'s verdict from the same objects and head, by the same rule; unknown without either."""
        from raibid.gitops.flux import revision_sha, verdict

        if self.gitops is None:
            return None
        t = self.gitops
        if kd.flux is None:
            return GitOpsVerdict("unknown", "Flux's objects are unknown: " + (
                self.kube.backend.error or "the Kubernetes API did not answer"))
        source, ks = kd.flux
        applied = revision_sha(ks.revision)
        if not gd.head_read:
            return GitOpsVerdict("unknown", f"the head of {t.repo.full_name} ({t.branch}) is unknown: "
                                 + (self.gitea.backend.error or "Gitea did not answer"), None, applied)
        found, message = verdict(gd.head, source, ks, repo=t.repo.full_name, branch=t.branch, path=t.path,
                                 url=self.flux_url)
        return GitOpsVerdict(found, message, gd.head, applied)
