"""The Gitea client as a library: migrate, mirror-sync, pagination, retries."""

from __future__ import annotations

import time

import pytest
import requests

from raibid.errors import AlreadyExists, AuthError, ConfigError, GiteaError, NotFound, Unreachable, UsageError
from raibid.gitea import Gitea, api_path, check_owner, check_repo, split_repo
from tests.conftest import GITEA_TOKEN


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def client(gitea) -> Gitea:
    return Gitea(gitea.url, GITEA_TOKEN, retries=2, backoff=0.001)


def test_migrate_as_pull_mirror_then_mirror_sync_sees_new_commits(client, gitea, git_server):
    git_server.create_repo("upstream/app", files={"a.txt": "1"})
    client.create_org("mirrors")
    repo = client.migrate(git_server.url("upstream/app"), "mirrors", "app", mirror=True, mirror_interval="0",
                          auth_token=git_server.token)
    assert repo.mirror and repo.original_url == git_server.url("upstream/app") and not repo.empty
    new = git_server.commit("upstream/app", "main", {"a.txt": "2"})
    assert git_server.refs("mirrors/app")["refs/heads/main"] != new
    client.mirror_sync("mirrors", "app")
    assert git_server.refs("mirrors/app")["refs/heads/main"] == new
    with pytest.raises(AlreadyExists):
        client.migrate(git_server.url("upstream/app"), "mirrors", "app", mirror=True)


def test_mirror_sync_on_a_plain_repo_is_rejected(client):
    client.create_org("mirrors")
    client.create_repo("mirrors", "plain")
    with pytest.raises(GiteaError) as e:
        client.mirror_sync("mirrors", "plain")
    assert "not a mirror" in e.value.message


def test_migrate_with_bad_source_credentials_shows_giteas_422(client, git_server):
    git_server.create_repo("upstream/private", files={"a": "1"})
    client.create_org("mirrors")
    with pytest.raises(GiteaError) as e:
        client.migrate(git_server.url("upstream/private"), "mirrors", "p", auth_token="wrong")
    assert "could not be cloned" in e.value.message


def test_list_repos_paginates(client, gitea):
    client.create_org("big")
    for i in range(35):
        client.create_repo("big", f"r{i:02d}")
    repos = client.list_repos("big")
    assert len(repos) == 35 and len({r.name for r in repos}) == 35


def test_errors_are_typed_and_secret_free(gitea):
    bad = Gitea(gitea.url, "not-the-token", retries=0)
    with pytest.raises(AuthError) as e:
        bad.current_user()
    assert "not-the-token" not in str(e.value)
    good = Gitea(gitea.url, GITEA_TOKEN, retries=0)
    with pytest.raises(NotFound):
        good.get_repo("nobody", "nothing")
    gitea.fail_next(5, 502)
    with pytest.raises(GiteaError) as e:
        good.current_user()
    assert "(502)" in e.value.message
    gitea.stop()
    with pytest.raises(Unreachable):
        Gitea(f"http://user:{GITEA_TOKEN}@127.0.0.1:1", GITEA_TOKEN, retries=1, backoff=0.001).version()
    try:
        Gitea(f"http://user:{GITEA_TOKEN}@127.0.0.1:1", GITEA_TOKEN, retries=0).version()
    except Unreachable as err:
        assert GITEA_TOKEN not in err.message and "***@127.0.0.1:1" in err.message


# ----------------------------------------------------------------------------- retries and time budget


def _posts(gitea, suffix: str) -> int:
    return sum(1 for m, p, _ in gitea.log if m == "POST" and p.endswith(suffix))


def test_read_timeout_on_post_hooks_makes_exactly_one_hook(gitea):
    """The server carries out a POST that the client gave up on: replaying it made a second hook."""
    client = Gitea(gitea.url, GITEA_TOKEN, timeout=0.5, retries=3, backoff=0.001, total_timeout=20)
    client.create_org("mirrors")
    client.create_repo("mirrors", "app")
    gitea.delay_next(1, 1.5, "POST", "/hooks$")
    with pytest.raises(Unreachable) as e:
        client.add_hook("mirrors", "app", "http://10.43.0.9/hook")
    assert "POST /api/v1/repos/mirrors/app/hooks: timed out" in e.value.message
    wait_for(lambda: gitea.in_flight == 0 and _posts(gitea, "/hooks") >= 1)
    assert len(gitea.repos["mirrors/app"].hooks) == 1
    assert _posts(gitea, "/hooks") == 1


