"""Shared fixtures: isolation from the developer's machine, and the real counterparts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.harness.githttp import GitHTTPServer
from tests.harness.kubefake import KubeFake
from tests.harness.redis_server import RedisServer

ENV_PREFIXES = ("RAIBID_", "KUBECONFIG", "GITHUB_TOKEN", "NO_COLOR")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the caller's config, kubeconfig, tokens or cwd."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # Retries still happen, but without real back-off waits.
    monkeypatch.setenv("RAIBID_GITEA_RETRY_BACKOFF", "0.001")
    return work


# ----------------------------------------------------------------------------- redis


@pytest.fixture
def redis_kind() -> str:
    """Which server binary the Redis fixtures run. The queue suites override this fixture with
    ``params=SERVER_KINDS`` (tests/harness/redis_server.py), so they run on Redis and Valkey."""
    return "redis"


@pytest.fixture(scope="session")
def _redis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RedisServer]]:
    """One server per kind for the whole session, started when first asked for."""
    servers: dict[str, RedisServer] = {}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def redis_server(_redis_servers: dict[str, RedisServer], redis_kind: str,
                 tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    if redis_kind not in _redis_servers:
        _redis_servers[redis_kind] = RedisServer(tmp_path_factory.mktemp(redis_kind), kind=redis_kind).start()
    return _redis_servers[redis_kind]


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A clean database on the worker's server, wired into RAIBID_REDIS_URL."""
    client = redis_server.client()
    client.flushall()
    client.close()
    monkeypatch.setenv("RAIBID_REDIS_URL", redis_server.url)
    return redis_server.url


@pytest.fixture
def durable_redis(tmp_path: Path, redis_kind: str) -> Iterator[RedisServer]:
    """A private AOF-on server (appendfsync always) that a test may restart or SIGKILL."""
    server = RedisServer(tmp_path / "redis-aof", appendonly=True, appendfsync="always", kind=redis_kind).start()
    yield server
    server.kill()


# ----------------------------------------------------------------------------- kubernetes


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeFake]:
    """A started API fake whose kubeconfig is exported as KUBECONFIG."""
    fake = KubeFake().start()
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    fake.kubeconfig = kubeconfig  # type: ignore[attr-defined]
    yield fake
    fake.stop()


# ----------------------------------------------------------------------------- git


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitHTTPServer]:
    server = GitHTTPServer(tmp_path / "git-root").start()
    yield server
    server.stop()


# ----------------------------------------------------------------------------- CLI


@dataclass
class Run:
    result: Result

    @property
    def code(self) -> int:
        return self.result.exit_code

    @property
    def out(self) -> str:
        return self.result.stdout

    @property
    def err(self) -> str:
        return self.result.stderr

    def json(self):
        import json

        return json.loads(self.result.stdout)


@pytest.fixture
def run() -> callable:
    """Invoke the real CLI in-process; stdout and stderr are kept apart."""
    from raibid.cli import cli

    def invoke(*args: str, input: str | None = None, env: dict | None = None) -> Run:
        runner = CliRunner()
        result = runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)
        return Run(result)

    return invoke


# ----------------------------------------------------------------------------- gitea


GITEA_TOKEN = "gitea-test-token-0123456789abcdef"


@pytest.fixture
def gitea(git_server, monkeypatch: pytest.MonkeyPatch):
    """A started Gitea fake with an admin token, wired into RAIBID_GITEA_URL/RAIBID_GITEA_TOKEN."""
    from tests.harness.giteafake import GiteaFake

    fake = GiteaFake(git_server).start()
    fake.add_token("raibid-admin", GITEA_TOKEN)
    monkeypatch.setenv("RAIBID_GITEA_URL", fake.url)
    monkeypatch.setenv("RAIBID_GITEA_TOKEN", GITEA_TOKEN)
    yield fake
    fake.stop()
