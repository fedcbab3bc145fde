"""Passwords raibid generates once and keeps: generation, and reading them back from live Secrets."""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Iterable
from typing import Any

# (Secret name, data key, template variable) for every password and key raibid generates. One
# Secret may hold several: raibid-webhook has the hooks' HMAC secret and the job pages' key.
GENERATED_SECRETS = (("raibid-redis", "password", "redis_password"),
                     ("raibid-gitea-admin", "password", "gitea_admin_password"),
                     ("raibid-webhook", "secret", "webhook_secret"),
                     ("raibid-webhook", "page-key", "webhook_page_key"))


def generate_secrets() -> dict[str, str]:
    """Fresh values for every generated password (used only for the values no live Secret holds yet)."""
    return {var: _secrets.token_urlsafe(32 if var == "webhook_page_key" else 24) for _, _, var in GENERATED_SECRETS}


def b64decode(value: str | None) -> str:
    """A Secret's ``data`` value as text ('' for none). The one base64 decoder for Secret data."""
    import base64

    return base64.b64decode(value).decode() if value else ""


def b64encode(value: Any) -> str:
    import base64

    return base64.b64encode(str(value).encode()).decode()


def secret_value(secret: dict | None, key: str) -> str:
    """One decoded value of a live Secret ('' when the Secret or the key is missing)."""
    return b64decode(((secret or {}).get("data") or {}).get(key)).strip() if secret else ""


def generated_secrets_from(objects: Iterable[dict[str, Any]], namespace: str) -> dict[str, str]:
    """Passwords raibid generated earlier, from live Secrets, so `up` keeps instead of rotating them.

    A key a live Secret does not hold yet (the page key, added to an older raibid-webhook) is
    left out, so `up` generates it once and keeps it from then on.
    """
    out = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        if obj.get("kind", "Secret") != "Secret" or meta.get("namespace") != namespace:
            continue
        data = obj.get("data") or {}
        for name, key, var in GENERATED_SECRETS:
            if name == meta.get("name") and data.get(key):
                out[var] = b64decode(data[key])
    return out
