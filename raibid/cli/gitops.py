"""`raibid gitops`: bootstrap, sync, status, reconcile (the config repo that Flux applies)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from raibid.cli._common import json_option, pass_app
from raibid.errors import Exit, ExitCode, UsageError

if TYPE_CHECKING:
    from raibid.app import Application
    from raibid.cluster.apply import LiveObjects
    from raibid.cluster.render import Manifest
    from raibid.gitops import SyncResult, Target
    from raibid.gitops.flux import GitopsStatus, ObjectStatus


@click.group()
def gitops() -> None:
    """Keep the cluster's desired state in a Gitea repo that Flux applies.

    `bootstrap` once (creates the repo and points Flux at it); then, with
    cluster.mode gitops, `raibid cluster up` commits changes instead of applying
    them. See docs/gitops.md.
    """


def _target(app: Application) -> Target:
    from raibid.gitops import Target

    g = app.cfg.gitops
    return Target.checked(repo=app.cfg.gitops_repo, branch=g.branch, path=g.path, interval=g.interval,
                          author_name=g.author_name, author_email=g.author_email)


def _plan(app: Application) -> tuple[list[Manifest], LiveObjects]:
    """Every configured component, rendered as `cluster up` renders it (with the cluster's passwords)."""
    from raibid.cli.cluster import _plan as plan_cluster

    return plan_cluster(app, ())


def _report(app: Application, result: SyncResult, as_json: bool, *, bootstrap: bool = False) -> None:
    prefix = "dry run: " if result.dry_run else ""
    if as_json:
        app.term.json(result)
        return
    rows = [(f.action, f.file, f.object or "") for f in result.files]
    rows += [(c.action, c.ref, "applied directly: never in git" if c.kind == "Secret" else
              "applied directly: its Secrets need it before Flux runs") for c in result.applied
             if c.action != "unchanged"]
    rows += [(c.action, c.ref, "flux") for c in result.flux if c.action != "unchanged"]
    if rows:
        app.term.table(["action", "what", "detail"], rows)
    if result.created_repo:
        app.term.info(f"created the private repo {result.repo} in Gitea")
    if result.commit:
        app.term.success(f"pushed {result.commit[:12]} to {result.repo} ({result.branch}): "
                         f"{len(result.files)} file(s) in {result.path}")
    elif result.files:
        app.term.info(f"{prefix}would commit {len(result.files)} file(s) to {result.repo} ({result.branch})")
    else:
        app.term.info(f"{prefix}{result.repo} ({result.branch}) is up to date at "
                      f"{(result.head or 'no commit')[:12]}: nothing to commit")
    if bootstrap and not result.dry_run:
        app.term.info(f"Flux follows {result.flux_url} ({result.branch}, ./{result.path}); "
                      "`raibid gitops status` tells when it has applied the head")


def run_sync(app: Application, *, message: str | None, dry_run: bool, as_json: bool) -> SyncResult:
    """Re-render and push; what `cluster up` does when cluster.mode is gitops."""
    from raibid import __version__
    from raibid.gitops import sync as do_sync

    target = _target(app)
    manifests, live = _plan(app)
    result = do_sync(app.kube, app.gitea, target, manifests, version=__version__, message=message,
                     dry_run=dry_run, live=live, timeout=max(app.cfg.gitea.timeout, 60.0))
    _report(app, result, as_json)
    return result


def up_through_gitops(app: Application, components: tuple[str, ...], *, dry_run: bool, as_json: bool) -> None:
    """`cluster up` with cluster.mode gitops: commit and push instead of applying."""
    if components:
        raise UsageError("--component does not apply when cluster.mode is gitops: the config repo always holds "
                         "every component of cluster.components (Flux would prune the others)",
                         hint="run without --component, or set cluster.mode: apply")
    app.term.info(f"cluster.mode is gitops: committing the desired state to {app.cfg.gitops_repo} "
                  "(raibid gitops sync); Flux applies it")
    result = run_sync(app, message=None, dry_run=dry_run, as_json=as_json)
    if result.commit:
        app.term.info(f"Flux applies it within gitops.interval ({app.cfg.gitops.interval}); "
                      "`raibid gitops reconcile --wait` applies it now")


@gitops.command()
@click.option("--dry-run", is_flag=True, help="Report what would be committed and applied; change nothing.")
@json_option
@pass_app
def bootstrap(app: Application, dry_run: bool, as_json: bool) -> None:
    """Create the config repo, push the rendered state, and point Flux at it.

    Like `flux bootstrap gitea`: a private repo (gitops.repo), a commit of every
    object except Secrets under gitops.path, and in flux-system a Secret, a
    GitRepository and a Kustomization (prune, gitops.interval). Re-running
    changes nothing when nothing changed. Needs Flux (`raibid cluster up -c flux`).
    """
    from raibid import __version__
    from raibid.gitops import bootstrap as do_bootstrap

    target = _target(app)
    manifests, live = _plan(app)
    result = do_bootstrap(app.kube, app.gitea, target, manifests, version=__version__, namespace=app.namespace,
                          dry_run=dry_run, live=live, timeout=max(app.cfg.gitea.timeout, 60.0))
    _report(app, result, as_json, bootstrap=True)


@gitops.command()
@click.option("--message", "-m", metavar="TEXT", help="Subject line of the commit (default: a summary).")
@click.option("--dry-run", is_flag=True, help="Report what would be committed; push and apply nothing.")
@json_option
@pass_app
def sync(app: Application, message: str | None, dry_run: bool, as_json: bool) -> None:
    """Re-render every component and push when the folder changed (one commit, or none).

    The commit names the raibid version and every object changed. Generated
    Secrets are applied to the cluster directly, never committed.
    """
    run_sync(app, message=message, dry_run=dry_run, as_json=as_json)


def _head(app: Application, target: Target) -> str | None:
    """The config repo's branch head, or None when the repo or the branch does not exist."""
    from raibid.gitops.flux import config_head

    return config_head(app.gitea, target.repo, target.branch)


def _flux_url(app: Application, target: Target) -> str:
    from raibid.gitops.flux import in_cluster_url

    return in_cluster_url(app.namespace, target.repo.owner, target.repo.name)


def _show_status(app: Application, st: GitopsStatus) -> None:
    s, k = st.source, st.kustomization
    def ready(o: ObjectStatus) -> str:
        return f"ready={o.ready or 'not reported yet'}" + (f" ({o.reason})" if o.reason else "")

    rows = [("repo", f"{st.repo} ({st.branch}, {st.path})"), ("head", st.head or "-"),
            ("source", f"GitRepository {s.namespace}/{s.name}: " + (
                f"{ready(s)} revision={s.revision or '-'}" if s.exists else "missing")),
            ("kustomization", f"Kustomization {k.namespace}/{k.name}: " + (
                f"{ready(k)} applied={k.revision or '-'}" if k.exists else "missing")),
            ("flux says", k.message or s.message or "-"), ("verdict", st.verdict), ("message", st.message)]
    width = max(len(r[0]) for r in rows) + 2
    for key, value in rows:
        app.term.line(f"{key + ':':{width}}{value}")


@gitops.command()
@json_option
@pass_app
def status(app: Application, as_json: bool) -> None:
    """The repo's head, Flux's view of it, and one verdict: in-sync, pending, failed, not-bootstrapped.

    Exit 0 only when in sync (Flux has applied the head), 1 otherwise, for cron and monitoring.
    """
    from raibid.gitops.flux import flux_status

    target = _target(app)
    head = _head(app, target)
    st = flux_status(app.kube, repo=target.repo.full_name, branch=target.branch, path=target.path, head=head,
                     url=_flux_url(app, target))
    app.term.emit(st, as_json, lambda: _show_status(app, st))
    if st.verdict != "in-sync":
        raise Exit(ExitCode.FAILURE)


@gitops.command()
@click.option("--wait", is_flag=True, help="Wait until the Kustomization has applied the repo's head.")
@click.option("--timeout", default="5m", show_default=True, metavar="DURATION", help="How long --wait waits.")
@click.option("--wait-interval", default="2s", show_default=True, metavar="DURATION",
              help="How often --wait checks.")
@json_option
@pass_app
def reconcile(app: Application, wait: bool, timeout: str, wait_interval: str, as_json: bool) -> None:
    """Ask Flux to fetch and apply now (reconcile.fluxcd.io/requestedAt), as `flux reconcile` does."""
    from raibid.errors import NotFound
    from raibid.gitops.flux import request_reconcile, wait_applied
    from raibid.timeutil import parse_duration, parse_interval

    # checked before anything is written
    wait_for, interval = parse_duration(timeout), (parse_interval(wait_interval, "--wait-interval") if wait else 0.0)
    target = _target(app)
    requested = request_reconcile(app.kube)
    app.term.info(f"requested reconciliation of GitRepository and Kustomization flux-system/raibid at {requested}")
    if not wait:
        if as_json:
            app.term.json({"requested_at": requested, "waited": False})
        return
    head = _head(app, target)
    if head is None:
        raise NotFound(f"the config repo {target.repo.full_name} has no branch {target.branch}",
                       hint="run `raibid gitops bootstrap`")
    st = wait_applied(app.kube, head=head, timeout=wait_for, interval=interval,
                      progress=lambda s: app.term.info(f"{s.verdict}: {s.message}"),
                      repo=target.repo.full_name, branch=target.branch, path=target.path,
                      url=_flux_url(app, target))
    app.term.emit({"requested_at": requested, "waited": True, "status": st}, as_json,
                  lambda: app.term.success(f"Flux has applied {head[:12]}"))
