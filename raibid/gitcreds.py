"""Credentials for git child processes, and scrubbing them out of git's messages.

A token reaches git only through env-injected config (``GIT_CONFIG_COUNT`` /
``GIT_CONFIG_KEY_n`` / ``GIT_CONFIG_VALUE_n``, git >= 2.31) as an
``http.<origin>/.extraHeader``, scoped to the one host it belongs to. So it is
never in argv (``ps`` shows argv to every user), never in a repository's
``.git/config`` and never in a remote URL that git would echo in an error.
Shared by the mirror (GitHub and Gitea) and the agent runtime (Gitea).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from raibid.errors import UsageError, redact_urls_in

# git must never ask on a terminal, nor use a stored or cached credential; the header is the only one.
# Nor may it read a user's or the system's config: a build that wrote ~/.gitconfig (a hooksPath, a
# credential helper, an alias) would otherwise run code in the next git that holds a token.
BASE_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "GCM_INTERACTIVE": "never",
            "LC_ALL": "C", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}

# User names a token is sent with in Basic auth (GitHub, Gitea and the agents' default), for scrubbing.
_USERNAMES = ("x-access-token", "x", "git", "oauth2", "raibid")


def origin_of(url: str) -> str:
    """``scheme://host[:port]/`` of an http(s) URL: the scope of an ``http.<url>.*`` setting."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"not an http(s) URL: {scrub(url)}")
    host = parts.hostname
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}/"


def auth_header(token: str, *, scheme: str = "basic", username: str = "x-access-token") -> str:
    """``Authorization: ...`` for a token: Basic (GitHub and Gitea both take a token as the password) or Bearer."""
    if scheme == "bearer":
        return f"Authorization: Bearer {token}"
    basic = base64.b64encode(f"{username}:{token}".encode()).decode()
    return f"Authorization: Basic {basic}"


def git_env(creds: Mapping[str, str | None] | None = None, *, base: Mapping[str, str] | None = None,
            scheme: str = "basic", username: str = "x-access-token") -> dict[str, str]:
    """A full environment for a git child process; ``creds`` maps a URL (any URL on the host) to a token.

    Every token becomes ``http.<origin>/.extraHeader``, so git sends it only to
    that host. Git config injected through ``base``'s environment is dropped, so
    the caller's env can never add a second credential header; no user or system
    config file is read (``GIT_CONFIG_GLOBAL=/dev/null``, ``GIT_CONFIG_NOSYSTEM``)
    and no hook runs (``core.hooksPath=/dev/null``).
    """
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("GIT_CONFIG_") and k not in ("GIT_DIR", "GIT_WORK_TREE")}
    env.update(BASE_ENV)
    settings: list[tuple[str, str]] = [("credential.helper", ""), ("core.askPass", "")]
    for url, token in (creds or {}).items():
        if token:
            settings.append((f"http.{origin_of(url)}.extraHeader", auth_header(token, scheme=scheme,
                                                                             username=username)))
    settings.append(("core.hooksPath", "/dev/null"))  # no hook runs, not even one in the repository
    env["GIT_CONFIG_COUNT"] = str(len(settings))
    for i, (key, value) in enumerate(settings):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def strip_git_auth(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the injected git config (for processes that must not inherit the token)."""
    return {k: v for k, v in env.items()
            if not (k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")) or k == "GIT_CONFIG_COUNT")}


_URI_SAFE = ";,/?:@&=+$-_.!~*'()#"  # what encodeURI leaves as it is
_BASE64_WRAPS = (76, 64)


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def secret_forms(token: str | None, username: str = "raibid") -> list[str]:
    """Every form in which a secret could appear in output: plain, URL-encoded, base64 (also where the
    value sits at any offset in a longer base64 text), each line of a multi-line value, and inside a
    Basic header. Longest first, so a longer form is masked before a shorter one inside it."""
    if not token:
        return []
    from urllib.parse import quote, quote_plus

    raw = token.encode()
    # URL encodings: JavaScript's encodeURIComponent/encodeURI, Python's quote (safe "/" by default) and
    # quote_plus, each with upper- and lower-case hex digits (both are valid percent-encodings).
    encoded = {quote(token, safe=""), quote(token), quote(token, safe=_URI_SAFE), quote_plus(token),
               quote(token, safe="-_.!~*'()")}
    forms = {token, *encoded, *(_lower_hex(e) for e in encoded)}
    forms |= {line for line in token.splitlines() if len(line.strip()) >= 4}
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        text = enc(raw).decode()
        forms.add(text)
        forms.add(text.rstrip("="))
        for width in _BASE64_WRAPS:  # `base64` wraps at 76 columns, PEM and openssl at 64: each line is a form
            if len(text) > width:
                forms |= {text[i:i + width] for i in range(0, len(text), width) if len(text[i:i + width]) >= 8}
        for offset in (0, 1, 2):  # the value after 0, 1 or 2 other bytes: the groups it fills encode the same
            text = enc(b"\0" * offset + raw).decode()
            stable = text[4 if offset else 0:(offset + len(raw)) // 3 * 4]
            if len(stable) >= 8:
                forms.add(stable)
    forms |= {base64.b64encode(f"{u}:{token}".encode()).decode() for u in dict.fromkeys((username, *_USERNAMES))}
    return sorted((f for f in forms if f and "\n" not in f), key=len, reverse=True)


def mask_forms(secrets: Iterable[str | None], username: str = "raibid") -> list[bytes]:
    """:func:`secret_forms` of every secret as bytes, longest first: what :func:`mask` replaces."""
    forms = {f.encode() for s in secrets if s for f in secret_forms(s, username)}
    return sorted(forms, key=len, reverse=True)


def mask(data: bytes, forms: list[bytes]) -> bytes:
    """``data`` with every form replaced by ``***`` (the stored log's masker; forms from :func:`mask_forms`)."""
    for form in forms:
        if form in data:
            data = data.replace(form, b"***")
    return data


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove secrets (every form of :func:`secret_forms`), URL userinfo and Authorization values from text."""
    out = redact_urls_in(text)
    for form in mask_forms(secrets):
        out = out.replace(form.decode(), "***")
    return re.sub(r"(Authorization:\s*\w+\s+)\S+", r"\1***", out, flags=re.I)