def test_read_timeout_on_get_is_retried(gitea):
    client = Gitea(gitea.url, GITEA_TOKEN, timeout=0.5, retries=2, backoff=0.001, total_timeout=20)
    gitea.delay_next(1, 2, "GET", "/orgs$")
    assert client.list_orgs() == []


def test_503_on_post_is_not_retried(gitea):
    client = Gitea(gitea.url, GITEA_TOKEN, retries=3, backoff=0.001)
    gitea.fail_next(1, 503, "POST", "/orgs$")
    with pytest.raises(GiteaError) as e:
        client.create_org("mirrors")
    assert "(503)" in e.value.message and _posts(gitea, "/orgs") == 1
    assert "mirrors" not in gitea.users


def test_hung_gitea_fails_within_the_total_budget(gitea):
    gitea.delay_next(1000, 60, "GET")  # accepts, never answers in time
    client = Gitea(gitea.url, GITEA_TOKEN, timeout=0.4, retries=10, backoff=0.001, total_timeout=1.5)
    start = time.monotonic()
    with pytest.raises(Unreachable) as e:
        client.list_orgs()
    spent = time.monotonic() - start
    assert spent < 1.5 + 0.3, spent
    assert "timed out" in e.value.message
    assert 2 <= 1000 - gitea.delays[0][0] <= 4  # tries made, not 11


def test_retry_after_is_honoured_and_bounded_by_the_budget(gitea):
    client = Gitea(gitea.url, GITEA_TOKEN, timeout=5, retries=3, backoff=0.001, total_timeout=10)
    gitea.fail_next(1, 503, "GET", "/orgs$", headers={"Retry-After": "1"})
    start = time.monotonic()
    assert client.list_orgs() == []
    assert time.monotonic() - start >= 0.9
    gitea.fail_next(1, 503, "GET", "/orgs$", headers={"Retry-After": "3600"})
    start = time.monotonic()
    with pytest.raises(GiteaError) as e:
        client.list_orgs()
    assert time.monotonic() - start < 2 and "(503)" in e.value.message


# ----------------------------------------------------------------------------- names and paths


@pytest.mark.parametrize("name", ["mirrors", "org-1", "a.b", "A_2", "x" * 40, "r2d2"])
def test_valid_owner_names(name):
    assert check_owner(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "-x", "x-", "_x", "a..b", "a-_b", "a/b", "a b", "a?b",
                                  "x" * 41, "é"])
def test_invalid_owner_names(name):
    with pytest.raises(UsageError):
        check_owner(name)


@pytest.mark.parametrize("name", ["app", ".profile", "a.b-c_d", "X", "x" * 100, "-x", "x-"])
def test_valid_repo_names(name):
    assert check_repo(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "-", "a..b", "r1?x=1", "a b", "a/b", "a#b", "x.git",
                                  "X.Wiki", "feed.rss", "x.atom", "x" * 101, "%2e%2e"])
def test_invalid_repo_names(name):
    with pytest.raises(UsageError):
        check_repo(name)


def test_split_repo_validates_both_parts():
    assert split_repo("org/app") == ("org", "app")
    for bad in ("org/r1?x=1", "../x", "../user", "org", "org/", "/app", "a/b/c"):
        with pytest.raises(UsageError):
            split_repo(bad)


def test_every_path_segment_is_percent_encoded():
    assert api_path("repos", "a b", "c/d", "?x=1", "..") == "/api/v1/repos/a%20b/c%2Fd/%3Fx%3D1/.."


def test_bad_names_never_reach_gitea(client, gitea):
    client.create_org("org")
    client.create_repo("org", "r1")
    gitea.log.clear()
    for call in (lambda: client.delete_repo("org", "r1?x=1"), lambda: client.get_repo("..", "x"),
                 lambda: client.delete_repo("..", "user"), lambda: client.list_hooks("org", "../../user"),
                 lambda: client.list_repos("../admin")):
        with pytest.raises(UsageError):
            call()
    assert gitea.log == [] and "org/r1" in gitea.repos


