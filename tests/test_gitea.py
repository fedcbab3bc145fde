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


# ----------------------------------------------------------------------------- identities (least privilege)

import base64  # noqa: E402
import subprocess  # noqa: E402

from raibid.agents.trust import TrustPolicy  # noqa: E402
from raibid.cluster.client import Kube  # noqa: E402
from raibid.gitea.identities import ROLES, IdentitySpec, admin_secret_holders, bootstrap, check_role_tokens  # noqa: E402
from tests.harness.giteafake import _auth_env  # noqa: E402
from tests.harness.githttp import git  # noqa: E402

NS = "raibid-ci"
CONFIG_REPO = "raibid-admin/raibid-ci-config"


def make_spec(**kw) -> IdentitySpec:
    base = dict(ci_user="raibid-ci", admin_user="raibid-admin", mirror_orgs=["mirrors"], mirror_owner=False,
                trusted=TrustPolicy.of(), build_repos=[], config_repo=CONFIG_REPO)
    return IdentitySpec(**{**base, **kw})


@pytest.fixture
def ids(gitea, kube, git_server):
    """The fake Gitea as raibid finds it on an existing install: an admin, its config repo (private),
    a mirror org with a repo, Gitea closed to anonymous readers; a cluster namespace."""
    gitea.require_signin = True
    admin = Gitea(gitea.url, basic=("raibid-admin", "admin-pass"), retries=0)
    owner = Gitea(gitea.url, GITEA_TOKEN, retries=0)
    owner.create_repo("raibid-admin", "raibid-ci-config", private=True, auto_init=True)
    owner.create_org("mirrors")
    owner.create_repo("mirrors", "app", auto_init=True)
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return admin, Kube.from_kubeconfig(str(kube.kubeconfig), timeout=5)


def role_token(kube, name: str) -> str:
    obj = kube.get_object("v1", "Secret", name, NS)
    assert set(obj["data"]) == {"token"}
    return base64.b64decode(obj["data"]["token"]).decode()


def tokens(kube) -> dict[str, str]:
    return {r.name: role_token(kube, r.secret) for r in ROLES}


def push(git_server, repo: str, token: str, tmp_path) -> subprocess.CompletedProcess:
    """Clone ``repo`` with ``token`` (when it may), commit, and try to push; the push's result."""
    work = tmp_path / f"w-{repo.replace('/', '-')}-{token[-4:]}"
    url = git_server.url(repo)
    env = {**_auth_env(token), "GIT_TERMINAL_PROMPT": "0"}
    clone = subprocess.run(["git", "clone", "-q", url, str(work)], env={**__import__("os").environ, **env},
                           capture_output=True, text=True)
    if clone.returncode != 0:
        return clone
    (work / "evil.txt").write_text("x")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "evil", cwd=work)
    return subprocess.run(["git", "push", "-q", "origin", "HEAD:refs/heads/main"], cwd=work,
                          env={**__import__("os").environ, **env}, capture_output=True, text=True)


def test_bootstrap_makes_a_restricted_non_admin_user_a_team_and_one_scoped_token_per_role(ids, gitea, kube):
    admin, k = ids
    result = bootstrap(admin, k, NS, make_spec())
    ci = gitea.users["raibid-ci"]
    assert not ci.is_admin and ci.restricted and not ci.allow_create_organization and ci.max_repo_creation == 0
    assert not ci.must_change_password  # Gitea 1.22+ defaults it to true for admin-made users
    team = next(t for t in gitea.org_teams("mirrors") if t.name == "raibid-ci")
    assert team.permission == "write" and team.units_map == {"repo.code": "write"}
    assert team.can_create_org_repo and team.includes_all_repositories and team.members == {"raibid-ci"}
    owners = next(t for t in gitea.org_teams("mirrors") if t.name == "Owners")
    assert "raibid-ci" not in owners.members
    values = tokens(kube)
    for r in ROLES:
        login, rec = gitea.tokens[values[r.name]]
        assert login == "raibid-ci" and rec["name"] == f"raibid-{r.name}" and set(rec["scopes"]) == set(r.scopes)
        secret = kube.get_object("v1", "Secret", r.secret, NS)
        assert secret["metadata"]["annotations"]["raibid.dev/generated"] == "true"
    assert {r.name: set(r.scopes) for r in ROLES} == {
        "agent": {"read:repository"}, "registry": {"read:package"}, "builder": {"write:package"},
        "mirror": {"write:repository", "write:organization", "read:user"},
        "webhook": {"write:repository", "write:organization", "read:user"}}
    assert result.secrets == {"agent": "raibid-gitea-agent", "builder": "raibid-gitea-builder", "mirror": "raibid-gitea-mirror",
                              "webhook": "raibid-gitea-webhook", "registry": "raibid-gitea-registry"}
    shown = repr(result)
    assert not any(v in shown for v in values.values())


