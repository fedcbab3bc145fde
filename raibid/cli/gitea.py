"""`raibid gitea`: status, tokens, orgs, repos, hooks and the k3s registry config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from raibid.cli._common import confirm_or_refuse, json_option, pass_app
from raibid.errors import AuthError, Exit, ExitCode, RaibidError, UsageError, redact_url
from raibid.gitea.models import DEFAULT_SCOPES, VISIBILITIES

if TYPE_CHECKING:
    from raibid.app import Application
    from raibid.gitea import Gitea, Hook
    from raibid.gitea.identities import BootstrapResult


# How `gitea status` shows Status.token_valid: None means Gitea never answered the check.
TOKEN_STATES = {True: "valid", False: "INVALID", None: "not checked"}


@click.group()
def gitea() -> None:
    """Bootstrap and manage Gitea: tokens, orgs, repos, hooks, registry."""


@gitea.command()
@json_option
@pass_app
def status(app: Application, as_json: bool) -> None:
    """Is Gitea reachable, which version, is the registry on, are the admin user and token good.

    Exits 5 when Gitea is unreachable (or the URL is not Gitea), 4 when the token is
    missing or invalid, 1 when Gitea failed to answer a check.
    """
    st = app.gitea.status(app.cfg.gitea.admin_user)

    def render() -> None:
        rows = [("url", st.url), ("reachable", "yes" if st.reachable else f"no ({st.error})"),
                ("version", st.version or ""),
                ("registry", {True: "enabled", False: "disabled", None: ""}[st.registry_enabled]),
                ("admin user", f"{st.admin_user} ({'present' if st.admin_exists else 'missing'})"
                 if st.admin_exists is not None else st.admin_user),
                ("token", "missing" if not st.token_source else
                 f"{TOKEN_STATES[st.token_valid]} ({st.token_source}"
                 + (f", user {st.token_user})" if st.token_user else ")"))]
        app.term.table(["field", "value"], rows)

    app.term.emit(st, as_json, render)
    if not st.reachable:
        raise Exit(ExitCode.UNREACHABLE)
    if st.error:
        app.term.error(st.error)
        raise Exit(ExitCode.FAILURE)
    if not st.token_valid:
        raise Exit(ExitCode.AUTH)


# ----------------------------------------------------------------------------- identities


def _admin_client(app: Application, admin_user: str | None) -> tuple[Gitea, str]:
    """A client that signs in as the site admin with Basic auth: --admin-user with the password on
    stdin, else raibid's generated Secret raibid-gitea-admin."""
    from raibid.gitea.credentials import admin_credentials

    if admin_user:
        password = app.term.read_line()
        if not password:
            raise UsageError("--admin-user needs the password on stdin", hint="printf %s \"$PW\" | raibid gitea ...")
        user = admin_user
    else:
        user, password = admin_credentials(app.kube, app.namespace, app.cfg.gitea.admin_user)
    return app.gitea_client(basic=(user, password)), user


def run_bootstrap(app: Application, *, admin_user: str | None = None, rotate: tuple[str, ...] = (),
                  revoke_admin_tokens: bool = False) -> BootstrapResult:
    """The one bootstrap `gitea bootstrap` and `cluster up` (gitea component) run."""
    import dataclasses

    from raibid.gitea.identities import IdentitySpec, bootstrap

    client, user = _admin_client(app, admin_user)
    spec = dataclasses.replace(IdentitySpec.from_config(app.cfg), admin_user=user)
    return bootstrap(client, app.kube, app.namespace, spec, rotate=rotate, revoke_admin_tokens=revoke_admin_tokens)


def _steps_table(app: Application, result: BootstrapResult) -> None:
    app.term.table(["action", "what", "detail"], [(s.action, s.what, s.detail) for s in result.steps])


@gitea.command("bootstrap")
@click.option("--rotate", "rotate", multiple=True, metavar="ROLE",
              type=click.Choice(["agent", "mirror", "webhook", "registry"]),
              help="Replace this role's token even if it is current (repeatable).")
@click.option("--revoke-admin-tokens", is_flag=True,
              help="Delete the admin token kept in raibid-gitea-token (what pods held before) and keep a "
                   "fresh one there for the CLI; refused while a workload still references an admin Secret.")
