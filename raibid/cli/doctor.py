"""`raibid doctor`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from raibid.cli._common import json_option, pass_app
from raibid.errors import Exit, ExitCode

if TYPE_CHECKING:
    from raibid.app import Application


@click.command()
@json_option
@pass_app
def doctor(app: Application, as_json: bool) -> None:
    """Check this machine, the cluster and Redis.

    Exits 1 when a required check fails; warnings never change the exit code.
    """
    from raibid.doctor import run_checks

    checks = run_checks(app)
    ok = not any(c.failed for c in checks)
    data = {"ok": ok, "checks": checks}

    def render() -> None:
        app.term.table(["check", "status", "detail", "hint"],
                       [(c.name, c.status.value, c.detail, c.hint) for c in checks])

    app.term.emit(data, as_json, render)
    if not ok:
        raise Exit(ExitCode.FAILURE)