def test_bootstrap_again_changes_nothing_and_keeps_every_token(ids, gitea, kube):
    admin, k = ids
    bootstrap(admin, k, NS, make_spec())
    before = tokens(kube)
    again = bootstrap(admin, k, NS, make_spec())
    assert {s.action for s in again.steps} == {"unchanged"}, again.steps
    assert tokens(kube) == before and all(t in gitea.tokens for t in before.values())


def test_rotate_replaces_one_token_and_revokes_the_old_one(ids, gitea, kube):
    admin, k = ids
    bootstrap(admin, k, NS, make_spec())
    before = tokens(kube)
    result = bootstrap(admin, k, NS, make_spec(), rotate=["agent"])
    after = tokens(kube)
    assert after["agent"] != before["agent"] and before["agent"] not in gitea.tokens
    assert {n: after[n] for n in after if n != "agent"} == {n: before[n] for n in before if n != "agent"}
    assert any(s.what == "token raibid-agent" and s.action == "rotated" for s in result.steps)


def test_a_lost_secret_gets_a_new_token_and_the_old_one_is_deleted(ids, gitea, kube):
    """Token names are unique per user in Gitea (422): the old token of that name goes first."""
    admin, k = ids
    bootstrap(admin, k, NS, make_spec())
    old = role_token(kube, "raibid-gitea-mirror")
    k.delete("v1", "Secret", "raibid-gitea-mirror", NS)
    bootstrap(admin, k, NS, make_spec())
    assert role_token(kube, "raibid-gitea-mirror") != old and old not in gitea.tokens


def test_agent_token_reads_what_it_builds_and_writes_nothing(ids, gitea, kube, git_server, tmp_path):
    admin, k = ids
    bootstrap(admin, k, NS, make_spec())
    agent = role_token(kube, "raibid-gitea-agent")
    before = git_server.refs("mirrors/app")
    refused = push(git_server, "mirrors/app", agent, tmp_path)
    assert refused.returncode != 0 and "403" in refused.stderr  # cloned (read), push refused
    assert git_server.refs("mirrors/app") == before
    g = Gitea(gitea.url, agent, retries=0)
    assert g.get_repo("mirrors", "app").name == "app"
    with pytest.raises(AuthError, match="403"):
        g.edit_repo("mirrors", "app", description="pwned")  # read:repository cannot PATCH
    with pytest.raises(AuthError, match="403"):
        g.create_org("evil")  # no organization scope
    with pytest.raises(AuthError, match="403"):
        g.whoami()  # not even read:user


def test_no_ci_token_can_write_the_config_repo_or_anything_outside_the_mirror_orgs(ids, gitea, kube, git_server,
                                                                                    tmp_path):
    admin, k = ids
    owner = Gitea(gitea.url, GITEA_TOKEN, retries=0)
    owner.create_org("other")
    owner.create_repo("other", "lib", auto_init=True)
    owner.create_repo("raibid-admin", "public-tool", auto_init=True)
    bootstrap(admin, k, NS, make_spec())
    config_before = git_server.refs(CONFIG_REPO)
    assert admin.collaborator_permission("raibid-admin", "raibid-ci-config", "raibid-ci") is None
    for name, value in tokens(kube).items():
        g = Gitea(gitea.url, value, retries=0)
        for repo in (CONFIG_REPO, "other/lib", "raibid-admin/public-tool"):
            result = push(git_server, repo, value, tmp_path)
            assert result.returncode != 0, (name, repo)
            with pytest.raises((NotFound, AuthError)):
                g.edit_repo(*repo.split("/"), description="pwned")
            with pytest.raises((NotFound, AuthError)):
                g.add_collaborator(*repo.split("/"), "raibid-ci", "admin")
        with pytest.raises(AuthError, match="403"):
            g.create_org("evil")  # organization scope or not: raibid-ci may not create orgs
        with pytest.raises((NotFound, AuthError)):
            g.create_repo("other", "planted")
        with pytest.raises(AuthError):
            g.edit_user("raibid-admin", admin=False)  # /admin needs write:admin and a site admin
        with pytest.raises(AuthError):
            g.mint_token("raibid-admin", "stolen", ["all"])  # Basic auth only, and only for oneself
    assert git_server.refs(CONFIG_REPO) == config_before
    assert gitea.repos[CONFIG_REPO.lower()].collaborators == {}
    assert gitea.users["raibid-admin"].is_admin and "evil" not in gitea.users


