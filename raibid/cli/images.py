"""`raibid images`: build raibid's own images in the cluster and list their exact references."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from raibid.cli._common import json_option, pass_app
from raibid.errors import Exit, ExitCode, NotFound

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from raibid.app import Application


@click.group()
def images() -> None:
    """Build raibid's images in the cluster (rootless BuildKit) and push them to Gitea's registry."""


@images.command("list")
@json_option
@pass_app
def list_(app: Application, as_json: bool) -> None:
    """The images the pods reference, at the tag this installation resolves."""
    from raibid.images.catalog import deployed

    rows = [{"name": r.name, "image": r.ref, "tag": r.tag} for r in deployed(app.cfg)]
    app.term.emit(rows, as_json, lambda: app.term.table(["name", "image"], [(r["name"], r["image"]) for r in rows]))


@images.command()
@click.option("--only", "only", multiple=True, metavar="NAME", help="Only this image (repeatable).")
@click.option("--push/--no-push", default=True, show_default=True, help="Push to Gitea's registry.")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH",
              help="linux/arm64 (default, the Spark) and/or linux/amd64 (repeatable).")
@click.option("--timeout", default="1h", show_default=True, metavar="DURATION", help="How long one build may take.")
@json_option
@pass_app
def build(app: Application, only: tuple[str, ...], push: bool, platforms: tuple[str, ...], timeout: str,
          as_json: bool) -> None:
    """Build every image raibid deploys, each as a Kubernetes Job running rootless BuildKit.

    The context is raibid itself (its package, pyproject.toml, README.md and templates/), handed to the Job
    as a ConfigMap. Tags are immutable: <raibid version>-<hash of the context>. Exit 1 when a build fails.
    """
    from raibid.images.catalog import IMAGES, deployed, ref
    from raibid.timeutil import parse_duration

    for name in only:
        if name not in IMAGES:
            raise NotFound(f"no image {name!r}", hint=f"images: {', '.join(IMAGES)}")
    wanted = [ref(app.cfg, n) for n in dict.fromkeys(only)] if only else deployed(app.cfg)
    results = build_images(app, wanted, push=push, platforms=platforms or ("linux/arm64",),
                           timeout=parse_duration(timeout), as_json=as_json)
    data = [asdict(r) for r in results]
    if as_json:
        app.term.json(data)
    else:
        app.term.table(["image", "result", "steps", "cached", "seconds"],
                       [(r.image, "ok" + (" (already built)" if r.reused else "") if r.ok else "FAILED",
                         r.steps, r.steps_cached, r.seconds) for r in results])
    if not all(r.ok for r in results):
        raise Exit(ExitCode.FAILURE)


def build_images(app: Application, wanted: list, *, push: bool, platforms: tuple[str, ...], timeout: float,
                 as_json: bool) -> list:
    """Apply the context ConfigMap (and the push Secret), then build each image in turn, showing progress."""
    from urllib.parse import urlsplit

    from raibid.cluster.render import templates_dir
    from raibid.images.build import context_configmap, push_problem, render_job, run_build
    from raibid.images.context import current
    from raibid.safetext import printable

    ctx = current()
    kube, ns = app.kube, app.namespace
    kube.apply(context_configmap(ctx, ns), force=True)
    insecure = urlsplit(app.cfg.gitea.url).scheme != "https"  # Gitea's registry on its plain-HTTP NodePort
    if push and wanted:
        problem = push_problem(wanted[0].registry)
        if problem:
            app.term.warn(f"{problem}; the push will fail. Set gitea.url (or agents.registry) to the node's IP "
                          "and NodePort, e.g. http://192.168.1.10:30080")
        _apply_push_secret(app, wanted[0].registry)
    results = []
    for image in wanted:
        job = render_job(image, ctx, namespace=ns, platforms=platforms, push=push,
                         templates=app.templates or templates_dir(), insecure=insecure, deadline=int(timeout))
        app.term.info(f"building {image.ref} ({', '.join(platforms)}) in Job {ns}/{job['metadata']['name']}")
        with _Display(app, image.name) as show:
            result = run_build(kube, image, ctx, job, push=push, on_line=show.line, timeout=timeout)
        if result.ok:
            app.term.success(f"{image.ref}: " + ("already built" if result.reused else
                                                 f"built ({result.steps_cached}/{result.steps} steps cached)"))
        else:
            app.term.error(f"{image.name}: the build failed at {printable(result.failed_step or '(no step)')}: "
                           f"{printable(result.error or '')}", hint=f"kubectl -n {ns} logs job/{result.job}")
        results.append(result)
    return results


def _apply_push_secret(app: Application, registry: str) -> None:
    """The builder role's token, as the docker config.json the build Job mounts (and nothing else does)."""
    import base64

    from raibid.gitea.identities import role
    from raibid.images.build import push_secret

    secret = role("builder").secret
    live = app.kube.get("v1", "Secret", secret, app.namespace)
    token = base64.b64decode(((live or {}).get("data") or {}).get("token", "")).decode()
    if not token:
        raise NotFound(f"Secret {app.namespace}/{secret} (the builder's write:package token) is missing",
                       hint="run `raibid gitea bootstrap`, or build with --no-push")
    app.kube.apply(push_secret(registry, app.cfg.gitea.ci_user, token, app.namespace), force=True)


