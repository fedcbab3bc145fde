"""Self-tests of the GitHub API fake: pagination, auth, rate limits, hooks, deliveries and git over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
from email.message import Message

import pytest
import requests

from tests.harness.githttp import git
from tests.harness.githubfake import FakeClock, GitHubFake
from tests.harness.served import Handler, Served

EPOCH = 1_700_000_000


def session(token: str | None, scheme: str = "Bearer") -> requests.Session:
    s = requests.Session()
    if token is not None:
        s.headers["Authorization"] = f"{scheme} {token}"
    return s


def get(github: GitHubFake, path: str, token: str | None = None) -> requests.Response:
    return session(token).get(f"{github.url}{path}", timeout=10)


def ls_remote(url: str, env: dict | None = None) -> dict[str, str]:
    out = git("ls-remote", url, env=env)
    return {ref: sha for sha, ref in (line.split("\t") for line in out.splitlines())}


# ----------------------------------------------------------------------------- listings


def test_org_listing_follows_link_headers_across_250_repos(github):
    org = github.add_org("acme")
    for i in range(250):
        github.add_repo("acme", f"r{i:03}")
    s = session(github.token)
    url, names, sizes, links = f"{github.url}/orgs/acme/repos?per_page=100", [], [], []
    while url:
        r = s.get(url, timeout=10)
        assert r.status_code == 200
        names += [repo["name"] for repo in r.json()]
        sizes.append(len(r.json()))
        links.append(r.headers["Link"])
        url = r.links.get("next", {}).get("url")
    assert sizes == [100, 100, 50]
    assert sorted(names) == [f"r{i:03}" for i in range(250)]
    assert names[0] == "r249"  # an organisation lists newest first by default
    base = f"{github.url}/organizations/{org.id}/repos?per_page=100&page="
    assert links[0] == f'<{base}2>; rel="next", <{base}3>; rel="last"'
    assert links[1] == f'<{base}1>; rel="prev", <{base}3>; rel="next", <{base}3>; rel="last", <{base}1>; rel="first"'
    assert links[2] == f'<{base}2>; rel="prev", <{base}1>; rel="first"'
    assert [r.path for r in github.requests("GET")] == ["/orgs/acme/repos"] + [f"/organizations/{org.id}/repos"] * 2


def test_per_page_is_capped_at_100_defaults_to_30_and_one_page_has_no_link(github):
    user = github.add_user("alice")
    for i in range(101):
        github.add_repo("alice", f"r{i:03}")
    capped = get(github, "/users/alice/repos?per_page=500")
    assert len(capped.json()) == 100
    assert capped.links["last"]["url"] == f"{github.url}/user/{user.id}/repos?per_page=500&page=2"
    default = get(github, "/users/alice/repos")
    assert [r["name"] for r in default.json()] == [f"r{i:03}" for i in range(30)]  # users: by full_name
    assert default.links["last"]["url"].endswith("/repos?page=4")
    last = get(github, "/users/alice/repos?page=4")
    assert len(last.json()) == 11 and "next" not in last.links
    assert get(github, "/users/alice/repos?page=9").json() == []
    github.add_org("small")
    github.add_repo("small", "one")
    assert "Link" not in get(github, "/orgs/small/repos").headers


def test_unknown_owners_and_repos_are_404_with_githubs_body(github):
    github.add_org("acme")
    github.add_user("alice")
    github.add_repo("acme", "App")
    for path in ("/orgs/nope/repos", "/users/nope/repos", "/orgs/alice/repos", "/repos/acme/missing",
                 "/repos/nope/App", "/no/such/route"):
        r = get(github, path, github.token)
        assert r.status_code == 404, path
        assert r.json()["message"] == "Not Found" and r.json()["documentation_url"].startswith("https://")
    assert get(github, "/users/acme/repos").status_code == 200  # /users/ also lists an organisation
    assert get(github, "/repos/ACME/app").json()["name"] == "App"  # names are case-insensitive
    github.delete_repo("acme", "App")
    assert get(github, "/repos/acme/App", github.token).status_code == 404
    assert get(github, "/orgs/acme/repos", github.token).json() == []


def test_repository_has_githubs_fields_and_a_clone_url_on_the_git_server(github):
    github.add_org("acme")
    github.add_repo("acme", "app", fork=True, archived=True, description="d", default_branch="trunk",
                    files={"a": "1"})
    anonymous = get(github, "/repos/acme/app").json()
    assert "permissions" not in anonymous
    repo = get(github, "/repos/acme/app", github.token).json()
    assert repo["full_name"] == "acme/app" and repo["owner"]["login"] == "acme"
    assert repo["owner"]["type"] == "Organization"
    assert (repo["private"], repo["fork"], repo["archived"], repo["disabled"]) == (False, True, True, False)
    assert repo["default_branch"] == "trunk" and repo["description"] == "d"
    assert repo["clone_url"] == f"{github.git.base_url}/acme/app.git"
    assert repo["html_url"] == f"{github.git.base_url}/acme/app"
    assert repo["permissions"] == {"admin": True, "maintain": True, "push": True, "triage": True, "pull": True}
    assert repo["pushed_at"].endswith("Z") and repo["updated_at"].endswith("Z")


# ----------------------------------------------------------------------------- auth


def test_a_wrong_token_is_401_bad_credentials_in_every_scheme(github):
    github.add_org("acme")
    github.add_repo("acme", "app")
    url = f"{github.url}/repos/acme/app"
    for scheme in ("Bearer", "token"):
        assert session(github.token, scheme).get(url, timeout=10).status_code == 200
        bad = session("github-test-token-WRONG", scheme).get(url, timeout=10)
        assert bad.status_code == 401 and bad.json()["message"] == "Bad credentials"
    assert requests.get(url, auth=("x", github.token), timeout=10).status_code == 200
    assert requests.get(url, auth=("x", "wrong"), timeout=10).status_code == 401
    assert session("x", "Digest").get(url, timeout=10).status_code == 401
    assert [r.auth for r in github.requests()] == [True] * 7
    assert get(github, "/user").json()["message"] == "Requires authentication"
    assert get(github, "/user", github.token).json()["login"] == "raibid-bot"
    assert github.requests()[-2:] == [("GET", "/user", 401, False), ("GET", "/user", 200, True)]


def test_private_repos_are_invisible_without_a_valid_token(github):
    github.add_org("acme")
    github.add_repo("acme", "open")
    github.add_repo("acme", "secret", private=True)
    assert [r["name"] for r in get(github, "/orgs/acme/repos").json()] == ["open"]
    assert get(github, "/repos/acme/secret").status_code == 404
    assert sorted(r["name"] for r in get(github, "/orgs/acme/repos", github.token).json()) == ["open", "secret"]
    assert [r["name"] for r in get(github, "/orgs/acme/repos?type=private", github.token).json()] == ["secret"]
    assert get(github, "/repos/acme/secret", github.token).json()["private"] is True


# ----------------------------------------------------------------------------- rate limits


def test_exhausted_rate_limit_is_403_until_the_reset_then_recovers(github):
    clock = github.clock = FakeClock(EPOCH)
    github.add_org("acme")
    github.add_repo("acme", "app")
    ok = get(github, "/repos/acme/app", github.token)
    assert {k: ok.headers[f"X-RateLimit-{k}"] for k in ("Limit", "Remaining", "Used", "Reset", "Resource")} == {
        "Limit": "5000", "Remaining": "4999", "Used": "1", "Reset": str(EPOCH + 3600), "Resource": "core"}

    github.rate_limit(remaining=0, reset_in=2)
    limited = get(github, "/repos/acme/app", github.token)
    assert limited.status_code == 403
    assert limited.json()["message"] == f"API rate limit exceeded for user ID {github.viewer.id}."
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["X-RateLimit-Reset"] == str(EPOCH + 2)
    status = get(github, "/rate_limit", github.token)  # answers, and does not count, while limited
    assert status.status_code == 200
    assert status.json()["resources"]["core"] == {"limit": 5000, "used": 5000, "remaining": 0, "reset": EPOCH + 2}
    assert status.json()["rate"] == status.json()["resources"]["core"]
    assert get(github, "/repos/acme/app").headers["X-RateLimit-Limit"] == "60"  # anonymous: its own window

    clock.advance(2)
    recovered = get(github, "/repos/acme/app", github.token)
    assert recovered.status_code == 200 and recovered.headers["X-RateLimit-Remaining"] == "4999"

    github.rate_limit(remaining=2, reset_in=60, anonymous=True)
    assert [get(github, "/repos/acme/app").status_code for _ in range(3)] == [200, 200, 403]
    assert get(github, "/repos/acme/app").json()["message"].startswith("API rate limit exceeded for 127.0.0.1.")
    github.reset_limits()
    assert get(github, "/repos/acme/app").status_code == 200


def test_secondary_limit_sends_retry_after_by_clock_or_by_count(github):
    clock = github.clock = FakeClock(EPOCH)
    github.add_org("acme")
    github.add_repo("acme", "app")
    github.secondary_limit(retry_after=5, status=429)
    first = get(github, "/repos/acme/app", github.token)
    assert first.status_code == 429 and first.headers["Retry-After"] == "5"
    assert "secondary rate limit" in first.json()["message"]
    assert first.headers["X-RateLimit-Remaining"] != "0"  # unlike the primary limit
    clock.advance(3)
    assert get(github, "/repos/acme/app", github.token).headers["Retry-After"] == "2"
    clock.advance(2)
    assert get(github, "/repos/acme/app", github.token).status_code == 200

    github.secondary_limit(retry_after=1, count=2)
    answers = [get(github, "/repos/acme/app", github.token) for _ in range(3)]
    assert [r.status_code for r in answers] == [403, 403, 200]
    assert answers[0].headers["Retry-After"] == "1" and "Retry-After" not in answers[2].headers


# ----------------------------------------------------------------------------- faults


def test_fail_next_and_hang_next_then_answer_normally(github):
    github.add_org("acme")
    github.add_repo("acme", "app")
    github.fail_next(2, 502, path=r"^/repos/")
    assert get(github, "/rate_limit").status_code == 200
    assert [get(github, "/repos/acme/app").status_code for _ in range(3)] == [502, 502, 200]
    assert [r.status for r in github.requests("GET", r"^/repos/acme/app$")] == [502, 502, 200]
    github.hang_next(1, seconds=30, path="/rate_limit")
    with pytest.raises(requests.Timeout):
        requests.get(f"{github.url}/rate_limit", timeout=0.3)
    assert get(github, "/rate_limit").status_code == 200


# ----------------------------------------------------------------------------- hooks


def test_hooks_create_list_patch_delete_with_a_masked_secret(github):
    github.add_org("acme")
    github.add_repo("acme", "app")
    s = session(github.token)
    hooks = f"{github.url}/repos/acme/app/hooks"
    config = {"url": "http://ci.invalid/hook", "content_type": "json", "secret": "s3cret", "insecure_ssl": "0"}
    created = s.post(hooks, json={"name": "web", "active": True, "events": ["push"], "config": config}, timeout=10)
    assert created.status_code == 201
    hook = created.json()
    assert hook["type"] == "Repository" and hook["name"] == "web" and hook["active"] is True
    assert hook["events"] == ["push"]
    assert hook["config"] == {**config, "secret": "********"}
    assert hook["url"] == f"{hooks}/{hook['id']}" == created.headers["Location"]
    assert hook["last_response"] == {"code": None, "status": "unused", "message": None}
    assert github.repo("acme", "app").hooks[hook["id"]].config["secret"] == "s3cret"

    again = s.post(hooks, json={"config": config}, timeout=10)
    assert again.status_code == 422 and again.json()["errors"][0]["message"] == "Hook already exists on this repository"
    assert s.post(hooks, json={"config": {"content_type": "json"}}, timeout=10).status_code == 422
    assert s.post(hooks, data="{", timeout=10).json()["message"] == "Problems parsing JSON"
    assert [h["id"] for h in s.get(hooks, timeout=10).json()] == [hook["id"]]

    patched = s.patch(f"{hooks}/{hook['id']}", json={"active": False, "add_events": ["pull_request"]}, timeout=10)
    assert patched.status_code == 200
    assert patched.json()["active"] is False and patched.json()["events"] == ["push", "pull_request"]
    assert patched.json()["config"]["secret"] == "********"
    replaced = s.patch(f"{hooks}/{hook['id']}", json={"config": {"url": "http://ci.invalid/v2"}}, timeout=10)
    assert replaced.json()["config"] == {"url": "http://ci.invalid/v2", "content_type": "form", "insecure_ssl": "0"}

    assert s.delete(f"{hooks}/{hook['id']}", timeout=10).status_code == 204
    assert s.get(hooks, timeout=10).json() == []
    assert s.get(f"{hooks}/{hook['id']}", timeout=10).status_code == 404


def test_hooks_are_404_without_admin_or_anonymously(github):
    github.add_org("acme")
    github.add_repo("acme", "app")
    hooks = f"{github.url}/repos/acme/app/hooks"
    body = {"config": {"url": "http://ci.invalid/hook"}}
    assert requests.get(hooks, timeout=10).status_code == 404
    github.set_admin("acme", "app", False)
    s = session(github.token)
    assert s.get(hooks, timeout=10).status_code == 404
    refused = s.post(hooks, json=body, timeout=10)
    assert refused.status_code == 404 and refused.json()["message"] == "Not Found"
    assert get(github, "/repos/acme/app", github.token).json()["permissions"]["admin"] is False
    github.set_admin("acme", "app", True)
    assert s.post(hooks, json=body, timeout=10).status_code == 201


class Receiver(Served):
    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.got: list[tuple[Message, bytes]] = []  # headers stay case-insensitive

    def start(self) -> Receiver:
        self._serve(_ReceiverHandler)
        return self


class _ReceiverHandler(Handler):
    owner: Receiver

    def _handle(self, method: str) -> None:
        body, _ = self.read_body()
        self.owner.got.append((self.headers, body))
        self.send_response(self.owner.status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_deliver_signs_the_payload_and_records_the_last_response(github):
    github.add_org("acme")
    github.add_repo("acme", "app", files={"a": "1"})
    receiver = Receiver().start()
    on, off = f"{receiver.base_url}/gh", f"{receiver.base_url}/off"
    try:
        s = session(github.token)
        hooks = f"{github.url}/repos/acme/app/hooks"
        hook = s.post(hooks, json={"config": {"url": on, "content_type": "json", "secret": "s3cret"}},
                      timeout=10).json()
        s.post(hooks, json={"active": False, "config": {"url": off}}, timeout=10)
        s.post(hooks, json={"events": ["push"], "config": {"url": "http://127.0.0.1:9/dead"}}, timeout=10)
        before = github.heads("acme", "app")["refs/heads/main"]
        after = github.commit("acme", "app", "main", {"a": "2"})
        sent = github.deliver("acme", "app", "push", github.push_payload("acme", "app", "main", before, after))
    finally:
        receiver.stop()
    assert sorted(d.status or 0 for d in sent) == [0, 204]
    [(headers, body)] = receiver.got
    assert headers["X-GitHub-Event"] == "push" and headers["X-GitHub-Hook-ID"] == str(hook["id"])
    assert headers["X-Hub-Signature-256"] == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    payload = json.loads(body)
    assert (payload["ref"], payload["before"], payload["after"]) == ("refs/heads/main", before, after)
    assert payload["repository"]["clone_url"] == f"{github.git.base_url}/acme/app.git"
    listed = {h["config"]["url"]: h["last_response"] for h in s.get(hooks, timeout=10).json()}
    assert listed[on] == {"code": 204, "status": "active", "message": "OK"}
    assert listed[off]["status"] == "unused"
    assert listed["http://127.0.0.1:9/dead"]["status"] == "failed"


# ----------------------------------------------------------------------------- git


def test_private_repo_clones_with_the_token_and_not_without(github, tmp_path):
    github.add_org("acme")
    github.add_repo("acme", "secret", private=True, files={"README.md": "hi\n"})
    clone_url = get(github, "/repos/acme/secret", github.token).json()["clone_url"]
    git("clone", "-q", clone_url, str(tmp_path / "ok"), env=github.git_env())
    assert (tmp_path / "ok" / "README.md").read_text() == "hi\n"
    assert github.git_fetches("acme", "secret") == 1
    for name, env in (("anonymous", None), ("wrong", github.git_env("github-test-token-WRONG"))):
        with pytest.raises(subprocess.CalledProcessError):
            git("clone", "-q", clone_url, str(tmp_path / name), env=env)
    assert github.git_fetches() == 1
    assert [op.status for op in github.git_log[-2:]] == [401, 401]


def test_public_repo_reads_anonymously_and_pushes_with_the_token(github, tmp_path):
    clock = github.clock = FakeClock(EPOCH)
    github.add_org("acme")
    github.add_repo("acme", "app", branches={"main": {"a": "1"}, "dev": {"b": "1"}})
    url = github.git.url("acme/app")
    assert ls_remote(url) == {"HEAD": github.heads("acme", "app")["refs/heads/main"], **github.heads("acme", "app")}
    assert github.git_fetches() == 0 and len(github.git_ops("ls-refs", "acme", "app")) == 1

    work = tmp_path / "work"
    git("clone", "-q", url, str(work))
    assert github.git_fetches("acme", "app") == 1
    (work / "c").write_text("new\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "c", cwd=work)
    with pytest.raises(subprocess.CalledProcessError):
        git("push", "-q", "origin", "main", cwd=work)
    assert github.git_pushes() == 0
    clock.advance(60)
    git("push", "-q", "origin", "main", cwd=work, env=github.git_env())
    assert github.git_pushes("acme", "app") == 1
    assert github.heads("acme", "app")["refs/heads/main"] == git("rev-parse", "HEAD", cwd=work)
    assert get(github, "/repos/acme/app").json()["pushed_at"] == "2023-11-14T22:14:20Z"  # EPOCH + 60


def test_archived_repo_refuses_pushes(github, tmp_path):
    github.add_org("acme")
    github.add_repo("acme", "old", archived=True, files={"a": "1"})
    work = tmp_path / "work"
    git("clone", "-q", github.git.url("acme/old"), str(work), env=github.git_env())
    git("commit", "-q", "--allow-empty", "-m", "x", cwd=work)
    with pytest.raises(subprocess.CalledProcessError) as refused:
        git("push", "-q", "origin", "main", cwd=work, env=github.git_env())
    assert "archived" in refused.value.stderr
    assert github.git_pushes() == 0


def test_commit_delete_branch_and_delete_repo_show_upstream(github):
    github.add_org("acme")
    github.add_repo("acme", "app", private=True, files={"a": "1"})
    url = github.git.url("acme/app")
    sha = github.commit("acme", "app", "feature", {"f": "1"}, "feature work")
    assert github.heads("acme", "app")["refs/heads/feature"] == sha
    assert ls_remote(url, github.git_env())["refs/heads/feature"] == sha
    github.delete_branch("acme", "app", "feature")
    assert list(github.heads("acme", "app")) == ["refs/heads/main"]
    assert "refs/heads/feature" not in ls_remote(url, github.git_env())
    github.delete_repo("acme", "app")
    with pytest.raises(subprocess.CalledProcessError):
        ls_remote(url, github.git_env())
    assert get(github, "/repos/acme/app", github.token).status_code == 404