@click.option("--admin-user", metavar="USER", help="Admin user; its password is read from stdin.")
@json_option
@pass_app
def bootstrap_cmd(app: Application, rotate: tuple[str, ...], revoke_admin_tokens: bool, admin_user: str | None,
                  as_json: bool) -> None:
    """Create the non-admin CI user, its grants and one scoped token per role. Idempotent.

    Runs as the site admin (Basic auth from the raibid-gitea-admin Secret, or
    --admin-user with the password on stdin). Each token goes to its own Secret
    (key `token`): raibid-gitea-agent, raibid-gitea-mirror, raibid-gitea-webhook,
    raibid-gitea-registry; none is printed. On an existing installation this is the
    migration. Exits 2 when a revocation is refused, 4 when the admin credentials are
    refused, 5 when Gitea is unreachable.
    """
    result = run_bootstrap(app, admin_user=admin_user, rotate=rotate, revoke_admin_tokens=revoke_admin_tokens)
    app.term.emit(result, as_json, lambda: _steps_table(app, result))
    changed = sum(1 for s in result.steps if s.action != "unchanged")
    app.term.success(f"Gitea identities for {result.ci_user}: {changed} change(s), "
                     f"{len(result.steps) - changed} unchanged")
    if any(s.what.startswith("token ") and s.action != "unchanged" for s in result.steps):
        app.term.info("new tokens reach pods as they start: agent Jobs and the mirror's next run at once; "
                      "the webhook receiver after `kubectl -n "
                      f"{app.namespace} rollout restart deployment/raibid-webhook`")


def bootstrap_after_up(app: Application, *, waited: bool) -> dict:
    """The Gitea step of `cluster up`: bootstrap once Gitea answers; say what to run when it does not."""
    from raibid.errors import Unreachable

    if not waited:
        app.term.info("Gitea identities: run `raibid gitea bootstrap` once Gitea is ready")
        return {"skipped": "not waited for"}
    probe = app.gitea_client(retries=0)
    try:
        probe.version()
    except Unreachable as e:
        app.term.warn(f"Gitea identities not made: {e.message}")
        app.term.info("run `raibid gitea bootstrap` when Gitea answers at gitea.url")
        return {"skipped": e.message}
    except RaibidError:
        pass  # Gitea answered (a closed Gitea refuses anonymous calls): the bootstrap signs in
    try:
        result = run_bootstrap(app)
    except RaibidError as e:  # the objects are applied; the identities are a step of their own
        app.term.warn(f"Gitea identities not made: {e.message}")
        app.term.info("fix it and run `raibid gitea bootstrap`" + (f" ({e.hint})" if e.hint else ""))
        return {"error": e.message}
    changed = [s for s in result.steps if s.action != "unchanged"]
    for s in changed:
        app.term.info(f"gitea: {s.action} {s.what}" + (f" ({s.detail})" if s.detail else ""))
    app.term.info(f"Gitea identities for {result.ci_user}: {len(changed)} change(s)")
    import dataclasses

    return dataclasses.asdict(result)


# ----------------------------------------------------------------------------- tokens


@gitea.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--name", default=None, help="Token name (default: raibid-<timestamp>).")
@click.option("--scopes", default=",".join(DEFAULT_SCOPES),
              show_default=True, help="Comma-separated scopes.")
@click.option("--store", is_flag=True, help="Save it in the raibid-gitea-token Secret instead of printing it.")
@click.option("--admin-user", metavar="USER", help="Admin user; its password is read from stdin.")
@json_option
@pass_app
def token_create(app: Application, name: str | None, scopes: str, store: bool, admin_user: str | None,
                 as_json: bool) -> None:
    """Create an API token with the admin's credentials.

    The credentials come from raibid's generated Secret (raibid-gitea-admin), or
    from --admin-user with the password on stdin (never as an argument). Without
    --store the token is printed once to stdout.
    """
    import datetime as dt

    from raibid.gitea.credentials import TOKEN_SECRET, store_token

    client, user = _admin_client(app, admin_user)
    name = name or "raibid-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    scope_list = [s.strip() for s in scopes.split(",") if s.strip()]
    tok = client.mint_token(user, name, scope_list)
    if store:
        store_token(app.kube, app.namespace, tok.value)
        app.term.success(f"token {tok.name} (…{tok.last_eight}) stored in Secret {app.namespace}/{TOKEN_SECRET}")
        if as_json:
            app.term.json({"name": tok.name, "scopes": tok.scopes, "stored": True})
        return
    if as_json:
        app.term.json({"name": tok.name, "scopes": tok.scopes, "token": tok.value, "stored": False})
    else:
        app.term.line(tok.value)
    app.term.info(f"token {tok.name} is shown once; keep it in ${app.cfg.gitea.token_env} or use --store")


