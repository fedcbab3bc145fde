"""The component registry: what `cluster up` can manage, in one table.

A new component is one entry here plus its folder under ``templates/``: the
entry names it, says which kinds its templates create (for prune and status
lookups), and which CRDs it provides (checked by `doctor`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raibid.errors import UsageError

if TYPE_CHECKING:
    from raibid.config import Config

# The base component (the namespace) is always rendered first.
BASE = "namespace"


@dataclass(frozen=True)
class Component:
    name: str
    summary: str
    kinds: tuple[tuple[str, str], ...] = ()  # (apiVersion, kind) its templates create
    crds: tuple[str, ...] = ()  # CRDs it installs, checked by `doctor`
    crd_label: str = ""  # the doctor check's name for those CRDs
    crd_hint: str = ""
    # "module:function" giving extra template values, called as function(cfg, namespace)
    context: str = ""


_HELMCHART = ("helm.cattle.io/v1", "HelmChart")
_NETPOL = ("networking.k8s.io/v1", "NetworkPolicy")  # every component that runs a pod brings its policy

REGISTRY: tuple[Component, ...] = (
    Component("redis", "Redis 7 (Streams, AOF): the job queue",
              kinds=(("v1", "Secret"), ("v1", "ConfigMap"), ("v1", "Service"), ("v1", "PersistentVolumeClaim"),
                     ("apps/v1", "StatefulSet"), _NETPOL)),
    Component("gitea", "Gitea: git hosting and the OCI registry (k3s HelmChart)",
              kinds=(("v1", "Secret"), _HELMCHART, _NETPOL), context="raibid.gitea.chart:template_context"),
    Component("keda", "KEDA: scales agent Jobs from zero on queue lag (k3s HelmChart)",
              kinds=(_HELMCHART,), crds=("scaledjobs.keda.sh", "triggerauthentications.keda.sh"),
              crd_label="KEDA CRDs", crd_hint="`raibid cluster up -c keda` installs KEDA"),
    Component("flux", "Flux: GitOps (k3s HelmChart)",
              kinds=(_HELMCHART,),
              crds=("kustomizations.kustomize.toolkit.fluxcd.io", "gitrepositories.source.toolkit.fluxcd.io"),
              crd_label="Flux CRDs", crd_hint="`raibid cluster up -c flux` installs Flux"),
    Component("webhook", "Webhook receiver: Gitea and GitHub pushes become jobs at once",
              kinds=(("v1", "Secret"), ("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "Deployment"),
                     ("networking.k8s.io/v1", "Ingress"), _NETPOL)),
    Component("mirror", "`raibid mirror sync` on a schedule (CronJob; not in the default components)",
              kinds=(("v1", "ConfigMap"), ("batch/v1", "CronJob"), _NETPOL)),
    Component("agents", "Agent pools: two KEDA ScaledJobs per agent type (trusted, untrusted), scaling from zero "
              "on queue lag",
              kinds=(("v1", "ServiceAccount"), ("v1", "PersistentVolumeClaim"),
                     ("keda.sh/v1alpha1", "TriggerAuthentication"), ("keda.sh/v1alpha1", "ScaledJob"), _NETPOL),
              context="raibid.agents.pools:template_context"),
)

COMPONENTS: tuple[str, ...] = tuple(c.name for c in REGISTRY)

# Kinds that `--prune` and `status` always look for by label, besides whatever is rendered.
_ALWAYS_TRACKED: tuple[tuple[str, str], ...] = (
    ("v1", "Secret"), ("v1", "ConfigMap"), ("v1", "Service"), ("v1", "ServiceAccount"),
    ("v1", "PersistentVolumeClaim"), ("apps/v1", "StatefulSet"), ("apps/v1", "Deployment"),
    ("batch/v1", "Job"), ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
)


def tracked_kinds() -> list[tuple[str, str]]:
    kinds = set(_ALWAYS_TRACKED)
    for c in REGISTRY:
        kinds.update(c.kinds)
    return sorted(kinds)


def crd_provider(api_version: str) -> Component | None:
    """The component whose chart installs the CRDs of this API group (``keda.sh/v1alpha1`` -> keda)."""
    group = api_version.rpartition("/")[0]
    if not group:
        return None
    for c in REGISTRY:
        if any(crd.split(".", 1)[-1] == group for crd in c.crds):
            return c
    return None


def component(name: str) -> Component:
    for c in REGISTRY:
        if c.name == name:
            return c
    raise UsageError(f"unknown component {name!r}", hint=f"known components: {', '.join(COMPONENTS)}")


def selected_components(cfg: Config, wanted: Iterable[str] = ()) -> list[str]:
    """The base component plus the configured (or explicitly requested) ones, validated."""
    wanted = list(wanted)
    known = set(COMPONENTS) | {BASE}
    for name in list(cfg.cluster.components) + wanted:
        if name not in known:
            raise UsageError(f"unknown component {name!r}", hint=f"known components: {', '.join(COMPONENTS)}")
    chosen = wanted or list(cfg.cluster.components)
    return [BASE] + [c for c in COMPONENTS if c in chosen]


# kapp's order: namespaces and CRDs, then service accounts and RBAC, then
# secrets, config maps and PVCs, then workloads and HelmCharts, then the rest
# (custom resources such as ScaledJobs, whose CRDs a HelmChart above installs).
_KIND_RANK = {
    "Namespace": 0, "CustomResourceDefinition": 0,
    "ServiceAccount": 1, "Role": 1, "ClusterRole": 1, "RoleBinding": 1, "ClusterRoleBinding": 1,
    "Secret": 2, "ConfigMap": 2, "PersistentVolumeClaim": 2,
    # Before the workloads: a pod never starts without the policy that isolates it.
    "NetworkPolicy": 2,
    "Deployment": 3, "StatefulSet": 3, "DaemonSet": 3, "Job": 3, "CronJob": 3, "HelmChart": 3,
}


def kind_rank(kind: str) -> int:
    return _KIND_RANK.get(kind, 4)
