"""`gitops bootstrap` and `gitops sync`: render into the config repo, push, apply what git must not hold.

Order, so a failure leaves nothing half-done:

1. check every input (repo name, branch, path, interval) and, for bootstrap,
   that Flux's CRDs are served;
2. talk to Gitea (the token's user, the repo: created by bootstrap if missing);
3. commit the folder in a temporary clone and push it (only when it changed);
4. apply, with server-side apply, the objects that stay out of git: the
   Namespace and the generated Secrets (so the workloads Flux applies find their
   passwords), then (bootstrap) Flux's Secret, GitRepository and Kustomization.

A rejected push stops at 3: the remote keeps its head and the cluster is not touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raibid.errors import AuthError, NotFound, redact_url
from raibid.gitops.flux import apply_flux_objects, check_interval, flux_objects, in_cluster_url, require_flux
from raibid.gitops.repo import FileChange, RepoRef, auth_env, check_branch, checkout, parse_repo
from raibid.gitops.tree import check_path, render_tree

if TYPE_CHECKING:
    from raibid.cluster.apply import Change, LiveObjects
    from raibid.cluster.client import Kube
    from raibid.cluster.render import Manifest
    from raibid.gitea import Gitea


@dataclass(frozen=True)
class Target:
    """Where the desired state goes: checked values of the ``gitops:`` section."""

    repo: RepoRef
    branch: str
    path: str
    interval: str
    author_name: str
    author_email: str

    @classmethod
    def checked(cls, *, repo: str, branch: str, path: str, interval: str, author_name: str,
                author_email: str) -> Target:
        """Usage error (exit 2) for a bad value, before anything is contacted."""
        return cls(parse_repo(repo), check_branch(branch), check_path(path), check_interval(interval),
                   author_name, author_email)


@dataclass
class SyncResult:
    repo: str
    branch: str
    path: str
    url: str  # the clone URL raibid pushed to (no credentials)
    created_repo: bool = False
    commit: str | None = None  # the new commit, None when the folder did not change
    head: str | None = None  # the branch head after this run
    files: list[FileChange] = field(default_factory=list)
    applied: list[Change] = field(default_factory=list)  # Namespace and Secrets, applied directly
    flux: list[Change] = field(default_factory=list)  # bootstrap: Flux's Secret, GitRepository, Kustomization
    flux_url: str = ""  # bootstrap: the URL Flux clones (in-cluster)
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.files)


def commit_message(files: Sequence[FileChange], *, version: str, path: str, subject: str | None = None) -> str:
    """Subject (``--message`` or a summary), then the raibid version and every object changed."""
    objects = [f for f in files if f.object]
    counts: dict[str, int] = {}
    for f in objects:
        counts[f.action] = counts.get(f.action, 0) + 1
    summary = ", ".join(f"{n} {a}" for a, n in counts.items()) or "kustomization.yaml"
    if not subject:
        if len(objects) == 1:
            subject = f"raibid {version}: {objects[0].action} {objects[0].object}"
        else:
            subject = f"raibid {version}: update {path} ({summary})"
    body = [f"Written by raibid {version} (raibid gitops sync).", ""]
    body += [f"{f.action} {f.object or f.file}" for f in files]
    return subject.strip() + "\n\n" + "\n".join(body) + "\n"


def _credentials(gitea: Gitea) -> tuple[str, str]:
    if not gitea.token:
        raise AuthError("no Gitea token: the config repo is written with it and Flux reads with it",
                        hint="set the env var named by gitea.token_env (RAIBID_GITEA_TOKEN), set "
                             "gitea.token_file, or run `raibid gitea token create --store`")
    return gitea.current_user(), gitea.token


def _direct(manifests: Sequence[Manifest]) -> list[Manifest]:
    """What raibid applies itself: Secrets (never in git) and the Namespaces they live in."""
    return [m for m in manifests if m.is_secret or m.kind == "Namespace"]


def sync(kube: Kube, gitea: Gitea, target: Target, manifests: Sequence[Manifest], *, version: str,
         message: str | None = None, dry_run: bool = False, create: bool = False,
         live: LiveObjects | None = None, timeout: float = 60.0,
         credentials: tuple[str, str] | None = None) -> SyncResult:
    """Render ``manifests`` into the repo and push when the folder changed; apply Secrets directly.

    ``create`` (bootstrap) creates a missing repo; otherwise a missing repo is a
    NotFound naming `raibid gitops bootstrap`.
    """
    from raibid.cluster.apply import apply_manifests

    repo = target.repo
    user, token = credentials or _credentials(gitea)
    created = False
    try:
        info = gitea.get_repo(repo.owner, repo.name)
    except NotFound:
        if not create:
            raise NotFound(f"the config repo {repo.full_name} does not exist in Gitea",
                           hint="run `raibid gitops bootstrap` first") from None
        info = None
    if info is None and not dry_run:
        info, created = gitea.create_repo(repo.owner, repo.name, private=True, exist_ok=True,
                                          default_branch=target.branch,
                                          description="Desired state of the raibid cluster, applied by Flux")
    url = info.clone_url if info is not None else f"{gitea.url}/{repo.full_name}.git"
    result = SyncResult(repo.full_name, target.branch, target.path, redact_url(url), created_repo=created,
                        dry_run=dry_run)
    tree = render_tree(manifests)
    if info is not None:
        with checkout(url, target.branch, auth_env(user, token), timeout=timeout) as co:
            result.files = co.write(target.path, tree)
            result.head = co.base
            if result.files and not dry_run:
                msg = commit_message(result.files, version=version, path=target.path, subject=message)
                co.commit(target.path, msg, author_name=target.author_name, author_email=target.author_email)
                result.commit = result.head = co.push()
    else:  # dry run of a bootstrap whose repo does not exist yet: every file is new
        result.files = [FileChange("added", f"{target.path}/{f.name}", f.ref) for f in tree]
    direct = _direct(manifests)
    if direct:
        result.applied = apply_manifests(kube, direct, force=True, dry_run=dry_run, live=live)
    return result


def bootstrap(kube: Kube, gitea: Gitea, target: Target, manifests: Sequence[Manifest], *, version: str,
              namespace: str, dry_run: bool = False, live: LiveObjects | None = None,
              timeout: float = 60.0) -> SyncResult:
    """Create the repo if missing, sync it, and point Flux at it (Secret, GitRepository, Kustomization)."""
    require_flux(kube)
    user, token = _credentials(gitea)
    result = sync(kube, gitea, target, manifests, version=version, dry_run=dry_run, create=True, live=live,
                  timeout=timeout, credentials=(user, token))
    result.flux_url = in_cluster_url(namespace, target.repo.owner, target.repo.name)
    objs = flux_objects(url=result.flux_url, branch=target.branch, path=target.path, interval=target.interval,
                        username=user, token=token)
    result.flux = apply_flux_objects(kube, objs, dry_run=dry_run)
    return result
