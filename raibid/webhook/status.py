"""`raibid webhook status`: the receiver's Deployment, its URLs, and each hook's last delivery."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raibid.errors import AuthError, NotFound, RaibidError

if TYPE_CHECKING:
    from raibid.cluster.client import Kube
    from raibid.gitea import Gitea
    from raibid.github.client import GitHub

DEPLOYMENT = "raibid-webhook"


@dataclass
class HookStatus:
    host: str
    scope: str
    target: str
    url: str
    found: bool
    hook_id: int | None = None
    active: bool | None = None
    last_status: str | None = None  # GitHub: active/failed/unused; Gitea's API does not report deliveries
    last_code: int | None = None
    message: str = ""


@dataclass
class WebhookStatus:
    namespace: str
    deployment: str
    deployed: bool
    ready: bool
    detail: str
    image: str | None
    gitea_url: str
    github_url: str | None
    hooks: list[HookStatus] = field(default_factory=list)


def deployment_status(kube: Kube, namespace: str) -> tuple[bool, bool, str, str | None]:
    """(deployed, ready, detail, image) of the receiver's Deployment."""
    from raibid.cluster.readiness import workload_ready

    obj = kube.get("apps/v1", "Deployment", DEPLOYMENT, namespace)
    if obj is None:
        return False, False, "not deployed (`raibid cluster up -c webhook`)", None
    ready, detail = workload_ready(obj)
    containers = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or [{}]
    return True, ready, detail, containers[0].get("image")


def gitea_hooks(gitea: Gitea, *, org: str | None, repos: Iterable[str], url: str) -> list[HookStatus]:
    from raibid.gitea.client import split_repo

    targets: list[tuple[str, str, object]] = []
    if org:
        targets.append(("org", org, lambda: gitea.list_org_hooks(org)))
    for full in repos:
        owner, name = split_repo(full)
        targets.append(("repo", full, lambda o=owner, n=name: gitea.list_hooks(o, n)))
    out = []
    for scope, target, list_ in targets:
        try:
            found = [h for h in list_() if h.url == url]  # type: ignore[operator]
        except RaibidError as e:
            out.append(HookStatus("gitea", scope, target, url, False, message=e.message))
            continue
        if not found:
            out.append(HookStatus("gitea", scope, target, url, False, message="no hook (`raibid webhook register`)"))
        else:
            out.append(HookStatus("gitea", scope, target, url, True, found[0].id, found[0].active,
                                  message="Gitea's API does not report deliveries"))
    return out


def github_hooks(gh: GitHub, repos: Iterable[str], *, url: str) -> list[HookStatus]:
    out = []
    for full in repos:
        try:
            found = [h for h in gh.hooks(full) if (h.get("config") or {}).get("url") == url]
        except (NotFound, AuthError):
            out.append(HookStatus("github", "repo", full, url, False, message="no admin rights (hooks hidden)"))
            continue
        except RaibidError as e:
            out.append(HookStatus("github", "repo", full, url, False, message=e.message))
            continue
        if not found:
            out.append(HookStatus("github", "repo", full, url, False, message="no hook (`raibid webhook register`)"))
            continue
        h = found[0]
        last = h.get("last_response") or {}
        out.append(HookStatus("github", "repo", full, url, True, int(h["id"]), bool(h.get("active")),
                              last.get("status"), last.get("code"), last.get("message") or ""))
    return out
