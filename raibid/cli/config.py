"""`raibid config`: show, path, init."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from raibid.cli._common import json_option, pass_app
from raibid.errors import UsageError

if TYPE_CHECKING:
    from raibid.app import Application


@click.group()
def config() -> None:
    """Show, locate or create the raibid config file."""


@config.command("show")
@json_option
@pass_app
def show(app: Application, as_json: bool) -> None:
    """Print the effective config (defaults, file, env), secrets masked."""
    data = app.cfg.to_dict(masked=True)
    if as_json:
        app.term.json(data)
        return
    from raibid.yamlio import dump

    app.term.line(dump(data).rstrip())


@config.command("path")
@json_option
@pass_app
def path(app: Application, as_json: bool) -> None:
    """Print which config file was loaded (nothing and exit 3 when none was)."""
    src = app.cfg.source
    if src is None:
        from raibid.config import default_search_paths
        from raibid.errors import NotFound

        raise NotFound("no config file found; using built-in defaults",
                       hint="searched: " + ", ".join(str(p) for p in default_search_paths()))
    app.term.emit({"path": str(src.resolve())}, as_json, lambda: app.term.line(str(src.resolve())))


@config.command("init")
@click.argument("dest", required=False, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_app
def init(app: Application, dest: str | None, force: bool) -> None:
    """Write a commented default config to DEST.

    DEST defaults to --config if given, else $XDG_CONFIG_HOME/raibid/config.yaml.
    The file is created with mode 0600.
    """
    from raibid.config import commented_default_yaml, default_search_paths
    from raibid.fileio import write_private

    target = Path(dest or app.settings.config_path or default_search_paths()[-1])
    if target.exists() and not force:
        raise UsageError(f"{target} already exists", hint="pass --force to overwrite it")
    # 0600: users put passwords in URLs (redis://:pw@host) even though *_env keys exist for them.
    write_private(target, commented_default_yaml(), what="config init")
    app.term.success(f"wrote {target} (mode 0600)")
