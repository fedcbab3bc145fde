"""A typed client for the Gitea API, shared by the CLI, the mirror and the agents.

Network behaviour: timeouts, retries with exponential backoff on connection
errors and 502/503/504, pagination with ``page``/``limit`` and ``X-Total-Count``.
HTTP errors become typed errors (401/403 auth, 404 not found, 409 already
exists, 422 with Gitea's message). No message ever contains the token or a URL
with credentials.
"""

from __future__ import annotations

import time
from typing import Any

from raibid.errors import AlreadyExists, AuthError, GiteaError, NotFound, Unreachable, UsageError, redact_url
from raibid.gitea.models import VISIBILITIES, Hook, Org, Repo, Status, Token

RETRY_STATUSES = frozenset({502, 503, 504})


def split_repo(full: str) -> tuple[str, str]:
    owner, sep, name = full.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise UsageError(f"invalid repository {full!r}: expected OWNER/NAME")
    return owner, name


class Gitea:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.5, token_source: str | None = None) -> None:
        import requests

        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)
        self.token = token
        self.token_source = token_source
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "raibid"

    # ------------------------------------------------------------------ transport
    def _request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                 basic: tuple[str, str] | None = None, anonymous: bool = False) -> Any:
        import requests

        url = f"{self.url}{path}"
        headers = {}
        if basic is None and not anonymous:
            if not self.token:
                raise AuthError("no Gitea token",
                                hint="set the env var named by gitea.token_env (RAIBID_GITEA_TOKEN), set "
                                     "gitea.token_file, or run `raibid gitea token create --store`")
            headers["Authorization"] = f"token {self.token}"
        what = f"{method} {path}"
        attempt = 0
        while True:
            try:
                resp = self.session.request(method, url, json=json, params=params, headers=headers,
                                            auth=basic, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                if attempt < self.retries:
                    self._sleep(attempt)
                    attempt += 1
                    continue
                kind = "timed out" if isinstance(e, requests.Timeout) else "connection failed"
                raise Unreachable(f"cannot reach Gitea at {self.shown} ({what}: {kind})",
                                  hint="is Gitea running? check gitea.url (RAIBID_GITEA_URL)") from None
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:
                self._sleep(attempt)
                attempt += 1
                continue
            return self._check(resp, what)

    def _sleep(self, attempt: int) -> None:
        time.sleep(self.backoff * (2 ** attempt))

    def _check(self, resp: Any, what: str) -> Any:
        if resp.status_code < 400:
            return resp
        msg = _message(resp)
        code = resp.status_code
        if code in (401, 403):
            raise AuthError(f"Gitea refused {what} ({code}): {msg}",
                            hint="check the token (or admin password) and its scopes")
        if code == 404:
            raise NotFound(f"Gitea: {what}: not found")
        if code == 409:
            raise AlreadyExists(f"Gitea: {what}: {msg}")
        if code == 422:
            raise GiteaError(f"Gitea rejected {what}: {msg}")
        raise GiteaError(f"Gitea: {what} failed ({code}): {msg}")

    def _paginate(self, path: str, params: dict | None = None, *, limit: int = 50) -> list[dict]:
        out: list[dict] = []
        page = 1
        while True:
            resp = self._request("GET", path, params={**(params or {}), "page": page, "limit": limit})
            items = resp.json() or []
            out += items
            total = resp.headers.get("X-Total-Count")
            if not items or (total is not None and len(out) >= int(total)) or (total is None and len(items) < limit):
                return out
            page += 1

    # ------------------------------------------------------------------ read
    def version(self) -> str:
        return self._request("GET", "/api/v1/version", anonymous=True).json().get("version", "")

    def current_user(self) -> str:
        return self._request("GET", "/api/v1/user").json()["login"]

    def user_exists(self, login: str) -> bool:
        try:
            self._request("GET", f"/api/v1/users/{login}", anonymous=True)
        except NotFound:
            return False
        return True

    def registry_enabled(self) -> bool:
        """The OCI registry answers at /v2/ (401 asking for a bearer token, or 200) when packages are on."""
        import requests

        try:
            resp = self.session.get(f"{self.url}/v2/", timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout):
            raise Unreachable(f"cannot reach Gitea at {self.shown} (GET /v2/)") from None
        return resp.status_code in (200, 401) and "registry/2.0" in resp.headers.get(
            "Docker-Distribution-Api-Version", "")

    def status(self, admin_user: str) -> Status:
        st = Status(url=self.shown, reachable=False, admin_user=admin_user, token_source=self.token_source)
        try:
            st.version = self.version()
            st.reachable = True
            st.registry_enabled = self.registry_enabled()
            st.admin_exists = self.user_exists(admin_user)
        except Unreachable as e:
            st.error = e.message
            return st
        if self.token:
            try:
                st.token_user = self.current_user()
                st.token_valid = True
            except AuthError:
                st.token_valid = False
        return st

    # ------------------------------------------------------------------ tokens
    def create_token(self, user: str, password: str, name: str, scopes: list[str]) -> Token:
        d = self._request("POST", f"/api/v1/users/{user}/tokens", json={"name": name, "scopes": list(scopes)},
                          basic=(user, password)).json()
        return Token(name=d.get("name", name), scopes=list(d.get("scopes") or scopes),
                     last_eight=d.get("token_last_eight", ""), value=d["sha1"])

    # ------------------------------------------------------------------ orgs
    def create_org(self, name: str, *, visibility: str = "public", description: str = "",
                   exist_ok: bool = False) -> tuple[Org, bool]:
        """(org, created). With ``exist_ok`` an existing org is returned instead of an error."""
        if visibility not in VISIBILITIES:
            raise UsageError(f"invalid visibility {visibility!r}: one of {', '.join(VISIBILITIES)}")
        if exist_ok:
            try:
                return self.get_org(name), False
            except NotFound:
                pass
        try:
            d = self._request("POST", "/api/v1/orgs",
                              json={"username": name, "visibility": visibility, "description": description}).json()
        except GiteaError as e:
            if "already exists" in e.message:
                if exist_ok:
                    return self.get_org(name), False
                raise AlreadyExists(f"Gitea: organisation or user {name!r} already exists") from None
            raise
        return Org.from_api(d), True

    def get_org(self, name: str) -> Org:
        return Org.from_api(self._request("GET", f"/api/v1/orgs/{name}").json())

    def list_orgs(self) -> list[Org]:
        return [Org.from_api(d) for d in self._paginate("/api/v1/orgs")]

    # ------------------------------------------------------------------ repos
    def create_repo(self, owner: str, name: str, *, private: bool = False, description: str = "",
                    default_branch: str | None = None, auto_init: bool = False,
                    exist_ok: bool = False) -> tuple[Repo, bool]:
        body: dict[str, Any] = {"name": name, "private": private, "description": description, "auto_init": auto_init}
        if default_branch:
            body["default_branch"] = default_branch
        path = "/api/v1/user/repos" if owner == self.current_user() else f"/api/v1/orgs/{owner}/repos"
        try:
            return Repo.from_api(self._request("POST", path, json=body).json()), True
        except AlreadyExists:
            if exist_ok:
                return self.get_repo(owner, name), False
            raise AlreadyExists(f"Gitea: repository {owner}/{name} already exists") from None
        except NotFound:
            raise NotFound(f"Gitea: no organisation {owner!r}",
                           hint=f"create it with `raibid gitea org create {owner}`") from None

    def get_repo(self, owner: str, name: str) -> Repo:
        try:
            return Repo.from_api(self._request("GET", f"/api/v1/repos/{owner}/{name}").json())
        except NotFound:
            raise NotFound(f"Gitea: no repository {owner}/{name}") from None

    def list_repos(self, owner: str | None = None) -> list[Repo]:
        if owner is None:
            return [Repo.from_api(d) for d in self._paginate("/api/v1/user/repos")]
        try:
            items = self._paginate(f"/api/v1/orgs/{owner}/repos")
        except NotFound:
            items = self._paginate(f"/api/v1/users/{owner}/repos")
        return [Repo.from_api(d) for d in items]

    def delete_repo(self, owner: str, name: str) -> None:
        try:
            self._request("DELETE", f"/api/v1/repos/{owner}/{name}")
        except NotFound:
            raise NotFound(f"Gitea: no repository {owner}/{name}") from None

    def migrate(self, clone_addr: str, owner: str, name: str, *, mirror: bool = False, mirror_interval: str = "0",
                auth_token: str | None = None, service: str = "git", private: bool = False,
                description: str = "") -> Repo:
        body: dict[str, Any] = {"clone_addr": clone_addr, "repo_owner": owner, "repo_name": name, "service": service,
                                "mirror": mirror, "private": private, "description": description,
                                "wiki": False, "lfs": False}
        if mirror:
            body["mirror_interval"] = mirror_interval
        if auth_token:
            body["auth_token"] = auth_token
        return Repo.from_api(self._request("POST", "/api/v1/repos/migrate", json=body).json())

    def mirror_sync(self, owner: str, name: str) -> None:
        self._request("POST", f"/api/v1/repos/{owner}/{name}/mirror-sync")

    # ------------------------------------------------------------------ hooks
    def add_hook(self, owner: str, name: str, url: str, *, secret: str = "", events: list[str] | None = None,
                 branch_filter: str = "", content_type: str = "json", hook_type: str = "gitea") -> Hook:
        body = {"type": hook_type, "config": {"url": url, "content_type": content_type, "secret": secret},
                "events": events or ["push"], "branch_filter": branch_filter,
                "active": True}  # Gitea's default is false: a hook that never fires
        return Hook.from_api(self._request("POST", f"/api/v1/repos/{owner}/{name}/hooks", json=body).json())

    def list_hooks(self, owner: str, name: str) -> list[Hook]:
        return [Hook.from_api(d) for d in self._paginate(f"/api/v1/repos/{owner}/{name}/hooks")]

    # ------------------------------------------------------------------ edits (the mirror)
    def edit_repo(self, owner: str, name: str, **fields: Any) -> Repo:
        """PATCH a repository's settings, e.g. ``archived=True`` or ``description=...``."""
        try:
            return Repo.from_api(self._request("PATCH", f"/api/v1/repos/{owner}/{name}", json=fields).json())
        except NotFound:
            raise NotFound(f"Gitea: no repository {owner}/{name}") from None

    def edit_hook(self, owner: str, name: str, hook_id: int, *, url: str, secret: str, events: list[str],
                  content_type: str = "json", branch_filter: str = "") -> Hook:
        return Hook.from_api(self._request("PATCH", f"/api/v1/repos/{owner}/{name}/hooks/{int(hook_id)}",
                                           json=_hook_edit(url, secret, events, content_type, branch_filter)).json())

    # Org-level hooks fire for every repository of the org, present and future.
    def add_org_hook(self, org: str, url: str, *, secret: str = "", events: list[str] | None = None,
                     content_type: str = "json", branch_filter: str = "") -> Hook:
        body = {"type": "gitea", "config": {"url": url, "content_type": content_type, "secret": secret},
                "events": events or ["push"], "branch_filter": branch_filter, "active": True}
        return Hook.from_api(self._request("POST", f"/api/v1/orgs/{org}/hooks", json=body).json())

    def list_org_hooks(self, org: str) -> list[Hook]:
        return [Hook.from_api(d) for d in self._paginate(f"/api/v1/orgs/{org}/hooks")]

    def edit_org_hook(self, org: str, hook_id: int, *, url: str, secret: str, events: list[str],
                      content_type: str = "json", branch_filter: str = "") -> Hook:
        return Hook.from_api(self._request("PATCH", f"/api/v1/orgs/{org}/hooks/{int(hook_id)}",
                                           json=_hook_edit(url, secret, events, content_type, branch_filter)).json())

    def branch_commit(self, owner: str, name: str, branch: str) -> str | None:
        """The commit id at the tip of ``branch``, or None when the branch does not exist."""
        from urllib.parse import quote

        try:
            d = self._request("GET", f"/api/v1/repos/{owner}/{name}/branches/{quote(branch, safe='')}").json()
        except NotFound:
            return None
        return (d.get("commit") or {}).get("id") or None


def _hook_edit(url: str, secret: str, events: list[str], content_type: str, branch_filter: str) -> dict:
    return {"config": {"url": url, "content_type": content_type, "secret": secret}, "events": list(events),
            "branch_filter": branch_filter, "active": True}


def _message(resp: Any) -> str:
    try:
        data = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "").strip()[:300]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("errors") or data)[:500]
    return str(data)[:300]
