"""The cluster: kubeconfig, API server, k3s, and the CRDs each component provides."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from raibid.cluster.components import REGISTRY
from raibid.doctor.checks import Check, Status
from raibid.errors import RaibidError

if TYPE_CHECKING:
    from raibid.app import Application


def cluster_checks(app: Application) -> Iterable[Check]:
    path = app.kubeconfig_path
    files = app.kubeconfig_files
    if not files:
        yield Check("kubeconfig", Status.FAIL, f"{path} not found",
                    "on k3s: export KUBECONFIG=/etc/rancher/k3s/k3s.yaml (readable by you), or pass --kubeconfig")
        yield Check("api-server", Status.SKIP, "no kubeconfig")
        return
    try:
        kube = app.kube
    except RaibidError as e:
        yield Check("kubeconfig", Status.FAIL, e.message, e.hint or "")
        yield Check("api-server", Status.SKIP, "kubeconfig not usable")
        return
    yield Check("kubeconfig", Status.OK, os.pathsep.join(files))
    try:
        version = kube.version()
    except RaibidError as e:
        yield Check("api-server", Status.FAIL, e.message, e.hint or "is k3s running? `systemctl status k3s`")
        return
    gv = version["git_version"]
    yield Check("api-server", Status.OK, f"{kube.server} {gv}")
    if "+k3s" in gv:
        yield Check("k3s", Status.OK, gv)
    else:
        yield Check("k3s", Status.WARN, f"{gv} is not k3s",
                    "raibid installs charts through k3s's HelmChart controller", required=False)
    yield from crd_check(app, "helm-controller CRD (HelmChart)", ["helmcharts.helm.cattle.io"],
                         "k3s ships it; was k3s started with --disable helm-controller?", required=True)
    for comp in REGISTRY:
        if comp.crds:
            yield from crd_check(app, comp.crd_label, list(comp.crds), comp.crd_hint)
    yield gpu_check(app)
    yield node_egress_check(app)


def node_egress_check(app: Application) -> Check:
    """Agent pods must never reach the node's API server or kubelet: is every node address outside their
    internet rule? A public node address with the default loopback ``cluster.node_ip`` is not."""
    from raibid.agents.pools import exposed_node_addresses

    try:
        nodes = app.kube.list("v1", "Node")
    except RaibidError as e:
        return Check("agent egress", Status.SKIP, f"cannot list nodes: {e.message}", required=False)
    exposed = exposed_node_addresses(app.cfg, nodes)
    if exposed:
        return Check("agent egress", Status.FAIL,
                     f"agent pods can reach node address {', '.join(exposed)} (API server, kubelet)",
                     f"set cluster.node_ip: {exposed[0]} and run `raibid cluster up -c agents`, "
                     "or agents.egress_allow only what builds need with agents.internet: false")
    return Check("agent egress", Status.OK, "no node address is reachable from agent pods", required=False)


def gpu_check(app: Application) -> Check:
    """Whether a node advertises nvidia.com/gpu (the NVIDIA device plugin), which GPU agent types need."""
    from raibid.agents.pools import node_gpus
    from raibid.agents.types import enabled_types

    try:
        gpu_pools = [t.name for t in enabled_types(app.cfg).values() if t.gpu]
    except RaibidError:
        gpu_pools = []
    gpus = node_gpus(app.kube)
    if gpus is None:
        return Check("gpu", Status.SKIP, "cannot list nodes", required=False)
    if gpus:
        return Check("gpu", Status.OK, f"nodes advertise {gpus} nvidia.com/gpu", required=False)
    detail = "no node advertises nvidia.com/gpu"
    if gpu_pools:
        return Check("gpu", Status.WARN, f"{detail}; pods of {', '.join(gpu_pools)} would stay Pending",
                     "install the NVIDIA driver and container toolkit, restart k3s, and deploy the NVIDIA "
                     "device plugin", required=False)
    return Check("gpu", Status.OK, f"{detail} (no GPU agent type enabled)", required=False)


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
