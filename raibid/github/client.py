"""The one GitHub REST client: repositories (lookup, listing), open pull requests, repository hooks and commit statuses.

Every GitHub call raibid makes is a method here, on one ``raibid.http.make_session`` session.
Retries: GETs are tried again after a connection error or a 502/503/504; a POST or PATCH is
never replayed here (the server may have acted: ``webhook register`` reads first, and the status
reporter posts again itself, a status being the same whichever post lands).

Clone URLs are taken from each repository's ``clone_url`` in the API's answer,
never built from a host name, so GitHub Enterprise (``https://HOST/api/v3``)
works the same as github.com. Rate limits are honoured: a request made while
``X-RateLimit-Remaining`` is 0, and a 403/429 answer (primary limit, or a
secondary limit with ``Retry-After``), waits for the reset when that is within
``max_wait`` seconds and otherwise raises :class:`RateLimited`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from raibid.errors import AuthError, NotFound, RaibidError, Unreachable, UsageError, redact_url

API_VERSION = "2022-11-28"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # with fullmatch: no trailing newline


class RateLimited(RaibidError):
    """GitHub's rate limit would make us wait longer than allowed; ``retry_at`` (epoch seconds) is when to
    try again, from ``Retry-After`` or ``X-RateLimit-Reset``."""

    def __init__(self, message: str, *, hint: str | None = None, retry_at: float | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_at = retry_at


class GitHubError(RaibidError):
    """An answer GitHub gave that is none of the typed ones; ``status`` is its HTTP status."""

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class Forbidden(AuthError):
    """403 without a rate limit: the token may not read this one repo or org (SAML SSO, a private repo).

    A 401 (the token itself is refused) stops everything; a 403 concerns one resource.
    """


@dataclass
class GitHubRepo:
    owner: str
    name: str
    full_name: str
    clone_url: str
    html_url: str = ""
    fork: bool = False
    archived: bool = False
    private: bool = False
    default_branch: str = "main"
    description: str = ""

    @classmethod
    def from_api(cls, d: dict) -> GitHubRepo:
        owner = (d.get("owner") or {}).get("login") or d.get("full_name", "/").split("/")[0]
        return cls(owner=owner, name=d["name"], full_name=d.get("full_name") or f"{owner}/{d['name']}",
                   clone_url=d.get("clone_url") or "", html_url=d.get("html_url") or "",
                   fork=bool(d.get("fork")), archived=bool(d.get("archived")), private=bool(d.get("private")),
                   default_branch=d.get("default_branch") or "main", description=d.get("description") or "")


_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _segment(value: str, what: str) -> str:
    if not _NAME.fullmatch(value or "") or value in (".", ".."):
        raise UsageError(f"invalid GitHub {what} {value!r}")
    return quote(value, safe="")


class GitHub:
    def __init__(self, api: str = "https://api.github.com", token: str | None = None, *, timeout: float = 15.0,
                 max_wait: float = 300.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        from raibid.http import make_session

        self.api = api.rstrip("/")
        self.shown = redact_url(self.api)
        self.token = token
        self.timeout = timeout
        self.max_wait = max_wait
        self.sleep = sleep
        self.clock = clock
        self.waited = 0.0  # seconds spent waiting for rate limits, for the summary
        self.requests = 0
        self._reset_at: float | None = None  # set when the last answer said no requests remain
        # retries=0: the loop in _send retries (with self.sleep, so tests wait on a fake clock) and
        # knows GitHub's rate limits, which urllib3's Retry does not.
        self.session = make_session(retries=0, backoff=0.0, headers={
            "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION})

    # ------------------------------------------------------------------ transport
    def _get(self, url: str, params: dict | None = None) -> Any:
        return self._send("GET", url, params=params)

    def _send(self, method: str, url: str, *, params: dict | None = None, json: Any = None,
              need_token: bool = False) -> Any:
        import requests

        if need_token and not self.token:
            raise AuthError("no GitHub token", hint="set the env var named by mirror.github_token_env (GITHUB_TOKEN)")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        shown = redact_url(url.split("?", 1)[0])
        if shown.startswith(self.shown):
            shown = shown[len(self.shown):] or "/"
        what = f"{method} {shown}"
        attempts = 0
        while True:
            if self._reset_at is not None:
                self._wait(self._reset_at - self.clock(), what, "primary rate limit exhausted", self._reset_at)
                self._reset_at = None
            try:
                resp = self.session.request(method, url, params=params, json=json, headers=headers,
                                            timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                attempts += 1
                if method == "GET" and attempts <= 2:
                    self.sleep(0.5 * attempts)
                    continue
                kind = "timed out" if isinstance(e, requests.Timeout) else "connection failed"
                raise Unreachable(f"cannot reach the GitHub API at {self.shown} ({what}: {kind})",
                                  hint="check mirror.github_api and the network") from None
            self.requests += 1
            remaining = resp.headers.get("X-RateLimit-Remaining")
            reset = resp.headers.get("X-RateLimit-Reset")
            if resp.status_code in (403, 429) and (resp.headers.get("Retry-After") or remaining == "0"):
                attempts += 1
                retry_after = resp.headers.get("Retry-After")
                delay = _seconds(retry_after) if retry_after else _seconds(reset) - self.clock()
                if attempts > 5:
                    raise RateLimited(f"GitHub kept answering {resp.status_code} (rate limit) for {what}",
                                      retry_at=self.clock() + max(delay, 1.0))
                # A refused request did nothing, so any method may be sent again after the wait.
                self._wait(delay, what, "secondary rate limit" if retry_after else "primary rate limit exhausted",
                           self.clock() + delay)
                continue
            if resp.status_code in (502, 503, 504) and method == "GET" and attempts < 2:
                attempts += 1
                self.sleep(0.5 * attempts)
                continue
            if remaining == "0" and reset:
                self._reset_at = _seconds(reset)
            return self._check(resp, what)

    def _wait(self, seconds: float, what: str, why: str, until: float) -> None:
        seconds = max(0.0, math.ceil(seconds * 10) / 10) + (0.5 if seconds > 0 else 0.0)
        if seconds <= 0:
            return
        if self.waited + seconds > self.max_wait:
            raise RateLimited(f"GitHub {why} ({what}); it resets in {seconds:.0f}s, more than --max-wait "
                              f"allows ({self.max_wait:.0f}s)",
                              hint="run again later, raise --max-wait, or set a token (mirror.github_token_env)",
                              retry_at=until)
        self.waited += seconds
        self.sleep(seconds)

    def _check(self, resp: Any, what: str) -> Any:
        if resp.status_code < 400:
            return resp
        try:
            msg = str((resp.json() or {}).get("message", ""))[:300]
        except ValueError:
            msg = (resp.text or "")[:300]
        if resp.status_code == 401:
            raise AuthError(f"GitHub refused {what} (401): {msg}",
                            hint="check the token in the env var named by mirror.github_token_env")
        if resp.status_code == 404:
            raise NotFound(f"GitHub: {what}: not found")
        if resp.status_code == 403:
            raise Forbidden(f"GitHub refused {what} (403): {msg}",
                            hint="the token may not reach this repo or org: check its scopes (hooks: admin:repo_hook; "
                                 "statuses: repo:status or Commit statuses: write), repo access and SAML SSO")
        raise GitHubError(f"GitHub: {what} failed ({resp.status_code}): {msg}", status=resp.status_code)

    # ------------------------------------------------------------------ API
    def get_repo(self, owner: str, name: str) -> GitHubRepo:
        url = f"{self.api}/repos/{_segment(owner, 'owner')}/{_segment(name, 'repository name')}"
        try:
            return GitHubRepo.from_api(self._get(url).json())
        except NotFound:
            raise NotFound(f"GitHub: no repository {owner}/{name} (or the token cannot see it)") from None

    def list_repos(self, owner: str, kind: str = "org") -> list[GitHubRepo]:
        """Every repository of an org (``/orgs/{org}/repos``) or a user (``/users/{user}/repos``)."""
        route = "orgs" if kind == "org" else "users"
        url: str | None = f"{self.api}/{route}/{_segment(owner, kind)}/repos"
        # Users: only the repos they own ("all" would add repos of other owners they are a member of).
        params: dict | None = {"per_page": 100, "type": "all" if kind == "org" else "owner"}
        out: list[GitHubRepo] = []
        try:
            while url:
                resp = self._get(url, params)
                out += [GitHubRepo.from_api(d) for d in resp.json() or []]
                url = (resp.links.get("next") or {}).get("url")
                params = None  # the next link carries the query
        except NotFound:
            raise NotFound(f"GitHub: no {'organization' if kind == 'org' else 'user'} {owner!r}",
                           hint="check the entry's name and kind (org or user) in mirror.orgs") from None
        return out

    def list_open_pulls(self, owner: str, name: str) -> list[GitHubPull]:
        """The open pull requests of a repository (``GET /repos/{o}/{r}/pulls?state=open``, every page).

        One request per 100 open PRs; a repository with none costs one request and no git work.
        """
        url: str | None = self._repo_url(f"{owner}/{name}", "pulls")
        params: dict | None = {"state": "open", "per_page": 100}
        out: list[GitHubPull] = []
        try:
            while url:
                resp = self._get(url, params)
                out += [p for p in map(GitHubPull.from_api, resp.json() or []) if p is not None]
                url = (resp.links.get("next") or {}).get("url")
                params = None  # the next link carries the query
        except NotFound:
            raise NotFound(f"GitHub: no repository {owner}/{name} (or the token cannot see it)") from None
        return out


    def _repo_url(self, full_name: str, *rest: str) -> str:
        owner, _, name = full_name.partition("/")
        return "/".join([f"{self.api}/repos", _segment(owner, "owner"), _segment(name, "repository name"), *rest])

    # Repository hooks (`webhook register` and `webhook status`): the token needs admin:repo_hook.
    def hooks(self, full_name: str) -> list[dict]:
        resp = self._send("GET", self._repo_url(full_name, "hooks"), params={"per_page": 100}, need_token=True)
        return list(resp.json())

    def create_hook(self, full_name: str, body: dict) -> dict:
        return self._send("POST", self._repo_url(full_name, "hooks"), json=body, need_token=True).json()

    def edit_hook(self, full_name: str, hook_id: int, body: dict) -> dict:
        return self._send("PATCH", self._repo_url(full_name, "hooks", str(int(hook_id))), json=body,
                          need_token=True).json()

    def commit_url(self, full_name: str, sha: str) -> str:
        """The commit's web page, where its checks show: github.com for api.github.com, HOST for HOST/api/v3."""
        web = "https://github.com" if self.api == "https://api.github.com" else self.api.removesuffix("/api/v3")
        return f"{web}/{full_name}/commit/{sha}"

    # Commit statuses (the reporter): the token needs repo:status, or "Commit statuses: write".
    def post_status(self, full_name: str, sha: str, *, state: str, context: str, description: str = "",
                    target_url: str | None = None) -> dict:
        """``POST /repos/{owner}/{repo}/statuses/{sha}``; the created status (its ``url``, ``id``)."""
        if not _SHA.fullmatch(sha or ""):
            raise UsageError(f"invalid commit sha {sha!r}: 40 (or 64) lower-case hex digits")
        body: dict[str, Any] = {"state": state, "context": context, "description": description}
        if target_url:
            body["target_url"] = target_url
        return self._send("POST", self._repo_url(full_name, "statuses", sha), json=body, need_token=True).json()


