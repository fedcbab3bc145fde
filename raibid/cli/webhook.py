"""`raibid webhook`: the in-cluster push receiver (serve), its hooks (register) and status."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from raibid.cli._common import json_option, pass_app
from raibid.errors import ConfigError, Exit, ExitCode, UsageError

if TYPE_CHECKING:
    from pathlib import Path

    from raibid.app import Application
    from raibid.webhook.jobpage import JobLinks
    from raibid.webhook.mirrors import MirrorSet


@click.group()
def webhook() -> None:
    """Receive Gitea and GitHub push events in the cluster and build each commit once."""


def _base_dir(app: Application) -> Path:
    """Where relative `mirror.lists` paths start: the config file's folder (as `mirror sync` reads them)."""
    from pathlib import Path

    return Path(app.cfg.source).resolve().parent if app.cfg.source else Path.cwd()


def _mirrors(app: Application) -> MirrorSet:
    from raibid.webhook.mirrors import MirrorSet

    return MirrorSet.from_config(app.cfg.mirror, base_dir=_base_dir(app))


def _port(app: Application) -> int:
    from raibid.webhook.server import parse_listen

    return parse_listen(app.cfg.webhook.listen)[1]


def gitea_hook_url(app: Application) -> str:
    base = app.cfg.webhook.internal_url or f"http://raibid-webhook.{app.namespace}.svc:{_port(app)}"
    return base.rstrip("/") + "/hooks/gitea"


def github_hook_url(app: Application, *, required: bool) -> str | None:
    base = app.cfg.webhook.public_url
    if not base:
        if required:
            raise ConfigError("webhook.public_url is not set: GitHub needs a public URL to post to",
                              hint="set webhook.public_url (RAIBID_WEBHOOK_PUBLIC_URL); see docs/webhooks.md")
        return None
    return base.rstrip("/") + "/hooks/github"


def page_base_url(app: Application) -> str:
    """Where job page links point: webhook.page_url, else public_url, else internal_url, else the Service."""
    w = app.cfg.webhook
    base = w.page_url or w.public_url or w.internal_url or f"http://raibid-webhook.{app.namespace}.svc:{_port(app)}"
    return base.rstrip("/")


def job_links(app: Application) -> JobLinks | None:
    """The job page links (``JobLinks``), or None when the page key env var (webhook.page_key_env) is unset."""
    from raibid.webhook.jobpage import JobLinks

    key = app.cfg.secret(app.cfg.webhook.page_key_env)
    return JobLinks(page_base_url(app), key) if key else None


def _secret(app: Application) -> str:
    """The shared secret: the env var named by webhook.secret_env, else the generated cluster Secret."""
    import os

    from raibid.cluster.secrets import secret_value

    env = app.cfg.webhook.secret_env
    value = app.cfg.secret(env)
    if value:
        return value
    if os.path.exists(app.kubeconfig_path):
        value = secret_value(app.kube.get("v1", "Secret", "raibid-webhook", app.namespace), "secret")
        if value:
            return value
    raise ConfigError(f"no webhook secret: {env} is unset and Secret {app.namespace}/raibid-webhook was not found",
                      hint=f"run `raibid cluster up -c webhook` (it generates the secret) or set {env}")


def _github(app: Application):
    from raibid.github import GitHub

    m = app.cfg.mirror
    return GitHub(m.github_api, app.cfg.secret(m.github_token_env), timeout=app.cfg.gitea.timeout)