# ----------------------------------------------------------------------------- orgs


@gitea.group()
def org() -> None:
    """Organisations."""


@org.command("create")
@click.argument("name")
@click.option("--visibility", type=click.Choice(VISIBILITIES), default="public",
              show_default=True)
@click.option("--description", default="")
@click.option("--exist-ok", is_flag=True, help="Succeed if it already exists.")
@json_option
@pass_app
def org_create(app: Application, name: str, visibility: str, description: str, exist_ok: bool, as_json: bool) -> None:
    """Create an organisation."""
    o, created = app.gitea.create_org(name, visibility=visibility, description=description, exist_ok=exist_ok)
    app.term.emit({"org": o, "created": created}, as_json,
                  lambda: app.term.success(f"org {o.name} {'created' if created else 'already exists'}"))


@org.command("list")
@json_option
@pass_app
def org_list(app: Application, as_json: bool) -> None:
    """Organisations."""
    orgs = app.gitea.list_orgs()
    app.term.emit(orgs, as_json, lambda: app.term.table(
        ["name", "visibility", "description"], [(o.name, o.visibility, o.description) for o in orgs]))


# ----------------------------------------------------------------------------- repos


@gitea.group()
def repo() -> None:
    """Repositories."""


@repo.command("create")
@click.argument("full_name", metavar="OWNER/NAME")
@click.option("--private", is_flag=True)
@click.option("--description", default="")
@click.option("--default-branch", default=None)
@click.option("--init", "auto_init", is_flag=True, help="Create an initial commit (README).")
@click.option("--exist-ok", is_flag=True, help="Succeed if it already exists.")
@json_option
@pass_app
def repo_create(app: Application, full_name: str, private: bool, description: str, default_branch: str | None,
                auto_init: bool, exist_ok: bool, as_json: bool) -> None:
    """Create a repository in an org (or for the token's user)."""
    from raibid.gitea import split_repo

    owner, name = split_repo(full_name)
    r, created = app.gitea.create_repo(owner, name, private=private, description=description,
                                       default_branch=default_branch, auto_init=auto_init, exist_ok=exist_ok)
    app.term.emit({"repo": r, "created": created}, as_json,
                  lambda: app.term.success(f"repo {r.full_name} {'created' if created else 'already exists'}: "
                                           f"{r.clone_url}"))


@repo.command("list")
@click.argument("owner", required=False)
@json_option
@pass_app
def repo_list(app: Application, owner: str | None, as_json: bool) -> None:
    """Repositories of OWNER (an org or user), or of the token's user."""
    repos = app.gitea.list_repos(owner)
    app.term.emit(repos, as_json, lambda: app.term.table(
        ["repo", "private", "mirror", "empty", "clone url"],
        [(r.full_name, r.private, r.mirror, r.empty, r.clone_url) for r in repos]))


@repo.command("show")
@click.argument("full_name", metavar="OWNER/NAME")
@json_option
@pass_app
def repo_show(app: Application, full_name: str, as_json: bool) -> None:
    """One repository."""
    from raibid.gitea import split_repo

    r = app.gitea.get_repo(*split_repo(full_name))
    app.term.emit(r, as_json, lambda: app.term.record(r))


@repo.command("delete")
@click.argument("full_name", metavar="OWNER/NAME")
@click.option("--yes", is_flag=True, help="Do not ask (required when stdin is not a terminal).")
@pass_app
def repo_delete(app: Application, full_name: str, yes: bool) -> None:
    """Delete a repository. Irreversible."""
    from raibid.gitea import split_repo

    owner, name = split_repo(full_name)
    confirm_or_refuse(app.term, f"delete Gitea repository {owner}/{name}", yes)
    app.gitea.delete_repo(owner, name)
    app.term.success(f"deleted {owner}/{name}")


# ----------------------------------------------------------------------------- hooks


@gitea.group()
def hook() -> None:
    """Repository webhooks."""


