"""Gitea identities with least privilege: the CI user, its scoped tokens, and where each is kept.

No pod holds the admin's credentials. `raibid gitea bootstrap` (and `cluster up` for the
gitea component) runs :func:`bootstrap` as the site admin, with Basic auth from the
``raibid-gitea-admin`` Secret, and makes:

- a non-admin, *restricted* user ``gitea.ci_user`` (Gitea shows a restricted user only
  what it was granted: no public repos of others), with a random password nobody
  keeps (tokens are minted for it by the admin), no right to create organisations and
  no personal repositories;
- in every mirror org a team ``raibid-ci`` (code write, ``can_create_org_repo``, all of
  the org's repositories), and only when ``mirror.mode`` is ``pull`` or an entry has
  ``on_missing: delete`` its membership of the org's ``Owners`` team (Gitea lets only
  an org owner migrate into an org or delete a repository);
- read-only collaborator access to each trusted repository outside the mirror orgs and
  each ``webhook.gitea_repos`` repository, never to the GitOps config repo;
- one token per role, each in its own Secret with key ``token`` (``ROLES``).

Permissions come from the user, scopes from the token: a token can never do more than
its user may, so none of them can write the config repo (owned by the admin, raibid-ci
is no collaborator), a repo outside the mirror orgs, or users and orgs.
"""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raibid.errors import AuthError, ConfigError, NotFound, RaibidError, UsageError
from raibid.gitea.credentials import ADMIN_SECRET, TOKEN_SECRET, read_secret_token, store_secret
from raibid.gitea.names import check_owner, split_repo

if TYPE_CHECKING:
    from raibid.cluster.client import Kube
    from raibid.gitea.client import Gitea
    from raibid.gitea.models import Team

# The admin's Secrets (the chart's admin password, the operator's own admin token): no pod reads them.
ADMIN_SECRETS = (TOKEN_SECRET, ADMIN_SECRET)

TEAM = "raibid-ci"
OWNERS_TEAM = "Owners"  # the team Gitea makes with every organisation; its members own the org


@dataclass(frozen=True)
class Role:
    name: str
    secret: str
    scopes: tuple[str, ...]
    holder: str

    @property
    def token_name(self) -> str:
        return f"raibid-{self.name}"


# The role tokens, all of gitea.ci_user. Scopes are Gitea's (models/auth/access_token_scope.go);
# a route needs the scope of its category (read for GET, write for POST/PUT/PATCH/DELETE).
_SYNC_SCOPES = ("write:repository", "write:organization", "read:user")
ROLES: tuple[Role, ...] = (
    Role("agent", "raibid-gitea-agent", ("read:repository",),
         "agent pods (agent container): clone the repositories they build"),
    Role("mirror", "raibid-gitea-mirror", _SYNC_SCOPES,
         "the mirror CronJob: create repos in the mirror orgs (POST /orgs/{org}/repos is an organization "
         "route), push to them, mirror-sync, archive; GET /user needs read:user"),
    Role("webhook", "raibid-gitea-webhook", _SYNC_SCOPES,
         "the webhook receiver: the same sync as the mirror after a GitHub push (push mode pushes, pull mode "
         "calls mirror-sync), and branch heads"),
    Role("registry", "raibid-gitea-registry", ("read:package",),
         "k3s's containerd pulling images (`raibid gitea registry config`)"),
    Role("builder", "raibid-gitea-builder", ("write:package",),
         "the image-build Job (`raibid images build`): push raibid's images; the CLI turns it into the "
         "docker config.json Secret raibid-image-push, mounted by that Job alone"),
)
ROLE_NAMES = tuple(r.name for r in ROLES)
ROLE_SECRETS = tuple(r.secret for r in ROLES)


def role(name: str) -> Role:
    for r in ROLES:
        if r.name == name:
            return r
    raise UsageError(f"unknown Gitea role {name!r}", hint=f"one of {', '.join(ROLE_NAMES)}")


@dataclass
class IdentitySpec:
    """What bootstrap makes, from the config (``from_config``), as plain values."""
    ci_user: str
    admin_user: str
    mirror_orgs: list[str]
    mirror_owner: bool  # pull mode, or an entry that deletes: Gitea needs an org owner
    trusted: Any  # raibid.agents.trust.TrustPolicy
    build_repos: list[str]  # OWNER/NAME outside the mirror orgs that builds clone (webhook.gitea_repos)
    config_repo: str

    @classmethod
    def from_config(cls, cfg: Any) -> IdentitySpec:
        from raibid.agents.trust import TrustPolicy

        m = cfg.mirror
        orgs = [m.target_org] + [o.target_org for o in m.orgs if o.target_org]
        for r in m.repos:
            target = getattr(r, "target", None)
            if target:
                orgs.append(target.split("/", 1)[0])
        seen: dict[str, str] = {}
        for o in orgs:
            seen.setdefault(o.lower(), o)
        owner = m.mode == "pull" or any(o.on_missing == "delete" for o in m.orgs)
        return cls(ci_user=cfg.gitea.ci_user, admin_user=cfg.gitea.admin_user, mirror_orgs=list(seen.values()),
                   mirror_owner=owner, trusted=TrustPolicy.from_config(cfg.agents.trusted),
                   build_repos=list(cfg.webhook.gitea_repos), config_repo=cfg.gitops_repo)


