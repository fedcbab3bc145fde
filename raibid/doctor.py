"""Health checks for `raibid doctor`: the machine, the cluster, Redis.

Each check reports a status, a detail and a hint. Checks come from providers
(functions taking the Application), so each feature adds its own.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from raibid.errors import RaibidError

if TYPE_CHECKING:
    from raibid.app import Application


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    hint: str = ""
    required: bool = True

    @property
    def failed(self) -> bool:
        return self.required and self.status is Status.FAIL


Provider = Callable[["Application"], Iterable[Check]]


def machine_checks(app: Application) -> Iterable[Check]:
    arch = platform.machine()
    if arch in ("aarch64", "arm64"):
        yield Check("architecture", Status.OK, arch, required=False)
    else:
        yield Check("architecture", Status.WARN, arch,
                    "raibid targets the DGX Spark (arm64); images must exist for this architecture",
                    required=False)
    cpus = os.cpu_count() or 0
    yield Check("cpu", Status.OK if cpus >= 4 else Status.WARN, f"{cpus} cores",
                "" if cpus >= 4 else "fewer than 4 cores: builds will queue", required=False)
    mem = _mem_total_bytes()
    if mem is None:
        yield Check("memory", Status.SKIP, "unknown (no /proc/meminfo)", required=False)
    else:
        gib = mem / 2**30
        yield Check("memory", Status.OK if gib >= 8 else Status.WARN, f"{gib:.1f} GiB",
                    "" if gib >= 8 else "under 8 GiB: Gitea, Redis and agents will compete", required=False)
    path = "/var/lib/rancher" if os.path.isdir("/var/lib/rancher") else os.getcwd()
    free = shutil.disk_usage(path).free / 2**30
    yield Check("disk", Status.OK if free >= 20 else Status.WARN, f"{free:.1f} GiB free on {path}",
                "" if free >= 20 else "under 20 GiB free: images and repos will fill it", required=False)


def _mem_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cluster_checks(app: Application) -> Iterable[Check]:
    path = app.kubeconfig_path
    if not os.path.exists(path):
        yield Check("kubeconfig", Status.FAIL, f"{path} not found",
                    "on k3s: export KUBECONFIG=/etc/rancher/k3s/k3s.yaml (readable by you), or pass --kubeconfig")
        yield Check("api-server", Status.SKIP, "no kubeconfig")
        return
    yield Check("kubeconfig", Status.OK, path)
    try:
        version = app.kube.version()
    except RaibidError as e:
        yield Check("api-server", Status.FAIL, e.message, e.hint or "is k3s running? `systemctl status k3s`")
        return
    gv = version["git_version"]
    yield Check("api-server", Status.OK, f"{app.kube.server} {gv}")
    if "+k3s" in gv:
        yield Check("k3s", Status.OK, gv)
    else:
        yield Check("k3s", Status.WARN, f"{gv} is not k3s",
                    "raibid installs charts through k3s's HelmChart controller", required=False)
    yield from crd_check(app, "helm-controller CRD (HelmChart)", ["helmcharts.helm.cattle.io"],
                         "k3s ships it; was k3s started with --disable helm-controller?", required=True)
    yield from crd_check(app, "KEDA CRDs", ["scaledjobs.keda.sh", "triggerauthentications.keda.sh"],
                         "`raibid cluster up -c keda` installs KEDA")
    yield from crd_check(app, "Flux CRDs", ["kustomizations.kustomize.toolkit.fluxcd.io",
                                            "gitrepositories.source.toolkit.fluxcd.io"],
                         "`raibid cluster up -c flux` installs Flux")


def crd_check(app: Application, label: str, names: list[str], hint: str, *, required: bool = False) -> Iterable[Check]:
    """One check for the CRDs something needs: fail when required, else a warning until installed."""
    try:
        missing = [n for n in names if not app.kube.crd_established(n)]
    except RaibidError as e:
        yield Check(label, Status.FAIL, e.message, e.hint or "", required=required)
        return
    if missing:
        yield Check(label, Status.FAIL if required else Status.WARN, ", ".join(missing) + " not installed", hint,
                    required=required)
    else:
        yield Check(label, Status.OK, ", ".join(names), required=required)


def redis_checks(app: Application) -> Iterable[Check]:
    from raibid.errors import redact_url
    from raibid.jobs import redis_errors

    try:
        url, _ = app.redis_endpoint()
        with redis_errors(url):
            info = app.redis.info("server")
    except RaibidError as e:
        yield Check("redis", Status.FAIL, e.message, e.hint or "check redis.url and the password env var")
        return
    version = str(info.get("redis_version", "0"))
    yield Check("redis", Status.OK, f"{redact_url(url)} (redis {version})")
    major = int(version.split(".")[0] or 0)
    if major >= 7:
        yield Check("redis-version", Status.OK, f"{version} >= 7 (XINFO lag for KEDA)")
    else:
        yield Check("redis-version", Status.FAIL, f"{version} < 7",
                    "KEDA's lag-based scaling from zero needs Redis 7+")


def queue_checks(app: Application) -> Iterable[Check]:
    """Each agent stream exists with the consumer group, and Redis still knows its lag."""
    from raibid.jobs import GROUP, redis_errors

    try:
        url, _ = app.redis_endpoint()
        q = app.queue
        with redis_errors(url):
            for agent in sorted(app.agent_pools()):
                stream = q.keys.stream(agent)
                name = f"queue {agent}"
                if not app.redis.exists(stream):
                    yield Check(name, Status.WARN, f"{stream} does not exist yet",
                                "`raibid queue init` creates it (submit does too)", required=False)
                    continue
                group = q.group_info(stream)
                if group is None:
                    yield Check(name, Status.FAIL, f"{stream} has no consumer group {GROUP}",
                                "KEDA would fall back to XLEN; run `raibid queue init`")
                elif group.get("lag") is None:
                    yield Check(name, Status.FAIL, f"{stream}: Redis reports no lag (entries-read lost)",
                                "KEDA sees 0 and never scales up; run `raibid queue reap`")
                else:
                    yield Check(name, Status.OK, f"{stream}: group {GROUP}, lag {group['lag']}, "
                                f"pending {group['pending']}")
    except RaibidError:
        return  # the redis check already reported why Redis is unusable


def gitea_checks(app: Application) -> Iterable[Check]:
    """Gitea reachable, the token valid, the OCI registry enabled."""
    try:
        g = app.gitea
        st = g.status(app.cfg.gitea.admin_user)
    except RaibidError as e:
        yield Check("gitea", Status.FAIL, e.message, e.hint or "")
        return
    if not st.reachable:
        yield Check("gitea", Status.FAIL, st.error or f"{st.url} unreachable",
                    "`raibid cluster up -c gitea`; check gitea.url (a node IP and the NodePort)")
        return
    yield Check("gitea", Status.OK, f"{st.url} (Gitea {st.version})")
    if not st.token_source:
        yield Check("gitea-token", Status.FAIL, "no token",
                    f"set ${app.cfg.gitea.token_env}, gitea.token_file, or `raibid gitea token create --store`")
    elif st.token_valid:
        yield Check("gitea-token", Status.OK, f"valid for {st.token_user} ({st.token_source})")
    else:
        yield Check("gitea-token", Status.FAIL, f"rejected by Gitea ({st.token_source})",
                    "create a new one: `raibid gitea token create --store`")
    if st.registry_enabled:
        yield Check("gitea-registry", Status.OK, "OCI registry enabled (/v2/)")
    else:
        yield Check("gitea-registry", Status.FAIL, "OCI registry disabled",
                    "set [packages] ENABLED=true (the raibid HelmChart does)")


PROVIDERS: list[Provider] = [machine_checks, cluster_checks, redis_checks, queue_checks, gitea_checks]


def run_checks(app: Application, providers: Iterable[Provider] | None = None) -> list[Check]:
    checks: list[Check] = []
    for provider in providers or PROVIDERS:
        checks.extend(provider(app))
    return checks