def _shown(h: Hook) -> Hook:
    """A hook as raibid prints it (table or JSON): credentials in its receiver URL masked."""
    import dataclasses

    return dataclasses.replace(h, url=redact_url(h.url))


@hook.command("add")
@click.argument("full_name", metavar="OWNER/NAME")
@click.option("--url", required=True, help="Receiver URL (in-cluster addresses are allowed).")
@click.option("--secret-env", metavar="VAR", help="Env var holding the HMAC secret (never passed as an argument).")
@click.option("--events", default="push", show_default=True, help="Comma-separated events.")
@click.option("--branch-filter", default="", help="Glob of branches that fire the hook.")
@json_option
@pass_app
def hook_add(app: Application, full_name: str, url: str, secret_env: str | None, events: str, branch_filter: str,
             as_json: bool) -> None:
    """Add an active webhook (Gitea's API default is inactive; raibid always sends active: true)."""
    from raibid.gitea import split_repo
    from raibid.http import url_problem

    problem = url_problem(url)
    if problem:
        raise UsageError(f"invalid --url {redact_url(url)}: {problem}",
                         hint="give the receiver's full URL, e.g. http://raibid-webhook.raibid-ci.svc:8080/hook")
    secret = ""
    if secret_env:
        secret = os.environ.get(secret_env, "")
        if not secret:
            raise UsageError(f"env var {secret_env} is empty or unset")
    h = app.gitea.add_hook(*split_repo(full_name), url, secret=secret,
                           events=[e.strip() for e in events.split(",") if e.strip()], branch_filter=branch_filter)
    h = _shown(h)
    app.term.emit(h, as_json, lambda: app.term.success(f"hook {h.id} -> {h.url} ({', '.join(h.events)})"))


@hook.command("list")
@click.argument("full_name", metavar="OWNER/NAME")
@json_option
@pass_app
def hook_list(app: Application, full_name: str, as_json: bool) -> None:
    """Webhooks of a repository."""
    from raibid.gitea import split_repo

    hooks = [_shown(h) for h in app.gitea.list_hooks(*split_repo(full_name))]
    app.term.emit(hooks, as_json, lambda: app.term.table(
        ["id", "type", "url", "events", "active", "branch filter"],
        [(h.id, h.type, h.url, ",".join(h.events), h.active, h.branch_filter) for h in hooks]))


# ----------------------------------------------------------------------------- registry


@gitea.group()
def registry() -> None:
    """Gitea's OCI container registry."""


@registry.command("config")
@click.option("--write", "write_path", type=click.Path(dir_okay=False), metavar="PATH",
              help="Write the file (mode 0600), e.g. /etc/rancher/k3s/registries.yaml.")
@click.option("--username", default=None, help="Registry user (default: gitea.ci_user, whose read:package "
                                                "token is in the raibid-gitea-registry Secret).")
@pass_app
def registry_config(app: Application, write_path: str | None, username: str | None) -> None:
    """Render k3s's registries.yaml for Gitea's registry, with the read:package token of gitea.ci_user.

    containerd resolves image hosts with the node's DNS, not cluster DNS, so
    gitea.url must be a node IP or hostname with the NodePort. Printed to stdout
    the token is redacted; --write puts the real one in the file.
    """
    from raibid.gitea.credentials import read_secret_token
    from raibid.gitea.identities import role
    from raibid.gitea.registry import registries_yaml

    secret = role("registry").secret
    token = read_secret_token(app.kube, app.namespace, secret)
    if not token:
        raise AuthError(f"no registry token: Secret {app.namespace}/{secret} is missing",
                        hint="run `raibid gitea bootstrap` (it makes the read:package token for "
                             f"{app.cfg.gitea.ci_user})")
    user = username or app.cfg.gitea.ci_user
    if write_path is None:
        app.term.stdout.write(registries_yaml(app.cfg.gitea.url, user, "<redacted: use --write PATH>"))
        app.term.info("the token is redacted on stdout; use --write PATH to write a usable file")
        return
    from raibid.fileio import write_private

    path = Path(write_path)
    write_private(path, registries_yaml(app.cfg.gitea.url, user, token), what="--write")
    app.term.success(f"wrote {path} (mode 0600)")
    app.term.info("k3s reads registries.yaml only when it starts: run `sudo systemctl restart k3s`")