def _github_repos(app: Application, extra: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The mirrored GitHub repos as the mirror resolves them (repos, lists, orgs with their filters)
    plus ``extra``, and the config entries that could not be resolved, with why."""
    from raibid.mirror import resolve

    resolved, _ = resolve(app.cfg.mirror, app.github(), None, base_dir=_base_dir(app))
    repos: dict[str, str] = {}
    failed: dict[str, str] = {}
    for r in resolved:
        if r.error:
            failed[r.source] = r.error
        elif not r.gone:
            repos.setdefault(r.source.lower(), r.source)
    for name in extra:
        repos.setdefault(name.lower(), name)
    return sorted(repos.values(), key=str.lower), failed


@webhook.command()
@click.option("--listen", metavar="HOST:PORT", help="Address to listen on (default: webhook.listen, 0.0.0.0:8080).")
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True, help="HTTP worker threads.")
@pass_app
def serve(app: Application, listen: str | None, threads: int) -> None:
    """Run the receiver (long-running; meant for the raibid-webhook pod).

    This is raibid's one long-running command: `cluster up -c webhook` runs it in the
    Deployment raibid-webhook. POST /hooks/gitea and /hooks/github, GET /healthz, and the
    job pages GET /jobs/ID and /jobs/ID/log (when the env var named by webhook.page_key_env
    holds the page key). The shared secret comes from the env var named by webhook.secret_env.
    """
    import logging
    import signal
    import sys

    from raibid.webhook.server import build, create_server, parse_listen
    from raibid.webhook.trigger import gitea_reader

    cfg = app.cfg
    w = cfg.webhook
    secret = cfg.secret(w.secret_env)
    if not secret:
        raise ConfigError(f"{w.secret_env} is unset: the receiver will not run without a secret",
                          hint="in the cluster it comes from Secret raibid-webhook; locally, export it")
    host, port = parse_listen(listen or w.listen)
    if w.max_followers >= threads:
        raise UsageError(f"webhook.max_followers ({w.max_followers}) must be below --threads ({threads}): "
                         "followed logs would hold every HTTP thread and no webhook would be answered",
                         hint="raise --threads or lower webhook.max_followers")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if app.settings.verbosity >= 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log = logging.getLogger("raibid.webhook")
    mirrors = _mirrors(app)
    gitea = app.gitea
    if not gitea.token:
        log.warning("no Gitea token (%s): syncs after GitHub pushes will fail, and Gitea pushes are queued "
                    "without reading .raibid.yml (one job each, no `when:`/`agent:`)", cfg.gitea.token_env)
    sync = pull = engine = None
    if cfg.mirror.mode == "pull":
        from raibid.webhook.sync import GiteaPullSync

        sync = pull = GiteaPullSync(gitea, mirrors)
    else:
        engine = _engine(app)
    links = job_links(app)
    if links is None:
        log.warning("no job page key (%s): GET /jobs/... answers 404", w.page_key_env)
    pages = None
    if links is not None:
        from raibid.webhook.jobpage import JobPages

        pages = JobPages(app.worker_queue, links, max_followers=w.max_followers, follow_max=w.follow_max)
    service = build(secret=secret, submit=app.worker_queue.submit_deduped, mirrors=mirrors,
                    branches=cfg.mirror.trigger.branches, agent=cfg.mirror.trigger.agent, policy=app.trust_policy,
                    trigger_enabled=cfg.mirror.trigger.enabled, overrides=w.branches, sync=sync, pull=pull,
                    engine=engine, max_body=w.max_body, threads=w.sync_workers, max_pending=w.max_pending,
                    deliveries=_deliveries(app), pages=pages, read=gitea_reader(gitea) if gitea.token else None,
                    post_status=app.worker_queue.post_status, pull_requests=cfg.mirror.pull_requests)
    try:
        server = create_server(service.receiver, host, port, max_body=w.max_body, threads=threads)
    except BaseException:
        service.stop()
        raise
    reporter = _reporter(app, links).start() if w.report else None
    log.info("listening on %s:%s (Gitea: /hooks/gitea, GitHub: /hooks/github)", host, server.effective_port)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (the pod stopping): waitress's run() returns as on Ctrl-C

    signal.signal(signal.SIGTERM, terminate)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        service.stop()
        if reporter is not None:
            reporter.stop()
    log.info("stopped")


def _reporter(app: Application, links: JobLinks | None):
    """The status reporter (docs/statuses.md): the receiver's Gitea token, and GitHub's status token when set.

    One consumer name, ``reporter``: the Deployment has one replica, and a new pod takes over what the
    old one had read but not yet posted. Each status links to its job's page (``links``: the same
    capability-carrying links the receiver serves); without a page key, statuses carry no ``target_url``.
    """
    import logging

    from raibid.github import GitHub
    from raibid.queue import Keys
    from raibid.webhook.reporter import Reporter

    cfg = app.cfg
    token = cfg.secret(cfg.webhook.github_status_token_env)
    if not token:
        logging.getLogger("raibid.webhook").info("no GitHub status token (%s): statuses go to Gitea only",
                                                 cfg.webhook.github_status_token_env)
    github = GitHub(cfg.mirror.github_api, token, timeout=cfg.gitea.timeout, max_wait=0) if token else None
    block_ms = max(50, min(1000, int(cfg.redis.timeout * 500)))  # a blocking read stays within the socket timeout
    return Reporter(app.redis, Keys(cfg.redis.prefix), gitea=app.gitea if app.gitea.token else None, github=github,
                    link=links.url if links is not None else None, consumer="reporter", block_ms=block_ms)


def _deliveries(app: Application):
    """GitHub delivery ids in Redis, through the one-shot client: a check waits at most redis.timeout."""
    from raibid.queue import Keys
    from raibid.webhook.deliveries import Deliveries

    url, _ = app.redis_endpoint()
    return Deliveries(app.redis, Keys(app.cfg.redis.prefix), url=url)


def _engine(app: Application):
    """Push mode: a factory of the mirror engine's one-repo sync, given the trigger's enqueue function."""
    from raibid.mirror import Options, Trigger
    from raibid.mirror.pending import PendingTriggers
    from raibid.webhook.sync import EngineSync

    cfg = app.cfg
    m = cfg.mirror

    def make(submit):
        trigger = (Trigger(m.trigger.branches, submit, m.trigger.on_create,
                           pending=PendingTriggers(lambda: app.worker_queue)) if submit is not None else None)
        opts = Options(cache_dir=app.mirror_cache_dir, mode=m.mode, jobs=1, timeout=float(m.timeout),
                       github_token=cfg.secret(m.github_token_env), gitea_token=app.gitea.token, trigger=trigger)
        return EngineSync(app.gitea, app.github, m, opts, base_dir=_base_dir(app))  # a client per sync

    return make


@webhook.command()
@click.option("--gitea", "gitea_", is_flag=True, help="Only the Gitea hooks (default: both).")
@click.option("--github", "github_", is_flag=True, help="Only the GitHub hooks (default: both).")
@click.option("--gitea-repo", "gitea_repos", multiple=True, metavar="OWNER/NAME",
              help="Also hook this Gitea repo (besides webhook.gitea_repos and the mirror org's hook).")
@click.option("--github-repo", "github_repos", multiple=True, metavar="OWNER/NAME",
              help="Also hook this GitHub repo (besides the mirrored ones).")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@json_option
@pass_app
def register(app: Application, gitea_: bool, github_: bool, gitea_repos: tuple[str, ...],
             github_repos: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Create or update the hooks (never duplicates): Gitea org + repos, GitHub mirrored repos.

    A GitHub repo where the token lacks admin rights is reported and skipped.
    """
    from raibid.webhook.register import register_gitea, register_github

    both = not gitea_ and not github_
    secret = "" if dry_run else _secret(app)
    results = []
    if gitea_ or both:
        repos = list(dict.fromkeys([*app.cfg.webhook.gitea_repos, *gitea_repos]))
        results += register_gitea(app.gitea, org=app.cfg.mirror.target_org, repos=repos, url=gitea_hook_url(app),
                                  secret=secret, dry_run=dry_run)
    if github_ or both:
        from raibid.webhook.register import HookResult

        url = github_hook_url(app, required=True) or ""
        gh = _github(app)
        repos, unlisted = _github_repos(app, github_repos)
        results += [HookResult("github", "entry", source, url, "failed", message=why)
                    for source, why in unlisted.items()]
        if not repos and not unlisted:
            app.term.warn("no mirrored GitHub repos to hook (mirror.repos, mirror.lists, mirror.orgs)")
        results += register_github(gh, repos, url=url, secret=secret, dry_run=dry_run)
    for r in results:
        if r.action == "skipped":
            app.term.warn(f"{r.host} {r.target}: skipped: {r.message}")
    app.term.emit(results, as_json, lambda: app.term.table(
        ["host", "scope", "target", "action", "id", "message"],
        [(r.host, r.scope, r.target, r.action, "" if r.hook_id is None else r.hook_id, r.message) for r in results]))
    if any(r.action == "failed" for r in results):
        raise Exit(ExitCode.FAILURE)


