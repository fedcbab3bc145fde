"""`raibid cluster`: render, diff, up, status, down."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from raibid.cli._common import confirm_or_refuse, json_option, pass_app
from raibid.cluster.components import COMPONENTS
from raibid.errors import Exit, ExitCode, RaibidError, UsageError

if TYPE_CHECKING:
    from raibid.app import Application
    from raibid.cluster.apply import Change, LiveObjects
    from raibid.cluster.render import Manifest

component_option = click.option(
    "--component", "-c", "components", multiple=True, metavar="NAME",
    help=f"Only this component (repeatable): {', '.join(COMPONENTS)}. Default: cluster.components.")


@click.group()
def cluster() -> None:
    """Render and apply Redis, Gitea, KEDA and Flux to k3s."""


def _render(app: Application, components: tuple[str, ...], secrets: dict[str, str] | None = None) -> list[Manifest]:
    """Render with ``secrets``; passwords not given are generated."""
    from raibid.cluster.render import render
    from raibid.cluster.secrets import generate_secrets

    return render(app.cfg, components, namespace=app.namespace, secrets={**generate_secrets(), **(secrets or {})},
                  templates=app.templates)


def _plan(app: Application, components: tuple[str, ...]) -> tuple[list[Manifest], LiveObjects]:
    """Manifests rendered with the cluster's existing passwords, and the live objects."""
    from raibid.cluster.apply import plan

    return plan(app.kube, lambda secrets: _render(app, components, secrets), app.namespace)


@cluster.command()
@component_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Write one file per object under DIR instead of printing.")
@pass_app
def render(app: Application, components: tuple[str, ...], out_dir: str | None) -> None:
    """Print the manifests as multi-document YAML. Needs no cluster and no config.

    Secrets are generated fresh on every render; `raibid cluster up` keeps the
    values already in the cluster instead.
    """
    from raibid.cluster.render import file_name, to_yaml

    manifests = _render(app, components)
    if out_dir is None:
        app.term.stdout.write(to_yaml(manifests))
        return
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(manifests):
        _write_file(target / file_name(i, m), to_yaml([m]).removeprefix("---\n"), secret=m.is_secret)
    app.term.info(f"wrote {len(manifests)} files to {target}")


def _write_file(path: Path, text: str, *, secret: bool) -> None:
    """Write ``path``; a Secret is written to a 0600 temp file renamed into place, so it is never readable."""
    import os
    import tempfile

    if not secret:
        path.write_text(text)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@cluster.command()
@component_option
@click.option("--force-conflicts/--no-force-conflicts", default=False, show_default=True,
              help="Show the result as if conflicts were forced (the same default as `up`).")
@pass_app
def diff(app: Application, components: tuple[str, ...], force_conflicts: bool) -> None:
    """Show what `up` would change: a unified diff per object (server-side dry run).

    Exit codes follow `kubectl diff`: 0 no differences, 1 differences, 2 or more an error.
    Secret values are masked.
    """
    from raibid.cluster.diff import diff_manifests

    try:
        manifests, live = _plan(app, components)
        diffs = diff_manifests(app.kube, manifests, force=force_conflicts, live_objs=live)
    except RaibidError as e:
        if e.exit_code == ExitCode.FAILURE:  # 1 means "differences" here, as with kubectl diff
            raise UsageError(e.message, hint=e.hint) from None
        raise
    for d in diffs:
        app.term.stdout.write(d.diff if d.diff.endswith("\n") else d.diff + "\n")
    if diffs:
        app.term.info(f"{len(diffs)} object(s) differ")
        raise Exit(ExitCode.FAILURE)


def _changes_table(app: Application, changes: list[Change]) -> None:
    app.term.table(["action", "kind", "namespace", "name", "component", "detail"],
                   [(c.action, c.kind, c.namespace or "", c.name, c.component, c.detail) for c in changes])


