"""An OCI distribution registry stand-in on 127.0.0.1, with the token auth flow Gitea's registry uses.

- ``GET /v2/<name>/manifests/<ref>`` without a Bearer token granting ``repository:<name>:pull`` answers
  401 with ``WWW-Authenticate: Bearer realm="<base>/v2/token",service="container_registry",scope=...``
  (distribution's token auth spec; an insufficient token gets ``error="insufficient_scope"``).
- ``GET /v2/token?service=...&scope=...`` with Basic auth of a known user returns ``{"token": ...}``
  granting the pull scopes it was asked for; wrong credentials get 401.
- A known manifest answers 200 with ``Docker-Content-Digest`` (an OCI index when it has platforms);
  an unknown one 404 with ``MANIFEST_UNKNOWN``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from tests.harness.served import Handler, Served


@dataclass
class Req:
    method: str
    path: str
    status: int


class RegistryFake(Served):
    def __init__(self, users: dict[str, str] | None = None) -> None:
        self.users = dict(users or {})
        self.images: dict[tuple[str, str], list[str]] = {}  # (name, tag) -> platforms ("linux/arm64")
        self.tokens: dict[str, set[str]] = {}  # token -> scopes granted
        self.log: list[Req] = []
        self.lock = threading.Lock()

    def start(self) -> RegistryFake:
        self._serve(_RegistryHandler)
        return self

    def push(self, name: str, tag: str, platforms: tuple[str, ...] = ("linux/arm64",)) -> None:
        self.images[(name, tag)] = list(platforms)

    def requests(self, path_prefix: str = "") -> list[Req]:
        with self.lock:
            return [r for r in self.log if r.path.startswith(path_prefix)]


class _RegistryHandler(Handler):
    owner: RegistryFake

    def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", (headers or {}).pop("Content-Type", "application/json"))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with self.owner.lock:
            self.owner.log.append(Req(self.command, urlsplit(self.path).path, status))

    def _handle(self, method: str) -> None:
        fake = self.owner
        split = urlsplit(self.path)
        if split.path == "/v2/token":
            self._token(parse_qs(split.query))
            return
        parts = split.path.removeprefix("/v2/").rsplit("/manifests/", 1)
        if method not in ("GET", "HEAD") or len(parts) != 2:
            self._reply(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
            return
        name, ref = parts
        scope = f"repository:{name}:pull"
        auth = self.headers.get("Authorization") or ""
        granted = fake.tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if granted is None or scope not in granted:
            extra = ',error="insufficient_scope"' if granted is not None else ""
            self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                        {"WWW-Authenticate": f'Bearer realm="{fake.base_url}/v2/token",service="container_registry",'
                                             f'scope="{scope}"{extra}'})
            return
        platforms = fake.images.get((name, ref))
        if platforms is None:
            self._reply(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
            return
        body = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": "sha256:" + hashlib.sha256(p.encode()).hexdigest(), "size": 1,
                               "platform": {"os": p.split("/")[0], "architecture": p.split("/")[1]}}
                              for p in platforms]}
        digest = "sha256:" + hashlib.sha256(json.dumps(body).encode()).hexdigest()
        self._reply(200, body, {"Content-Type": "application/vnd.oci.image.index.v1+json",
                                "Docker-Content-Digest": digest})

    def _token(self, q: dict[str, list[str]]) -> None:
        fake = self.owner
        auth = self.headers.get("Authorization") or ""
        user = password = None
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        if user is None or fake.users.get(user) != password:
            self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
            return
        token = secrets.token_hex(8)
        fake.tokens[token] = {s for s in q.get("scope", []) if s.endswith(":pull")}
        self._reply(200, {"token": token, "access_token": token, "expires_in": 300})