@dataclass
class Step:
    what: str
    action: str  # created, updated, unchanged, removed, revoked, rotated, refused
    detail: str = ""


@dataclass
class BootstrapResult:
    ci_user: str
    steps: list[Step] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)  # role -> Secret name

    def add(self, what: str, action: str, detail: str = "") -> None:
        self.steps.append(Step(what, action, detail))


# ----------------------------------------------------------------------------- pods and admin Secrets

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS = {("apps/v1", "Deployment"): ("spec", "template", "spec"),
                  ("batch/v1", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
                  ("keda.sh/v1alpha1", "ScaledJob"): ("spec", "jobTargetRef", "template", "spec")}


def secret_refs(pod_spec: dict) -> set[str]:
    """Every Secret a pod spec reads: env ``secretKeyRef``, ``envFrom`` and Secret or projected volumes."""
    out: set[str] = set()
    for c in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or []) \
            + (pod_spec.get("ephemeralContainers") or []):
        for e in c.get("env") or []:
            ref = ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
            if ref:
                out.add(ref)
        for e in c.get("envFrom") or []:
            ref = (e.get("secretRef") or {}).get("name")
            if ref:
                out.add(ref)
    for v in pod_spec.get("volumes") or []:
        if (v.get("secret") or {}).get("secretName"):
            out.add(v["secret"]["secretName"])
        for src in (v.get("projected") or {}).get("sources") or []:
            if (src.get("secret") or {}).get("name"):
                out.add(src["secret"]["name"])
    return out


@dataclass
class PodHolder:
    kind: str
    name: str
    secrets: list[str]


def admin_secret_holders(kube: Kube, namespace: str) -> list[PodHolder]:
    """Deployments, CronJobs and ScaledJobs in the namespace whose pods would read an admin Secret."""
    out = []
    for (api_version, kind), path in POD_SPEC_PATHS.items():
        try:
            objs = kube.list(api_version, kind, namespace)
        except NotFound:  # the kind is not served (no KEDA): nothing of it can hold anything
            continue
        for obj in objs:
            spec: Any = obj
            for key in path:
                spec = (spec or {}).get(key) if isinstance(spec, dict) else None
            held = sorted(secret_refs(spec) & set(ADMIN_SECRETS)) if isinstance(spec, dict) else []
            if held:
                out.append(PodHolder(kind, obj["metadata"]["name"], held))
    return out


# ----------------------------------------------------------------------------- bootstrap


def bootstrap(admin: Gitea, kube: Kube, namespace: str, spec: IdentitySpec, *, rotate: Iterable[str] = (),
              revoke_admin_tokens: bool = False) -> BootstrapResult:
    """Make (or converge) the CI user, its grants and its role tokens. Idempotent.

    ``admin`` carries the site admin's Basic credentials. A role token is kept when its
    Secret's value still matches the token of that name Gitea lists (last eight
    characters) with the same scopes; otherwise, or when ``rotate`` names the role, the
    old token of that name is deleted and a new one stored. ``revoke_admin_tokens``
    deletes the admin token kept in ``raibid-gitea-token`` (what pods held before) and
    stores a fresh one there for the operator's CLI; it refuses while a workload still
    references an admin Secret.
    """
    ci = check_owner(spec.ci_user)
    if ci.lower() == spec.admin_user.lower():
        raise ConfigError(f"gitea.ci_user {ci!r} is the admin user", hint="pick another name (default raibid-ci)")
    rotate = set(rotate)
    for name in rotate:
        role(name)
    result = BootstrapResult(ci_user=ci)
    holders = admin_secret_holders(kube, namespace) if revoke_admin_tokens else []
    if holders:
        shown = ", ".join(f"{h.kind}/{h.name} ({', '.join(h.secrets)})" for h in holders)
        raise UsageError(f"not revoking the admin token: {shown} still reference(s) the admin's Secrets",
                         hint="apply the new templates first (`raibid cluster up`), then run this again")
    _ensure_user(admin, ci, result)
    for org in spec.mirror_orgs:
        _ensure_mirror_org(admin, org, ci, spec.mirror_owner, result)
    _ensure_read_grants(admin, ci, spec, result)
    _ensure_tokens(admin, kube, namespace, ci, rotate, result)
    if revoke_admin_tokens:
        _revoke_admin_token(admin, kube, namespace, spec.admin_user, result)
    return result


