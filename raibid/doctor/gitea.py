"""Gitea: reachable, the token valid, the OCI registry enabled; no pod holds an admin credential."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from raibid.doctor.checks import Check, Status
from raibid.errors import RaibidError

if TYPE_CHECKING:
    from raibid.app import Application
    from raibid.cluster.client import Kube


def gitea_checks(app: Application) -> Iterable[Check]:
    """Gitea reachable, the token valid, the OCI registry enabled; the role tokens not an admin's."""
    yield from admin_secret_check(app)
    try:
        g = app.gitea
        st = g.status(app.cfg.gitea.admin_user)
    except RaibidError as e:
        yield Check("gitea", Status.FAIL, e.message, e.hint or "")
        return
    if not st.reachable:
        yield Check("gitea", Status.FAIL, st.error or f"{st.url} unreachable",
                    "`raibid cluster up -c gitea`; check gitea.url (a node IP and the NodePort)")
        return
    version = f"Gitea {st.version}" if st.version else "Gitea, version unknown"
    if st.error:
        yield Check("gitea", Status.FAIL, f"{st.url} ({version}): {st.error}",
                    "check Gitea's logs, and that gitea.url is Gitea's own address")
    else:
        yield Check("gitea", Status.OK, f"{st.url} ({version})")
    if not st.token_source:
        yield Check("gitea-token", Status.FAIL, "no token",
                    f"set ${app.cfg.gitea.token_env}, gitea.token_file, or `raibid gitea token create --store`")
    elif st.token_valid:
        yield Check("gitea-token", Status.OK, f"valid for {st.token_user} ({st.token_source})")
    elif st.token_valid is None:
        yield Check("gitea-token", Status.FAIL, f"not checked ({st.token_source}): {st.error or 'no answer'}",
                    "see the gitea check; `raibid gitea status` shows what Gitea answered")
    else:
        yield Check("gitea-token", Status.FAIL, f"rejected by Gitea ({st.token_source})",
                    "create a new one: `raibid gitea token create --store`")
    if st.registry_enabled is None:
        yield Check("gitea-registry", Status.FAIL, "not checked", "see the gitea check")
    elif st.registry_enabled:
        yield Check("gitea-registry", Status.OK, "OCI registry enabled (/v2/)")
    else:
        yield Check("gitea-registry", Status.FAIL, "OCI registry disabled",
                    "set [packages] ENABLED=true (the raibid HelmChart does)")
    yield from role_token_checks(app)


MIGRATE_HINT = ("`raibid gitea bootstrap`, then `raibid cluster up` (the templates read the role Secrets), "
                "then `raibid gitea bootstrap --revoke-admin-tokens`")


def _kube(app: Application) -> Kube | None:
    if not app.kubeconfig_files:
        return None
    try:
        return app.kube
    except RaibidError:
        return None


def admin_secret_check(app: Application) -> Iterable[Check]:
    """Fails when a Deployment, CronJob or ScaledJob in the namespace references an admin Secret."""
    from raibid.gitea.identities import ADMIN_SECRETS, admin_secret_holders

    kube = _kube(app)
    if kube is None:
        yield Check("gitea-admin-in-pods", Status.SKIP, "no cluster", required=False)
        return
    try:
        holders = admin_secret_holders(kube, app.namespace)
    except RaibidError as e:
        yield Check("gitea-admin-in-pods", Status.SKIP, f"cannot list workloads: {e.message}", required=False)
        return
    if not holders:
        yield Check("gitea-admin-in-pods", Status.OK,
                    f"no workload in {app.namespace} reads {' or '.join(ADMIN_SECRETS)}")
        return
    for h in holders:
        yield Check("gitea-admin-in-pods", Status.FAIL,
                    f"{h.kind} {app.namespace}/{h.name} reads the admin's {', '.join(h.secrets)}", MIGRATE_HINT)


def role_token_checks(app: Application) -> Iterable[Check]:
    """Each role Secret's token: present, known to Gitea, and not an admin's (GET /api/v1/user: is_admin)."""
    from raibid.gitea.credentials import admin_credentials
    from raibid.gitea.identities import check_role_tokens

    kube = _kube(app)
    if kube is None:
        return
    admin = None
    admin_user = app.cfg.gitea.admin_user
    try:
        admin_user, password = admin_credentials(kube, app.namespace, admin_user)
        admin = app.gitea_client(basic=(admin_user, password))
    except RaibidError:
        pass  # no admin Secret: a scoped token is then judged by GET /user alone
    try:
        results = check_role_tokens(app.cfg.gitea.url, kube, app.namespace, admin=admin, admin_user=admin_user,
                                    timeout=app.cfg.gitea.timeout, retries=0,
                                    total_timeout=app.cfg.gitea.total_timeout)
    except RaibidError as e:
        yield Check("gitea-roles", Status.SKIP, e.message, required=False)
        return
    for r in results:
        name = f"gitea-role {r.role}"
        if r.state == "ok":
            yield Check(name, Status.OK, f"Secret {r.secret}: {r.detail}")
        elif r.state == "missing":
            yield Check(name, Status.WARN, f"Secret {r.secret}: {r.detail}", "run `raibid gitea bootstrap`",
                        required=False)
        elif r.state == "admin":
            yield Check(name, Status.FAIL, f"Secret {r.secret} holds an admin token ({r.detail})",
                        f"`raibid gitea bootstrap --rotate {r.role}`")
        elif r.state == "rejected":
            yield Check(name, Status.FAIL, f"Secret {r.secret}: {r.detail}", f"`raibid gitea bootstrap --rotate {r.role}`")
        else:
            yield Check(name, Status.WARN, f"Secret {r.secret}: {r.detail}", required=False)