def test_mirror_token_creates_pushes_and_archives_in_the_mirror_org_only(ids, gitea, kube, git_server, tmp_path):
    admin, k = ids
    bootstrap(admin, k, NS, make_spec())
    mirror = role_token(kube, "raibid-gitea-mirror")
    g = Gitea(gitea.url, mirror, retries=0)
    repo, created = g.create_repo("mirrors", "new", auto_init=True)
    assert created
    assert push(git_server, "mirrors/new", mirror, tmp_path).returncode == 0
    assert push(git_server, "mirrors/app", mirror, tmp_path).returncode == 0  # the admin's old repos too
    assert g.edit_repo("mirrors", "new", archived=True).archived  # its creator is the repo's admin
    with pytest.raises(AuthError, match="not owner of organization"):
        g.migrate(git_server.url("mirrors/app"), "mirrors", "pulled", mirror=True)  # pull mode needs an owner
    with pytest.raises(AuthError):
        g.delete_repo("mirrors", "new")  # deleting needs the org's Owners team


def test_pull_mode_makes_raibid_ci_an_owner_of_the_mirror_org_only_and_push_mode_takes_it_back(ids, gitea, kube,
                                                                                              git_server):
    admin, k = ids
    bootstrap(admin, k, NS, make_spec(mirror_owner=True))
    assert gitea.is_org_owner("mirrors", "raibid-ci")
    mirror = Gitea(gitea.url, role_token(kube, "raibid-gitea-mirror"), retries=0)
    git_server.create_repo("upstream/x", files={"a": "1"})
    assert mirror.migrate(git_server.url("upstream/x"), "mirrors", "x", mirror=True,
                          auth_token=git_server.token).mirror
    with pytest.raises(NotFound):  # an owner of the mirror org, still blind to the admin's config repo
        mirror.edit_repo("raibid-admin", "raibid-ci-config", description="x")
    result = bootstrap(admin, k, NS, make_spec(mirror_owner=False))
    assert not gitea.is_org_owner("mirrors", "raibid-ci")
    assert any(s.action == "removed" and "Owners" in s.what for s in result.steps)


def test_trusted_repos_elsewhere_are_read_only_and_never_the_config_repo(ids, gitea, kube, git_server, tmp_path):
    admin, k = ids
    owner = Gitea(gitea.url, GITEA_TOKEN, retries=0)
    owner.create_repo("raibid-admin", "own-app", private=True, auto_init=True)
    trusted = TrustPolicy.of(owners=["raibid-admin"])  # the config repo's owner is trusted too
    result = bootstrap(admin, k, NS, make_spec(trusted=trusted, build_repos=[CONFIG_REPO]))
    assert gitea.repos["raibid-admin/own-app"].collaborators == {"raibid-ci": "read"}
    assert gitea.repos[CONFIG_REPO.lower()].collaborators == {}
    assert any(s.action == "refused" and CONFIG_REPO in s.what for s in result.steps)
    agent = role_token(kube, "raibid-gitea-agent")
    clone = tmp_path / "own"
    git("clone", "-q", git_server.url("raibid-admin/own-app"), str(clone), env=_auth_env(agent))
    assert (clone / "README.md").exists()
    webhook = role_token(kube, "raibid-gitea-webhook")
    assert push(git_server, "raibid-admin/own-app", webhook, tmp_path).returncode != 0  # read only