def _ensure_user(admin: Gitea, ci: str, result: BootstrapResult) -> None:
    user = admin.get_user(ci)
    email = f"{ci}@raibid.local"
    if user is None:
        # Gitea needs a password; nobody keeps this one (tokens are minted by the admin).
        admin.create_user(ci, email=email, password=_secrets.token_urlsafe(32))
        result.add(f"user {ci}", "created", "non-admin, restricted")
    elif user.is_admin:
        raise ConfigError(f"gitea.ci_user {ci!r} is a Gitea site admin; its tokens would be admin tokens",
                          hint="set gitea.ci_user to a user that is not an admin (or a new name)")
    elif user.restricted:
        result.add(f"user {ci}", "unchanged", "non-admin, restricted")
        return
    else:
        result.add(f"user {ci}", "updated", "made restricted")
    admin.edit_user(ci, email=email, restricted=True, allow_create_organization=False, max_repo_creation=0,
                    must_change_password=False, visibility="private")


_TEAM_FIELDS = {"description": "raibid CI: writes the mirrored repositories (made by `raibid gitea bootstrap`)",
                "permission": "write", "units": ["repo.code"], "units_map": {"repo.code": "write"},
                "can_create_org_repo": True, "includes_all_repositories": True}


def _team_ok(t: Team) -> bool:
    return (t.permission == "write" and t.can_create_org_repo and t.includes_all_repositories
            and t.units_map.get("repo.code") == "write"
            and all(v in ("none", "read") for k, v in t.units_map.items() if k != "repo.code"))


def _ensure_mirror_org(admin: Gitea, org: str, ci: str, owner: bool, result: BootstrapResult) -> None:
    _, created = admin.create_org(org, visibility="private", exist_ok=True)
    if created:
        result.add(f"org {org}", "created", "private")
    teams = {t.name.lower(): t for t in admin.list_teams(org)}
    team = teams.get(TEAM.lower())
    if team is None:
        team = admin.create_team(org, TEAM, **_TEAM_FIELDS)
        result.add(f"team {org}/{TEAM}", "created", "code write, can create repos, all repos")
    elif not _team_ok(team):
        team = admin.edit_team(team.id, TEAM, **_TEAM_FIELDS)
        result.add(f"team {org}/{TEAM}", "updated", "code write, can create repos, all repos")
    else:
        result.add(f"team {org}/{TEAM}", "unchanged")
    _membership(admin, team.id, f"{org}/{TEAM}", ci, True, result)
    owners = teams.get(OWNERS_TEAM.lower())
    if owners is not None:
        _membership(admin, owners.id, f"{org}/{OWNERS_TEAM}", ci, owner, result)
    elif owner:
        raise NotFound(f"Gitea: org {org} has no {OWNERS_TEAM} team", hint="is it an organisation raibid can manage?")


def _membership(admin: Gitea, team_id: int, label: str, ci: str, want: bool, result: BootstrapResult) -> None:
    members = {m.lower() for m in admin.team_members(team_id)}
    has = ci.lower() in members
    if want and not has:
        admin.add_team_member(team_id, ci)
        result.add(f"member {label}", "created", ci)
    elif not want and has:
        admin.remove_team_member(team_id, ci)
        result.add(f"member {label}", "removed", f"{ci} (not needed: no pull mode, no on_missing delete)")
    elif want:
        result.add(f"member {label}", "unchanged", ci)


def _ensure_read_grants(admin: Gitea, ci: str, spec: IdentitySpec, result: BootstrapResult) -> None:
    """Read-only collaborator on each trusted (or listed) repository outside the mirror orgs."""
    mirror = {o.lower() for o in spec.mirror_orgs}
    config = spec.config_repo.lower()
    listed = {r.lower() for r in spec.build_repos}
    if config in listed:
        result.add(f"repo {spec.config_repo}", "refused", "the GitOps config repo is never granted to CI")
    for full in spec.build_repos:
        split_repo(full)  # a name Gitea would refuse is a config error, before any request
    wanted = []
    if spec.trusted.owners or spec.trusted.patterns or listed:
        for repo in admin.search_repos():
            full = repo.full_name
            low = full.lower()
            if low == config or repo.owner.lower() in mirror or repo.owner.lower() == ci.lower():
                continue
            if low in listed or spec.trusted.is_trusted(full):
                wanted.append(repo)
    for repo in wanted:
        have = admin.collaborator_permission(repo.owner, repo.name, ci)
        if have is None:
            admin.add_collaborator(repo.owner, repo.name, ci, "read")
            result.add(f"collaborator {repo.full_name}", "created", "read")
        elif have != "read":
            admin.add_collaborator(repo.owner, repo.name, ci, "read")
            result.add(f"collaborator {repo.full_name}", "updated", f"{have} -> read")
        else:
            result.add(f"collaborator {repo.full_name}", "unchanged", "read")


