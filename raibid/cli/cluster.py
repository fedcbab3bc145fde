"""`raibid cluster`: render, diff, up, status, down."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from raibid.app import Application

component_option = click.option(
    "--component", "-c", "components", multiple=True, metavar="NAME",
    help="Only this component (repeatable): redis, gitea, keda, flux. Default: cluster.components.")


@click.group()
def cluster() -> None:
    """Render and apply Redis, Gitea, KEDA and Flux to k3s."""


@cluster.command()
@component_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Write one file per object under DIR instead of printing.")
@click.pass_obj
def render(app: Application, components: tuple[str, ...], out_dir: str | None) -> None:
    """Print the manifests as multi-document YAML. Needs no cluster and no config.

    Secrets are generated fresh on every render; `raibid cluster up` keeps the
    values already in the cluster instead.
    """
    from raibid.manifests import file_name, render, to_yaml

    manifests = render(app.cfg, components, namespace=app.namespace, templates=app.templates)
    if out_dir is None:
        app.term.stdout.write(to_yaml(manifests))
        return
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(manifests):
        path = target / file_name(i, m)
        path.write_text(to_yaml([m]).removeprefix("---\n"))
        if m.is_secret:
            path.chmod(0o600)
    app.term.info(f"wrote {len(manifests)} files to {target}")
