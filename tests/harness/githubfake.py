"""A stateful GitHub REST API fake over HTTP on 127.0.0.1, for the mirror and webhook features.

It answers like api.github.com for what raibid uses: repository listings with GitHub's ``Link``
pagination, single repositories, ``/rate_limit`` and repository webhooks, with GitHub's status
codes, error bodies and ``X-RateLimit-*`` headers on every response. Every repository is a real
bare repo behind the fake's own smart-HTTP git server: ``clone_url`` clones with the token as the
Basic password, and anonymously for public repositories, as on github.com.

Time comes from ``clock`` (``time.time`` unless a test passes a :class:`FakeClock`), so a
rate-limit window opens and closes without sleeping.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import hmac
import itertools
import json
import math
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from tests.harness.giteafake import _auth_env
from tests.harness.githttp import GitHTTPServer, _GitHandler, git
from tests.harness.served import Handler, Served

GITHUB_TOKEN = "github-test-token-A7f3c9e1b5d2"
DOCS = "https://docs.github.com/rest"
RATE_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
ZERO_SHA = "0" * 40
AUTHENTICATED_LIMIT = 5000
ANONYMOUS_LIMIT = 60


class FakeClock:
    """A clock a test moves by hand: ``GitHubFake(..., clock=FakeClock())`` then ``clock.advance(2)``."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Owner:
    id: int
    login: str
    type: str  # "Organization" or "User", GitHub's spelling


@dataclass
class Hook:
    id: int
    active: bool
    events: list[str]
    config: dict[str, str]  # url, content_type, insecure_ssl and, when set, the clear-text secret
    created_at: float
    updated_at: float
    last_response: dict = field(default_factory=lambda: {"code": None, "status": "unused", "message": None})


@dataclass
class Repo:
    id: int
    owner: Owner
    name: str
    private: bool = False
    fork: bool = False
    archived: bool = False
    disabled: bool = False
    description: str | None = None
    default_branch: str = "main"
    admin: bool = True  # the token's permissions on this repository
    push: bool = True
    created_at: float = 0.0
    updated_at: float = 0.0
    pushed_at: float = 0.0
    hooks: dict[int, Hook] = field(default_factory=dict)
    pulls: dict[int, Pull] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"


@dataclass
class Pull:
    """A pull request into a repo: its head branch lives in ``head_repo`` (the repo itself, or a fork)."""

    number: int
    head_repo: Repo | None  # None: the fork was deleted
    head_ref: str
    base_ref: str
    author: str
    head_sha: str
    state: str = "open"


@dataclass
class Bucket:
    limit: int
    used: int = 0
    reset: int = 0  # epoch seconds; 0 opens a fresh window on the first request

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class Logged(NamedTuple):
    method: str
    path: str  # without the query string
    status: int
    auth: bool  # whether the request carried an Authorization header


class GitOp(NamedTuple):
    op: str  # "advertise" (info/refs), "ls-refs", "fetch" (objects asked for), "upload-pack", "push", "other"
    repo: str  # "owner/name" as in the URL
    status: int


class Delivery(NamedTuple):
    hook_id: int
    event: str
    guid: str
    status: int | None  # None: the receiver could not be reached


@dataclass
class _Fault:
    remaining: int
    status: int = 503
    hang: float = 0.0
    method: str | None = None
    path: str | None = None  # regex searched in the path

    def applies(self, method: str, path: str) -> bool:
        return (self.remaining > 0 and (self.method is None or self.method == method)
                and (self.path is None or re.search(self.path, path) is not None))