def _seconds(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class GitHubPull:
    """One open pull request, as the mirror builds it: the head commit and where it comes from."""

    number: int
    head_sha: str
    head_ref: str
    base_ref: str
    head_repo: str | None  # OWNER/NAME of the head repository; None when it was deleted (a gone fork)
    author: str | None

    @classmethod
    def from_api(cls, d: Any) -> GitHubPull | None:
        """None for an entry without the fields a build needs (never raises on one odd PR)."""
        if not isinstance(d, dict):
            return None
        head, base, user = d.get("head") or {}, d.get("base") or {}, d.get("user") or {}
        number, sha = d.get("number"), head.get("sha")
        if (type(number) is not int or number <= 0 or not isinstance(sha, str) or not _SHA.fullmatch(sha)
                or not _branch_name(head.get("ref")) or not _branch_name(base.get("ref"))):
            return None
        repo = head.get("repo")
        head_repo = repo.get("full_name") if isinstance(repo, dict) else None
        return cls(number, sha, head["ref"], base["ref"], head_repo if isinstance(head_repo, str) else None,
                   user.get("login") if isinstance(user.get("login"), str) else None)


def _branch_name(value: Any) -> bool:
    """A ref name a job may carry: a string of at most 255 bytes without control characters."""
    return (isinstance(value, str) and 0 < len(value.encode()) <= 255
            and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value))
