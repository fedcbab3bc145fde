"""Does an image exist? The OCI distribution API's manifest lookup, with the registry's token auth.

``GET /v2/<name>/manifests/<tag>`` answers 401 with ``WWW-Authenticate: Bearer realm=...,service=...``;
the client asks the realm for a token (Basic auth with the pull credential, one ``scope`` per
repository) and retries with ``Authorization: Bearer <token>``. One token covers every repository
asked about, so checking N images costs N manifest requests plus one challenge and one token request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from raibid.errors import AuthError, RaibidError

ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Manifest:
    repository: str
    tag: str
    exists: bool
    digest: str | None = None
    platforms: list[str] = field(default_factory=list)  # os/arch of an index; empty for a single manifest


def parse_challenge(header: str) -> dict[str, str]:
    """``Bearer realm="https://r/v2/token",service="container_registry"`` -> {realm, service}."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return dict(_PARAM.findall(params))


class Registry:
    """A registry at ``base_url`` (``http://host:port``), read with one pull credential."""

    def __init__(self, base_url: str, username: str, password: str | None, *, timeout: float = 10.0) -> None:
        from raibid.http import make_session

        self.base = base_url.rstrip("/")
        self.auth = (username, password) if password else None
        self.timeout = timeout
        self.session = make_session(retries=2, backoff=0.2, total_timeout=timeout * 3, user_agent="raibid")
        self.token: str | None = None
        self.requests = 0

    def _get(self, url: str, **kw: Any) -> Any:
        from raibid.http import send

        self.requests += 1
        return send(self.session, "GET", url, what=f"GET {url.removeprefix(self.base)}", service="the registry",
                    base=self.base, timeout=self.timeout, **kw)

    def _login(self, challenge: str, repositories: list[str]) -> None:
        params = parse_challenge(challenge)
        if "realm" not in params:
            raise AuthError(f"the registry at {self.base} asked for {challenge.split(' ')[0] or 'no'} auth, "
                            "not a Bearer token")
        query = [("service", params["service"])] if "service" in params else []
        query += [("scope", f"repository:{r}:pull") for r in repositories]
        resp = self._get(params["realm"], params=query, auth=self.auth)
        if resp.status_code in (401, 403):
            raise AuthError(f"the registry's token endpoint refused the pull credential ({resp.status_code})",
                            hint="`raibid gitea bootstrap` re-creates the registry role's token")
        try:
            body = resp.json()
        except ValueError:
            body = {}
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if resp.status_code != 200 or not token:
            raise RaibidError(f"the registry's token endpoint answered {resp.status_code} without a token")
        self.token = token

    def manifests(self, refs: list[tuple[str, str]]) -> list[Manifest]:
        """Each (repository, tag): whether the manifest exists, its digest and platforms."""
        repos = sorted({r for r, _ in refs})
        return [self.manifest(r, t, repos) for r, t in refs]

    def manifest(self, repository: str, tag: str, scope: list[str] | None = None) -> Manifest:
        url = f"{self.base}/v2/{quote(repository, safe='/')}/manifests/{quote(tag, safe='')}"
        for attempt in (1, 2):
            headers = {"Accept": ACCEPT}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            resp = self._get(url, headers=headers)
            if resp.status_code == 401 and attempt == 1:
                self._login(resp.headers.get("WWW-Authenticate", ""), scope or [repository])
                continue
            break
        if resp.status_code == 404:
            return Manifest(repository, tag, False)
        if resp.status_code in (401, 403):
            raise AuthError(f"the registry refused to read {repository}:{tag} ({resp.status_code})",
                            hint="the registry role's user must be able to read the raibid org's packages")
        if resp.status_code != 200:
            raise RaibidError(f"the registry answered {resp.status_code} for {repository}:{tag}")
        platforms: list[str] = []
        try:
            body = resp.json()
        except ValueError:
            body = {}
        for m in (body.get("manifests") or []) if isinstance(body, dict) else []:
            p = m.get("platform") or {}
            if p.get("architecture") and p.get("architecture") != "unknown":
                platforms.append(f"{p.get('os', 'linux')}/{p['architecture']}")
        return Manifest(repository, tag, True, resp.headers.get("Docker-Content-Digest"), sorted(set(platforms)))
