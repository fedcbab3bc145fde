"""Self-tests of the redis-server fixture: real server, AOF, restart, SIGKILL."""

from __future__ import annotations

from tests.harness.redis_server import RedisServer


def test_fixture_server_is_redis_7_and_isolated_per_test(redis_url, redis_server):
    c = redis_server.client()
    assert int(c.info("server")["redis_version"].split(".")[0]) >= 7
    assert c.dbsize() == 0  # flushed for this test
    c.set("k", "v")
    assert c.get("k") == "v"


def test_aof_survives_restart_and_sigkill(tmp_path):
    server = RedisServer(tmp_path / "r", appendonly=True, appendfsync="always").start()
    try:
        c = server.client()
        c.xadd("s", {"n": "1"})
        server.restart()
        assert server.client().xlen("s") == 1
        server.client().xadd("s", {"n": "2"})
        server.restart(kill=True)
        assert server.client().xlen("s") == 2
    finally:
        server.kill()


def test_without_aof_sigkill_loses_data(tmp_path):
    server = RedisServer(tmp_path / "r").start()
    try:
        server.client().set("k", "v")
        server.restart(kill=True)
        assert server.client().get("k") is None
    finally:
        server.kill()


def test_password_is_enforced(tmp_path):
    import pytest
    import redis

    server = RedisServer(tmp_path / "r", password="s3cret").start()
    try:
        assert server.client().ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, password="wrong").ping()
    finally:
        server.kill()


def test_password_is_never_on_the_command_line(tmp_path):
    """As in the cluster (auth.conf from the Secret), the password is in a 0600 file, never in argv,
    where `ps` would show it before the server rewrites its title."""
    server = RedisServer(tmp_path / "r", password="s3cret-pw")
    server.port = 1  # _args needs a port; nothing is started
    args = server._args()
    assert not any("s3cret-pw" in a for a in args)
    conf = tmp_path / "r" / "auth.conf"
    assert str(conf) in args and conf.read_text() == "requirepass s3cret-pw\n"
    assert conf.stat().st_mode & 0o777 == 0o600
