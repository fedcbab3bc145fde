"""The GitHub REST calls `webhook register` and `status` need: a repository's hooks (list, create, edit).

Timeouts on every call, retries on connection errors and 502/503/504 (GETs only: a POST is
not retried, and `register` is idempotent by reading first). The token is sent as a header
and never appears in a message.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

from raibid.errors import AuthError, NotFound, RaibidError, Unreachable, UsageError, redact_url

_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # with fullmatch: no trailing newline


class GitHubError(RaibidError):
    pass


def _seg(value: str) -> str:
    if not _NAME.fullmatch(value or ""):
        raise UsageError(f"invalid GitHub owner or repository name {value!r}")
    return quote(value, safe="")


class GitHubHooks:
    def __init__(self, api: str, token: str | None, *, timeout: float = 10.0, retries: int = 2) -> None:
        import requests

        self.api = api.rstrip("/")
        self.shown = redact_url(self.api)
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/vnd.github+json", "User-Agent": "raibid",
                                     "X-GitHub-Api-Version": "2022-11-28"})

    def _request(self, method: str, path: str, *, json: Any = None, params: dict | None = None) -> Any:
        import requests

        if not self.token:
            raise AuthError("no GitHub token", hint="set the env var named by mirror.github_token_env (GITHUB_TOKEN)")
        url = path if path.startswith("http") else f"{self.api}{path}"
        what = f"{method} {path.replace(self.api, '')}"
        attempt = 0
        while True:
            try:
                resp = self.session.request(method, url, json=json, params=params, timeout=self.timeout,
                                            headers={"Authorization": f"Bearer {self.token}"})
            except (requests.ConnectionError, requests.Timeout):
                if method == "GET" and attempt < self.retries:
                    attempt += 1
                    time.sleep(0.2 * attempt)
                    continue
                raise Unreachable(f"cannot reach GitHub at {self.shown} ({what})",
                                  hint="check mirror.github_api and the network") from None
            if resp.status_code in (502, 503, 504) and method == "GET" and attempt < self.retries:
                attempt += 1
                time.sleep(0.2 * attempt)
                continue
            if resp.status_code < 400:
                return resp
            msg = _message(resp)
            if resp.status_code == 401:
                raise AuthError(f"GitHub refused {what} (401): {msg}", hint="check the GitHub token")
            if resp.status_code == 404:
                raise NotFound(f"GitHub: {what}: not found")
            if resp.status_code == 403:
                raise AuthError(f"GitHub refused {what} (403): {msg}")
            raise GitHubError(f"GitHub: {what} failed ({resp.status_code}): {msg}")

    def hooks(self, full_name: str) -> list[dict]:
        owner, _, name = full_name.partition("/")
        return list(self._request("GET", f"/repos/{_seg(owner)}/{_seg(name)}/hooks",
                                  params={"per_page": 100}).json())

    def create_hook(self, full_name: str, body: dict) -> dict:
        owner, _, name = full_name.partition("/")
        return self._request("POST", f"/repos/{_seg(owner)}/{_seg(name)}/hooks", json=body).json()

    def edit_hook(self, full_name: str, hook_id: int, body: dict) -> dict:
        owner, _, name = full_name.partition("/")
        return self._request("PATCH", f"/repos/{_seg(owner)}/{_seg(name)}/hooks/{int(hook_id)}", json=body).json()


def _message(resp: Any) -> str:
    try:
        data = resp.json()
    except ValueError:
        return (resp.text or "").strip()[:200]
    return str(data.get("message") if isinstance(data, dict) else data)[:300]
