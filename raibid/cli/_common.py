"""Small helpers shared by commands: the --json option and confirmation rules."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from raibid.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout (for jq).")


def confirm_or_refuse(what: str, yes: bool) -> None:
    """Dangerous actions: ask on a TTY, refuse without --yes elsewhere."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to {what} without --yes (stdin is not a terminal)")
    if not click.confirm(f"Really {what}?", default=False, err=True):
        raise UsageError("aborted")