def test_fake_validates_names_and_decodes_segments_like_gitea(client, gitea):
    headers = {"Authorization": f"token {GITEA_TOKEN}"}
    for body in ({"username": "bad..name"}, {"username": "-x"}, {"username": "x."}):
        r = requests.post(f"{gitea.url}/api/v1/orgs", json=body, headers=headers, timeout=5)
        assert r.status_code == 422, body
    client.create_org("org")
    for name in ("x.git", "..", "a b", "a..b"):
        r = requests.post(f"{gitea.url}/api/v1/orgs/org/repos", json={"name": name}, headers=headers, timeout=5)
        assert r.status_code == 422, name
    client.create_repo("org", "r1")
    assert requests.get(f"{gitea.url}/api/v1/repos/org/r%31", timeout=5).json()["name"] == "r1"
    assert requests.get(f"{gitea.url}/api/v1/repos/org/r1%3Fx%3D1", timeout=5).status_code == 404


# ----------------------------------------------------------------------------- answers that are not Gitea's


def test_html_instead_of_json_means_not_gitea(client, gitea):
    gitea.answer_next(1, "<html><body>Sign in</body></html>", path="/version$")
    with pytest.raises(Unreachable) as e:
        client.version()
    assert "does not answer like Gitea" in e.value.message and "text/html" in e.value.message
    gitea.answer_next(1, "<html></html>", path="/orgs$")
    with pytest.raises(Unreachable):
        client.list_orgs()
    gitea.answer_next(1, '{"ok": true}', content_type="application/json", path="/version$")
    with pytest.raises(Unreachable) as e:
        client.version()
    assert "no version" in e.value.message


def test_json_of_the_wrong_shape_is_a_gitea_error(client, gitea):
    client.create_org("org")
    client.create_repo("org", "r1")
    cases = [("/orgs$", '{"data": []}', client.list_orgs, "returned a JSON object, expected a JSON list"),
             ("/repos/org/r1$", "[]", lambda: client.get_repo("org", "r1"), "expected a JSON object"),
             ("/repos/org/r1$", '{"id": 1}', lambda: client.get_repo("org", "r1"), "without 'name'"),
             ("/orgs$", "[1, 2]", client.list_orgs, "wrong shape"),
             ("/user$", '{"login": 5}', client.current_user, "wrong shape")]
    for path, body, call, expected in cases:
        gitea.answer_next(1, body, content_type="application/json", path=path)
        with pytest.raises(GiteaError) as e:
            call()
        assert expected in e.value.message, (path, body, e.value.message)


def test_url_without_scheme_with_credentials_is_a_config_error_without_the_password():
    for url in ("admin:s3cret-pw@gitea:3000", "http://admin:s3cret-pw@gitea:80a", "http://gi tea:3000",
                "ftp://admin:s3cret-pw@gitea"):
        with pytest.raises(ConfigError) as e:
            Gitea(url, GITEA_TOKEN)
        assert "s3cret-pw" not in e.value.message + (e.value.hint or ""), url


def test_delete_retried_after_a_late_answer_is_done_not_not_found(gitea):
    client = Gitea(gitea.url, GITEA_TOKEN, timeout=0.5, retries=2, backoff=0.001, total_timeout=20)
    client.create_org("org")
    client.create_repo("org", "r1")
    gitea.delay_next(1, 1.5, "DELETE", answer_late=True)
    client.delete_repo("org", "r1")  # the first try deleted it; the retry got 404
    assert [s for m, _, s in gitea.log if m == "DELETE"] == [204, 404]
    assert "org/r1" not in gitea.repos
    with pytest.raises(NotFound):
        client.delete_repo("org", "r1")


def test_branch_head_reads_the_branch_and_none_when_the_repo_or_branch_is_missing(client, gitea, git_server):
    client.create_org("cfg")
    client.create_repo("cfg", "repo", private=True, auto_init=True)
    refs = git_server.refs("cfg/repo")
    assert client.branch_head("cfg", "repo", "main") == refs["refs/heads/main"]
    feature = git_server.commit("cfg/repo", "feature/x", {"a.txt": "1"})
    assert client.branch_head("cfg", "repo", "feature/x") == feature
    assert client.branch_head("cfg", "repo", "nope") is None
    assert client.branch_head("cfg", "missing", "main") is None
    with pytest.raises(UsageError):  # names are checked before anything is sent
        client.branch_head("cfg", "../x", "main")