@cluster.command()
@component_option
@click.option("--dry-run", is_flag=True, help="Server-side dry run: report, change nothing.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until every object is ready.")
@click.option("--timeout", default="10m", show_default=True, metavar="DURATION", help="How long --wait waits.")
@click.option("--wait-interval", default="2s", show_default=True, metavar="DURATION",
              help="How often --wait checks.")
@click.option("--prune", is_flag=True, help="Delete labelled objects of these components that are no longer rendered.")
@click.option("--prune-pvcs", is_flag=True, help="Let --prune delete PVCs too.")
@click.option("--force-conflicts", is_flag=True, help="Take ownership of fields another manager owns.")
@click.option("--replace", is_flag=True,
              help="Delete and re-create objects whose immutable fields changed (never PVCs or generated Secrets).")
@click.option("--build-images/--no-build-images", default=True, show_default=True,
              help="Build the images the pods reference that the registry lacks (`raibid images build`).")
@json_option
@pass_app
def up(app: Application, components: tuple[str, ...], dry_run: bool, wait: bool, timeout: str, wait_interval: str,
       prune: bool, prune_pvcs: bool, force_conflicts: bool, replace: bool, build_images: bool,
       as_json: bool) -> None:
    """Apply the components with server-side apply (field manager raibid), in kapp's order.

    Idempotent: re-applying an unchanged cluster reports every object unchanged.
    With cluster.mode gitops it commits to the config repo instead (`raibid gitops sync`).
    """
    if app.cfg.cluster.mode == "gitops":
        from raibid.cli.gitops import up_through_gitops

        up_through_gitops(app, components, dry_run=dry_run, as_json=as_json)
        return
    from raibid.cluster.apply import ApplyFailed, apply_manifests
    from raibid.cluster.components import selected_components
    from raibid.cluster.prune import prune as prune_objects
    from raibid.cluster.readiness import wait_ready
    from raibid.timeutil import parse_duration, parse_interval

    wait_for = parse_duration(timeout)
    interval = parse_interval(wait_interval, "--wait-interval")
    kube = app.kube
    manifests, live = _plan(app, components)
    chosen = selected_components(app.cfg, components)

    def progress(change: Change) -> None:
        if change.action != "unchanged":
            app.term.debug(f"{change.action} {change.ref}")

    try:
        changes = apply_manifests(kube, manifests, force=force_conflicts, dry_run=dry_run, on_change=progress,
                                  live=live, crd_timeout=wait_for, crd_interval=interval, progress=app.term.info,
                                  replace=replace)
    except ApplyFailed as e:
        done = e.changes
        applied = sum(1 for c in done if c.action in ("created", "configured", "unchanged"))
        app.term.emit({"changes": done, "ok": False}, as_json, lambda: _changes_table(app, done))
        raise e.restated(f"apply stopped after {applied} of {len(manifests)} objects: {e.message}",
                         hint=e.hint or "fix the cause and run `raibid cluster up` again; it converges from "
                                        "where it stopped") from None
    if prune:
        changes += prune_objects(kube, manifests, chosen, prune_pvcs=prune_pvcs, dry_run=dry_run)
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
    summary = ", ".join(f"{n} {a}" for a, n in counts.items())
    if not as_json:
        _changes_table(app, changes)
    app.term.info(("dry run: " if dry_run else "") + summary)
    result: dict[str, Any] = {"changes": changes, "dry_run": dry_run, "waited": False, "ok": True,
                              "not_ready": []}
    if wait and not dry_run:
        result["waited"] = True
        try:
            wait_ready(kube, manifests, timeout=wait_for, interval=interval,
                         progress=lambda r: app.term.info(f"ready {r.ref}" + (f" ({r.reason})" if r.reason else "")))
        except RaibidError as e:
            result["ok"] = False
            result["not_ready"] = getattr(e, "not_ready", [])
            if as_json:
                app.term.json(result)
            raise
        app.term.success("all objects ready")
    if "gitea" in chosen and not dry_run:  # the Gitea step: its CI identities (raibid.cli.gitea)
        from raibid.cli.gitea import bootstrap_after_up

        result["gitea_bootstrap"] = bootstrap_after_up(app, waited=wait)
    if build_images and not dry_run and set(chosen) & {"agents", "mirror", "webhook"}:
        from raibid.cli.images import ensure_images

        result["images"] = ensure_images(app)
        result["ok"] = result["ok"] and result["images"]["ok"]
    if as_json:
        app.term.json(result)
    if not result["ok"]:
        raise Exit(ExitCode.FAILURE)


