"""raibid's images: each one the pods reference is in the registry, k3s can pull it, it fits the nodes;
and the host lets rootless BuildKit create user namespaces."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from raibid.doctor.checks import Check, Status
from raibid.errors import RaibidError

if TYPE_CHECKING:
    from raibid.app import Application
    from raibid.images.registry import Manifest

USERNS_SYSCTL = Path("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
REGISTRIES_YAML = Path("/etc/rancher/k3s/registries.yaml")
USERNS_FIX = ("echo 'kernel.apparmor_restrict_unprivileged_userns=0' | sudo tee /etc/sysctl.d/99-raibid-buildkit.conf"
              " && sudo sysctl --system")


def userns_check(path: Path = USERNS_SYSCTL) -> Check:
    """Ubuntu 24.04's AppArmor restriction breaks RootlessKit, so the image builds (moby/moby#47480)."""
    try:
        value = path.read_text().strip()
    except OSError:
        return Check("rootless-userns", Status.SKIP, f"{path} absent (not an Ubuntu 24.04+ kernel)",
                     required=False)
    if value == "0":
        return Check("rootless-userns", Status.OK, "kernel.apparmor_restrict_unprivileged_userns = 0")
    return Check("rootless-userns", Status.FAIL,
                 f"kernel.apparmor_restrict_unprivileged_userns = {value}: rootless BuildKit cannot create its "
                 "user namespace, so `raibid images build` fails (moby/moby#47480)", USERNS_FIX)


def registries_yaml_check(host: str, path: Path = REGISTRIES_YAML) -> Check:
    """k3s pulls from Gitea only with the mirror and auth raibid writes (`raibid gitea registry config`)."""
    import yaml

    fix = f"raibid gitea registry config | sudo tee {path} && sudo systemctl restart k3s"
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return Check("k3s-registry", Status.FAIL, f"{path} is missing: k3s cannot pull from {host}", fix)
    except (OSError, yaml.YAMLError) as e:
        return Check("k3s-registry", Status.WARN, f"cannot read {path}: {type(e).__name__}", fix, required=False)
    mirrors = (doc.get("mirrors") or {}) if isinstance(doc, dict) else {}
    configs = (doc.get("configs") or {}) if isinstance(doc, dict) else {}
    if host not in mirrors:
        return Check("k3s-registry", Status.FAIL, f"{path} has no mirror for {host}", fix)
    if not ((configs.get(host) or {}).get("auth") or {}).get("password"):
        return Check("k3s-registry", Status.FAIL, f"{path} has no credential for {host}", fix)
    return Check("k3s-registry", Status.OK, f"{path}: mirror and credential for {host}")


def image_checks_for(refs: list[tuple[str, str]], manifests: list[Manifest], node_arches: set[str],
                     registry: str) -> Iterable[Check]:
    """One check per (repository, tag): present, and built for every node's architecture."""
    for (repo, tag), m in zip(refs, manifests, strict=True):
        ref = f"{registry}/{repo}:{tag}"
        short = repo.rsplit("/", 1)[-1].removeprefix("agent-")
        name = f"image {short}"
        if not m.exists:
            yield Check(name, Status.FAIL, f"{ref} is not in the registry", "raibid images build")
            continue
        missing = sorted(a for a in node_arches if m.platforms and f"linux/{a}" not in m.platforms)
        if missing:
            yield Check(name, Status.FAIL, f"{ref} has {', '.join(m.platforms)}, not the nodes' "
                        f"{', '.join(missing)}",
                        f"raibid images build --only {short} " + " ".join(f"--platform linux/{a}"
                                                                          for a in sorted(node_arches)))
        else:
            arch = f" ({', '.join(m.platforms)})" if m.platforms else ""
            yield Check(name, Status.OK, f"{ref}{arch}")


# Where raibid's pods are declared: the agents' ScaledJobs, the mirror CronJob, the receiver Deployment.
WORKLOADS = (("keda.sh/v1alpha1", "ScaledJob", ("jobTargetRef", "template")),
             ("batch/v1", "CronJob", ("jobTemplate", "spec", "template")),
             ("apps/v1", "Deployment", ("template",)))


def referenced_images(kube: object, namespace: str, registry: str) -> list[tuple[str, str]]:
    """(repository, tag) of every image in ``registry`` that raibid's live workloads' pods reference."""
    out: list[tuple[str, str]] = []
    for api_version, kind, path in WORKLOADS:
        if not kube.serves(api_version, kind):  # type: ignore[attr-defined]
            continue
        for obj in kube.list(api_version, kind, namespace,  # type: ignore[attr-defined]
                             label_selector="app.kubernetes.io/managed-by=raibid"):
            pod: dict = obj.get("spec") or {}
            for key in path:
                pod = pod.get(key) or {}
            spec = pod.get("spec") or {}
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                image = str(c.get("image") or "")
                host, _, rest = image.partition("/")
                repo, _, tag = rest.rpartition(":")
                if host == registry and repo and tag and (repo, tag) not in out:
                    out.append((repo, tag))
    return out


def registry_base(app: Application, host: str) -> str:
    from urllib.parse import urlsplit

    return f"{urlsplit(app.cfg.gitea.url).scheme or 'http'}://{host}"


def pull_credential(kube: object, namespace: str) -> str | None:
    """The registry role's read:package token: what k3s's containerd pulls with."""
    import base64

    from raibid.gitea.identities import role

    live = kube.get("v1", "Secret", role("registry").secret, namespace)  # type: ignore[attr-defined]
    token = ((live or {}).get("data") or {}).get("token")
    return base64.b64decode(token).decode() if token else None


def node_architectures(kube: object) -> set[str]:
    nodes = kube.list("v1", "Node")  # type: ignore[attr-defined]
    return {((n.get("status") or {}).get("nodeInfo") or {}).get("architecture")
            or (n["metadata"].get("labels") or {}).get("kubernetes.io/arch", "") for n in nodes} - {""}


def image_checks(app: Application) -> Iterable[Check]:
    from raibid.agents.types import default_registry
    from raibid.doctor.gitea import _kube
    from raibid.images.registry import Registry

    yield userns_check()
    host = default_registry(app.cfg)
    kube = _kube(app)
    if kube is None:
        yield Check("images", Status.SKIP, "no cluster", required=False)
        return
    try:
        refs = referenced_images(kube, app.namespace, host)
    except RaibidError as e:
        yield Check("images", Status.SKIP, f"cannot list workloads: {e.message}", required=False)
        return
    if not refs:
        yield Check("images", Status.SKIP, f"no raibid pod in {app.namespace} references {host}", required=False)
        return
    if REGISTRIES_YAML.parent.is_dir():
        yield registries_yaml_check(host)
    else:
        yield Check("k3s-registry", Status.SKIP, f"not on the k3s host (no {REGISTRIES_YAML.parent})",
                    required=False)
    try:
        token = pull_credential(kube, app.namespace)
        arches = node_architectures(kube)
        manifests = Registry(registry_base(app, host), app.cfg.gitea.ci_user, token).manifests(refs)
    except RaibidError as e:
        yield Check("images", Status.FAIL, e.message, e.hint or "raibid doctor again once Gitea is up")
        return
    yield from image_checks_for(refs, manifests, arches, host)
