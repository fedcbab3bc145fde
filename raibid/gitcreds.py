"""Hand a token to git without it ever touching argv, ``.git/config`` or a log.

git reads extra config from the environment (``GIT_CONFIG_COUNT`` and
``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n``, git >= 2.31). ``git_env`` uses that
to add an ``http.<url>.extraHeader`` carrying HTTP Basic credentials, scoped to
the server's URL, so git sends the token to that server only and nothing is
written to disk or shown by ``ps``. ``scrub`` removes the token (plain, base64
and inside URLs) from any text git prints, before it reaches a message or a log.

Used by the agent runtime (clone from Gitea) and by anything else that runs git
against a token-protected server (mirroring).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from raibid.errors import UsageError

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def base_url(url: str) -> str:
    """``scheme://host[:port]/``: the prefix the credential header is scoped to."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"not an http(s) URL: {redact(url)}")
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}/"


def basic_header(user: str, token: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def git_env(url: str, token: str | None, *, user: str = "raibid",
            base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a git process talking to ``url`` with ``token``.

    Keeps any ``GIT_CONFIG_*`` entries already in ``base`` and appends ours. Never
    prompts (``GIT_TERMINAL_PROMPT=0``), so a bad token fails fast instead of hanging.
    """
    env = dict(base or {})
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_ASKPASS", "true")  # no askpass prompt either; our header is the only credential
    entries: list[tuple[str, str]] = [("credential.helper", "")]  # no stored or cached credentials
    if token:
        entries.append((f"http.{base_url(url)}.extraHeader", basic_header(user, token)))
    n = int(env.get("GIT_CONFIG_COUNT") or 0)
    for key, value in entries:
        env[f"GIT_CONFIG_KEY_{n}"] = key
        env[f"GIT_CONFIG_VALUE_{n}"] = value
        n += 1
    env["GIT_CONFIG_COUNT"] = str(n)
    return env


def strip_git_auth(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the injected git config (for processes that must not inherit the token)."""
    return {k: v for k, v in env.items()
            if not (k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")) or k == "GIT_CONFIG_COUNT")}


def secret_forms(token: str | None, user: str = "raibid") -> list[str]:
    """Every form in which a token could appear in git's output."""
    if not token:
        return []
    forms = [token, base64.b64encode(f"{user}:{token}".encode()).decode()]
    return forms


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials removed: each secret, and any ``user:password@`` in URLs."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)


def redact(url: str) -> str:
    return scrub(url)