class _Display:
    """BuildKit's steps as a Rich progress bar on a TTY; escaped plain step lines when piped."""

    def __init__(self, app: Application, name: str) -> None:
        self.app, self.name = app, name
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> _Display:
        term = self.app.term
        if term.stderr_is_tty and term.verbosity >= 0:
            from rich.markup import escape
            from rich.progress import BarColumn, Progress, TextColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total}"), console=term._console())
            self.progress.start()
            self.task = self.progress.add_task(escape(self.name), total=None)
        return self

    def line(self, text: str, p: object) -> None:
        from raibid.images.progress import Progress as Parsed
        from raibid.safetext import printable

        assert isinstance(p, Parsed)
        step = text.split(" ", 1)[1] if text.startswith("#") and " " in text else ""
        if self.progress is not None and self.task is not None:
            from rich.markup import escape

            # A description is markup (TextColumn parses it; a Text would be flattened and parsed too),
            # so BuildKit's step text, e.g. "[internal] load ...", is escaped, not read as styles.
            label = escape(f"{self.name}: " + (printable(step)[:70] if step.startswith("[") else ""))
            self.progress.update(self.task, total=p.total_steps or None, completed=p.steps_done,
                                 description=label)
        elif step.startswith("[") and " " in text and self.app.term.verbosity >= 0:
            self.app.term.info(f"{self.name}: {text}")

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def ensure_images(app: Application, *, timeout: float = 3600) -> dict:
    """`cluster up`'s image step: look each deployed image up in the registry, build the missing ones.

    Costs one manifest request per image (plus one challenge and one token request for all of them).
    A registry that cannot be asked is a warning (the cluster is applied; `raibid doctor` says more).
    """
    from raibid.doctor.images import node_architectures, pull_credential, registry_base
    from raibid.errors import RaibidError
    from raibid.images.catalog import deployed
    from raibid.images.registry import Registry

    refs = deployed(app.cfg)
    try:
        token = pull_credential(app.kube, app.namespace)
        registry = Registry(registry_base(app, refs[0].registry), app.cfg.gitea.ci_user, token)
        found = registry.manifests([(r.repository, r.tag) for r in refs])
        arches = node_architectures(app.kube) or {"arm64"}
    except RaibidError as e:
        app.term.warn(f"images not checked: {e.message}; run `raibid images build` once the registry answers")
        return {"checked": False, "missing": [], "built": [], "ok": True}
    missing = [r for r, m in zip(refs, found, strict=True) if not m.exists]
    out: dict = {"checked": True, "missing": [r.ref for r in missing], "built": [], "ok": True}
    if not missing:
        app.term.info(f"all {len(refs)} images present in the registry")
        return out
    app.term.info(f"building {len(missing)} missing image(s): {', '.join(r.name for r in missing)}")
    try:
        results = build_images(app, missing, push=True,
                               platforms=tuple(f"linux/{a}" for a in sorted(arches)), timeout=timeout,
                               as_json=False)
    except RaibidError as e:
        app.term.warn(f"images not built: {e.message}" + (f" ({e.hint})" if e.hint else ""))
        out["ok"] = False
        return out
    out["built"] = [r.image for r in results if r.ok]
    out["ok"] = all(r.ok for r in results)
    return out
