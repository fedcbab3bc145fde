"""Agent pools in the cluster: the template context, and status, list, explain, pause, scale and gc.

One KEDA ScaledJob per enabled agent type (``templates/agents/``), applied through
the cluster engine as the ``agents`` component. Functions here take a ``Kube``
and plain values; the queue side (lag, which job a pod runs) is passed in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raibid.agents.types import Pool, default_registry, enabled_pools
from raibid.errors import NotFound, UsageError
from raibid.timeutil import seconds_since

if TYPE_CHECKING:
    from raibid.agents.explain import Explanation
    from raibid.cluster.client import Kube, KubeObject
    from raibid.config import Config

KEDA = "keda.sh/v1alpha1"
SCALED_JOB_LABEL = "scaledjob.keda.sh/name"
TYPE_LABEL = "raibid.dev/agent-type"
PAUSED = "autoscaling.keda.sh/paused"
PAUSE_MANAGER = "raibid-agents-pause"
AGENT_UID = 10001
DEADLINE_MARGIN_S = 900  # clone, start-up and the SIGTERM grace on top of the longest job
TRUST_LABEL = "raibid.dev/trust"  # trusted | untrusted, on ScaledJobs and their pods
POOL_LABEL = "raibid.dev/pool"  # the pool (queue) name: rust, rust-untrusted
STEP_SOCKET = "/run/raibid/steps.sock"  # the agent container drives the build container's step runner here
SECRETS_DIR = "/var/run/raibid/secrets"  # job secrets of trusted pools, one file per agents.secrets entry
# The agent container clones, talks to Redis and relays the log: a small fixed budget. The type's cpu,
# memory and GPU go to the build container.
AGENT_CONTAINER_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"},
                             "limits": {"cpu": "1", "memory": "1Gi"}}


# ----------------------------------------------------------------------------- rendering


def template_context(cfg: Config, namespace: str) -> dict[str, Any]:
    """What ``templates/agents/*.yaml.j2`` need beyond the config: the resolved pools and in-cluster URLs."""
    import json

    from raibid.agents.types import BUILDCTL_DIR
    from raibid.images.build import BUILDKIT_IMAGE

    pools = []
    for pool in enabled_pools(cfg).values():
        d = dataclasses.asdict(pool.spec)
        d.update(pool=pool.name, scaled_job=pool.scaled_job, cache_pvc=pool.cache_pvc, trust=pool.trust,
                 trusted=pool.trusted,
                 # Job secrets reach the agent container of trusted pools only, as files (never env).
                 secrets=[dataclasses.asdict(s) for s in cfg.agents.secrets] if pool.trusted else [])
        pools.append(d)
    svc = f"raibid-redis.{namespace}.svc.cluster.local:6379"
    q = cfg.queue
    settings = {
        "RAIBID_REDIS_PREFIX": cfg.redis.prefix, "RAIBID_REDIS_PASSWORD_ENV": cfg.redis.password_env,
        "RAIBID_GITEA_TOKEN_ENV": cfg.gitea.token_env, "RAIBID_GITEA_CI_USER": cfg.gitea.ci_user, "RAIBID_GITEA_ADMIN_USER": cfg.gitea.admin_user,
        "RAIBID_QUEUE_HEARTBEAT": str(q.heartbeat), "RAIBID_QUEUE_MIN_IDLE": str(q.min_idle),
        "RAIBID_QUEUE_MAX_DELIVERIES": str(q.max_deliveries), "RAIBID_QUEUE_LOG_TTL": str(q.log_ttl),
        "RAIBID_QUEUE_LOG_MAXLEN": str(q.log_maxlen),
        "RAIBID_QUEUE_LOG_HIGH_WATER": str(q.log_high_water), "RAIBID_QUEUE_DEFAULT_TIMEOUT": str(q.default_timeout),
        "RAIBID_AGENTS_MAX_TIMEOUT": str(cfg.agents.max_timeout), "RAIBID_AGENTS_WAIT": str(cfg.agents.wait),
        "RAIBID_AGENTS_REGISTRY": default_registry(cfg), "RAIBID_AGENTS_MAX_PIDS": str(cfg.agents.max_pids),
        "RAIBID_AGENTS_LOG_MAX_BYTES": str(cfg.agents.log_max_bytes),
        "RAIBID_AGENTS_LOG_LINE_MAX_BYTES": str(cfg.agents.log_line_max_bytes),
        # JSON is YAML: the config loader reads these lists back (docs/config.md, env overrides).
        "RAIBID_AGENTS_TRUSTED_OWNERS": json.dumps(list(cfg.agents.trusted.owners)),
        "RAIBID_AGENTS_TRUSTED_REPOS": json.dumps(list(cfg.agents.trusted.repos)),
        "RAIBID_AGENTS_SECRETS": json.dumps([dataclasses.asdict(s) for s in cfg.agents.secrets]),
    }
    return {
        "agent_pools": pools,
        "agent_uid": AGENT_UID,
        "agent_redis_address": svc,
        "agent_redis_url": f"redis://{svc}/0",
        "agent_gitea_url": cfg.agents.gitea_url or f"http://raibid-gitea-http.{namespace}.svc.cluster.local:3000",
        "agent_active_deadline": max(cfg.agents.max_timeout, q.default_timeout) + DEADLINE_MARGIN_S,
        "agent_settings_env": settings,
        "agent_container_resources": AGENT_CONTAINER_RESOURCES,
        "agent_egress_except": egress_except(cfg),
        "step_socket": STEP_SOCKET,
        "secrets_dir": SECRETS_DIR,
        "buildkit_image": BUILDKIT_IMAGE,
        "buildctl_dir": BUILDCTL_DIR,
    }


# Cluster-internal and link-local ranges an agent pod's internet rule never covers: the pod and
# service CIDRs (the Kubernetes API's Service, other pods), the node (kubelet, the API server, NodePorts),
# link-local (cloud metadata) and the private and shared ranges (the LAN, the DGX's other addresses).
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16")


def egress_except(cfg: Config) -> list[str]:
    """The ``except`` list of the agents' 0.0.0.0/0 rule: no range inside another, in a stable order."""
    import ipaddress

    c = cfg.cluster
    wanted = [c.pod_cidr, c.service_cidr, *PRIVATE_RANGES]
    try:
        node = ipaddress.ip_address(c.node_ip)
    except ValueError:
        node = None  # a host name: the private ranges cover a LAN address
    if node is not None and node.version == 4 and not node.is_loopback:
        wanted.append(f"{node}/32")
    nets: set[ipaddress.IPv4Network] = set()
    for text in wanted:
        net = ipaddress.ip_network(text, strict=False)
        if isinstance(net, ipaddress.IPv4Network):  # the rule is 0.0.0.0/0: an IPv6 range is outside it
            nets.add(net)
    kept: list[ipaddress.IPv4Network] = []
    for net in sorted(nets, key=lambda n: (n.prefixlen, n)):
        if not any(net.subnet_of(k) for k in kept):
            kept.append(net)
    return [str(n) for n in sorted(kept)]


# ----------------------------------------------------------------------------- reading the cluster


@dataclass
class AgentJob:
    """One agent Job KEDA created, its pod, and the raibid job it runs."""

    pool: str  # the ScaledJob
    agent_type: str
    job: str
    pod: str | None
    raibid_job: str | None
    phase: str  # Pending, Running, Succeeded, Failed (the pod's), or the Job's state
    finished: bool
    started: bool
    node: str | None
    created_at: str | None
    age_s: float | None
    failed: bool = False
    trust: str = "trusted"


def _conditions(obj: KubeObject) -> dict[str, dict]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}


def _job_finished(job: KubeObject) -> tuple[bool, bool]:
    """(finished, failed)."""
    conds = _conditions(job)
    failed = conds.get("Failed", {}).get("status") == "True"
    done = conds.get("Complete", {}).get("status") == "True" or failed
    return done, failed


def _safe_list(kube: Kube, api_version: str, kind: str, namespace: str, selector: str | None = None) -> list:
    try:
        return kube.list(api_version, kind, namespace, label_selector=selector)
    except NotFound:
        return []


def agent_jobs(kube: Kube, namespace: str, pools: dict[str, Pool],
               pod_jobs: dict[str, str] | None = None) -> list[AgentJob]:
    """The Jobs of raibid's pools (label ``scaledjob.keda.sh/name``) with their pods."""
    by_pool = {p.scaled_job: p for p in pools.values()}
    jobs = [j for j in _safe_list(kube, "batch/v1", "Job", namespace, SCALED_JOB_LABEL)
            if (j["metadata"].get("labels") or {}).get(SCALED_JOB_LABEL) in by_pool]
    pods = _safe_list(kube, "v1", "Pod", namespace)
    pods_of: dict[str, list[KubeObject]] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        if name:
            pods_of.setdefault(name, []).append(pod)
    out = []
    for j in jobs:
        meta = j["metadata"]
        pool = meta["labels"][SCALED_JOB_LABEL]
        finished, failed = _job_finished(j)
        jpods = sorted(pods_of.get(meta["name"], []), key=lambda p: p["metadata"].get("creationTimestamp") or "")
        pod = jpods[-1] if jpods else None
        phase = ((pod or {}).get("status") or {}).get("phase") or ("Failed" if failed else
                                                                    "Succeeded" if finished else "Pending")
        started = any(((p.get("status") or {}).get("phase")) in ("Running", "Succeeded") for p in jpods)
        pod_name = pod["metadata"]["name"] if pod else None
        out.append(AgentJob(pool, by_pool[pool].agent_type, meta["name"], pod_name,
                            (pod_jobs or {}).get(pod_name or ""), phase, finished, started,
                            ((pod or {}).get("spec") or {}).get("nodeName"), meta.get("creationTimestamp"),
                            seconds_since(meta.get("creationTimestamp")), failed, by_pool[pool].trust))
    return sorted(out, key=lambda a: (a.pool, a.created_at or ""))


@dataclass
class PoolStatus:
    agent_type: str
    pool: str  # the ScaledJob
    present: bool
    ready: bool | None
    active: bool | None
    paused: bool
    max_replicas: int | None
    configured_max: int
    running: int  # unfinished Jobs (KEDA's running count)
    pending: int  # unfinished Jobs whose pod has not started
    finished: int
    lag: int | None
    problems: list[str] = field(default_factory=list)
    queue: str = ""  # the pool's queue (stream) name: rust, rust-untrusted
    trust: str = "trusted"


def _condition_true(obj: KubeObject, name: str) -> bool | None:
    c = _conditions(obj).get(name)
    return None if c is None else c.get("status") == "True"


def is_paused(sj: KubeObject) -> bool:
    ann = (sj.get("metadata") or {}).get("annotations") or {}
    return ann.get(PAUSED) == "true" or bool(_condition_true(sj, "Paused"))


def pool_status(kube: Kube, namespace: str, pools: dict[str, Pool], lags: dict[str, int | None],
                jobs: list[AgentJob] | None = None) -> list[PoolStatus]:
    """Per pool: the ScaledJob's conditions, its Jobs, and the queue lag KEDA scales on."""
    jobs = agent_jobs(kube, namespace, pools) if jobs is None else jobs
    live = {sj["metadata"]["name"]: sj for sj in _safe_list(kube, KEDA, "ScaledJob", namespace)}
    out = []
    for name, t in pools.items():
        sj = live.get(t.scaled_job)
        mine = [j for j in jobs if j.pool == t.scaled_job]
        unfinished = [j for j in mine if not j.finished]
        problems = []
        if sj is None:
            problems.append(f"ScaledJob {namespace}/{t.scaled_job} missing: run `raibid agents deploy`")
        elif _condition_true(sj, "Ready") is False:
            c = _conditions(sj)["Ready"]
            problems.append(f"not ready: {c.get('reason', '')} {c.get('message', '')}".strip())
        failed = [j.job for j in mine if j.failed]
        if failed:
            problems.append(f"{len(failed)} failed agent Job(s): `raibid agents gc` removes them")
        out.append(PoolStatus(
            t.agent_type, t.scaled_job, sj is not None, None if sj is None else _condition_true(sj, "Ready"),
            None if sj is None else _condition_true(sj, "Active"), bool(sj and is_paused(sj)),
            None if sj is None else (sj.get("spec") or {}).get("maxReplicaCount"), t.max_replicas,
            len(unfinished), sum(1 for j in unfinished if not j.started), len(mine) - len(unfinished),
            lags.get(name), problems, name, t.trust))
    return out


# ----------------------------------------------------------------------------- changing the pools


def _scaled_job(kube: Kube, namespace: str, t: Pool) -> KubeObject:
    sj = kube.get(KEDA, "ScaledJob", t.scaled_job, namespace)
    if sj is None:
        raise NotFound(f"ScaledJob {namespace}/{t.scaled_job} not found", hint="run `raibid agents deploy` first")
    return sj


def set_paused(kube: Kube, namespace: str, t: Pool, paused: bool) -> bool:
    """Set or clear ``autoscaling.keda.sh/paused`` under its own field manager, so deploys keep it.

    Returns whether the pool was paused before.
    """
    sj = _scaled_job(kube, namespace, t)
    was = is_paused(sj)
    meta: dict[str, Any] = {"name": t.scaled_job, "namespace": namespace}
    if paused:
        meta["annotations"] = {PAUSED: "true"}
    kube.apply({"apiVersion": KEDA, "kind": "ScaledJob", "metadata": meta}, field_manager=PAUSE_MANAGER,
               force=True)
    return was


def resolve_pool(pools: dict[str, Pool], name: str) -> Pool:
    """One pool by its queue name (``rust`` is the trusted pool, ``rust-untrusted`` the other)."""
    if name not in pools:
        raise UsageError(f"agent pool {name!r} does not exist", hint=f"pools: {', '.join(pools) or 'none'}")
    return pools[name]


# ----------------------------------------------------------------------------- gc


@dataclass
class Collected:
    kind: str
    name: str
    reason: str
    age_s: float | None
    action: str  # deleted, would-delete


def _finished_at(job: KubeObject) -> str | None:
    status = job.get("status") or {}
    if status.get("completionTime"):
        return status["completionTime"]
    for c in _conditions(job).values():
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c.get("lastTransitionTime")
    return None


def gc(kube: Kube, namespace: str, pools: dict[str, Pool], *, older_than_s: float,
       dry_run: bool = False) -> list[Collected]:
    """Delete finished and failed agent Jobs older than ``older_than_s``, and agent pods whose Job is gone."""
    by_pool = {t.scaled_job for t in pools.values()}
    names = {t.agent_type for t in pools.values()}
    out: list[Collected] = []
    jobs = _safe_list(kube, "batch/v1", "Job", namespace, SCALED_JOB_LABEL)
    existing = {j["metadata"]["name"] for j in jobs}
    for j in jobs:
        meta = j["metadata"]
        if (meta.get("labels") or {}).get(SCALED_JOB_LABEL) not in by_pool:
            continue
        finished, failed = _job_finished(j)
        if not finished:
            continue
        age = seconds_since(_finished_at(j) or meta.get("creationTimestamp"))
        if age is not None and age < older_than_s:
            continue
        if not dry_run:
            kube.delete("batch/v1", "Job", meta["name"], namespace, propagation="Background")
        out.append(Collected("Job", meta["name"], "failed" if failed else "finished", age,
                             "would-delete" if dry_run else "deleted"))
    for pod in _safe_list(kube, "v1", "Pod", namespace, TYPE_LABEL):
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if labels.get(TYPE_LABEL) not in names:
            continue
        owner = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        if owner and owner in existing:
            continue
        age = seconds_since(meta.get("creationTimestamp"))
        if not dry_run:
            kube.delete("v1", "Pod", meta["name"], namespace)
        out.append(Collected("Pod", meta["name"], "orphaned (its Job is gone)", age,
                             "would-delete" if dry_run else "deleted"))
    return out


# ----------------------------------------------------------------------------- explain


def node_gpus(kube: Kube) -> int | None:
    """nvidia.com/gpu allocatable across the nodes (None when nodes cannot be read)."""
    try:
        nodes = kube.list("v1", "Node")
    except Exception:
        return None
    total = 0
    for n in nodes:
        alloc = ((n.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu")
        try:
            total += int(alloc or 0)
        except ValueError:
            continue
    return total


def exposed_node_addresses(cfg: Config, nodes: list[KubeObject]) -> list[str]:
    """Node addresses (IPv4) the agents' internet rule lets a build reach: the API server (6443) and the
    kubelet (10250) listen there. Empty when ``agents.internet`` is off or every address is excluded."""
    import ipaddress

    if not cfg.agents.internet:
        return []
    excluded = [ipaddress.ip_network(n) for n in egress_except(cfg)]
    out = []
    for node in nodes:
        for addr in (node.get("status") or {}).get("addresses") or []:
            if addr.get("type") not in ("InternalIP", "ExternalIP"):
                continue
            try:
                ip = ipaddress.ip_address(addr.get("address") or "")
            except ValueError:
                continue
            if ip.version == 4 and not ip.is_loopback and not any(ip in net for net in excluded):
                out.append(str(ip))
    return sorted(set(out))


KEDA_CRDS = ("scaledjobs.keda.sh", "triggerauthentications.keda.sh")


def wait_for_keda(kube: Kube, *, timeout: float, interval: float = 2.0, progress: Any = None) -> None:
    """Wait until KEDA's CRDs are established (a fresh `cluster up` is still installing KEDA).

    Fails at once when neither the CRDs nor raibid's KEDA HelmChart exist: nothing would install them.
    """
    import time

    deadline = time.monotonic() + timeout
    told = False
    while True:
        missing = [name for name in KEDA_CRDS if not kube.crd_established(name)]
        if not missing:
            return
        if not told:
            try:
                chart = kube.get("helm.cattle.io/v1", "HelmChart", "raibid-keda", "kube-system")
            except NotFound:
                chart = None
            if chart is None:
                raise NotFound(f"KEDA is not installed: CRD {', '.join(missing)} not found",
                               hint="`raibid cluster up -c keda` installs it")
            if progress:
                progress(f"waiting for KEDA's CRDs: {', '.join(missing)}")
            told = True
        if time.monotonic() >= deadline:
            from raibid.errors import TimeoutError_

            raise TimeoutError_(f"KEDA's CRDs not established after {timeout:g}s: {', '.join(missing)}",
                                hint="`raibid cluster status -c keda` shows why")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def explain_pool(kube: Kube, namespace: str, queue: Any, pools: dict[str, Pool], name: str,
                 default_strategy: str) -> Explanation:
    """Collect everything KEDA's decision depends on for one pool and work the formula through."""
    from raibid.agents.explain import STRATEGIES, Explanation, decide, verdict
    from raibid.errors import RaibidError

    t = resolve_pool(pools, name)
    problems: list[str] = []
    keda = kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", "scaledjobs.keda.sh") is not None
    sj = None
    if keda:
        try:
            sj = kube.get(KEDA, "ScaledJob", t.scaled_job, namespace)
        except NotFound:
            sj = None
    spec = (sj or {}).get("spec") or {}
    strategy = ((spec.get("scalingStrategy") or {}).get("strategy")) or (default_strategy if sj is None else "default")
    if strategy not in STRATEGIES:
        problems.append(f"strategy {strategy!r} is not explained here (custom); showing default")
        strategy = "default"
    max_replicas = int(spec.get("maxReplicaCount", t.max_replicas))
    lag_count = t.lag_count
    for trig in spec.get("triggers") or []:
        if trig.get("type") == "redis-streams":
            meta = trig.get("metadata") or {}
            if not meta.get("lagCount"):
                problems.append("the trigger has no lagCount: KEDA is not in lag mode and cannot scale from zero")
            else:
                lag_count = int(meta["lagCount"])
    jobs = agent_jobs(kube, namespace, {name: t})
    unfinished = [j for j in jobs if not j.finished]
    running, pending = len(unfinished), sum(1 for j in unfinished if not j.started)

    version = lag = pel = None
    lag_ok = group_ok = read_ok = None
    try:
        stats = queue.stats({name: (lag_count, max_replicas)})
        version = stats.redis_version
        lag_ok = stats.lag_supported
        st = next((s for s in stats.streams if s.agent == name), None)
        if st is not None:
            group_ok = st.group_exists
            lag, pel = st.lag, st.pending
            if group_ok and lag_ok:
                read_ok = lag is not None
    except RaibidError as e:
        problems.append(f"cannot read the queue: {e.message}")
    scale = decide(strategy, lag or 0, lag_count, max_replicas, running, pending) if lag is not None else None
    gpus = node_gpus(kube) if t.gpu else None
    explanation = Explanation(name, t.scaled_job, "", False, scale, keda, sj is not None,
                              None if sj is None else _condition_true(sj, "Ready"), bool(sj and is_paused(sj)),
                              version, lag_ok, group_ok, read_ok, lag, pel, running, pending, t.gpu, gpus,
                              problems)
    explanation.verdict, explanation.scaling = verdict(explanation)
    return explanation
