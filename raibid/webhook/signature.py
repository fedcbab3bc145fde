"""HMAC-SHA256 signatures as Gitea and GitHub send them, compared in constant time.

Gitea: ``X-Gitea-Signature: <hex>``; GitHub: ``X-Hub-Signature-256: sha256=<hex>``. Both
are the HMAC-SHA256 of the raw body with the hook's secret. Nothing here logs a value.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: bytes, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body`` (what Gitea sends; GitHub prefixes ``sha256=``)."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    # WSGI headers are latin-1 text; bytes keep compare_digest total for any header value.
    return hmac.compare_digest(given.strip().lower().encode("latin-1", "replace"), expected.encode())


def verify_gitea(secret: bytes, body: bytes, header: str | None) -> bool:
    return bool(secret) and bool(header) and _same(header or "", sign(secret, body))


def verify_github(secret: bytes, body: bytes, header: str | None) -> bool:
    if not secret or not header:
        return False
    scheme, _, digest = header.strip().partition("=")
    return scheme.lower() == "sha256" and _same(digest, sign(secret, body))
