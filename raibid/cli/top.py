"""`raibid top`: a live terminal dashboard of the whole CI system."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from raibid.cli._common import json_option, pass_app
from raibid.errors import Exit, ExitCode

if TYPE_CHECKING:
    from raibid.app import Application
    from raibid.gitea import Gitea
    from raibid.queue import Queue
    from raibid.top import Dashboard

# Seconds the dashboard waits for one Redis call or one Gitea request before it marks the backend down.
REDIS_TIMEOUT_S = 3.0
GITEA_TIMEOUT_S = 3.0


def build_dashboard(app: Application, interval: float | None = None) -> Dashboard:
    """The collectors over this app's clients; each client is built on first use and failures stay per backend."""
    import os

    from raibid.cluster.render import render
    from raibid.cluster.secrets import generate_secrets
    from raibid.errors import redact_url
    from raibid.top import Dashboard, GiteaCollector, KubeCollector, RedisCollector
    from raibid.top.model import Header

    cfg = app.cfg
    gitops = cfg.cluster.mode == "gitops"
    target = flux_url = None
    if gitops:  # the config repo whose verdict the Cluster panel shows, checked as `gitops status` checks it
        from raibid.cli.gitops import _flux_url, _target

        target = _target(app)
        flux_url = _flux_url(app, target)
    gitea_client: list[Gitea] = []

    def gitea() -> Gitea:
        if not gitea_client:
            from raibid.gitea import Gitea

            # The token only in gitops mode, to read the config repo's head (version() is anonymous).
            token, source = app.gitea_token() if gitops else (None, None)
            # No retries: a refresh must not stall on a down Gitea; the next refresh tries again.
            gitea_client.append(Gitea(cfg.gitea.url, token, timeout=min(cfg.gitea.timeout, GITEA_TIMEOUT_S), retries=0,
                                      token_source=source))
        return gitea_client[0]

    def config_head() -> str | None:
        from raibid.gitops.flux import config_head

        if target is None:  # not in gitops mode, where the dashboard never asks
            return None
        return config_head(gitea(), target.repo, target.branch)

    def manifests():
        return render(cfg, (), namespace=app.namespace, secrets=generate_secrets(), templates=app.templates)

    def redis_queue() -> Queue:
        # The dashboard's own client: a refresh waits at most REDIS_TIMEOUT_S per Redis call on a hung
        # server (app.queue's client waits a minute, for the workers' blocking reads), so the other
        # panels keep refreshing.
        import redis

        from raibid.errors import ConfigError
        from raibid.queue import Queue

        url, password = app.redis_endpoint()
        try:
            # encoding_errors: a log entry that is not UTF-8 shows U+FFFD instead of failing the refresh.
            client = redis.Redis.from_url(url, password=password, decode_responses=True, encoding_errors="replace",
                                          socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S,
                                          health_check_interval=0)
        except ValueError as e:
            raise ConfigError(f"invalid redis.url {redact_url(url)}: {e}") from None
        return Queue(client, prefix=cfg.redis.prefix, url=url)

    cluster = app.settings.context or app.kubeconfig_path
    if os.path.exists(app.kubeconfig_path):
        try:
            cluster = app.kube.server + (f" ({app.settings.context})" if app.settings.context else "")
        except Exception:  # noqa: BLE001 - the Kubernetes panel reports it; the header keeps the path
            pass
    header = Header(cluster=cluster, namespace=app.namespace, redis=redact_url(cfg.redis.url),
                    gitea=redact_url(cfg.gitea.url), interval_s=interval)
    return Dashboard(
        redis=RedisCollector(redis_queue, app.agent_pools),
        kube=KubeCollector(lambda: app.kube, app.namespace, manifests, gitops=gitops),
        gitea=GiteaCollector(lambda: gitea().version(), head=config_head if gitops else None),
        header=header,
        gitops=target,
        flux_url=flux_url,
    )


@click.command()
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True, metavar="SECONDS",
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one snapshot and exit (Rich on a TTY, plain text when piped).")
@json_option
@pass_app
def top(app: Application, interval: float, once: bool, as_json: bool) -> None:
    """Live dashboard of the queue, agent pools, jobs and cluster (read-only).

    Refreshes every --interval seconds until q+Enter or Ctrl-C. When stdout is
    not a terminal it prints one snapshot, like --once. With --once or --json
    the exit code is 5 when a backend was unreachable (the snapshot is still
    printed), 0 when every backend answered.
    """
    term = app.term
    live = not (as_json or once or not term.stdout_is_tty)
    dash = build_dashboard(app, interval if live else None)  # a snapshot has no refresh interval
    if not live:
        snap = dash.refresh()
        if as_json:
            term.json(snap)
        elif term.stdout_is_tty:
            from rich.console import Console

            from raibid.top.render import dashboard

            console = Console(file=term.stdout, no_color=not term.color, highlight=False)
            console.print(dashboard(snap, console))
        else:
            from raibid.top.render import plain

            term.stdout.write(plain(snap))
            term.stdout.flush()
        if snap.exit_code:
            raise Exit(ExitCode(snap.exit_code))
        return
    from rich.console import Console

    from raibid.top.live import KeyReader, run_live
    from raibid.top.render import dashboard

    keys = KeyReader(term.stdin).start()
    console = Console(file=term.stdout, no_color=not term.color, highlight=False)
    run_live(console, dash.refresh, dashboard, interval=interval, tick=keys.tick, screen=True)
