"""The root command, global options and the one place errors become exit codes."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from raibid import __version__
from raibid.errors import ExitCode, RaibidError

# Subcommands are imported only when invoked (or listed by --help), so a TAB
# press or `raibid --help` never pays for kubernetes, redis, git or jinja2.
COMMANDS: dict[str, tuple[str, str]] = {
    "cluster": ("raibid.cli.cluster", "Render and apply Redis, Gitea, KEDA and Flux to k3s."),
    "queue": ("raibid.cli.queue", "Submit, inspect and manage CI jobs on Redis Streams."),
    "agents": ("raibid.cli.agents", "Agent types, their KEDA pools, and the one-job agent runtime."),
    "gitea": ("raibid.cli.gitea", "Bootstrap and manage Gitea: tokens, orgs, repos, hooks, registry."),
    "gitops": ("raibid.cli.gitops", "Keep the cluster's desired state in a Gitea repo that Flux applies."),
    "webhook": ("raibid.cli.webhook", "Receive Gitea/GitHub pushes in the cluster: serve, register, status."),
    "mirror": ("raibid.cli.mirror", "Mirror GitHub repos, lists and orgs (regex) into Gitea; safe for cron."),
    "config": ("raibid.cli.config", "Show, locate or create the raibid config file."),
    "images": ("raibid.cli.images", "Build raibid's images in the cluster (rootless BuildKit) and push them."),
    "doctor": ("raibid.cli.doctor", "Check this machine, the cluster and Redis."),
    "top": ("raibid.cli.top", "Live dashboard of the queue, agent pools, jobs and cluster."),
    "status": ("raibid.cli.status", "A commit's checks (REPO[@REF|SHA]), from Redis, as `gh pr checks`."),
    "run": ("raibid.cli.run", "Run a repo's .raibid.yml pipelines here: the real queue and agents, no cluster."),
    "completion": ("raibid.cli.completion", "Print the shell completion script."),
}


class RaibidGroup(click.Group):
    """A group that loads subcommands lazily and maps typed errors to exit codes."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module = importlib.import_module(self.lazy[name][0])
            cmd = getattr(module, name.replace("-", "_"))
            return cmd
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text comes from the table above, so listing commands imports nothing.
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][1]))
            else:
                cmd = self.commands[name]
                rows.append((name, cmd.get_short_help_str(formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RaibidError as e:
            report_error(ctx, e)
            ctx.exit(int(e.exit_code))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


class PresenceFlag(click.Option):
    """A flag that its env var turns on when set to any non-empty value (https://no-color.org).

    Click reads a flag's env var as a boolean, so ``NO_COLOR=anything`` was a usage error.
    """

    def value_from_envvar(self, ctx: click.Context) -> Any:
        return True if self.resolve_envvar_value(ctx) else None


def report_error(ctx: click.Context, e: RaibidError) -> None:
    from raibid.cli._common import application

    if not e.message:
        return  # an Exit: the command has already said everything
    if os.environ.get("RAIBID_DEBUG") == "1":
        import traceback

        traceback.print_exception(e, file=sys.stderr)
    application(ctx).term.error(e.message, e.hint)


@click.group(
    cls=RaibidGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="raibid", message="%(prog)s %(version)s")
@click.option("--config", "config_path", metavar="PATH", envvar="RAIBID_CONFIG", show_envvar=True,
              type=click.Path(dir_okay=False), help="Config file (default: ./raibid.yaml, then "
              "$XDG_CONFIG_HOME/raibid/config.yaml).")
@click.option("--kubeconfig", metavar="PATH", envvar="KUBECONFIG", show_envvar=True,
              help="Kubeconfig file (default: ~/.kube/config).")
@click.option("--context", metavar="NAME", envvar="RAIBID_CONTEXT", show_envvar=True,
              help="Kubeconfig context (default: the current context).")
@click.option("-n", "--namespace", metavar="NS", envvar="RAIBID_NAMESPACE", show_envvar=True,
              help="Namespace (default: cluster.namespace, raibid-ci).")
@click.option("-v", "--verbose", count=True, envvar="RAIBID_VERBOSE", show_envvar=True,
              help="More detail on stderr (repeatable).")
@click.option("-q", "--quiet", is_flag=True, envvar="RAIBID_QUIET", show_envvar=True,
              help="Only errors on stderr.")
@click.option("--no-color", cls=PresenceFlag, is_flag=True, envvar="NO_COLOR", show_envvar=True,
              help="Plain output without colour (NO_COLOR set to any non-empty value does the same).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, kubeconfig: str | None, context: str | None,
        namespace: str | None, verbose: int, quiet: bool, no_color: bool) -> None:
    """raibid: personal, scale-to-zero CI on one k3s node.

    Data goes to stdout (use --json with jq); progress and errors go to stderr.
    Exit codes: 0 ok, 1 failure, 2 usage/config, 3 not found, 4 auth,
    5 unreachable, 6 locked.
    """
    # Imported here, not at the top: `--help` and TAB completion never get this far.
    from raibid.settings import Settings

    if ctx.obj is not None:
        return  # a test (or an embedding script) brought its own
    # Only the options are recorded; the Application is built by the first command that needs it.
    color = not no_color
    settings = Settings(
        config_path=config_path,
        kubeconfig=kubeconfig,
        context=context,
        namespace=namespace,
        verbosity=-1 if quiet else verbose,
        color=color,
    )
    ctx.obj = settings


_skip_teardown = False


def exit_without_teardown() -> None:
    """Called by a command that leaves nothing behind (`raibid run`): once it has returned, the process
    exits without the interpreter's teardown (freeing every module's objects, redis-py's are many), which
    costs 0.05-0.1 s after the work is done; output is flushed and atexit handlers run first. Only the
    console-script entry point (:func:`main`) acts on it, and only when no other thread is left."""
    global _skip_teardown
    _skip_teardown = True


def _exit_now(code: object) -> None:
    import atexit
    import threading

    if threading.active_count() > 1:
        return  # the normal exit joins them
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        return  # a message to print: the normal exit does that
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    os._exit(status)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    global _skip_teardown
    _skip_teardown = False  # set only by a command this call runs
    try:
        cli.main(args=argv, prog_name="raibid")
    except BrokenPipeError:
        # `raibid queue list | head`: stop quietly, like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(int(ExitCode.FAILURE))
    except SystemExit as e:
        if _skip_teardown:
            _exit_now(e.code)
        raise