class GitHubError(Exception):
    def __init__(self, status: int, message: str, *, docs: str = DOCS, errors: list | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.docs, self.errors = status, message, docs, errors
        self.headers = headers or {}

    def body(self) -> dict:
        body: dict[str, Any] = {"message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return {**body, "documentation_url": self.docs, "status": str(self.status)}


def _not_found() -> GitHubError:
    return GitHubError(404, "Not Found")


def _invalid(message: str) -> GitHubError:
    return GitHubError(422, "Validation Failed", errors=[{"resource": "Hook", "code": "custom", "message": message}])


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GitHubFake(Served):
    """api.github.com for one token; repos, rate limits, faults and hooks driven by the test."""

    def __init__(self, root: Path, *, token: str = GITHUB_TOKEN, login: str = "raibid-bot",
                 clock: Callable[[], float] = time.time) -> None:
        self.token = token
        self.tokens: set[str] = {token}
        self.clock = clock
        self.scopes = "admin:repo_hook, repo"  # X-OAuth-Scopes of a classic token
        self.token_scopes: dict[str, str] = {}  # other tokens (add_token) -> their scopes
        self.statuses: dict[str, dict[str, list[dict]]] = {}  # "owner/name" (lower) -> sha -> statuses, oldest first
        self.lock = threading.RLock()
        self.ids = itertools.count(1001)
        self.owners: dict[str, Owner] = {}  # login (lower-case) -> Owner
        self.repos: dict[str, Repo] = {}  # "owner/name" (lower-case) -> Repo
        self.log: list[Logged] = []
        self.git_log: list[GitOp] = []
        self.deliveries: list[Delivery] = []
        self.faults: list[_Fault] = []
        self.buckets = {"token": Bucket(AUTHENTICATED_LIMIT), "anonymous": Bucket(ANONYMOUS_LIMIT)}
        self._secondary: dict[str, Any] | None = None
        self._released = threading.Event()  # ends hangs on stop()
        self.git: GitHTTPServer = _GitServer(root / "git", token, self)
        self.viewer = self.add_user(login)

    def add_token(self, token: str, scopes: str) -> str:
        """Another classic token of the viewer, with its own ``X-OAuth-Scopes`` (e.g. "repo:status")."""
        with self.lock:
            self.tokens.add(token)
            self.token_scopes[token] = scopes
        return token

    def posted_statuses(self, owner: str, name: str, sha: str) -> list[dict]:
        with self.lock:
            return list(self.statuses.get(f"{owner}/{name}".lower(), {}).get(sha, []))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> GitHubFake:
        self._released.clear()
        self.git.start()
        self._serve(_Handler)
        return self

    def stop(self) -> None:
        self._released.set()
        super().stop()
        self.git.stop()

    @property
    def url(self) -> str:
        return self.base_url

    # ------------------------------------------------------------------ owners and repositories
    def add_org(self, login: str) -> Owner:
        return self._add_owner(login, "Organization")

    def add_user(self, login: str) -> Owner:
        return self._add_owner(login, "User")

    def _add_owner(self, login: str, kind: str) -> Owner:
        with self.lock:
            if login.lower() in self.owners:
                raise ValueError(f"owner {login} exists")
            owner = Owner(next(self.ids), login, kind)
            self.owners[login.lower()] = owner
            return owner

    def add_repo(self, owner: str, name: str, *, private: bool = False, fork: bool = False,
                 archived: bool = False, description: str | None = None, default_branch: str = "main",
                 files: dict[str, str] | None = None,
                 branches: dict[str, dict[str, str]] | None = None) -> Repo:
        """A repository of an existing owner: empty, or ``files`` on the default branch, or ``branches``."""
        with self.lock:
            who = self.owners[owner.lower()]
            if f"{owner}/{name}".lower() in self.repos:
                raise ValueError(f"repository {owner}/{name} exists")
            now = self.clock()
            repo = Repo(next(self.ids), who, name, private=private, fork=fork, archived=archived,
                        description=description, default_branch=default_branch,
                        created_at=now, updated_at=now, pushed_at=now)
        self.git.create_repo(repo.full_name, branch=default_branch, files=files)
        for branch, branch_files in (branches or {}).items():
            self.git.commit(repo.full_name, branch, branch_files, f"{branch}: initial commit")
        with self.lock:
            self.repos[repo.full_name.lower()] = repo
        return repo

    def repo(self, owner: str, name: str) -> Repo:
        return self.repos[f"{owner}/{name}".lower()]

    def commit(self, owner: str, name: str, branch: str, files: dict[str, str], message: str = "change") -> str:
        """Commit ``files`` on ``branch`` upstream (creating it) and return the new sha."""
        repo = self.repo(owner, name)
        sha = self.git.commit(repo.full_name, branch, files, message)
        self._pushed(repo)
        return sha

    def tag(self, owner: str, name: str, tag: str, ref: str = "HEAD") -> str:
        return self.git.tag(self.repo(owner, name).full_name, tag, ref)

    def delete_branch(self, owner: str, name: str, branch: str) -> None:
        repo = self.repo(owner, name)
        git("update-ref", "-d", f"refs/heads/{branch}", cwd=self.git.path(repo.full_name))
        self._pushed(repo)

    def delete_repo(self, owner: str, name: str) -> None:
        """The repository disappears upstream: API 404s, and git no longer serves it."""
        with self.lock:
            repo = self.repos.pop(f"{owner}/{name}".lower())
        shutil.rmtree(self.git.path(repo.full_name), ignore_errors=True)

    # ------------------------------------------------------------------ pull requests
    def open_pull(self, owner: str, name: str, head_ref: str, *, base_ref: str = "main",
                  head: tuple[str, str] | None = None, author: str | None = None) -> Pull:
        """A PR from ``head_ref`` of ``head`` (OWNER, NAME; default the repo itself, else a fork) into
        ``base_ref``; the base repo gets ``refs/pull/<n>/head`` as on GitHub."""
        repo = self.repo(owner, name)
        head_repo = self.repo(*head) if head else repo
        with self.lock:
            number = len(repo.pulls) + 1
        sha = self._pull_ref(repo, number, head_repo, head_ref)
        pull = Pull(number, head_repo, head_ref, base_ref, author or head_repo.owner.login, sha)
        with self.lock:
            repo.pulls[number] = pull
        return pull

    def push_to_pull(self, owner: str, name: str, number: int, files: dict[str, str]) -> str:
        """A new commit on the PR's head branch (in its head repo); refs/pull/<n>/head follows."""
        repo = self.repo(owner, name)
        pull = repo.pulls[number]
        assert pull.head_repo is not None
        self.git.commit(pull.head_repo.full_name, pull.head_ref, files, "pr change")
        pull.head_sha = self._pull_ref(repo, number, pull.head_repo, pull.head_ref)
        return pull.head_sha

    def close_pull(self, owner: str, name: str, number: int) -> None:
        self.repo(owner, name).pulls[number].state = "closed"  # refs/pull/<n>/head stays, as on GitHub

    def _pull_ref(self, repo: Repo, number: int, head_repo: Repo, head_ref: str) -> str:
        base = self.git.path(repo.full_name)
        git("fetch", "-q", str(self.git.path(head_repo.full_name)), f"+refs/heads/{head_ref}:refs/pull/{number}/head",
            cwd=base)
        return git("rev-parse", f"refs/pull/{number}/head", cwd=base).strip()

    def pull_json(self, repo: Repo, pull: Pull) -> dict:
        """A pull request as ``GET /repos/{o}/{r}/pulls`` lists it (the fields of GitHub's shape raibid reads,
        and a few around them)."""
        user = self.owners.get(pull.author.lower()) or Owner(0, pull.author, "User")
        head_repo = self.repo_json(pull.head_repo, authenticated=False) if pull.head_repo else None
        base_sha = self.git.refs(repo.full_name).get(f"refs/heads/{pull.base_ref}", ZERO_SHA)
        return {"url": f"{self.url}/repos/{repo.full_name}/pulls/{pull.number}", "id": 50_000 + pull.number,
                "number": pull.number, "state": pull.state, "locked": False, "title": f"PR {pull.number}",
                "user": self.owner_json(user), "draft": False,
                "head": {"label": f"{(pull.head_repo.owner.login if pull.head_repo else 'unknown')}:{pull.head_ref}",
                         "ref": pull.head_ref, "sha": pull.head_sha, "user": self.owner_json(user), "repo": head_repo},
                "base": {"label": f"{repo.owner.login}:{pull.base_ref}", "ref": pull.base_ref, "sha": base_sha,
                         "user": self.owner_json(repo.owner), "repo": self.repo_json(repo, authenticated=False)}}

    def set_admin(self, owner: str, name: str, admin: bool = True) -> None:
        self.repo(owner, name).admin = admin

    def refs(self, owner: str, name: str) -> dict[str, str]:
        return self.git.refs(self.repo(owner, name).full_name)

    def heads(self, owner: str, name: str) -> dict[str, str]:
        """``{"refs/heads/main": sha, ...}``: the branches as ``git ls-remote --heads`` shows them."""
        return {ref: sha for ref, sha in self.refs(owner, name).items() if ref.startswith("refs/heads/")}

    def git_env(self, token: str | None = None) -> dict[str, str]:
        """Environment for ``git`` that sends ``token`` (default: the fake's) as the Basic password."""
        return _auth_env(self.token if token is None else token)

    def _pushed(self, repo: Repo) -> None:
        with self.lock:
            repo.pushed_at = repo.updated_at = self.clock()

    def _find(self, owner: str, name: str) -> Repo | None:
        return self.repos.get(f"{owner}/{name}".lower())

    # ------------------------------------------------------------------ rate limits and faults
    def rate_limit(self, remaining: int = 0, reset_in: float = 60, *, limit: int | None = None,
                   anonymous: bool = False) -> None:
        """Leave ``remaining`` requests in the token's (or the anonymous) window, which resets in ``reset_in`` s."""
        with self.lock:
            bucket = self.buckets["anonymous" if anonymous else "token"]
            if limit is not None:
                bucket.limit = limit
            bucket.used = bucket.limit - remaining
            bucket.reset = math.ceil(self.clock() + reset_in)

    def secondary_limit(self, retry_after: int = 60, *, status: int = 403, count: int | None = None) -> None:
        """Answer ``status`` with ``Retry-After``: for ``retry_after`` s of the clock, or the next ``count`` requests."""
        with self.lock:
            self._secondary = {"status": status, "retry_after": retry_after, "count": count,
                               "until": None if count is not None else self.clock() + retry_after}

    def reset_limits(self) -> None:
        with self.lock:
            self.buckets = {"token": Bucket(AUTHENTICATED_LIMIT), "anonymous": Bucket(ANONYMOUS_LIMIT)}
            self._secondary = None

    def fail_next(self, count: int = 1, status: int = 503, method: str | None = None, path: str | None = None) -> None:
        with self.lock:
            self.faults.append(_Fault(count, status=status, method=method, path=path))

    def hang_next(self, count: int = 1, seconds: float = 30.0, method: str | None = None,
                  path: str | None = None) -> None:
        """Hold the next ``count`` matching requests for ``seconds`` (or until stop) before answering."""
        with self.lock:
            self.faults.append(_Fault(count, hang=seconds, method=method, path=path))

    def _bucket(self, authenticated: bool) -> Bucket:
        bucket = self.buckets["token" if authenticated else "anonymous"]
        now = self.clock()
        if now >= bucket.reset:
            bucket.used, bucket.reset = 0, math.ceil(now + 3600)
        return bucket

    def _secondary_hit(self) -> tuple[int, int] | None:
        """(status, Retry-After seconds) while the secondary limit holds; it lifts by count or by the clock."""
        s = self._secondary
        if s is None:
            return None
        if s["count"] is not None:
            s["count"] -= 1
            if s["count"] <= 0:
                self._secondary = None
            return s["status"], s["retry_after"]
        left = s["until"] - self.clock()
        if left <= 0:
            self._secondary = None
            return None
        return s["status"], math.ceil(left)

    # ------------------------------------------------------------------ logs
    def requests(self, method: str | None = None, path: str | None = None) -> list[Logged]:
        """Logged API requests, filtered by method and by a regex searched in the path."""
        return [r for r in list(self.log) if (method is None or r.method == method)
                and (path is None or re.search(path, r.path))]

    def git_ops(self, op: str, owner: str | None = None, name: str | None = None) -> list[GitOp]:
        """Successful git requests of one kind, optionally for one repository."""
        full = f"{owner}/{name}".lower() if owner and name else None
        return [g for g in list(self.git_log) if g.op == op and g.status == 200
                and (full is None or g.repo.lower() == full)]

    def git_fetches(self, owner: str | None = None, name: str | None = None) -> int:
        """Upload-pack requests that asked for objects: one per clone or fetch that downloaded something."""
        return len(self.git_ops("fetch", owner, name))

    def git_pushes(self, owner: str | None = None, name: str | None = None) -> int:
        return len(self.git_ops("push", owner, name))

    # ------------------------------------------------------------------ webhook deliveries
    def deliver(self, owner: str, name: str, event: str, payload: dict) -> list[Delivery]:
        """POST ``payload`` to the repository's active hooks subscribed to ``event``, signed like GitHub."""
        repo = self.repo(owner, name)
        with self.lock:
            hooks = [h for h in repo.hooks.values()
                     if h.active and (event == "ping" or event in h.events or "*" in h.events)]
        out = []
        for hook in hooks:
            data = json.dumps(payload).encode()
            ctype = "application/json"
            if hook.config.get("content_type", "form") == "form":
                data, ctype = urlencode({"payload": data.decode()}).encode(), "application/x-www-form-urlencoded"
            guid = str(uuid.uuid4())
            headers = {"Content-Type": ctype, "User-Agent": "GitHub-Hookshot/raibid-fake", "X-GitHub-Event": event,
                       "X-GitHub-Delivery": guid, "X-GitHub-Hook-ID": str(hook.id),
                       "X-GitHub-Hook-Installation-Target-Type": "repository",
                       "X-GitHub-Hook-Installation-Target-ID": str(repo.id)}
            secret = hook.config.get("secret")
            if secret:
                headers["X-Hub-Signature"] = "sha1=" + hmac.new(secret.encode(), data, hashlib.sha1).hexdigest()
                headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret.encode(), data,
                                                                      hashlib.sha256).hexdigest()
            request = urllib.request.Request(hook.config["url"], data=data, headers=headers, method="POST")
            status: int | None
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    status, message = resp.status, "OK"
            except urllib.error.HTTPError as e:
                status, message = e.code, f"Invalid HTTP Response: {e.code}"
            except OSError as e:
                status, message = None, f"failed to connect to host: {e}"
            with self.lock:
                hook.last_response = {"code": status, "status": "active" if status and status < 300 else "failed",
                                      "message": message}
            out.append(Delivery(hook.id, event, guid, status))
        self.deliveries.extend(out)
        return out

    def push_payload(self, owner: str, name: str, branch: str, before: str, after: str) -> dict:
        """The fields of a ``push`` event that a mirror reads (ref, before/after, repository, sender)."""
        repo = self.repo(owner, name)
        return {"ref": f"refs/heads/{branch}", "before": before, "after": after,
                "created": before == ZERO_SHA, "deleted": after == ZERO_SHA, "forced": False,
                "repository": self.repo_json(repo, authenticated=False),
                "pusher": {"name": self.viewer.login}, "sender": self.owner_json(self.viewer),
                "commits": [], "head_commit": None}

    # ------------------------------------------------------------------ shapes
    def owner_json(self, owner: Owner) -> dict:
        api = f"{self.url}/users/{quote(owner.login)}"
        return {"login": owner.login, "id": owner.id, "node_id": f"O_{owner.id}", "type": owner.type,
                "site_admin": False, "url": api, "html_url": f"{self.git.base_url}/{owner.login}",
                "repos_url": f"{api}/repos", "avatar_url": ""}

    def repo_json(self, repo: Repo, *, authenticated: bool) -> dict:
        api = f"{self.url}/repos/{repo.full_name}"
        body = {"id": repo.id, "node_id": f"R_{repo.id}", "name": repo.name, "full_name": repo.full_name,
                "owner": self.owner_json(repo.owner), "private": repo.private,
                "html_url": f"{self.git.base_url}/{repo.full_name}", "description": repo.description,
                "fork": repo.fork, "url": api, "hooks_url": f"{api}/hooks",
                "created_at": _iso(repo.created_at), "updated_at": _iso(repo.updated_at),
                "pushed_at": _iso(repo.pushed_at), "clone_url": self.git.url(repo.full_name),
                "ssh_url": f"git@127.0.0.1:{repo.full_name}.git", "mirror_url": None, "size": 0,
                "archived": repo.archived, "disabled": repo.disabled,
                "visibility": "private" if repo.private else "public", "is_template": False, "topics": [],
                "default_branch": repo.default_branch}
        if authenticated:
            body["permissions"] = {"admin": repo.admin, "maintain": repo.admin, "push": repo.push or repo.admin,
                                   "triage": repo.push or repo.admin, "pull": True}
        return body

    def hook_json(self, repo: Repo, hook: Hook) -> dict:
        url = f"{self.url}/repos/{repo.full_name}/hooks/{hook.id}"
        config = {k: ("********" if k == "secret" else v) for k, v in hook.config.items()}
        return {"type": "Repository", "id": hook.id, "name": "web", "active": hook.active,
                "events": list(hook.events), "config": config, "updated_at": _iso(hook.updated_at),
                "created_at": _iso(hook.created_at), "url": url, "test_url": f"{url}/test",
                "ping_url": f"{url}/pings", "deliveries_url": f"{url}/deliveries",
                "last_response": dict(hook.last_response)}

    def rate_json(self, bucket: Bucket, authenticated: bool) -> dict:
        core = {"limit": bucket.limit, "used": bucket.used, "remaining": bucket.remaining, "reset": bucket.reset}

        def unused(limit: int) -> dict:
            return {"limit": limit, "used": 0, "remaining": limit, "reset": bucket.reset}

        return {"resources": {"core": core, "search": unused(30 if authenticated else 10),
                              "graphql": unused(5000 if authenticated else 0)}, "rate": core}


# ----------------------------------------------------------------------------- git over HTTP


_GIT_PATH = re.compile(r"/([^/]+)/([^/]+?)\.git/(.*)")


class _GitServer(GitHTTPServer):
    """The fake's git host: public repos clone anonymously; archived or read-only repos refuse pushes."""

    def __init__(self, root: Path, token: str, github: GitHubFake) -> None:
        super().__init__(root, token)
        self.tokens = github.tokens  # one set: a token added to the API also works for git
        self.github = github

    def start(self) -> _GitServer:
        self._serve(_GitHubGitHandler)
        return self


class _GitHubGitHandler(_GitHandler):
    owner: _GitServer

    def _target(self) -> tuple[str, str, bool]:
        """("owner/name", what follows ".git/", whether the request is part of a push)."""
        split = urlsplit(self.path)
        m = _GIT_PATH.fullmatch(split.path)
        if not m:
            return "", "", False
        rest = m.group(3)
        return f"{m.group(1)}/{m.group(2)}", rest, "git-receive-pack" in rest or "service=git-receive-pack" in split.query

    def _authorized(self) -> str | None:
        if self.headers.get("Authorization"):
            return super()._authorized()
        full, _, writes = self._target()
        repo = self.owner.github._find(*full.split("/", 1)) if full else None
        return "anonymous" if repo is not None and not repo.private and not writes else None

    def send_response(self, code: int, message: str | None = None) -> None:
        # Recorded before the answer goes out, so a test that waited for git sees it.
        self.owner.github.git_log.append(GitOp(self._kind, self._full, code))
        if self._kind == "push" and code == 200 and self._repo is not None:
            self.owner.github._pushed(self._repo)
        super().send_response(code, message)

    def read_body(self) -> tuple[bytes, bool]:
        body, chunked = super().read_body()
        data = body
        if self.headers.get("Content-Encoding", "").lower() in ("gzip", "x-gzip"):
            try:
                data = gzip.decompress(body)
            except OSError:
                pass
        if self._kind == "upload-pack" and b"command=ls-refs" in data:
            self._kind = "ls-refs"
        elif self._kind == "upload-pack" and (b"command=fetch" in data or b"want " in data):
            self._kind = "fetch"
        return body, chunked

    def _handle(self, method: str) -> None:
        self._full, rest, writes = self._target()
        repo = self._repo = self.owner.github._find(*self._full.split("/", 1)) if self._full else None
        self._kind = {"git-upload-pack": "upload-pack", "git-receive-pack": "push"}.get(
            rest, "advertise" if rest.startswith("info/refs") else "other")
        if writes and repo is not None and self._authorized() is not None and (
                repo.archived or not (repo.push or repo.admin)):
            self._refuse(method, repo)
        else:
            super()._handle(method)

    def _refuse(self, method: str, repo: Repo) -> None:
        self.read_body()
        why = ("This repository was archived so it is read-only." if repo.archived
               else f"Permission to {repo.full_name}.git denied.")
        data = why.encode() + b"\n"
        self.owner.requests.append((method, urlsplit(self.path).path, 403))
        self.send_response(403)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# ----------------------------------------------------------------------------- the API


_ORG_TYPES = {"public": lambda r: not r.private, "private": lambda r: r.private,
              "forks": lambda r: r.fork, "sources": lambda r: not r.fork}


class _Handler(Handler):
    owner: GitHubFake

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        fake = self.owner
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        raw, _ = self.read_body()
        authorization = bool(self.headers.get("Authorization"))
        with fake.lock:
            fault = next((f for f in fake.faults if f.applies(method, path)), None)
            if fault:
                fault.remaining -= 1
        if fault and fault.hang:
            fake._released.wait(fault.hang)
        if fault and not fault.hang:
            status, payload, headers = fault.status, {"message": "injected fault", "documentation_url": DOCS}, {}
        else:
            with fake.lock:
                status, payload, headers = self._respond(method, path, parse_qsl(split.query), raw)
        fake.log.append(Logged(method, path, status, authorization))
        headers = {"X-GitHub-Request-Id": uuid.uuid4().hex[:16].upper(),
                   "X-GitHub-Api-Version-Selected": "2022-11-28", **headers}
        try:
            self._send(status, payload, headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on a hung request

    def _authenticated(self) -> bool:
        """Whether a valid token came; a wrong one is 401 even for public data, as on GitHub."""
        auth = self.headers.get("Authorization")
        if not auth:
            return False
        scheme, _, cred = auth.strip().partition(" ")
        token = cred.strip()
        if scheme.lower() == "basic":
            try:
                token = base64.b64decode(token).decode().partition(":")[2]
            except ValueError:
                token = ""
        elif scheme.lower() not in ("bearer", "token"):
            token = ""
        if token and token in self.owner.tokens:
            self._token = token
            return True
        raise GitHubError(401, "Bad credentials")

    def _respond(self, method: str, path: str, query: list[tuple[str, str]],
                 raw: bytes) -> tuple[int, Any, dict[str, str]]:
        fake = self.owner
        try:
            authenticated = self._authenticated()
        except GitHubError as e:
            return e.status, e.body(), self._rate_headers(fake._bucket(False))
        bucket = fake._bucket(authenticated)
        headers: dict[str, str] = {}
        if authenticated:
            headers["X-OAuth-Scopes"] = self._scopes()
        try:
            if path != "/rate_limit":
                if bucket.remaining == 0:
                    who = f"user ID {fake.viewer.id}" if authenticated else self.client_address[0]
                    raise GitHubError(403, f"API rate limit exceeded for {who}.", docs=RATE_DOCS)
                secondary = fake._secondary_hit()
                if secondary is not None:
                    raise GitHubError(secondary[0], "You have exceeded a secondary rate limit. Please wait a few "
                                      "minutes before you try again.", docs=RATE_DOCS,
                                      headers={"Retry-After": str(secondary[1])})
                bucket.used += 1
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                raise GitHubError(400, "Problems parsing JSON") from None
            status, payload, extra = self._route(method, path, dict(query), query, body, authenticated)
        except GitHubError as e:
            status, payload, extra = e.status, e.body(), e.headers
        return status, payload, {**self._rate_headers(bucket), **headers, **extra}

    def _rate_headers(self, bucket: Bucket) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(bucket.limit), "X-RateLimit-Remaining": str(bucket.remaining),
                "X-RateLimit-Reset": str(bucket.reset), "X-RateLimit-Used": str(bucket.used),
                "X-RateLimit-Resource": "core"}

    # ------------------------------------------------------------------ routes
    def _route(self, method: str, path: str, q: dict[str, str], query: list[tuple[str, str]], body: Any,
               authenticated: bool) -> tuple[int, Any, dict[str, str]]:
        fake = self.owner
        if path == "/rate_limit" and method == "GET":
            return 200, fake.rate_json(fake._bucket(authenticated), authenticated), {}
        if path == "/user" and method == "GET":
            if not authenticated:
                raise GitHubError(401, "Requires authentication")
            return 200, fake.owner_json(fake.viewer), {}
        m = re.fullmatch(r"/(orgs|users)/([^/]+)", path)
        if m and method == "GET":
            return 200, fake.owner_json(self._owner(m.group(2), org=m.group(1) == "orgs")), {}
        m = re.fullmatch(r"/(orgs|users)/([^/]+)/repos", path)
        if m and method == "GET":
            org_route = m.group(1) == "orgs"
            return self._list(self._owner(m.group(2), org=org_route), org_route, q, query, authenticated)
        m = re.fullmatch(r"/repositories/(\d+)/pulls", path)  # where the pulls Link headers point
        if m and method == "GET":
            repo = next((r for r in fake.repos.values() if r.id == int(m.group(1))), None)
            if repo is None or (repo.private and not authenticated):
                raise _not_found()
            return self._pulls(repo, q, query)
        m = re.fullmatch(r"/(organizations|user)/(\d+)/repos", path)  # where GitHub's Link headers point
        if m and method == "GET":
            org_route = m.group(1) == "organizations"
            owner = next((o for o in fake.owners.values() if o.id == int(m.group(2))), None)
            if owner is None or (org_route and owner.type != "Organization"):
                raise _not_found()
            return self._list(owner, org_route, q, query, authenticated)
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)", path)
        if m and method == "GET":
            return 200, fake.repo_json(self._repo(m.group(1), m.group(2), authenticated),
                                       authenticated=authenticated), {}
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/statuses/([^/]+)", path)
        if m and method == "POST":
            return self._post_status(self._repo(m.group(1), m.group(2), authenticated), m.group(3), body,
                                     authenticated)
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/commits/([^/]+)/statuses", path)
        if m and method == "GET":
            repo = self._repo(m.group(1), m.group(2), authenticated)
            return 200, list(reversed(fake.statuses.get(repo.full_name.lower(), {}).get(m.group(3), []))), {}
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/pulls", path)
        if m and method == "GET":
            return self._pulls(self._repo(m.group(1), m.group(2), authenticated), q, query)
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/hooks(?:/([^/]+))?", path)
        if m:
            return self._hooks(method, self._repo(m.group(1), m.group(2), authenticated), m.group(3), body,
                               authenticated)
        raise _not_found()

    def _scopes(self) -> str:
        return self.owner.token_scopes.get(getattr(self, "_token", ""), self.owner.scopes)

    def _post_status(self, repo: Repo, sha: str, body: Any, authenticated: bool) -> tuple[int, Any, dict[str, str]]:
        """POST /repos/{o}/{r}/statuses/{sha}: a classic token needs ``repo`` or ``repo:status``; states
        error|failure|pending|success; description at most 140 characters; the commit must exist."""
        fake = self.owner
        if not authenticated:
            raise GitHubError(401, "Requires authentication")
        scopes = {x.strip() for x in self._scopes().split(",")}
        if not scopes & {"repo", "repo:status"}:
            raise GitHubError(403, "Resource not accessible by personal access token",
                              headers={"X-Accepted-OAuth-Scopes": "repo, repo:status"})
        if not isinstance(body, dict) or body.get("state") not in ("error", "failure", "pending", "success"):
            raise GitHubError(422, "Validation Failed",
                              errors=[{"resource": "Status", "code": "custom", "field": "state",
                                       "message": "state is not included in the list"}])
        for k in ("target_url", "description", "context"):
            if body.get(k) is not None and not isinstance(body[k], str):
                raise GitHubError(422, "Validation Failed", errors=[{"resource": "Status", "code": "invalid",
                                                                      "field": k}])
        if len(body.get("description") or "") > 140:
            raise GitHubError(422, "Validation Failed",
                              errors=[{"resource": "Status", "code": "custom", "field": "description",
                                       "message": "description is too long (maximum is 140 characters)"}])
        if not re.fullmatch(r"[0-9a-f]{40}", sha) or not _has_commit(fake, repo, sha):
            raise GitHubError(422, f"No commit found for SHA: {sha}")
        now = _iso(fake.clock())
        status = {"url": f"{fake.url}/repos/{repo.full_name}/statuses/{sha}", "id": next(fake.ids),
                  "state": body["state"], "description": body.get("description"),
                  "target_url": body.get("target_url"), "context": body.get("context") or "default",
                  "created_at": now, "updated_at": now, "creator": fake.owner_json(fake.viewer)}
        fake.statuses.setdefault(repo.full_name.lower(), {}).setdefault(sha, []).append(status)
        return 201, status, {}

    def _owner(self, login: str, *, org: bool) -> Owner:
        owner = self.owner.owners.get(login.lower())
        if owner is None or (org and owner.type != "Organization"):
            raise _not_found()
        return owner

    def _repo(self, owner: str, name: str, authenticated: bool) -> Repo:
        repo = self.owner._find(owner, name)
        if repo is None or (repo.private and not authenticated):
            raise _not_found()
        return repo

    def _list(self, owner: Owner, org_route: bool, q: dict[str, str], query: list[tuple[str, str]],
              authenticated: bool) -> tuple[int, Any, dict[str, str]]:
        fake = self.owner
        repos = [r for r in fake.repos.values() if r.owner is owner and (authenticated or not r.private)]
        keep = _ORG_TYPES.get(q.get("type", "all"))
        if org_route and keep:
            repos = [r for r in repos if keep(r)]
        sort = q.get("sort") or ("created" if org_route else "full_name")
        direction = q.get("direction") or ("asc" if sort == "full_name" else "desc")
        keys: dict[str, Callable[[Repo], Any]] = {
            "full_name": lambda r: r.full_name.lower(), "created": lambda r: (r.created_at, r.id),
            "updated": lambda r: (r.updated_at, r.id), "pushed": lambda r: (r.pushed_at, r.id)}
        repos.sort(key=keys.get(sort, keys["full_name"]), reverse=direction == "desc")
        per_page = _int(q.get("per_page"), 30)
        per_page = 30 if per_page < 1 else min(per_page, 100)
        page = max(1, _int(q.get("page"), 1))
        last = max(1, math.ceil(len(repos) / per_page))
        items = repos[(page - 1) * per_page:page * per_page]
        base = f"{fake.url}/{'organizations' if org_route else 'user'}/{owner.id}/repos"
        rest = [(k, v) for k, v in query if k != "page"]

        def link(n: int) -> str:
            return f"<{base}?{urlencode([*rest, ('page', str(n))])}>"

        rels = []
        if page > 1:
            rels.append(f'{link(page - 1)}; rel="prev"')
        if page < last:
            rels += [f'{link(page + 1)}; rel="next"', f'{link(last)}; rel="last"']
        if page > 1:
            rels.append(f'{link(1)}; rel="first"')
        headers = {"Link": ", ".join(rels)} if rels else {}
        return 200, [fake.repo_json(r, authenticated=authenticated) for r in items], headers

    def _pulls(self, repo: Repo, q: dict[str, str], query: list[tuple[str, str]]) -> tuple[int, Any, dict[str, str]]:
        """``GET /repos/{o}/{r}/pulls``: ``state`` open (default), closed or all; newest first; paginated."""
        fake = self.owner
        state = q.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise _invalid(f"state {state!r} is not one of open, closed, all")
        pulls = sorted((p for p in repo.pulls.values() if state == "all" or p.state == state),
                       key=lambda p: p.number, reverse=True)
        per_page = _int(q.get("per_page"), 30)
        per_page = 30 if per_page < 1 else min(per_page, 100)
        page = max(1, _int(q.get("page"), 1))
        last = max(1, math.ceil(len(pulls) / per_page))
        items = pulls[(page - 1) * per_page:page * per_page]
        base = f"{fake.url}/repositories/{repo.id}/pulls"
        rest = [(k, v) for k, v in query if k != "page"]
        rels = []
        if page < last:
            rels += [f'<{base}?{urlencode([*rest, ("page", str(page + 1))])}>; rel="next"',
                     f'<{base}?{urlencode([*rest, ("page", str(last))])}>; rel="last"']
        headers = {"Link": ", ".join(rels)} if rels else {}
        return 200, [fake.pull_json(repo, p) for p in items], headers

    def _hooks(self, method: str, repo: Repo, hook_id: str | None, body: Any,
               authenticated: bool) -> tuple[int, Any, dict[str, str]]:
        fake = self.owner
        if not authenticated or not repo.admin:
            raise _not_found()  # GitHub hides hooks from non-admins behind a 404
        now = fake.clock()
        if hook_id is None:
            if method == "GET":
                return 200, [fake.hook_json(repo, h) for h in repo.hooks.values()], {}
            if method != "POST":
                raise _not_found()
            if not isinstance(body, dict):
                raise GitHubError(400, "Problems parsing JSON")
            if body.get("name", "web") != "web":
                raise GitHubError(422, "Validation Failed",
                                  errors=[{"resource": "Hook", "code": "invalid", "field": "name"}])
            config = _hook_config(body.get("config"))
            if any(h.config["url"] == config["url"] for h in repo.hooks.values()):
                raise _invalid("Hook already exists on this repository")
            hook = Hook(next(fake.ids), bool(body.get("active", True)), _events(body.get("events", ["push"])),
                        config, now, now)
            repo.hooks[hook.id] = hook
            return 201, fake.hook_json(repo, hook), {"Location": f"{fake.url}/repos/{repo.full_name}/hooks/{hook.id}"}
        hook = repo.hooks.get(_int(hook_id, -1))
        if hook is None:
            raise _not_found()
        if method == "GET":
            return 200, fake.hook_json(repo, hook), {}
        if method == "DELETE":
            del repo.hooks[hook.id]
            return 204, None, {}
        if method != "PATCH":
            raise _not_found()
        if not isinstance(body, dict):
            raise GitHubError(400, "Problems parsing JSON")
        if "config" in body:
            # As on GitHub, the config is replaced: a PATCH without "secret" removes the secret.
            config = _hook_config(body["config"])
            if any(h.config["url"] == config["url"] for h in repo.hooks.values() if h is not hook):
                raise _invalid("Hook already exists on this repository")
            hook.config = config
        if "events" in body:
            hook.events = _events(body["events"])
        for event in _events(body.get("add_events", [])):
            if event not in hook.events:
                hook.events.append(event)
        removed = set(_events(body.get("remove_events", [])))
        hook.events = [e for e in hook.events if e not in removed]
        if "active" in body:
            hook.active = bool(body["active"])
        hook.updated_at = now
        return 200, fake.hook_json(repo, hook), {}


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _events(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        raise GitHubError(422, "Validation Failed",
                          errors=[{"resource": "Hook", "code": "invalid", "field": "events"}])
    return list(dict.fromkeys(value))


def _hook_config(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not value.get("url"):
        raise _invalid("Config must contain URL for webhooks")
    config = {"content_type": str(value.get("content_type") or "form"),
              "insecure_ssl": str(value.get("insecure_ssl", "0")), "url": str(value["url"])}
    if config["content_type"] not in ("json", "form"):
        raise _invalid("Config content_type must be json or form")
    if value.get("secret"):
        config["secret"] = str(value["secret"])
    return config


def _has_commit(fake: GitHubFake, repo: Repo, sha: str) -> bool:
    import subprocess

    path = fake.git.path(repo.full_name)
    return subprocess.run(["git", "-C", str(path), "cat-file", "-e", f"{sha}^{{commit}}"],
                          capture_output=True).returncode == 0
