"""A typed client for the Gitea API, shared by the CLI, the mirror and the agents.

Network behaviour (``raibid.http``): a per-try timeout and a total budget per call;
urllib3 ``Retry`` on connection errors, and on read errors and 502/503/504 for
idempotent methods only (a POST that timed out is never replayed); pagination with
``page``/``limit`` and ``X-Total-Count``. Every owner and repository name is checked
against Gitea's rules (``names``) and every path segment is percent-encoded by
``api_path``. HTTP errors become typed errors (401/403 auth, 404 not found, 409
already exists, 422 with Gitea's message); an answer that is not JSON means the URL
is not Gitea (exit 5), JSON of the wrong shape is a ``GiteaError``. No message ever
contains the token or a URL with credentials.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from raibid.errors import (
    AlreadyExists,
    AuthError,
    ConfigError,
    GiteaError,
    NotFound,
    RaibidError,
    Unreachable,
    UsageError,
    redact_url,
)
from raibid.gitea.models import VISIBILITIES, Hook, Org, Repo, Status, Team, Token, TokenInfo, User
from raibid.gitea.names import check_owner, check_repo, split_repo

__all__ = ["Gitea", "api_path", "split_repo"]

T = TypeVar("T")
UNREACHABLE_HINT = "is Gitea running? check gitea.url (RAIBID_GITEA_URL)"


def api_path(*segments: str) -> str:
    """``/api/v1/`` plus the segments, each percent-encoded: the one way a Gitea API path is built."""
    return "/api/v1/" + "/".join(quote(str(s), safe="") for s in segments)


class Gitea:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.5, total_timeout: float | None = 30.0, token_source: str | None = None,
                 basic: tuple[str, str] | None = None) -> None:
        from raibid.http import make_session, url_problem

        problem = url_problem(url)
        if problem:
            raise ConfigError(f"invalid Gitea URL {redact_url(url)}: {problem}", hint="check gitea.url (RAIBID_GITEA_URL)")
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)
        self.token = token
        self.token_source = token_source
        # An admin's user and password (Basic auth for every call): what `gitea bootstrap` runs as, so that
        # making the CI identities needs no admin token at all. Never shown, never logged.
        self.basic = basic
        # One try never outlasts the budget.
        self.timeout = min(timeout, total_timeout) if total_timeout else timeout
        self.session = make_session(retries=retries, backoff=backoff, total_timeout=total_timeout,
                                    headers={"Accept": "application/json"})

    def _public_get(self, path: str) -> Any:
        """GET what anyone may read, unsigned; signed in again when Gitea refuses unsigned API calls
        (REQUIRE_SIGNIN_VIEW answers them 403), so a bad token is still told apart from a closed Gitea."""
        try:
            return self._request("GET", path, anonymous=True)
        except AuthError:
            if not (self.token or self.basic):
                raise
            return self._request("GET", path)

    # ------------------------------------------------------------------ transport
    def _request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                 basic: tuple[str, str] | None = None, anonymous: bool = False) -> Any:
        from raibid.http import send, was_retried

        headers = {}
        if basic is None and self.basic is not None and not anonymous:
            basic = self.basic
        if basic is None and not anonymous:
            if not self.token:
                raise AuthError("no Gitea token",
                                hint="set the env var named by gitea.token_env (RAIBID_GITEA_TOKEN), set "
                                     "gitea.token_file, or run `raibid gitea token create --store`")
            headers["Authorization"] = f"token {self.token}"
        what = f"{method} {path}"
        resp = send(self.session, method, f"{self.url}{path}", what=what, service="Gitea", base=self.url,
                    timeout=self.timeout, hint=UNREACHABLE_HINT, json=json, params=params, headers=headers,
                    auth=basic)
        if method == "DELETE" and resp.status_code == 404 and was_retried(resp):
            return resp  # an earlier try timed out after Gitea had deleted it: done, not "not found"
        return self._check(resp, what)

    def _json(self, resp: Any, expect: type | tuple[type, ...] = dict) -> Any:
        from raibid.http import json_body

        what = f"{resp.request.method} {resp.request.path_url.split('?')[0]}"
        return json_body(resp, what=what, service="Gitea", base=self.url, expect=expect, error=GiteaError)

    def _get(self, path: str, build: Callable[[dict], T], **kw: Any) -> T:
        """GET one object and build a record from it; a missing or mistyped field is a GiteaError."""
        return _build(build, self._json(self._request("GET", path, **kw)), f"GET {path}")

    def _check(self, resp: Any, what: str) -> Any:
        if resp.status_code < 400:
            return resp
        msg = _message(resp)
        code = resp.status_code
        if (code == 404 or code >= 500) and not _is_json(resp):
            # Gitea's API answers its errors in JSON; an HTML 404 or 502 comes from something else
            # at gitea.url (a web server, a proxy whose Gitea is down): not "no such repository".
            from raibid.http import json_body

            json_body(resp, what=what, service="Gitea", base=self.url, expect=dict)
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

    def _paginate(self, path: str, build: Callable[[dict], T], params: dict | None = None, *,
                  limit: int = 50, items_key: str | None = None) -> list[T]:
        """Every page of a list; ``items_key`` for answers that wrap it (``/repos/search``: ``{"data": [...]}``)."""
        out: list[T] = []
        page = 1
        while True:
            resp = self._request("GET", path, params={**(params or {}), "page": page, "limit": limit})
            items = self._json(resp, list) if items_key is None else self._json(resp).get(items_key)
            if not isinstance(items, list):
                raise GiteaError(f"unexpected answer from Gitea: GET {path} returned no {items_key!r} list")
            out += [_build(build, d, f"GET {path}") for d in items]
            try:
                total: int | None = int(resp.headers["X-Total-Count"])
            except (KeyError, ValueError):
                total = None
            if not items or (total is not None and len(out) >= total) or (total is None and len(items) < limit):
                return out
            page += 1

    # ------------------------------------------------------------------ read
    def version(self) -> str:
        """Gitea's version; an answer without one means the URL is not Gitea (Unreachable, exit 5)."""
        path = api_path("version")
        version = self._json(self._public_get(path)).get("version")
        if not isinstance(version, str) or not version:
            raise Unreachable(f"{self.shown} does not answer like Gitea: GET {path} returned no version",
                              hint="check that gitea.url is Gitea's own address")
        return version

    def current_user(self) -> str:
        return self._get(api_path("user"), lambda d: _str(d["login"]))

    def user_exists(self, login: str) -> bool:
        try:
            self._public_get(api_path("users", check_owner(login)))
        except NotFound:
            return False
        return True

    def registry_enabled(self) -> bool:
        """The OCI registry answers at /v2/ (401 asking for a bearer token, or 200) when packages are on."""
        from raibid.http import send

        resp = send(self.session, "GET", f"{self.url}/v2/", what="GET /v2/", service="Gitea", base=self.url,
                    timeout=self.timeout, hint=UNREACHABLE_HINT)
        return resp.status_code in (200, 401) and "registry/2.0" in resp.headers.get(
            "Docker-Distribution-Api-Version", "")

    def status(self, admin_user: str) -> Status:
        """What ``gitea status`` and ``doctor`` report. Never raises for what it finds out about Gitea.

        ``token_valid`` stays None (not checked) unless Gitea answered the token check.
        """
        st = Status(url=self.shown, reachable=False, admin_user=admin_user, token_source=self.token_source)
        try:
            st.version = self.version()
        except Unreachable as e:  # no answer, or not Gitea's (an HTML page, a proxy's error)
            st.error = e.message
            return st
        except RaibidError as e:  # Gitea itself answered with an error (a JSON 500, 401, ...): reachable, failing
            st.reachable = True
            st.error = e.message
            return st
        st.reachable = True
        try:
            st.registry_enabled = self.registry_enabled()
            st.admin_exists = self.user_exists(admin_user)
            if self.token:
                try:
                    st.token_user = self.current_user()
                    st.token_valid = True
                except AuthError:
                    st.token_valid = False
        except RaibidError as e:
            st.error = e.message
        return st

    # ------------------------------------------------------------------ tokens
    def list_tokens(self, user: str) -> list[TokenInfo]:
        """A user's tokens (names, scopes, last eight characters; never the value). Needs Basic auth."""
        return self._paginate(api_path("users", check_owner(user), "tokens"), TokenInfo.from_api)

    def mint_token(self, user: str, name: str, scopes: list[str]) -> Token:
        """A token for ``user`` made with this client's Basic credentials (the user's own, or a site admin's)."""
        path = api_path("users", check_owner(user), "tokens")
        d = self._json(self._request("POST", path, json={"name": name, "scopes": list(scopes)}))
        return _build(lambda d: Token(name=d.get("name", name), scopes=list(d.get("scopes") or scopes),
                                      last_eight=d.get("token_last_eight", ""), value=_str(d["sha1"])),
                      d, f"POST {path}")

    def delete_token(self, user: str, token_id: int) -> None:
        """Revoke one of ``user``'s tokens by id (DELETE /users/{user}/tokens/{id}, Basic auth)."""
        self._request("DELETE", api_path("users", check_owner(user), "tokens", str(int(token_id))))

    # ------------------------------------------------------------------ users (site admin)
    def whoami(self) -> User:
        """The user the credentials belong to (GET /user; a token needs ``read:user``)."""
        return self._get(api_path("user"), User.from_api)

    def get_user(self, login: str) -> User | None:
        try:
            return self._get(api_path("users", check_owner(login)), User.from_api)
        except NotFound:
            return None

    def create_user(self, login: str, *, email: str, password: str) -> User:
        """POST /admin/users (site admin): a local user that never has to change its password."""
        path = api_path("admin", "users")
        body = {"username": check_owner(login), "email": email, "password": password,
                "must_change_password": False, "send_notify": False, "visibility": "private"}
        try:
            d = self._json(self._request("POST", path, json=body))
        except GiteaError as e:
            if "already exists" in e.message:
                raise AlreadyExists(f"Gitea: user {login!r} already exists") from None
            raise
        return _build(User.from_api, d, f"POST {path}")

    def edit_user(self, login: str, **fields: Any) -> User:
        """PATCH /admin/users/{user} (site admin). ``login_name`` and ``source_id`` are sent as Gitea
        releases that still mark them required expect (a local user: its own name, source 0)."""
        path = api_path("admin", "users", check_owner(login))
        body = {"login_name": login, "source_id": 0, **fields}
        return _build(User.from_api, self._json(self._request("PATCH", path, json=body)), f"PATCH {path}")

    # ------------------------------------------------------------------ teams and collaborators
    def list_teams(self, org: str) -> list[Team]:
        return self._paginate(api_path("orgs", check_owner(org), "teams"), Team.from_api)

    def create_team(self, org: str, name: str, **fields: Any) -> Team:
        path = api_path("orgs", check_owner(org), "teams")
        return _build(Team.from_api, self._json(self._request("POST", path, json={"name": name, **fields})),
                      f"POST {path}")

    def edit_team(self, team_id: int, name: str, **fields: Any) -> Team:
        path = api_path("teams", str(int(team_id)))
        return _build(Team.from_api, self._json(self._request("PATCH", path, json={"name": name, **fields})),
                      f"PATCH {path}")

    def team_members(self, team_id: int) -> list[str]:
        return self._paginate(api_path("teams", str(int(team_id)), "members"), lambda d: _str(d["login"]))

    def add_team_member(self, team_id: int, login: str) -> None:
        """PUT /teams/{id}/members/{user}: idempotent (Gitea answers 204 for a member already in)."""
        self._request("PUT", api_path("teams", str(int(team_id)), "members", check_owner(login)))

    def remove_team_member(self, team_id: int, login: str) -> None:
        self._request("DELETE", api_path("teams", str(int(team_id)), "members", check_owner(login)))

    def collaborator_permission(self, owner: str, name: str, login: str) -> str | None:
        """``login``'s access to the repository (none, read, write, admin, owner), or None when it is no
        collaborator (GET .../collaborators/{user} answers 404)."""
        base = self._repo_path(owner, name, "collaborators", check_owner(login))
        try:
            self._request("GET", base)
        except NotFound:
            return None
        return self._get(base + "/permission", lambda d: _str(d["permission"]))

    def add_collaborator(self, owner: str, name: str, login: str, permission: str) -> None:
        """PUT .../collaborators/{user} with ``permission`` read|write|admin (it also changes an existing one)."""
        self._request("PUT", self._repo_path(owner, name, "collaborators", check_owner(login)),
                      json={"permission": permission})

    def search_repos(self) -> list[Repo]:
        """Every repository the credentials can see (GET /repos/search; for a site admin: all of them)."""
        return self._paginate(api_path("repos", "search"), Repo.from_api, items_key="data")

    # ------------------------------------------------------------------ orgs
    def create_org(self, name: str, *, visibility: str = "public", description: str = "",
                   exist_ok: bool = False) -> tuple[Org, bool]:
        """(org, created). With ``exist_ok`` an existing org is returned instead of an error."""
        check_owner(name)
        if visibility not in VISIBILITIES:
            raise UsageError(f"invalid visibility {visibility!r}: one of {', '.join(VISIBILITIES)}")
        if exist_ok:
            try:
                return self.get_org(name), False
            except NotFound:
                pass
        path = api_path("orgs")
        try:
            resp = self._request("POST", path,
                                 json={"username": name, "visibility": visibility, "description": description})
        except GiteaError as e:
            if "already exists" in e.message:
                if exist_ok:
                    return self.get_org(name), False
                raise AlreadyExists(f"Gitea: organisation or user {name!r} already exists") from None
            raise
        return _build(Org.from_api, self._json(resp), f"POST {path}"), True

    def get_org(self, name: str) -> Org:
        return self._get(api_path("orgs", check_owner(name)), Org.from_api)

    def list_orgs(self) -> list[Org]:
        return self._paginate(api_path("orgs"), Org.from_api)

    # ------------------------------------------------------------------ repos
    def create_repo(self, owner: str, name: str, *, private: bool = False, description: str = "",
                    default_branch: str | None = None, auto_init: bool = False,
                    exist_ok: bool = False) -> tuple[Repo, bool]:
        check_owner(owner)
        check_repo(name)
        body: dict[str, Any] = {"name": name, "private": private, "description": description, "auto_init": auto_init}
        if default_branch:
            body["default_branch"] = default_branch
        path = api_path("user", "repos") if owner == self.current_user() else api_path("orgs", owner, "repos")
        try:
            d = self._json(self._request("POST", path, json=body))
        except AlreadyExists:
            if exist_ok:
                return self.get_repo(owner, name), False
            raise AlreadyExists(f"Gitea: repository {owner}/{name} already exists") from None
        except NotFound:
            raise NotFound(f"Gitea: no organisation {owner!r}",
                           hint=f"create it with `raibid gitea org create {owner}`") from None
        return _build(Repo.from_api, d, f"POST {path}"), True

    def get_repo(self, owner: str, name: str) -> Repo:
        try:
            return self._get(self._repo_path(owner, name), Repo.from_api)
        except NotFound:
            raise NotFound(f"Gitea: no repository {owner}/{name}") from None

    def branch_head(self, owner: str, name: str, branch: str) -> str | None:
        """The commit ``branch`` points at (GET /repos/{owner}/{repo}/branches/{branch}, one request).

        None when the repository or the branch does not exist (Gitea answers 404 for both, and for
        a private repository the token cannot see). The branch goes in as Gitea's ``/branches/*``
        route takes it: each ``/``-separated part percent-encoded, the slashes kept.
        """
        path = self._repo_path(owner, name, "branches") + "/" + "/".join(
            quote(part, safe="") for part in branch.split("/"))
        try:
            return self._get(path, lambda d: _str(d["commit"]["id"]))
        except NotFound:
            return None

    def file_at(self, owner: str, name: str, path: str, ref: str) -> Contents | None:
        """One file of a commit without a clone (GET /repos/{owner}/{repo}/contents/{path}?ref=, one request).

        None when the repository, the ref or the path does not exist (Gitea answers 404); a
        directory is ``type`` "dir" (Gitea answers a list). The path keeps its slashes, each part
        percent-encoded; ``content`` is Gitea's base64, decoded.
        """
        import base64
        import binascii

        url = self._repo_path(owner, name, "contents") + "/" + "/".join(
            quote(part, safe="") for part in path.split("/"))
        try:
            resp = self._request("GET", url, params={"ref": ref})
        except NotFound:
            return None
        data = self._json(resp, (dict, list))
        if isinstance(data, list):
            return Contents("dir")
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise GiteaError(f"unexpected answer from Gitea: GET {url} returned no contents object")
        size_raw = data.get("size")
        size = size_raw if isinstance(size_raw, int) else 0
        if data["type"] != "file":
            return Contents(data["type"], None, size)
        content = data.get("content")
        if data.get("encoding") != "base64" or not isinstance(content, str):
            return Contents("file", None, size)  # Gitea leaves out the content of a file too large to send
        try:
            return Contents("file", base64.b64decode(content, validate=False), size)
        except (binascii.Error, ValueError):
            raise GiteaError(f"unexpected answer from Gitea: GET {url} returned content that is not base64") from None

    def list_repos(self, owner: str | None = None) -> list[Repo]:
        if owner is None:
            return self._paginate(api_path("user", "repos"), Repo.from_api)
        check_owner(owner)
        try:
            return self._paginate(api_path("orgs", owner, "repos"), Repo.from_api)
        except NotFound:
            pass
        try:
            return self._paginate(api_path("users", owner, "repos"), Repo.from_api)
        except NotFound:
            raise NotFound(f"Gitea: no organisation or user {owner!r}",
                           hint="`raibid gitea org list` shows the organisations") from None

    def delete_repo(self, owner: str, name: str) -> None:
        try:
            self._request("DELETE", self._repo_path(owner, name))
        except NotFound:
            raise NotFound(f"Gitea: no repository {owner}/{name}") from None

    def migrate(self, clone_addr: str, owner: str, name: str, *, mirror: bool = False, mirror_interval: str = "0",
                auth_token: str | None = None, service: str = "git", private: bool = False,
                description: str = "") -> Repo:
        check_owner(owner)
        check_repo(name)
        body: dict[str, Any] = {"clone_addr": clone_addr, "repo_owner": owner, "repo_name": name, "service": service,
                                "mirror": mirror, "private": private, "description": description,
                                "wiki": False, "lfs": False}
        if mirror:
            body["mirror_interval"] = mirror_interval
        if auth_token:
            body["auth_token"] = auth_token
        path = api_path("repos", "migrate")
        return _build(Repo.from_api, self._json(self._request("POST", path, json=body)), f"POST {path}")

    def mirror_sync(self, owner: str, name: str) -> None:
        self._request("POST", self._repo_path(owner, name, "mirror-sync"))

    def edit_repo(self, owner: str, name: str, **fields: Any) -> Repo:
        """PATCH a repository's settings, e.g. ``archived=True`` or ``description=...``."""
        path = self._repo_path(owner, name)
        try:
            return _build(Repo.from_api, self._json(self._request("PATCH", path, json=fields)), f"PATCH {path}")
        except NotFound:
            raise NotFound(f"Gitea: no repository {owner}/{name}") from None

    # ------------------------------------------------------------------ hooks
    def add_hook(self, owner: str, name: str, url: str, *, secret: str = "", events: list[str] | None = None,
                 branch_filter: str = "", content_type: str = "json", hook_type: str = "gitea") -> Hook:
        body = {"type": hook_type, **_hook_body(url, secret, events, content_type, branch_filter)}
        path = self._repo_path(owner, name, "hooks")
        return _build(Hook.from_api, self._json(self._request("POST", path, json=body)), f"POST {path}")

    def list_hooks(self, owner: str, name: str) -> list[Hook]:
        return self._paginate(self._repo_path(owner, name, "hooks"), Hook.from_api)

    def edit_hook(self, owner: str, name: str, hook_id: int, *, url: str, secret: str, events: list[str],
                  content_type: str = "json", branch_filter: str = "") -> Hook:
        path = self._repo_path(owner, name, "hooks", str(int(hook_id)))
        body = _hook_body(url, secret, events, content_type, branch_filter)
        return _build(Hook.from_api, self._json(self._request("PATCH", path, json=body)), f"PATCH {path}")

    # Org-level hooks fire for every repository of the org, present and future.
    def add_org_hook(self, org: str, url: str, *, secret: str = "", events: list[str] | None = None,
                     content_type: str = "json", branch_filter: str = "") -> Hook:
        body = {"type": "gitea", **_hook_body(url, secret, events, content_type, branch_filter)}
        path = api_path("orgs", check_owner(org), "hooks")
        return _build(Hook.from_api, self._json(self._request("POST", path, json=body)), f"POST {path}")

    def list_org_hooks(self, org: str) -> list[Hook]:
        return self._paginate(api_path("orgs", check_owner(org), "hooks"), Hook.from_api)

    def edit_org_hook(self, org: str, hook_id: int, *, url: str, secret: str, events: list[str],
                      content_type: str = "json", branch_filter: str = "") -> Hook:
        path = api_path("orgs", check_owner(org), "hooks", str(int(hook_id)))
        body = _hook_body(url, secret, events, content_type, branch_filter)
        return _build(Hook.from_api, self._json(self._request("PATCH", path, json=body)), f"PATCH {path}")

    # Commit statuses (the reporter): a write route, so the token needs write:repository.
    def post_status(self, owner: str, name: str, sha: str, *, state: str, context: str, description: str = "",
                    target_url: str | None = None) -> dict:
        """``POST /repos/{owner}/{repo}/statuses/{sha}`` (``CreateStatusOption``); the created status.

        Not replayed after a timeout (a POST); posting the same state again is harmless, so the
        reporter itself tries again later.
        """
        import re

        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha or ""):
            raise UsageError(f"invalid commit sha {sha!r}: 40 (or 64) lower-case hex digits")
        body: dict[str, Any] = {"state": state, "context": context, "description": description}
        if target_url:
            body["target_url"] = target_url
        path = self._repo_path(owner, name, "statuses", sha)
        return self._json(self._request("POST", path, json=body))

    def commit_url(self, owner: str, name: str, sha: str) -> str:
        """The commit's web page, where its statuses show (no credentials)."""
        return f"{self.shown}/{owner}/{name}/commit/{sha}"

    def _repo_path(self, owner: str, name: str, *rest: str) -> str:
        return api_path("repos", check_owner(owner), check_repo(name), *rest)