@webhook.command()
@json_option
@pass_app
def status(app: Application, as_json: bool) -> None:
    """The receiver's Deployment, its URLs, and each hook's last delivery (where the API reports it)."""
    import os

    from raibid.errors import RaibidError
    from raibid.webhook.status import DEPLOYMENT, WebhookStatus, deployment_status, gitea_hooks, github_hooks

    cfg = app.cfg
    deployed = ready = False
    image = None
    try:
        if not os.path.exists(app.kubeconfig_path):
            raise UsageError(f"no kubeconfig at {app.kubeconfig_path}")
        deployed, ready, detail, image = deployment_status(app.kube, app.namespace)
    except RaibidError as e:
        detail = f"unknown: {e.message}"
    gitea_url = gitea_hook_url(app)
    github_url = github_hook_url(app, required=False)
    st = WebhookStatus(app.namespace, DEPLOYMENT, deployed, ready, detail, image, gitea_url, github_url)
    try:
        st.hooks += gitea_hooks(app.gitea, org=cfg.mirror.target_org, repos=cfg.webhook.gitea_repos, url=gitea_url)
    except RaibidError as e:
        app.term.warn(f"Gitea hooks: {e.message}")
    if not github_url:
        app.term.info("GitHub hooks not checked: webhook.public_url is unset")
    elif not cfg.secret(cfg.mirror.github_token_env):
        app.term.info(f"GitHub hooks not checked: {cfg.mirror.github_token_env} is unset")
    else:
        try:
            gh = _github(app)
            repos, unlisted = _github_repos(app, ())
            for source, why in unlisted.items():
                app.term.warn(f"GitHub: {source}: {why}")
            st.hooks += github_hooks(gh, repos, url=github_url)
        except RaibidError as e:
            app.term.warn(f"GitHub hooks: {e.message}")

    def render() -> None:
        app.term.record({"deployment": f"{st.namespace}/{st.deployment}",
                         "state": ("ready" if st.ready else "not ready") if st.deployed else "not deployed",
                         "detail": st.detail, "image": st.image or "", "gitea_url": st.gitea_url,
                         "github_url": st.github_url or "(webhook.public_url unset)"})
        app.term.table(["host", "scope", "target", "hook", "active", "last", "code", "message"],
                       [(h.host, h.scope, h.target, h.hook_id or "-", "" if h.active is None else h.active,
                         h.last_status or "", "" if h.last_code is None else h.last_code, h.message)
                        for h in st.hooks])

    app.term.emit(st, as_json, render)
