"""Self-tests of the smart-HTTP git fixture: auth, clone, push, chunked bodies."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.harness.githttp import git


def auth_env(token: str) -> dict:
    # Credentials through a header from the env, never in the URL or git config.
    import base64

    basic = base64.b64encode(f"x:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}


def test_clone_with_token_and_refuse_without(git_server, tmp_path):
    git_server.create_repo("acme/app", files={"README.md": "hi\n"})
    git_server.tag("acme/app", "v1")
    dest = tmp_path / "clone"
    git("clone", "-q", git_server.url("acme/app"), str(dest), env=auth_env(git_server.token))
    assert (dest / "README.md").read_text() == "hi\n"
    assert "v1" in git("tag", cwd=dest)
    with pytest.raises(subprocess.CalledProcessError):
        git("clone", "-q", git_server.url("acme/app"), str(tmp_path / "no"), env=auth_env("wrong"))


def test_push_including_a_chunked_body_over_1mib(git_server, tmp_path):
    git_server.create_repo("acme/big")
    work = tmp_path / "w"
    git("init", "-q", "-b", "main", str(work))
    (work / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "big", cwd=work)
    git("push", "-q", git_server.url("acme/big"), "main", cwd=work, env=auth_env(git_server.token))
    assert git_server.refs("acme/big")["refs/heads/main"] == git("rev-parse", "HEAD", cwd=work)
    assert git_server.chunked_bodies >= 1


def test_commit_helper_builds_history_on_branches(git_server):
    git_server.create_repo("acme/lib", files={"a.txt": "1"})
    first = git_server.refs("acme/lib")["refs/heads/main"]
    second = git_server.commit("acme/lib", "main", {"a.txt": "2"})
    feature = git_server.commit("acme/lib", "feature", {"b.txt": "x"})
    refs = git_server.refs("acme/lib")
    assert refs["refs/heads/main"] == second != first
    assert refs["refs/heads/feature"] == feature
