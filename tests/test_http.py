"""raibid/http.py on its own: URL checks and the session's retry rules, with no service in particular."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from raibid.errors import ConfigError, RaibidError, Unreachable
from raibid.http import json_body, make_session, send, url_problem


@pytest.mark.parametrize(("url", "problem"), [
    ("http://gitea:3000", None),
    ("https://api.github.com", None),
    ("http://[::1]:8080/x", None),
    ("gitea:3000", "must start with http:// or https://"),
    ("admin:pw@gitea:3000", "must start with"),
    ("http://", "has no host"),
    ("http://gitea:30a80", "the port '30a80' is not a number"),
    ("http://u:pw@gitea:99999", "the port '99999' is not a number"),
    ("http://gi tea:3000", "contains a space"),
    ("http://[::1:80/", "cannot be parsed"),
])
def test_url_problem(url, problem):
    found = url_problem(url)
    assert (found is None) if problem is None else (problem in found), found
    assert "pw" not in (found or "")


class _Counting(BaseHTTPRequestHandler):
    calls: list[str] = []
    statuses: list[int] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        type(self).calls.append(self.command)
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        body = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815


@pytest.fixture
def server():
    _Counting.calls, _Counting.statuses = [], []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize(("method", "tries"), [("GET", 3), ("PUT", 3), ("DELETE", 3), ("POST", 1), ("PATCH", 1)])
def test_only_idempotent_methods_are_retried_on_503(server, method, tries):
    session = make_session(retries=5, backoff=0.001, total_timeout=10)
    _Counting.statuses = [503, 503]
    resp = send(session, method, f"{server}/x", what=f"{method} /x", service="S", base=server, timeout=5)
    assert resp.status_code == (200 if tries == 3 else 503)
    assert _Counting.calls == [method] * tries


def test_refused_connection_is_unreachable_with_the_url_masked():
    session = make_session(retries=1, backoff=0.001, total_timeout=5)
    start = time.monotonic()
    with pytest.raises(Unreachable) as e:
        send(session, "GET", "http://127.0.0.1:1/x", what="GET /x", service="S", base="http://u:pw@127.0.0.1:1",
             timeout=1)
    assert "connection refused" in e.value.message and "u:***@127.0.0.1:1" in e.value.message
    assert time.monotonic() - start < 5


def test_malformed_url_is_a_config_error_without_credentials():
    session = make_session(retries=0, backoff=0)
    with pytest.raises(ConfigError) as e:
        send(session, "GET", "http://u:pw-SECRET@h:80a/x", what="GET /x", service="S", base="http://u:pw-SECRET@h:80a",
             timeout=1)
    assert "pw-SECRET" not in e.value.message


def test_json_body_shapes(server):
    session = make_session(retries=0, backoff=0)
    resp = session.get(f"{server}/x", timeout=5)
    assert json_body(resp, what="GET /x", service="S", base=server, expect=dict) == {"ok": True}
    with pytest.raises(RaibidError) as e:
        json_body(resp, what="GET /x", service="S", base=server, expect=list)
    assert e.value.exit_code == 1 and "returned a JSON object, expected a JSON list" in e.value.message