@cluster.command()
@component_option
@click.option("--check", is_flag=True, help="Exit 1 when any component is not healthy (for monitoring).")
@json_option
@pass_app
def status(app: Application, components: tuple[str, ...], check: bool, as_json: bool) -> None:
    """Per component: ready/desired, version, age and problems."""
    from raibid.cluster.components import BASE
    from raibid.cluster.readiness import component_status, terminating_namespaces
    from raibid.terminal import format_age

    manifests = _render(app, components)
    for ns in terminating_namespaces(app.kube, manifests):
        app.term.warn(f"namespace {ns} is being deleted (Terminating): its components go with it; "
                      "wait until it is gone, then `raibid cluster up`")
    by_comp: dict[str, list[Manifest]] = {}
    for m in manifests:
        if m.component != BASE:
            by_comp.setdefault(m.component, []).append(m)
    rows = [component_status(app.kube, comp, ms) for comp, ms in by_comp.items()]

    app.term.emit(rows, as_json, lambda: app.term.table(
        ["component", "state", "ready", "version", "age", "problems"],
        [(r.component, r.state, f"{r.ready}/{r.desired}", r.version, format_age(r.age_s), "; ".join(r.problems))
         for r in rows]))
    if check and any(r.state != "healthy" for r in rows):
        raise Exit(ExitCode.FAILURE)


@cluster.command()
@component_option
@click.option("--purge", is_flag=True, help="Also delete PVCs, generated Secrets and (when every component "
                                            "goes) the namespace.")
@click.option("--yes", is_flag=True, help="Do not ask (required when stdin is not a terminal).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the deleted objects are gone (finalizers done).")
@click.option("--timeout", default="5m", show_default=True, metavar="DURATION", help="How long --wait waits.")
@click.option("--wait-interval", default="1s", show_default=True, metavar="DURATION",
              help="How often --wait checks.")
@json_option
@pass_app
def down(app: Application, components: tuple[str, ...], purge: bool, yes: bool, wait: bool, timeout: str,
         wait_interval: str, as_json: bool) -> None:
    """Delete the components in reverse order. Data (PVCs, passwords) stays unless --purge.

    The namespace is deleted only with --purge and only when every component is
    removed: deleting it would take the other components and their data with it.
    """
    from raibid.cluster.components import BASE
    from raibid.cluster.prune import components_left, delete_manifests, wait_gone
    from raibid.timeutil import parse_duration, parse_interval

    wait_for, interval = parse_duration(timeout), parse_interval(wait_interval, "--wait-interval")
    manifests = _render(app, components)
    removing = sorted({m.component for m in manifests} - {BASE})
    left = components_left(app.kube, removing) if purge else []
    what = f"delete {', '.join(removing)} from namespace {app.namespace}"
    if purge and left:
        what += f" including data; the namespace stays ({', '.join(left)} still installed in it)"
    elif purge:
        what += f" including data, and the namespace {app.namespace} with everything in it"
    confirm_or_refuse(app.term, what, yes)
    changes = delete_manifests(app.kube, manifests, purge=purge, keep_namespace=left)
    app.term.emit(changes, as_json, lambda: _changes_table(app, changes))
    if wait:
        wait_gone(app.kube, changes, manifests, timeout=wait_for, interval=interval,
                  progress=lambda ref: app.term.debug(f"gone {ref}"))
        if not as_json:
            app.term.info("all deleted objects are gone")
