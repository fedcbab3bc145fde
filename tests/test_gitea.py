"""The Gitea client as a library: migrate, mirror-sync, pagination, retries."""

from __future__ import annotations

import pytest

from raibid.errors import AlreadyExists, AuthError, GiteaError, NotFound, Unreachable
from raibid.gitea import Gitea
from tests.conftest import GITEA_TOKEN


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