def _ensure_tokens(admin: Gitea, kube: Kube, namespace: str, ci: str, rotate: set[str],
                   result: BootstrapResult) -> None:
    existing = {t.name: t for t in admin.list_tokens(ci)}
    for r in ROLES:
        result.secrets[r.name] = r.secret
        value = read_secret_token(kube, namespace, r.secret)
        listed = existing.get(r.token_name)
        current = (bool(value) and listed is not None and listed.last_eight == value[-8:]
                   and set(listed.scopes) == set(r.scopes))
        if current and r.name not in rotate:
            result.add(f"token {r.token_name}", "unchanged", f"Secret {r.secret}")
            continue
        if listed is not None:
            admin.delete_token(ci, listed.id)
        tok = admin.mint_token(ci, r.token_name, list(r.scopes))
        store_secret(kube, namespace, r.secret, tok.value, role_name=r.name)
        action = "rotated" if r.name in rotate and value else ("updated" if value else "created")
        result.add(f"token {r.token_name}", action, f"Secret {r.secret} ({','.join(r.scopes)})")


def _revoke_admin_token(admin: Gitea, kube: Kube, namespace: str, admin_user: str, result: BootstrapResult) -> None:
    """Delete the admin token kept in raibid-gitea-token (pods held it) and keep a fresh one for the CLI."""
    import datetime as dt

    from raibid.gitea.models import DEFAULT_SCOPES

    old = read_secret_token(kube, namespace, TOKEN_SECRET)
    if old:
        for t in admin.list_tokens(admin_user):
            if t.last_eight and t.last_eight == old[-8:]:
                admin.delete_token(admin_user, t.id)
                result.add(f"admin token {t.name}", "revoked", f"was in Secret {TOKEN_SECRET}")
    name = "raibid-cli-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    tok = admin.mint_token(admin_user, name, list(DEFAULT_SCOPES))
    store_secret(kube, namespace, TOKEN_SECRET, tok.value)
    result.add(f"admin token {name}", "created", f"Secret {TOKEN_SECRET}, for the operator's CLI only")


# ----------------------------------------------------------------------------- checks


@dataclass
class RoleCheck:
    role: str
    secret: str
    state: str  # ok, missing, rejected, admin, unknown
    detail: str = ""


def check_role_tokens(gitea_url: str, kube: Kube, namespace: str, *, admin: Gitea | None = None,
                      admin_user: str = "", **client_kw: Any) -> list[RoleCheck]:
    """Whether each role Secret's token is a non-admin's: GET /api/v1/user with it (``is_admin``).

    A role token without ``read:user`` gets 403 there (Gitea knew the token, the scope
    refused): then, when ``admin`` is given, the token is looked for among the admin
    user's tokens by its last eight characters.
    """
    from raibid.gitea.client import Gitea

    out = []
    admin_tokens = None
    for r in ROLES:
        value = read_secret_token(kube, namespace, r.secret)
        if not value:
            out.append(RoleCheck(r.name, r.secret, "missing", "no Secret (or no key token)"))
            continue
        client = Gitea(gitea_url, value, **client_kw)
        try:
            user = client.whoami()
        except AuthError as e:
            if "(401)" in e.message:
                out.append(RoleCheck(r.name, r.secret, "rejected", "Gitea does not know this token"))
                continue
            if admin is None:
                out.append(RoleCheck(r.name, r.secret, "ok", "scoped token (no read:user)"))
                continue
            try:
                if admin_tokens is None:
                    admin_tokens = {t.last_eight for t in admin.list_tokens(admin_user)}
            except RaibidError as e2:
                out.append(RoleCheck(r.name, r.secret, "unknown", f"cannot list {admin_user}'s tokens: {e2.message}"))
                continue
            if value[-8:] in admin_tokens:
                out.append(RoleCheck(r.name, r.secret, "admin", f"a token of the admin user {admin_user}"))
            else:
                out.append(RoleCheck(r.name, r.secret, "ok", "scoped token, not one of the admin's"))
            continue
        except RaibidError as e:
            out.append(RoleCheck(r.name, r.secret, "unknown", e.message))
            continue
        if user.is_admin:
            out.append(RoleCheck(r.name, r.secret, "admin", f"belongs to the site admin {user.login}"))
        else:
            out.append(RoleCheck(r.name, r.secret, "ok", f"user {user.login}"))
    return out

