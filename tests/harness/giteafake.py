"""A stateful Gitea API fake over HTTP on 127.0.0.1.

It implements the endpoints raibid uses with Gitea's status codes and response
shapes. Repositories are real bare repos served by the smart-HTTP git fixture,
so ``clone_url`` accepts pushes and clones with an API token as the password.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.harness.githttp import GitHTTPServer, git
from tests.harness.served import Handler, Served


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class User:
    id: int
    login: str
    password: str
    is_admin: bool = False
    is_org: bool = False
    visibility: str = "public"
    description: str = ""
    restricted: bool = False
    allow_create_organization: bool = True
    max_repo_creation: int = -1
    must_change_password: bool = False
    email: str = ""


@dataclass
class Repo:
    id: int
    owner: str
    name: str
    private: bool = False
    description: str = ""
    default_branch: str = "main"
    mirror: bool = False
    original_url: str = ""
    mirror_interval: str = ""
    hooks: list[dict] = field(default_factory=list)
    archived: bool = False
    created_at: str = field(default_factory=_now)
    auth_token: str = ""  # the source credentials a pull mirror keeps (never returned by the API)
    collaborators: dict[str, str] = field(default_factory=dict)  # login (lower-case) -> read|write|admin


@dataclass
class Team:
    id: int
    org: str  # lower-case
    name: str
    permission: str = "read"  # read|write|admin|owner
    units_map: dict[str, str] = field(default_factory=dict)
    can_create_org_repo: bool = False
    includes_all_repositories: bool = False
    description: str = ""
    members: set[str] = field(default_factory=set)  # logins, lower-case
    repos: set[str] = field(default_factory=set)  # "owner/name", lower-case


# Gitea's access modes (models/perm/access_mode.go) and token scope categories by route
# (routers/api/v1/api.go: tokenRequiresScopes); a route of several categories needs all of them.
MODES = {"none": 0, "read": 1, "write": 2, "admin": 3, "owner": 4}
MODE_NAMES = {v: k for k, v in MODES.items()}
SCOPE_CATEGORIES = ("activitypub", "admin", "misc", "notification", "organization", "package", "issue",
                    "repository", "user")


def scope_categories(path: str) -> list[str]:
    """The token scope categories Gitea's router asks of an /api/v1 path (without the prefix)."""
    if path in ("/version", "/signing-key.gpg") or path.startswith("/settings"):
        return []
    if path.startswith("/admin"):
        return ["admin"]
    if path == "/user/repos" or re.fullmatch(r"/users/[^/]+/repos", path):
        return ["user", "repository"]
    if path == "/user/orgs" or re.fullmatch(r"/users/[^/]+/orgs(/.*)?", path):
        return ["user", "organization"]
    if path.startswith(("/user", "/users")):
        return ["user"]
    if path.startswith("/repos"):
        return ["repository"]
    if path.startswith(("/orgs", "/teams")):
        return ["organization"]
    if path.startswith("/packages"):
        return ["package"]
    return []


def token_allows(scopes: list[str], category: str, write: bool) -> bool:
    """Gitea's scope check: ``all``, ``write:X`` (which implies read) or, for reads, ``read:X``."""
    if "all" in scopes or f"write:{category}" in scopes:
        return True
    return not write and f"read:{category}" in scopes


def valid_scope(scope: str) -> bool:
    return scope in ("all", "public-only") or any(scope in (f"read:{c}", f"write:{c}") for c in SCOPE_CATEGORIES)