@dataclass
class Contents:
    """A path of a commit as Gitea's contents API describes it."""

    type: str  # "file", "dir", "symlink", "submodule"
    content: bytes | None = None  # a file's bytes; None when Gitea did not send them
    size: int = 0


def _build(build: Callable[[Any], T], data: Any, what: str) -> T:
    """A record from Gitea's JSON; JSON of the wrong shape is a GiteaError naming the call, not a traceback."""
    try:
        return build(data)
    except KeyError as e:
        raise GiteaError(f"unexpected answer from Gitea: {what} returned an object without {e.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError):
        raise GiteaError(f"unexpected answer from Gitea: {what} returned JSON of the wrong shape") from None


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _is_json(resp: Any) -> bool:
    try:
        resp.json()
    except ValueError:
        return False
    return True


def _hook_body(url: str, secret: str, events: list[str] | None, content_type: str, branch_filter: str) -> dict:
    """A hook's settings as Gitea takes them on create and edit; always active (Gitea's default is false)."""
    return {"config": {"url": url, "content_type": content_type, "secret": secret},
            "events": list(events or ["push"]), "branch_filter": branch_filter, "active": True}


def _message(resp: Any) -> str:
    try:
        data = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "").strip()[:300]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("errors") or data)[:500]
    return str(data)[:300]
