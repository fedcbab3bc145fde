"""Small helpers shared by commands: the Application, the --json option and confirmation rules."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from raibid.errors import UsageError

if TYPE_CHECKING:
    from raibid.app import Application
    from raibid.terminal import Terminal

F = TypeVar("F", bound=Callable[..., Any])



def application(ctx: click.Context) -> Application:
    """The Application for this run: the one a test passed, or one built now from the global options.

    The root command only records the options; building happens on the first
    command that needs it, so `raibid queue --help` builds nothing.
    """
    from raibid.app import Application
    from raibid.settings import Settings

    root = ctx.find_root()
    if not isinstance(root.obj, Application):
        settings = root.obj if isinstance(root.obj, Settings) else Settings()
        root.obj = Application(settings=settings)
    return root.obj


def pass_app(f: F) -> F:
    """Like ``click.pass_obj``, passing the Application as the first argument."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        return ctx.invoke(f, application(ctx), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout (for jq).")


def confirm_or_refuse(term: Terminal, what: str, yes: bool) -> None:
    """Dangerous actions: ask on a TTY, refuse without --yes elsewhere."""
    if yes:
        return
    if not term.stdin_is_tty:
        raise UsageError(f"refusing to {what} without --yes (stdin is not a terminal)")
    if not term.confirm(f"Really {what}?"):
        raise UsageError("aborted")
