"""Gitea: reachable, the token valid, the OCI registry enabled."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from raibid.doctor.checks import Check, Status
from raibid.errors import RaibidError

if TYPE_CHECKING:
    from raibid.app import Application


def gitea_checks(app: Application) -> Iterable[Check]:
    """Gitea reachable, the token valid, the OCI registry enabled."""
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
