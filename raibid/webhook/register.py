"""`raibid webhook register`: create or update the hooks, never duplicate them.

A hook is found by its URL. One that already points at the receiver with the right events,
content type and active flag is left alone (neither API returns the secret, so it is set on
creation and on every update, never compared). A GitHub repository whose token lacks admin
rights (the hooks API answers 404 or 403) is reported and skipped, not fatal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raibid.errors import AuthError, NotFound, RaibidError

if TYPE_CHECKING:
    from raibid.gitea import Gitea
    from raibid.gitea.models import Hook
    from raibid.github.client import GitHub

# Sorted: compared with a hook's sorted events. "pull_request" is every PR action on GitHub and on Gitea.
EVENTS = ["pull_request", "push"]


@dataclass
class HookResult:
    host: str  # gitea or github
    scope: str  # org or repo
    target: str  # org name or OWNER/NAME
    url: str
    action: str  # created, updated, unchanged, would create, would update, skipped, failed
    hook_id: int | None = None
    message: str = ""


def _gitea_same(h: Hook) -> bool:
    return h.active and sorted(h.events) == EVENTS and h.content_type == "json" and h.type == "gitea"


def register_gitea(gitea: Gitea, *, org: str | None, repos: Iterable[str], url: str, secret: str,
                   dry_run: bool = False) -> list[HookResult]:
    """One org-level hook on ``org`` plus one hook on each of ``repos``."""
    from raibid.gitea.client import split_repo

    out = []
    if org:
        out.append(_ensure_gitea(
            "org", org, url, dry_run,
            lambda: gitea.list_org_hooks(org),
            lambda: gitea.add_org_hook(org, url, secret=secret, events=EVENTS),
            lambda h: gitea.edit_org_hook(org, h.id, url=url, secret=secret, events=EVENTS)))
    for full in repos:
        owner, name = split_repo(full)
        out.append(_ensure_gitea(
            "repo", full, url, dry_run,
            lambda o=owner, n=name: gitea.list_hooks(o, n),
            lambda o=owner, n=name: gitea.add_hook(o, n, url, secret=secret, events=EVENTS),
            lambda h, o=owner, n=name: gitea.edit_hook(o, n, h.id, url=url, secret=secret, events=EVENTS)))
    return out


def _ensure_gitea(scope: str, target: str, url: str, dry_run: bool, list_, create, edit) -> HookResult:
    try:
        found = [h for h in list_() if h.url == url]
        if not found:
            if dry_run:
                return HookResult("gitea", scope, target, url, "would create")
            return HookResult("gitea", scope, target, url, "created", create().id)
        hook = found[0]
        if _gitea_same(hook):
            return HookResult("gitea", scope, target, url, "unchanged", hook.id)
        if dry_run:
            return HookResult("gitea", scope, target, url, "would update", hook.id)
        return HookResult("gitea", scope, target, url, "updated", edit(hook).id)
    except NotFound as e:
        return HookResult("gitea", scope, target, url, "failed", message=e.message)


def github_hook_body(url: str, secret: str) -> dict:
    return {"name": "web", "active": True, "events": list(EVENTS),
            "config": {"url": url, "content_type": "json", "insecure_ssl": "0", "secret": secret}}


def _github_same(h: dict) -> bool:
    cfg = h.get("config") or {}
    return bool(h.get("active")) and sorted(h.get("events") or []) == EVENTS and cfg.get("content_type") == "json" \
        and str(cfg.get("insecure_ssl", "0")) == "0" and bool(cfg.get("secret"))


def register_github(gh: GitHub, repos: Iterable[str], *, url: str, secret: str,
                    dry_run: bool = False) -> list[HookResult]:
    """One hook on each mirrored source repository; a repo without admin rights is skipped and reported."""
    out = []
    for full in repos:
        try:
            found = [h for h in gh.hooks(full) if (h.get("config") or {}).get("url") == url]
        except (NotFound, AuthError) as e:
            out.append(HookResult("github", "repo", full, url, "skipped",
                                  message=f"no admin rights on {full} (or it does not exist): {e.message}"))
            continue
        try:
            if not found:
                if dry_run:
                    out.append(HookResult("github", "repo", full, url, "would create"))
                else:
                    h = gh.create_hook(full, github_hook_body(url, secret))
                    out.append(HookResult("github", "repo", full, url, "created", int(h["id"])))
                continue
            hook = found[0]
            if _github_same(hook):
                out.append(HookResult("github", "repo", full, url, "unchanged", int(hook["id"])))
            elif dry_run:
                out.append(HookResult("github", "repo", full, url, "would update", int(hook["id"])))
            else:
                body = github_hook_body(url, secret)
                del body["name"]
                h = gh.edit_hook(full, int(hook["id"]), body)
                out.append(HookResult("github", "repo", full, url, "updated", int(h["id"])))
        except RaibidError as e:
            out.append(HookResult("github", "repo", full, url, "failed", message=e.message))
    return out