def test_the_ci_user_may_not_be_an_admin(ids, gitea, kube):
    admin, k = ids
    gitea.add_user("raibid-ci", is_admin=True)
    with pytest.raises(ConfigError, match="site admin"):
        bootstrap(admin, k, NS, make_spec())
    with pytest.raises(ConfigError, match="is the admin user"):
        bootstrap(admin, k, NS, make_spec(ci_user="raibid-admin"))


def test_bootstrap_with_a_wrong_admin_password_is_an_auth_error_that_shows_no_password(ids, gitea):
    _, k = ids
    wrong = Gitea(gitea.url, basic=("raibid-admin", "not-the-SECRET"), retries=0)
    with pytest.raises(AuthError) as e:
        bootstrap(wrong, k, NS, make_spec())
    assert "not-the-SECRET" not in e.value.message + (e.value.hint or "")


DEPLOYMENT_WITH_ADMIN_TOKEN = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "raibid-webhook", "namespace": NS},
    "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
        "containers": [{"name": "c", "image": "x", "env": [{"name": "RAIBID_GITEA_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": "raibid-gitea-token", "key": "token"}}}]}]}}}}


def test_revoking_the_admin_token_is_refused_while_a_pod_holds_it_then_revokes_it(ids, gitea, kube):
    admin, k = ids
    kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-gitea-token", "namespace": NS},
                     "data": {"token": base64.b64encode(GITEA_TOKEN.encode()).decode()}})
    kube.add_object(DEPLOYMENT_WITH_ADMIN_TOKEN)
    assert [(h.kind, h.name, h.secrets) for h in admin_secret_holders(k, NS)] == [
        ("Deployment", "raibid-webhook", ["raibid-gitea-token"])]
    with pytest.raises(UsageError, match="Deployment/raibid-webhook"):
        bootstrap(admin, k, NS, make_spec(), revoke_admin_tokens=True)
    assert GITEA_TOKEN in gitea.tokens and "raibid-ci" not in gitea.users  # refused before doing anything
    k.delete("apps/v1", "Deployment", "raibid-webhook", NS)
    result = bootstrap(admin, k, NS, make_spec(), revoke_admin_tokens=True)
    assert GITEA_TOKEN not in gitea.tokens
    fresh = role_token(kube, "raibid-gitea-token")
    assert fresh != GITEA_TOKEN and gitea.tokens[fresh][0] == "raibid-admin"
    assert any(s.action == "revoked" for s in result.steps)


def test_role_check_finds_an_admin_token_in_a_role_secret(ids, gitea, kube):
    admin, k = ids
    bootstrap(admin, k, NS, make_spec())
    found = {c.role: c.state for c in check_role_tokens(gitea.url, k, NS, admin=admin, admin_user="raibid-admin",
                                                        retries=0)}
    assert found == {"agent": "ok", "mirror": "ok", "webhook": "ok", "registry": "ok", "builder": "ok"}
    scoped = gitea.add_token("raibid-admin", "admin-scoped-token-without-read-user", ["read:repository"])
    for name, value in (("raibid-gitea-webhook", GITEA_TOKEN), ("raibid-gitea-agent", scoped)):
        k.delete("v1", "Secret", name, NS)
        kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
                         "data": {"token": base64.b64encode(value.encode()).decode()}})
    found = {c.role: c.state for c in check_role_tokens(gitea.url, k, NS, admin=admin, admin_user="raibid-admin",
                                                        retries=0)}
    assert found["webhook"] == "admin"  # GET /user: is_admin
    assert found["agent"] == "admin"  # no read:user: found among the admin's tokens by its last eight
    assert found["mirror"] == "ok"


def test_secret_refs_sees_env_env_from_and_secret_and_projected_volumes():
    from raibid.gitea.identities import secret_refs

    spec = {"initContainers": [{"name": "i", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s1"}}}]}],
            "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "s2"}}, {"configMapRef": {"name": "cm"}}],
                            "env": [{"name": "B", "value": "raibid-gitea-token"}]}],
            "volumes": [{"name": "v", "secret": {"secretName": "s3"}},
                        {"name": "p", "projected": {"sources": [{"secret": {"name": "s4"}}, {"configMap": {"name": "c"}}]}}]}
    assert secret_refs(spec) == {"s1", "s2", "s3", "s4"}  # a literal value naming a Secret reads nothing