def _auth_env(token: str) -> dict[str, str]:
    """Basic auth for git through the environment, as Gitea keeps a mirror's credentials out of the URL."""
    if not token:
        return {}
    basic = base64.b64encode(f"x:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}


# Gitea's name rules (modules/validation IsValidUsername, models/repo IsUsableRepoName), written out
# here independently of raibid's own checks so that each can catch the other's mistakes.
USERNAME_MESSAGE = ("[UserName]: Username should contain only alphanumeric, dash ('-'), underscore ('_') and "
                    "dot ('.') characters, cannot begin or end with non-alphanumeric, and consecutive "
                    "non-alphanumeric are forbidden")


def valid_username(name: str) -> bool:
    return (len(name) <= 40 and re.fullmatch(r"[0-9A-Za-z][-.\w]*", name, re.ASCII) is not None
            and re.search(r"[-._]{2,}|[-._]$", name) is None)


def repo_name_problem(name: str) -> str | None:
    if len(name) > 100:
        return "[Name]: MaxSize"
    if not re.fullmatch(r"[-.\w]+", name, re.ASCII) or ".." in name:
        return "[Name]: invalid characters"
    lower = name.lower()
    if lower in (".", "..", "-") or lower.endswith((".git", ".wiki", ".rss", ".atom")):
        return f"name is reserved [name: {name}]"
    return None


class _Segments:
    """A path match whose groups are percent-decoded, as Gitea's router decodes each segment."""

    def __init__(self, m: re.Match) -> None:
        self.m = m

    def group(self, i: int) -> Any:
        value = self.m.group(i)
        return None if value is None else unquote(value)


def _match(pattern: str, path: str) -> _Segments | None:
    m = re.fullmatch(pattern, path)
    return _Segments(m) if m else None


class GiteaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class GiteaFake(Served):
    def __init__(self, git_server: GitHTTPServer, *, version: str = "1.24.5", registry: bool = True,
                 admin: str = "raibid-admin", admin_password: str = "admin-pass") -> None:
        self.git = git_server
        self.version = version
        self.registry = registry
        self.lock = threading.RLock()
        self.ids = itertools.count(1)
        self.users: dict[str, User] = {}
        self.repos: dict[str, Repo] = {}  # "owner/name" (lower-case) -> Repo
        self.tokens: dict[str, tuple[str, dict]] = {}  # token -> (login, token record)
        self.log: list[tuple[str, str, int]] = []
        # [remaining, status, method or None, path regex or None, body bytes or None, headers]
        self.faults: list[list[Any]] = []
        self.delays: list[list[Any]] = []  # [remaining, seconds, method or None, path regex or None, late]
        self.stopping = threading.Event()  # wakes delayed handlers when the fake stops
        self.in_flight = 0  # requests being handled now (a delayed one counts until it is answered)
        self.teams: dict[int, Team] = {}
        self.require_signin = False  # [service] REQUIRE_SIGNIN_VIEW: unsigned API calls get 403
        self.add_user(admin, admin_password, is_admin=True)
        git_server.authorize = self._git_authorize

    # ------------------------------------------------------------------ helpers for tests
    def add_user(self, login: str, password: str = "pw", *, is_admin: bool = False) -> User:
        u = User(next(self.ids), login, password, is_admin=is_admin)
        self.users[login.lower()] = u
        return u

    def add_token(self, login: str, token: str, scopes: list[str] | None = None) -> str:
        rec = {"id": next(self.ids), "name": f"t{len(self.tokens)}", "scopes": scopes or ["all"],
               "sha1": token, "token_last_eight": token[-8:]}
        self.tokens[token] = (login.lower(), rec)
        self.git.tokens.add(token)
        return token

    def add_org(self, name: str, *, owner: str | None = None, visibility: str = "public") -> User:
        """An organisation with its Owners team (``owner`` in it), as Gitea makes one."""
        org = User(next(self.ids), name, "", is_org=True, visibility=visibility)
        self.users[name.lower()] = org
        team = Team(next(self.ids), name.lower(), "Owners", permission="owner", can_create_org_repo=True,
                    includes_all_repositories=True)
        if owner:
            team.members.add(owner.lower())
        self.teams[team.id] = team
        return org

    def org_teams(self, org: str) -> list[Team]:
        return [t for t in self.teams.values() if t.org == org.lower()]

    def is_org_owner(self, org: str, login: str) -> bool:
        return any(t.permission == "owner" and login.lower() in t.members for t in self.org_teams(org))

    def is_org_member(self, org: str, login: str) -> bool:
        return any(login.lower() in t.members for t in self.org_teams(org))

    def access(self, user: User | None, repo: Repo) -> int:
        """The user's access mode to the code of ``repo``, as Gitea's GetUserRepoPermission decides it."""
        owner = self.users[repo.owner.lower()]
        public = not repo.private and not (owner.is_org and owner.visibility != "public")
        if user is None:
            return MODES["read"] if public and not self.require_signin else 0
        if user.is_admin or repo.owner.lower() == user.login.lower():
            return MODES["owner"]
        key = f"{repo.owner}/{repo.name}".lower()
        best = MODES.get(repo.collaborators.get(user.login.lower(), "none"), 0)
        if owner.is_org:
            for t in self.org_teams(owner.login):
                if user.login.lower() not in t.members:
                    continue
                if t.permission == "owner":
                    return MODES["owner"]
                if t.includes_all_repositories or key in t.repos:
                    best = max(best, MODES[t.units_map.get("repo.code") or t.permission])
            if best == 0 and owner.visibility == "limited" and not user.restricted and not repo.private:
                best = MODES["read"]
        if best == 0 and not repo.private and owner.visibility == "public" and not user.restricted:
            best = MODES["read"]  # a signed-in user reads public repositories, unless restricted
        return best

    def _git_authorize(self, password: str, repo_path: str, write: bool) -> int | None:
        """Git over HTTP as Gitea checks it: the token's repository scope, then the user's access."""
        if password not in self.tokens:
            return None  # the git fixture's own token: not a Gitea identity
        login, rec = self.tokens[password]
        user = self.users[login]
        repo = self.repos.get(repo_path.lower())
        if repo is None:
            return 404
        if not token_allows(rec["scopes"], "repository", write):
            return 403
        mode = self.access(user, repo)
        if mode < MODES["read"]:
            return 404
        if write and mode < MODES["write"]:
            return 403
        return None

    def fail_next(self, count: int, status: int = 503, method: str | None = None, path: str | None = None,
                  headers: dict[str, str] | None = None) -> None:
        """Answer the next ``count`` matching requests with ``status`` and a JSON message (nothing happens)."""
        self.faults.append([count, status, method, path, None, dict(headers or {})])

    def answer_next(self, count: int, body: bytes | str, *, status: int = 200, content_type: str = "text/html",
                    method: str | None = None, path: str | None = None) -> None:
        """Answer with this body instead (an HTML page, JSON of the wrong shape): Gitea behind a proxy, or not Gitea."""
        data = body.encode() if isinstance(body, str) else body
        self.faults.append([count, status, method, path, data, {"Content-Type": content_type}])

    def delay_next(self, count: int, seconds: float, method: str | None = None, path: str | None = None, *,
                   answer_late: bool = False) -> None:
        """Hold the next ``count`` matching requests for ``seconds`` before handling them as usual.

        A client that times out meanwhile still has its request carried out, as with a slow
        real Gitea; a large ``seconds`` is a hung server. With ``answer_late`` the request is
        carried out at once and only the answer is late (the client's retry then finds the
        work done). Stopping the fake releases them.
        """
        self.delays.append([count, seconds, method, path, answer_late])

    def stop(self) -> None:
        self.stopping.set()
        super().stop()

    def start(self) -> GiteaFake:
        self._serve(_Handler)
        return self

    @property
    def url(self) -> str:
        return self.base_url

    # ------------------------------------------------------------------ shapes
    def user_json(self, u: User) -> dict:
        return {"id": u.id, "login": u.login, "username": u.login, "full_name": "", "email": f"{u.login}@x.local",
                "avatar_url": "", "is_admin": u.is_admin, "visibility": u.visibility, "created": _now(),
                "restricted": u.restricted, "prohibit_login": False}

    def org_json(self, u: User) -> dict:
        return {"id": u.id, "name": u.login, "username": u.login, "full_name": "", "avatar_url": "",
                "description": u.description, "website": "", "location": "", "visibility": u.visibility,
                "repo_admin_change_team_access": False}

    def repo_json(self, r: Repo) -> dict:
        owner = self.users[r.owner.lower()]
        path = self.git.path(f"{r.owner}/{r.name}")
        empty = not any((path / "refs" / "heads").iterdir()) if (path / "refs" / "heads").is_dir() else True
        if empty and (path / "packed-refs").exists():
            empty = "refs/heads/" not in (path / "packed-refs").read_text()
        return {"id": r.id, "owner": self.user_json(owner) if not owner.is_org else {
            **self.user_json(owner), "login": owner.login}, "name": r.name, "full_name": f"{r.owner}/{r.name}",
            "description": r.description, "empty": empty, "private": r.private, "fork": False, "template": False,
            "mirror": r.mirror, "size": 0, "html_url": f"{self.url}/{r.owner}/{r.name}",
            "ssh_url": f"git@127.0.0.1:{r.owner}/{r.name}.git", "clone_url": self.git.url(f"{r.owner}/{r.name}"),
            "original_url": r.original_url, "website": "", "default_branch": r.default_branch,
            "archived": r.archived, "created_at": r.created_at, "updated_at": r.created_at,
            "mirror_interval": r.mirror_interval, "permissions": {"admin": True, "push": True, "pull": True}}


class _Handler(Handler):
    owner: GiteaFake

    def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        for k, v in (headers or {}).items():
            if k.lower() != "content-type":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_raw(self, status: int, data: bytes, headers: dict) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _caller(self) -> User | None:
        auth = self.headers.get("Authorization") or ""
        fake = self.owner
        self.token_scopes: list[str] | None = None  # None: not signed in with a token
        if auth.startswith("token ") or auth.startswith("Bearer "):
            tok = auth.split(" ", 1)[1]
            if tok in fake.tokens:
                self.token_scopes = list(fake.tokens[tok][1]["scopes"])
                return fake.users[fake.tokens[tok][0]]
            raise GiteaError(401, "token is required")  # Gitea's reply for a bad token
        if auth.startswith("Basic "):
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            u = fake.users.get(user.lower())
            if u and u.password == pw and not u.is_org:
                return u
            raise GiteaError(401, f"user's password is invalid [uid: 0, name: {user}]")
        return None

    def _handle(self, method: str) -> None:
        with self.owner.lock:
            self.owner.in_flight += 1
        try:
            self._handle_counted(method)
        finally:
            with self.owner.lock:
                self.owner.in_flight -= 1

    def _handle_counted(self, method: str) -> None:
        fake = self.owner
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        raw, _ = self.read_body()
        headers: dict[str, str] = {}

        def matches(f: list) -> bool:
            return f[0] > 0 and (f[2] is None or f[2] == method) and (f[3] is None or re.search(f[3], path))

        with fake.lock:
            delay = next((d for d in fake.delays if matches(d)), None)
            if delay:
                delay[0] -= 1
        if delay and not delay[4]:
            fake.stopping.wait(delay[1])
        with fake.lock:
            for f in fake.faults:
                if matches(f):
                    f[0] -= 1
                    fake.log.append((method, path, f[1]))
                    if f[4] is None:
                        self._send(f[1], {"message": "injected", "url": ""}, f[5])
                    else:
                        self._send_raw(f[1], f[4], f[5])
                    return
        try:
            body = json.loads(raw) if raw else {}
            with fake.lock:
                status, payload, headers = self._route(method, path, query, body)
        except GiteaError as e:
            status, payload = e.status, {"message": e.message, "url": f"{fake.url}/api/swagger"}
            if e.status == 401 and path == "/v2":
                headers = {"WWW-Authenticate": f'Bearer realm="{fake.url}/v2/token",service="container_registry"',
                           "Docker-Distribution-Api-Version": "registry/2.0"}
                payload = {"errors": [{"code": "UNAUTHORIZED", "message": ""}]}
        except ValueError:
            status, payload = 400, {"message": "invalid JSON body", "url": ""}
        fake.log.append((method, path, status))
        if delay and delay[4]:
            fake.stopping.wait(delay[1])
        self._send(status, payload, headers)

    def _need(self, user: User | None) -> User:
        if user is None:
            raise GiteaError(401, "token is required")
        return user

    def _check_scopes(self, method: str, p: str) -> None:
        """tokenRequiresScopes: a token needs the scope of every category of the route (403 otherwise)."""
        scopes = getattr(self, "token_scopes", None)
        if scopes is None:
            return
        write = method in ("POST", "PUT", "PATCH", "DELETE")
        needed = [f"{'write' if write else 'read'}:{c}" for c in scope_categories(p)]
        if not all(token_allows(scopes, n.split(":", 1)[1], write) for n in needed):
            raise GiteaError(403, f"token does not have at least one of required scope(s): [{' '.join(needed)}]")

    def _visible(self, owner: str, name: str, caller: User | None) -> Repo:
        """The repository, or 404 when it does not exist or the caller cannot read it (Gitea hides it)."""
        repo = self._repo(owner, name)
        if self.owner.access(caller, repo) < MODES["read"]:
            raise GiteaError(404, "The target couldn't be found.")
        return repo

    def _need_mode(self, caller: User | None, repo: Repo, mode: str, message: str) -> User:
        caller = self._need(caller)
        if self.owner.access(caller, repo) < MODES[mode]:
            raise GiteaError(403, message)
        return caller

    def _page(self, items: list, query: dict) -> tuple[int, list, dict]:
        page = max(1, int(query.get("page", 1)))
        limit = max(1, min(50, int(query.get("limit", 30))))
        start = (page - 1) * limit
        return 200, items[start:start + limit], {"X-Total-Count": str(len(items))}

    def _repo(self, owner: str, name: str) -> Repo:
        r = self.owner.repos.get(f"{owner}/{name}".lower())
        if r is None:
            raise GiteaError(404, "The target couldn't be found.")
        return r

    def _create_repo(self, owner: User, body: dict, *, mirror: bool = False, original: str = "") -> Repo:
        name = body.get("name") or body.get("repo_name")
        if not name:
            raise GiteaError(422, "[Name]: Required")
        problem = repo_name_problem(name)
        if problem:
            raise GiteaError(422, problem)
        key = f"{owner.login}/{name}".lower()
        if key in self.owner.repos:
            raise GiteaError(409, "The repository with the same name already exists.")
        repo = Repo(next(self.owner.ids), owner.login, name, private=bool(body.get("private")),
                    description=body.get("description", ""), default_branch=body.get("default_branch") or "main",
                    mirror=mirror, original_url=original, mirror_interval=body.get("mirror_interval", "") or "")
        self.owner.git.create_repo(f"{owner.login}/{name}", branch=repo.default_branch,
                                  files={"README.md": f"# {name}\n"} if body.get("auto_init") else None)
        self.owner.repos[key] = repo
        return repo

    def _route(self, method: str, path: str, q: dict, body: dict) -> tuple[int, Any, dict]:
        fake = self.owner
        if path == "/v2":
            if not fake.registry:
                raise GiteaError(404, "Not found")
            raise GiteaError(401, "unauthorized")
        if not path.startswith("/api/v1"):
            raise GiteaError(404, "Not found")
        p = path[len("/api/v1"):]
        caller = self._caller()
        if fake.require_signin and caller is None:
            raise GiteaError(403, "Only signed in user is allowed to call APIs.")
        self._check_scopes(method, p)
        if p == "/version" and method == "GET":
            return 200, {"version": fake.version}, {}
        if p == "/user" and method == "GET":
            return 200, fake.user_json(self._need(caller)), {}
        m = _match(r"/users/([^/]+)/tokens", p)
        if m and method == "POST":
            auth = self.headers.get("Authorization") or ""
            if not auth.startswith("Basic "):
                raise GiteaError(401, "auth required")
            caller = self._need(caller)
            if caller.login.lower() != m.group(1).lower() and not caller.is_admin:
                raise GiteaError(403, "user should be an owner of the token")
            if not body.get("name"):
                raise GiteaError(422, "[Name]: Required")
            if not body.get("scopes"):
                raise GiteaError(400, "access token must have a scope")
            if any(rec["name"] == body["name"] and login == m.group(1).lower()
                   for login, rec in fake.tokens.values()):
                raise GiteaError(422, "access token name has been used already")
            token = os.urandom(20).hex()
            fake.add_token(m.group(1), token, body["scopes"])
            fake.tokens[token][1]["name"] = body["name"]
            return 201, dict(fake.tokens[token][1]), {}
        m = _match(r"/users/([^/]+)", p)
        if m and method == "GET":
            u = fake.users.get(m.group(1).lower())
            if not u or u.is_org:
                raise GiteaError(404, f"user redirect does not exist [name: {m.group(1)}]")
            return 200, fake.user_json(u), {}
        if p == "/orgs" and method == "POST":
            caller = self._need(caller)
            name = body.get("username")
            if not name:
                raise GiteaError(422, "[UserName]: Required")
            if not valid_username(name):
                raise GiteaError(422, USERNAME_MESSAGE)
            if body.get("visibility", "public") not in ("public", "limited", "private"):
                raise GiteaError(422, "[Visibility]: invalid")
            if name.lower() in fake.users:
                raise GiteaError(422, f"user already exists [name: {name}]")
            if not caller.is_admin and not caller.allow_create_organization:
                raise GiteaError(403, "user not allowed to create organizations")
            org = fake.add_org(name, owner=caller.login, visibility=body.get("visibility", "public"))
            org.description = body.get("description", "")
            return 201, fake.org_json(org), {}
        if p == "/orgs" and method == "GET":
            self._need(caller)
            return self._page([fake.org_json(u) for u in fake.users.values() if u.is_org], q)
        m = _match(r"/orgs/([^/]+)", p)
        if m and method == "GET":
            u = fake.users.get(m.group(1).lower())
            if not u or not u.is_org:
                raise GiteaError(404, "GetOrgByName")
            return 200, fake.org_json(u), {}
        m = _match(r"/orgs/([^/]+)/repos", p)
        if m:
            org = fake.users.get(m.group(1).lower())
            if not org or not org.is_org:
                raise GiteaError(404, "GetOrgByName")
            if method == "GET":
                return self._page([fake.repo_json(r) for r in fake.repos.values()
                                   if r.owner.lower() == org.login.lower()], q)
            if method == "POST":
                caller = self._need(caller)
                if not caller.is_admin and not any(
                        caller.login.lower() in t.members and t.can_create_org_repo for t in fake.org_teams(org.login)):
                    raise GiteaError(403, "User is not allowed to create repositories in this organization.")
                repo = self._create_repo(org, body)
                if fake.access(caller, repo) < MODES["admin"]:  # "make creator repo admin" (services/repository)
                    repo.collaborators[caller.login.lower()] = "admin"
                return 201, fake.repo_json(repo), {}
        if p == "/user/repos":
            caller = self._need(caller)
            if method == "POST":
                if caller.max_repo_creation == 0 and not caller.is_admin:
                    raise GiteaError(403, "You have reached your limit of 0 repositories.")
                return 201, fake.repo_json(self._create_repo(caller, body)), {}
            return self._page([fake.repo_json(r) for r in fake.repos.values()
                               if r.owner.lower() == caller.login.lower()], q)
        m = _match(r"/users/([^/]+)/repos", p)
        if m and method == "GET":
            if m.group(1).lower() not in fake.users:
                raise GiteaError(404, f"user redirect does not exist [name: {m.group(1)}]")  # as Gitea answers
            return self._page([fake.repo_json(r) for r in fake.repos.values()
                               if r.owner.lower() == m.group(1).lower()], q)
        if p == "/repos/migrate" and method == "POST":
            caller = self._need(caller)
            return self._migrate(caller, body)
        m = _match(r"/repos/([^/]+)/([^/]+)", p)
        if m:
            repo = self._visible(m.group(1), m.group(2), caller)
            if method == "GET":
                return 200, fake.repo_json(repo), {}
            if method == "PATCH":
                self._need_mode(caller, repo, "admin",
                                "user should be an owner or a collaborator with admin write of a repository")
                for key in ("archived", "private"):
                    if key in body:
                        setattr(repo, key, bool(body[key]))
                for key in ("description", "default_branch"):
                    if key in body:
                        setattr(repo, key, str(body[key]))
                return 200, fake.repo_json(repo), {}
            if method == "DELETE":
                self._need_mode(caller, repo, "owner", "user should be the owner of the repo")
                del fake.repos[f"{repo.owner}/{repo.name}".lower()]
                import shutil

                shutil.rmtree(fake.git.path(f"{repo.owner}/{repo.name}"), ignore_errors=True)
                return 204, None, {}
        m = _match(r"/repos/([^/]+)/([^/]+)/branches/(.+)", p)
        if m and method == "GET":
            repo = self._visible(m.group(1), m.group(2), caller)  # Gitea hides what the caller cannot read
            branch = "/".join(unquote(part) for part in m.m.group(3).split("/"))
            sha = fake.git.refs(f"{repo.owner}/{repo.name}").get(f"refs/heads/{branch}")
            if sha is None:
                raise GiteaError(404, f"branch does not exist [name: {branch}]")
            return 200, {"name": branch, "commit": {"id": sha, "message": "", "url": ""},
                         "protected": False}, {}
        m = _match(r"/repos/([^/]+)/([^/]+)/mirror-sync", p)
        if m and method == "POST":
            repo = self._visible(m.group(1), m.group(2), self._need(caller))
            self._need_mode(caller, repo, "write", "user should have a permission to write to a repo")
            if not repo.mirror:
                raise GiteaError(400, "Repository is not a mirror")
            git("remote", "update", "--prune", cwd=fake.git.path(f"{repo.owner}/{repo.name}"),
                env=_auth_env(repo.auth_token))
            return 200, None, {}
        m = _match(r"/repos/([^/]+)/([^/]+)/hooks", p)
        if m:
            repo = self._visible(m.group(1), m.group(2), self._need(caller))
            self._need_mode(caller, repo, "admin",
                            "user should be an owner or a collaborator with admin write of a repository")
            if method == "GET":
                return self._page(repo.hooks, q)
            if method == "POST":
                cfg = body.get("config") or {}
                if not body.get("type") or not cfg.get("url") or not cfg.get("content_type"):
                    raise GiteaError(422, "[Type]: Required" if not body.get("type") else "Missing config option: url")
                hook = {"id": next(fake.ids), "type": body["type"],
                        "config": {"url": cfg["url"], "content_type": cfg["content_type"]},
                        "events": body.get("events") or ["push"], "active": bool(body.get("active", False)),
                        "branch_filter": body.get("branch_filter", ""), "authorization_header": "",
                        "updated_at": _now(), "created_at": _now()}
                hook["_secret"] = cfg.get("secret", "")
                repo.hooks.append(hook)
                return 201, {k: v for k, v in hook.items() if not k.startswith("_")}, {}
        raise GiteaError(404, "Not found")

    def _migrate(self, caller: User, body: dict) -> tuple[int, Any, dict]:
        fake = self.owner
        if not body.get("clone_addr") or not body.get("repo_name"):
            raise GiteaError(422, "[CloneAddr]: Required" if not body.get("clone_addr") else "[RepoName]: Required")
        owner = fake.users.get((body.get("repo_owner") or caller.login).lower())
        if owner is None:
            raise GiteaError(422, "user does not exist")
        if not caller.is_admin:  # routers/api/v1/repo/migrate.go
            if not owner.is_org and owner.login.lower() != caller.login.lower():
                raise GiteaError(403, "Given user is not an organization.")
            if owner.is_org and not fake.is_org_owner(owner.login, caller.login):
                raise GiteaError(403, "Given user is not owner of organization.")
        key = f"{owner.login}/{body['repo_name']}".lower()
        if key in fake.repos:
            raise GiteaError(409, "The repository with the same name already exists.")
        if body.get("mirror_interval") not in (None, "", "0") and not re.fullmatch(
                r"(\d+h)?(\d+m)?(\d+s)?", body["mirror_interval"]):
            raise GiteaError(422, "Invalid mirror interval")
        target = fake.git.path(f"{owner.login}/{body['repo_name']}")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            git("clone", "--mirror" if body.get("mirror") else "--bare", "-q", body["clone_addr"], str(target),
                env=_auth_env(body.get("auth_token") or ""))
        except subprocess.CalledProcessError:
            raise GiteaError(422, "Authentication failed or the repository could not be cloned") from None
        repo = Repo(next(fake.ids), owner.login, body["repo_name"], private=bool(body.get("private")),
                    description=body.get("description", ""), mirror=bool(body.get("mirror")),
                    original_url=body["clone_addr"], mirror_interval=body.get("mirror_interval") or "",
                    auth_token=body.get("auth_token") or "")
        fake.repos[key] = repo
        return 201, fake.repo_json(repo), {}


# ----------------------------------------------------------------------------- webhook additions
# Org-level hooks (GET/POST /orgs/{org}/hooks, PATCH /orgs/{org}/hooks/{id}) and repo hook PATCH,
# in one block wrapping the router above (which also serves GET .../branches/{branch}), so the
# rest of the fake stays as it is. Hooks keep their secret in "_secret" (never returned, like Gitea).

def _hook_from(fake: GiteaFake, body: dict) -> dict:
    cfg = body.get("config") or {}
    if not body.get("type") or not cfg.get("url") or not cfg.get("content_type"):
        raise GiteaError(422, "[Type]: Required" if not body.get("type") else "Missing config option: url")
    return {"id": next(fake.ids), "type": body["type"],
            "config": {"url": cfg["url"], "content_type": cfg["content_type"]},
            "events": body.get("events") or ["push"], "active": bool(body.get("active", False)),
            "branch_filter": body.get("branch_filter", ""), "authorization_header": "",
            "updated_at": _now(), "created_at": _now(), "_secret": cfg.get("secret", "")}


def _hook_edit(hook: dict, body: dict) -> dict:
    cfg = body.get("config") or {}
    if cfg:
        if "url" in cfg:
            hook["config"]["url"] = cfg["url"]
        if "content_type" in cfg:
            hook["config"]["content_type"] = cfg["content_type"]
        if "secret" in cfg:
            hook["_secret"] = cfg["secret"]
    for key in ("events", "branch_filter"):
        if key in body:
            hook[key] = body[key]
    if "active" in body:
        hook["active"] = bool(body["active"])
    hook["updated_at"] = _now()
    return hook


def _public(hook: dict) -> dict:
    return {k: v for k, v in hook.items() if not k.startswith("_")}


def _one_hook(hooks: list[dict], hook_id: int, method: str, body: dict) -> tuple[int, Any, dict]:
    hook = next((h for h in hooks if h["id"] == hook_id), None)
    if hook is None:
        raise GiteaError(404, "The target couldn't be found.")
    if method == "PATCH":
        return 200, _public(_hook_edit(hook, body)), {}
    if method == "DELETE":
        hooks.remove(hook)
        return 204, None, {}
    return 200, _public(hook), {}


GiteaFake.org_hooks = None  # type: ignore[attr-defined]  # org (lower-case) -> hooks, created on first use
_base_route = _Handler._route


def _route_with_webhook_additions(self: _Handler, method: str, path: str, q: dict, body: dict):
    fake = self.owner
    p = path[len("/api/v1"):] if path.startswith("/api/v1") else None
    m = re.fullmatch(r"/orgs/([^/]+)/hooks(?:/(\d+))?", p or "")
    if m:
        org = fake.users.get(m.group(1).lower())
        if not org or not org.is_org:
            raise GiteaError(404, "GetOrgByName")
        caller = self._need(self._caller())
        if not caller.is_admin and not fake.is_org_owner(org.login, caller.login):
            raise GiteaError(403, "Must be an organization owner")
        if fake.org_hooks is None:
            fake.org_hooks = {}
        hooks = fake.org_hooks.setdefault(org.login.lower(), [])
        if m.group(2) is None and method == "GET":
            return self._page([_public(h) for h in hooks], q)
        if m.group(2) is None and method == "POST":
            hook = _hook_from(fake, body)
            hooks.append(hook)
            return 201, _public(hook), {}
        return _one_hook(hooks, int(m.group(2) or -1), method, body)
    m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/hooks/(\d+)", p or "")
    if m and method in ("GET", "PATCH"):
        caller = self._need(self._caller())
        repo = self._visible(m.group(1), m.group(2), caller)
        self._need_mode(caller, repo, "admin",
                        "user should be an owner or a collaborator with admin write of a repository")
        return _one_hook(repo.hooks, int(m.group(3)), method, body)
    return _base_route(self, method, path, q, body)


_Handler._route = _route_with_webhook_additions  # type: ignore[method-assign]


# ----------------------------------------------------------------------------- identity additions
# Users made by the site admin (POST/PATCH /admin/users), token lists and revocation, teams and their
# members, collaborators, and GET /repos/search, wrapping the routers above. Every /api/v1 request
# first passes REQUIRE_SIGNIN_VIEW and the token scope check, as Gitea's middleware runs before routing.

def _team_json(fake: GiteaFake, t: Team) -> dict:
    org = fake.users[t.org]
    return {"id": t.id, "name": t.name, "description": t.description, "organization": fake.org_json(org),
            "includes_all_repositories": t.includes_all_repositories, "permission": t.permission,
            "units": sorted(t.units_map), "units_map": dict(t.units_map), "can_create_org_repo": t.can_create_org_repo}


def _team_fields(t: Team, body: dict) -> None:
    perm = body.get("permission")
    if perm is not None and perm not in ("read", "write", "admin"):
        raise GiteaError(422, "[Permission]: invalid")
    if perm:
        t.permission = perm
    if "units_map" in body:
        units = body["units_map"] or {}
        if any(v not in MODES for v in units.values()):
            raise GiteaError(422, "[UnitsMap]: invalid access mode")
        t.units_map = dict(units)
    elif body.get("units") and perm:
        t.units_map = {u: perm for u in body["units"]}
    for key in ("can_create_org_repo", "includes_all_repositories"):
        if key in body:
            setattr(t, key, bool(body[key]))
    if "description" in body:
        t.description = str(body["description"] or "")


_webhook_route = _Handler._route


def _route_with_identity_additions(self: _Handler, method: str, path: str, q: dict, body: dict):
    fake = self.owner
    if not path.startswith("/api/v1"):
        return _webhook_route(self, method, path, q, body)
    p = path[len("/api/v1"):]
    caller = self._caller()
    if fake.require_signin and caller is None:
        raise GiteaError(403, "Only signed in user is allowed to call APIs.")
    self._check_scopes(method, p)
    basic = (self.headers.get("Authorization") or "").startswith("Basic ")

    m = _match(r"/users/([^/]+)/tokens(?:/([^/]+))?", p)
    if m and method in ("GET", "DELETE"):
        if not basic:
            raise GiteaError(401, "auth required")  # reqBasicOrRevProxyAuth
        caller = self._need(caller)
        login = m.group(1).lower()
        if login not in fake.users:
            raise GiteaError(404, f"user redirect does not exist [name: {m.group(1)}]")
        if caller.login.lower() != login and not caller.is_admin:
            raise GiteaError(403, "doer should be the site admin or be same as the contextUser")
        mine = [(tok, rec) for tok, (owner, rec) in fake.tokens.items() if owner == login]
        if method == "GET" and m.group(2) is None:
            return self._page([{k: rec[k] for k in ("id", "name", "scopes", "token_last_eight")} for _, rec in mine], q)
        if method == "DELETE" and m.group(2) is not None:
            key = m.group(2)
            hits = [tok for tok, rec in mine if str(rec["id"]) == key or rec["name"] == key]
            if not hits:
                raise GiteaError(404, "The target couldn't be found.")
            del fake.tokens[hits[0]]
            fake.git.tokens.discard(hits[0])
            return 204, None, {}

    m = _match(r"/admin/users(?:/([^/]+))?", p)
    if m and method in ("POST", "PATCH"):
        caller = self._need(caller)
        if not caller.is_admin:
            raise GiteaError(403, "user should be the site admin")  # reqSiteAdmin
        if method == "POST" and m.group(1) is None:
            name = body.get("username") or ""
            if not name or not body.get("email") or not body.get("password"):
                raise GiteaError(422, "[Username]: Required" if not name else
                                 "[Email]: Required" if not body.get("email") else "[Password]: Required")
            if not valid_username(name):
                raise GiteaError(422, USERNAME_MESSAGE)
            if name.lower() in fake.users:
                raise GiteaError(422, f"user already exists [name: {name}]")
            u = fake.add_user(name, body["password"])
            u.email = body["email"]
            # Gitea 1.22+: an admin-made user must change its password unless told otherwise.
            u.must_change_password = body.get("must_change_password", True) is not False
            if body.get("visibility") in ("public", "limited", "private"):
                u.visibility = body["visibility"]
            return 201, fake.user_json(u), {}
        if method == "PATCH" and m.group(1) is not None:
            u = fake.users.get(m.group(1).lower())
            if u is None or u.is_org:
                raise GiteaError(404, f"user redirect does not exist [name: {m.group(1)}]")
            if not body.get("login_name") and "source_id" in body:
                raise GiteaError(422, "[LoginName]: Required")
            for key, attr in (("restricted", "restricted"), ("allow_create_organization", "allow_create_organization"),
                              ("must_change_password", "must_change_password"), ("admin", "is_admin")):
                if key in body:
                    setattr(u, attr, bool(body[key]))
            if "max_repo_creation" in body:
                u.max_repo_creation = int(body["max_repo_creation"])
            if body.get("visibility") in ("public", "limited", "private"):
                u.visibility = body["visibility"]
            if body.get("password"):
                u.password = body["password"]
            return 200, fake.user_json(u), {}

    m = _match(r"/orgs/([^/]+)/teams", p)
    if m:
        org = fake.users.get(m.group(1).lower())
        if not org or not org.is_org:
            raise GiteaError(404, "GetOrgByName")
        caller = self._need(caller)
        if not caller.is_admin and not fake.is_org_member(org.login, caller.login):
            raise GiteaError(403, "Must be an organization member")
        if method == "GET":
            return self._page([_team_json(fake, t) for t in fake.org_teams(org.login)], q)
        if method == "POST":
            if not caller.is_admin and not fake.is_org_owner(org.login, caller.login):
                raise GiteaError(403, "Must be an organization owner")
            name = body.get("name") or ""
            if not name:
                raise GiteaError(422, "[Name]: Required")
            if any(t.name.lower() == name.lower() for t in fake.org_teams(org.login)):
                raise GiteaError(422, f"team already exists [org_id: {org.id}, name: {name}]")
            t = Team(next(fake.ids), org.login.lower(), name)
            _team_fields(t, {"permission": "read", **body})
            fake.teams[t.id] = t
            return 201, _team_json(fake, t), {}

    m = _match(r"/teams/(\d+)(?:/(members|repos)(?:/([^/]+)(?:/([^/]+))?)?)?", p)
    if m:
        caller = self._need(caller)
        t = fake.teams.get(int(m.group(1)))
        if t is None:
            raise GiteaError(404, "The target couldn't be found.")
        owner = caller.is_admin or fake.is_org_owner(t.org, caller.login)
        if not owner and caller.login.lower() not in t.members:  # reqTeamMembership
            if fake.is_org_member(t.org, caller.login):
                raise GiteaError(403, "Must be a team member")
            raise GiteaError(404, "The target couldn't be found.")
        sub, who = m.group(2), m.group(3)
        if sub is None and method == "GET":
            return 200, _team_json(fake, t), {}
        if sub is None and method == "PATCH":
            if not owner:
                raise GiteaError(403, "Must be an organization owner")
            _team_fields(t, body)
            return 200, _team_json(fake, t), {}
        if sub == "members" and who is None and method == "GET":
            return self._page([fake.user_json(fake.users[u]) for u in sorted(t.members)], q)
        if sub == "members" and who is not None and method in ("PUT", "DELETE"):
            if not owner:
                raise GiteaError(403, "Must be an organization owner")
            u = fake.users.get(who.lower())
            if u is None or u.is_org:
                raise GiteaError(404, f"user redirect does not exist [name: {who}]")
            if method == "PUT":
                t.members.add(u.login.lower())
            else:
                if t.permission == "owner" and len(t.members) == 1 and u.login.lower() in t.members:
                    raise GiteaError(422, "the last owner of an organization cannot leave it")
                t.members.discard(u.login.lower())
            return 204, None, {}

    m = _match(r"/repos/([^/]+)/([^/]+)/collaborators/([^/]+)(/permission)?", p)
    if m:
        caller = self._need(caller)
        repo = self._visible(m.group(1), m.group(2), caller)
        who = m.group(3).lower()
        if m.group(4) and method == "GET":
            u = fake.users.get(who)
            if u is None:
                raise GiteaError(404, f"user redirect does not exist [name: {m.group(3)}]")
            mode = MODE_NAMES[fake.access(u, repo)]
            return 200, {"permission": mode, "role_name": mode, "user": fake.user_json(u)}, {}
        if not m.group(4) and method == "GET":
            if who not in repo.collaborators:
                raise GiteaError(404, "The target couldn't be found.")
            return 204, None, {}
        if not m.group(4) and method in ("PUT", "DELETE"):
            self._need_mode(caller, repo, "admin",
                            "user should be an owner or a collaborator with admin write of a repository")
            u = fake.users.get(who)
            if u is None or u.is_org:
                raise GiteaError(422, f"user does not exist [name: {m.group(3)}]")
            if method == "DELETE":
                repo.collaborators.pop(who, None)
                return 204, None, {}
            perm = body.get("permission") or "write"
            if perm not in ("read", "write", "admin"):
                raise GiteaError(422, "[Permission]: invalid")
            repo.collaborators[who] = perm
            return 204, None, {}

    if p == "/repos/search" and method == "GET":
        seen = [fake.repo_json(r) for r in fake.repos.values() if fake.access(caller, r) >= MODES["read"]]
        status, page, headers = self._page(seen, q)
        return status, {"ok": True, "data": page}, headers
    return _webhook_route(self, method, path, q, body)


_Handler._route = _route_with_identity_additions  # type: ignore[method-assign]


# ----------------------------------------------------------------------------- commit statuses
# POST /repos/{owner}/{repo}/statuses/{sha} checked against the swagger's CreateStatusOption (every field a
# string, ``state`` one of the CommitStatusState values of this Gitea version), after the router's
# write:repository scope check; write access to the repo is required. GET .../commits/{ref}/statuses lists
# them newest first, as Gitea does.
STATUS_FIELDS = ("context", "description", "state", "target_url")
STATUS_STATES = ("pending", "success", "error", "failure", "warning")  # Gitea 1.22's CommitStatusState

GiteaFake.statuses = None  # type: ignore[attr-defined]  # "owner/name" (lower) -> sha -> [status, ...]
_identity_route = _Handler._route


def _status_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a CreateStatusOption object"
    for k in STATUS_FIELDS:
        if k in body and not isinstance(body[k], str):
            return f"[{k.capitalize()}]: must be a string"
    if body.get("state") not in STATUS_STATES:
        return f"invalid state {body.get('state')!r}"
    return None


def _route_with_statuses(self: _Handler, method: str, path: str, q: dict, body: dict):
    fake = self.owner
    p = path[len("/api/v1"):] if path.startswith("/api/v1") else ""
    m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/statuses/([^/]+)", p)
    if m and method == "POST":
        caller = self._caller()
        if fake.require_signin and caller is None:
            raise GiteaError(403, "Only signed in user is allowed to call APIs.")
        self._check_scopes(method, p)
        repo = self._visible(m.group(1), m.group(2), caller)
        caller = self._need_mode(caller, repo, "write", "user should have write permission on the repository")
        problem = _status_problem(body)
        if problem:
            raise GiteaError(422, problem)
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", m.group(3)):
            raise GiteaError(404, "The target couldn't be found.")
        if fake.statuses is None:
            fake.statuses = {}
        shelf = fake.statuses.setdefault(f"{repo.owner}/{repo.name}".lower(), {}).setdefault(m.group(3), [])
        status = {"id": next(fake.ids), "state": body["state"], "context": body.get("context", ""),
                  "description": body.get("description", ""), "target_url": body.get("target_url", ""),
                  "url": f"{fake.url}/api/v1/repos/{repo.owner}/{repo.name}/statuses/{m.group(3)}",
                  "created_at": _now(), "updated_at": _now(), "creator": fake.user_json(caller)}
        shelf.append(status)
        return 201, status, {}
    m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/commits/([^/]+)/statuses", p)
    if m and method == "GET":
        repo = self._visible(m.group(1), m.group(2), self._caller())
        found = ((fake.statuses or {}).get(f"{repo.owner}/{repo.name}".lower()) or {}).get(m.group(3), [])
        return self._page(list(reversed(found)), q)
    return _identity_route(self, method, path, q, body)


_Handler._route = _route_with_statuses  # type: ignore[method-assign]


def posted_statuses(fake: GiteaFake, repo: str, sha: str) -> list[dict]:
    """The statuses posted on one commit, oldest first (what a test asserts on)."""
    with fake.lock:
        return list(((fake.statuses or {}).get(repo.lower()) or {}).get(sha, []))


# ----------------------------------------------------------------------------- contents additions
# GET /repos/{owner}/{repo}/contents/{filepath}?ref= (routers/api/v1/repo/file.go GetContents): a file is a
# ContentsResponse with its content in base64; a directory is a list of entries without content; a
# symlink is type "symlink" with its target; a missing ref or path is 404. Read from the real bare repo.

def _contents_entry(repo: Repo, ref: str, path: str, mode: str, otype: str, oid: str, size: int,
                    git_dir: str, with_content: bool) -> dict:
    kind = {"tree": "dir", "commit": "submodule"}.get(otype, "symlink" if mode == "120000" else "file")
    entry: dict[str, Any] = {
        "name": path.rsplit("/", 1)[-1], "path": path, "sha": oid, "last_commit_sha": ref, "type": kind,
        "size": size if kind in ("file", "symlink") else 0, "encoding": None, "content": None, "target": None,
        "url": "", "html_url": "", "git_url": "", "download_url": None, "submodule_git_url": None,
        "_links": {"self": "", "git": "", "html": ""}}
    if with_content and kind in ("file", "symlink"):
        data = subprocess.run(["git", "--git-dir", git_dir, "cat-file", "blob", oid], capture_output=True,
                              check=True).stdout
        if kind == "file":
            entry["encoding"], entry["content"] = "base64", base64.b64encode(data).decode()
        else:
            entry["target"] = data.decode("utf-8", errors="replace")
    return entry


_route_before_contents = _Handler._route


def _route_with_contents(self: _Handler, method: str, path: str, q: dict, body: dict):
    fake = self.owner
    m = re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)/contents(?:/(.*))?", path)
    if not m or method != "GET":
        return _route_before_contents(self, method, path, q, body)
    caller = self._caller()
    if fake.require_signin and caller is None:
        raise GiteaError(403, "Only signed in user is allowed to call APIs.")
    self._check_scopes(method, path[len("/api/v1"):])
    repo = self._visible(m.group(1), m.group(2), caller)
    rel = "/".join(unquote(part) for part in (m.group(3) or "").split("/") if part)
    git_dir = str(fake.git.path(f"{repo.owner}/{repo.name}"))
    ref = q.get("ref") or repo.default_branch
    resolved = subprocess.run(["git", "--git-dir", git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                              capture_output=True, text=True)
    if resolved.returncode != 0:
        raise GiteaError(404, f"object does not exist [id: {ref}, rel_path: ]")
    commit = resolved.stdout.strip()
    if not rel:
        listing = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "-l", commit], capture_output=True,
                                 text=True, check=True).stdout
        return 200, [_contents_entry(repo, commit, line.split("\t", 1)[1], *_fields(line), git_dir, False)
                     for line in listing.splitlines()], {}
    out = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "-l", commit, "--", rel], capture_output=True,
                         text=True, check=True).stdout
    line = next((ln for ln in out.splitlines() if ln.split("\t", 1)[1] == rel), None)
    if line is None:
        raise GiteaError(404, f"object does not exist [id: {commit}, rel_path: {rel}]")
    mode, otype, oid, size = _fields(line)
    if otype == "tree":
        listing = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "-l", commit, "--", rel + "/"],
                                 capture_output=True, text=True, check=True).stdout
        return 200, [_contents_entry(repo, commit, ln.split("\t", 1)[1], *_fields(ln), git_dir, False)
                     for ln in listing.splitlines()], {}
    return 200, _contents_entry(repo, commit, rel, mode, otype, oid, size, git_dir, True), {}


def _fields(line: str) -> tuple[str, str, str, int]:
    mode, otype, oid, size = line.split("\t", 1)[0].split()
    return mode, otype, oid, int(size) if size.isdigit() else 0


_Handler._route = _route_with_contents  # type: ignore[method-assign]
