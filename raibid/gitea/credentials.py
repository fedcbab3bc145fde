"""Where Gitea credentials come from: the env, a token file, or raibid's Secrets in the cluster.

Functions take the values they need (the token, a file name, a ``Kube``), never
the Application, so the agent runtime and cron scripts can call them too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from raibid.cluster.labels import FIELD_MANAGER, GENERATED, common_labels
from raibid.cluster.secrets import b64encode, secret_value
from raibid.errors import AuthError, ConfigError, NotFound, Unreachable

if TYPE_CHECKING:
    from raibid.cluster.client import Kube

TOKEN_SECRET = "raibid-gitea-token"
ADMIN_SECRET = "raibid-gitea-admin"


def resolve_token(*, env_name: str, env_value: str | None, token_file: str | None, kube: Kube | None,
                  namespace: str) -> tuple[str | None, str | None]:
    """The API token and where it came from: the env var, the token file, or the cluster Secret.

    ``kube`` is None when there is no kubeconfig. A cluster that cannot be read
    (unreachable, forbidden) means no token from it, not a failure: a command that
    needs the token then says that none was found.
    """
    if env_value:
        return env_value.strip(), f"env {env_name}"
    if token_file:
        path = Path(token_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"gitea.token_file {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"gitea.token_file {path}: not UTF-8 text (is it the token file?)") from None
        if text:
            return text, f"file {path}"
    if kube is not None:
        try:
            secret = kube.get("v1", "Secret", TOKEN_SECRET, namespace)
        except (Unreachable, AuthError, NotFound, ConfigError):
            secret = None
        token = secret_value(secret, "token")
        if token:
            return token, f"secret {namespace}/{TOKEN_SECRET}"
    return None, None


def admin_credentials(kube: Kube, namespace: str, default_user: str) -> tuple[str, str]:
    """The admin user and password from raibid's generated Secret in the cluster."""
    secret = kube.get("v1", "Secret", ADMIN_SECRET, namespace)
    password = secret_value(secret, "password")
    if not password:
        raise NotFound(f"Secret {namespace}/{ADMIN_SECRET} not found",
                       hint="run `raibid cluster up -c gitea`, or pass --admin-user and --password-stdin")
    return secret_value(secret, "username") or default_user, password


def store_token(kube: Kube, namespace: str, token: str) -> None:
    """Save the operator's admin token in the raibid-gitea-token Secret (server-side apply)."""
    store_secret(kube, namespace, TOKEN_SECRET, token)


def store_secret(kube: Kube, namespace: str, name: str, token: str, *, role_name: str = "") -> None:
    """Keep a token in its own Secret (key ``token``), by server-side apply; kept by `down` and `--prune`."""
    annotations = {GENERATED: "true"}
    if role_name:
        annotations["raibid.dev/gitea-role"] = role_name
    kube.apply({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace, "labels": common_labels("gitea"),
                             "annotations": annotations},
                "type": "Opaque", "data": {"token": b64encode(token)}},
               field_manager=FIELD_MANAGER, force=True)


def read_secret_token(kube: Kube, namespace: str, name: str) -> str:
    """The ``token`` of a Secret ('' when the Secret or the key is missing)."""
    try:
        return secret_value(kube.get("v1", "Secret", name, namespace), "token")
    except NotFound:
        return ""
