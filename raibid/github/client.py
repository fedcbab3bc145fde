"""A small GitHub REST client: repository lookup and listing, with Link pagination and rate limits.

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
    """GitHub's rate limit would make us wait longer than allowed."""


class GitHubError(RaibidError):
    pass


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


def _segment(value: str, what: str) -> str:
    if not _NAME.fullmatch(value or "") or value in (".", ".."):
        raise UsageError(f"invalid GitHub {what} {value!r}")
    return quote(value, safe="")


class GitHub:
    def __init__(self, api: str = "https://api.github.com", token: str | None = None, *, timeout: float = 15.0,
                 max_wait: float = 300.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        import requests

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
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/vnd.github+json", "User-Agent": "raibid",
                                     "X-GitHub-Api-Version": API_VERSION})

    # ------------------------------------------------------------------ transport
    def _get(self, url: str, params: dict | None = None) -> Any:
        import requests

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        shown = redact_url(url.split("?", 1)[0])
        attempts = 0
        while True:
            if self._reset_at is not None:
                self._wait(self._reset_at - self.clock(), shown, "primary rate limit exhausted")
                self._reset_at = None
            try:
                resp = self.session.get(url, params=params, headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                attempts += 1
                if attempts <= 2:
                    self.sleep(0.5 * attempts)
                    continue
                kind = "timed out" if isinstance(e, requests.Timeout) else "connection failed"
                raise Unreachable(f"cannot reach the GitHub API at {self.shown} (GET {shown}: {kind})",
                                  hint="check mirror.github_api and the network") from None
            self.requests += 1
            remaining = resp.headers.get("X-RateLimit-Remaining")
            reset = resp.headers.get("X-RateLimit-Reset")
            if resp.status_code in (403, 429) and (resp.headers.get("Retry-After") or remaining == "0"):
                attempts += 1
                if attempts > 5:
                    raise RateLimited(f"GitHub kept answering {resp.status_code} (rate limit) for GET {shown}")
                retry_after = resp.headers.get("Retry-After")
                delay = float(retry_after) if retry_after else float(reset or 0) - self.clock()
                self._wait(delay, shown, "secondary rate limit" if retry_after else "primary rate limit exhausted")
                continue
            if resp.status_code in (502, 503, 504) and attempts < 2:
                attempts += 1
                self.sleep(0.5 * attempts)
                continue
            if remaining == "0" and reset:
                self._reset_at = float(reset)
            return self._check(resp, shown)

    def _wait(self, seconds: float, what: str, why: str) -> None:
        seconds = max(0.0, math.ceil(seconds * 10) / 10) + (0.5 if seconds > 0 else 0.0)
        if seconds <= 0:
            return
        if self.waited + seconds > self.max_wait:
            raise RateLimited(f"GitHub {why} (GET {what}); it resets in {seconds:.0f}s, more than --max-wait "
                              f"allows ({self.max_wait:.0f}s)",
                              hint="run again later, raise --max-wait, or set a token (mirror.github_token_env)")
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
            raise AuthError(f"GitHub refused GET {what} (401): {msg}",
                            hint="check the token in the env var named by mirror.github_token_env")
        if resp.status_code == 404:
            raise NotFound(f"GitHub: GET {what}: not found")
        if resp.status_code == 403:
            raise Forbidden(f"GitHub refused GET {what} (403): {msg}",
                            hint="the token may not read this repo or org: check its scopes, repo access "
                                 "and SAML SSO authorization")
        raise GitHubError(f"GitHub: GET {what} failed ({resp.status_code}): {msg}")

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
        url: str | None = f"{self.api}/repos/{_segment(owner, 'owner')}/{_segment(name, 'repository name')}/pulls"
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


_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # with fullmatch: SHA-1, or SHA-256 object format


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
