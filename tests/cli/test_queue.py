"""`raibid queue` commands against a real redis-server."""

from __future__ import annotations

import json

import pytest
import redis

from raibid.queue import JobSpec, Queue
from tests.harness.redis_server import SERVER_KINDS


@pytest.fixture(params=SERVER_KINDS)
def redis_kind(request) -> str:
    """Every test here runs on Debian's redis-server 7.0 and on Valkey (tests/harness/redis_server.py)."""
    return request.param


@pytest.fixture(autouse=True)
def trusted_test_repos(monkeypatch):
    """The repos these tests build are trusted, so their jobs keep the type's pool (`generic`, `rust`);
    the routing tests below use other owners, which no config here trusts."""
    monkeypatch.setenv("RAIBID_AGENTS_TRUSTED_OWNERS", "[mirrors, a]")


@pytest.fixture
def q(redis_url) -> Queue:
    return Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)


def test_submit_then_show_list_and_stats(run, q):
    r = run("queue", "submit", "--repo", "mirrors/app", "--ref", "main", "--env", "A=1", "--timeout", "60")
    assert r.code == 0, r.err
    job_id = r.out.strip()
    shown = run("queue", "show", job_id, "--json").json()
    assert shown["status"] == "queued" and shown["env"] == {"A": "1"} and shown["timeout"] == 60
    assert shown["source"] == "cli"
    listed = run("queue", "list", "--json").json()
    assert [j["id"] for j in listed] == [job_id]
    assert run("queue", "list", "--status", "running", "--json").json() == []
    stats = run("queue", "stats", "--json").json()
    generic = next(s for s in stats["streams"] if s["agent"] == "generic")
    assert generic["lag"] == 1 and generic["keda_desired"] == 1 and generic["max_replicas"] == 8
    table = run("queue", "list")
    assert table.out.splitlines()[0].split("\t")[:2] == ["ID", "STATUS"]


def test_submit_json_and_validation(run, redis_url):
    r = run("queue", "submit", "--repo", "mirrors/app", "--ref", "v1", "--agent", "rust", "--json")
    data = r.json()
    assert data["agent"] == "rust" and data["ref"] == "v1" and data["stream_id"]
    bad = run("queue", "submit", "--repo", "noslash", "--ref", "main")
    assert bad.code == 2 and "OWNER/NAME" in bad.err
    missing = run("queue", "submit", "--repo", "a/b")
    assert missing.code == 2 and "--ref" in missing.err
    badenv = run("queue", "submit", "--repo", "a/b", "--ref", "x", "--env", "NOEQUALS")
    assert badenv.code == 2 and "KEY=VALUE" in badenv.err


def test_bulk_submit_from_stdin(run, q):
    lines = "\n".join(json.dumps({"repo": "mirrors/app", "ref": "main", "commit": f"{i:040x}"}) for i in range(30))
    r = run("queue", "submit", "--from-file", "-", "--json", input=lines + "\n")
    assert r.code == 0, r.err
    assert len(r.json()) == 30 and "submitted 30 jobs" in r.err
    assert q.r.zcard(q.keys.index) == 30


def test_bulk_submit_malformed_line_submits_nothing(run, q, isolated_env):
    f = isolated_env / "jobs.jsonl"
    f.write_text('{"repo": "a/b", "ref": "main"}\n{"repo": "a/b", "ref": \n{"repo": "c/d", "ref": "x"}\n')
    r = run("queue", "submit", "--from-file", str(f))
    assert r.code == 2 and f"{f}:2: malformed JSON" in r.err and "nothing was submitted" in r.err


def test_bulk_submit_line_with_a_huge_integer_is_a_usage_error(run, q, isolated_env):
    # json.loads raises a plain ValueError (not JSONDecodeError) past Python's integer digit limit.
    f = isolated_env / "jobs.jsonl"
    f.write_text('{"repo": "a/b", "ref": "main", "timeout": ' + "9" * 5000 + "}\n")
    r = run("queue", "submit", "--from-file", str(f))
    assert r.code == 2 and f"{f}:1: malformed JSON (Exceeds the limit" in r.err, r.err
    assert "Traceback" not in r.err and q.r.zcard(q.keys.index) == 0
    assert q.r.dbsize() == 0
    f.write_text('{"repo": "a/b", "ref": "main", "secret": "x"}\n')
    r = run("queue", "submit", "--from-file", str(f))
    assert r.code == 2 and ":1: unknown key(s) secret" in r.err


def test_bulk_submit_line_without_a_required_key_names_the_key(run, q, isolated_env):
    f = isolated_env / "jobs.jsonl"
    f.write_text('{"repo": "a/b", "ref": "main"}\n{"repo": "a/b"}\n')
    r = run("queue", "submit", "--from-file", str(f))
    assert r.code == 2 and f"{f}:2: missing key(s) ref; nothing was submitted" in r.err
    assert "__init__" not in r.err and "positional argument" not in r.err
    assert q.r.dbsize() == 0


def test_bulk_submit_non_utf8_file_exits_2_and_submits_nothing(run, q, isolated_env):
    f = isolated_env / "jobs.jsonl"
    f.write_bytes(b'{"repo": "a/b", "ref": "main"}\n{"repo": "a/b", "ref": "caf\xe9"}\n')
    r = run("queue", "submit", "--from-file", str(f))
    assert r.code == 2 and f"{f}:2: not UTF-8 text" in r.err and "Traceback" not in r.err
    assert q.r.dbsize() == 0


def test_unknown_job_exits_3(run, redis_url):
    for args in (["show", "01NOPE"], ["cancel", "01NOPE"], ["retry", "01NOPE"], ["logs", "01NOPE"]):
        r = run("queue", *args)
        assert r.code == 3, args
        assert "no job '01NOPE'" in r.err and "hint: `raibid queue list`" in r.err, args


def test_cancel_retry_and_logs(run, q):
    job = q.submit(JobSpec(repo="a/b", ref="main"))
    claim = q.claim("generic", "pod")
    q.append_log(job.id, ["hello", "world"])
    q.finish(claim, "failed", exit_code=3, error="tests failed")
    assert run("queue", "logs", job.id).out == "hello\nworld\n"
    followed = run("queue", "logs", job.id, "--follow")
    assert followed.out == "hello\nworld\n" and "failed (exit 3)" in followed.err
    new_id = run("queue", "retry", job.id).out.strip()
    assert q.get(new_id).retry_of == job.id
    r = run("queue", "cancel", new_id)
    assert r.code == 0 and "cancelled" in r.err
    again = run("queue", "cancel", new_id)
    assert again.code == 2 and "already cancelled" in again.err


def test_dlq_list_retry_purge(run, redis_url):
    q = Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url, max_deliveries=1, min_idle_ms=0)
    job = q.submit(JobSpec(repo="a/b", ref="main"))
    q.claim("generic", "pod-1")
    assert q.claim("generic", "pod-2") is None  # second delivery: dead
    listed = run("queue", "dlq", "list", "--json").json()
    assert [d["job_id"] for d in listed] == [job.id]
    assert run("queue", "dlq", "purge").code == 2  # no --yes off a TTY
    new_id = run("queue", "dlq", "retry", job.id).out.strip()
    assert new_id != job.id and run("queue", "dlq", "list", "--json").json() == []
    q.claim("generic", "pod-3")
    q.claim("generic", "pod-4")
    r = run("queue", "dlq", "purge", "--yes")
    assert r.code == 0 and "removed 1" in r.err


def test_reap_json_and_purge_requires_yes(run, q):
    job = q.submit(JobSpec(repo="a/b", ref="main"))
    q.claim("generic", "dead-pod")
    r = run("queue", "reap", "--min-idle", "0", "--json")
    assert r.code == 0 and r.json()["requeued"] == [job.id]
    refused = run("queue", "purge")
    assert refused.code == 2 and "--yes" in refused.err and q.r.dbsize() > 0
    assert run("queue", "purge", "--yes").code == 0
    assert q.r.dbsize() == 0


def test_init_creates_groups_for_configured_types(run, q, isolated_env):
    (isolated_env / "raibid.yaml").write_text(
        "agents:\n  pools: [generic]\n  types:\n    rust: {lag_count: 2}\n")
    r = run("queue", "init", "--json")
    # Each type has two pools, so KEDA's consumer group exists on both streams.
    assert {d["agent"]: d["created"] for d in r.json()} == {
        "generic": True, "generic-untrusted": True, "rust": True, "rust-untrusted": True}
    assert {d["agent"]: d["created"] for d in run("queue", "init", "--json").json()} == {
        "generic": False, "generic-untrusted": False, "rust": False, "rust-untrusted": False}
    for agent in ("generic", "generic-untrusted", "rust", "rust-untrusted"):
        assert q.group_info(q.keys.stream(agent)) is not None, agent
    stats = run("queue", "stats", "--json").json()
    assert {s["agent"] for s in stats["streams"]} == {"generic", "generic-untrusted", "rust", "rust-untrusted"}
    for agent in ("rust", "rust-untrusted"):
        rust = next(s for s in stats["streams"] if s["agent"] == agent)
        assert rust["lag_count"] == 2 and rust["lag"] == 0 and rust["keda_desired"] == 0 and rust["group_exists"]


def test_init_of_one_type_creates_both_its_pools(run, q):
    r = run("queue", "init", "--agent", "rust", "--json")
    assert r.code == 0, r.err
    assert [d["agent"] for d in r.json()] == ["rust", "rust-untrusted"]
    assert q.group_info(q.keys.stream("rust-untrusted")) is not None


# ----------------------------------------------------------------------------- routing by agents.trusted


def test_submit_of_an_untrusted_repo_goes_to_the_untrusted_pool_and_says_why(run, q):
    r = run("queue", "submit", "--repo", "strangers/app", "--ref", "main", "--agent", "rust", "--json")
    assert r.code == 0, r.err
    job = r.json()
    assert job["agent"] == "rust-untrusted"
    assert "strangers/app is not in agents.trusted" in r.err and "rust-untrusted" in r.err
    assert "agents.trusted.owners" in r.err  # how to trust it
    # The entry is on the untrusted pool's stream, and nothing is on the trusted one.
    assert [f["job"] for _, f in q.r.xrange(q.keys.stream("rust-untrusted"))] == [job["id"]]
    assert q.r.xlen(q.keys.stream("rust")) == 0
    shown = run("queue", "show", job["id"], "--json").json()
    assert shown["agent"] == "rust-untrusted"
    assert [j["agent"] for j in run("queue", "list", "--json").json()] == ["rust-untrusted"]
    # An agent of the trusted pool never sees it; one of the untrusted pool claims it.
    assert q.claim("rust", "pod-t") is None
    assert q.claim("rust-untrusted", "pod-u").job.id == job["id"]


def test_submit_of_a_trusted_repo_keeps_the_types_pool_and_prints_it(run, q):
    r = run("queue", "submit", "--repo", "mirrors/app", "--ref", "main", "--agent", "rust")
    assert r.code == 0, r.err
    job_id = r.out.strip()  # stdout is still only the id
    assert q.get(job_id).agent == "rust" and "queued on pool rust" in r.err and "warning" not in r.err
    assert q.r.xlen(q.keys.stream("rust")) == 1 and q.r.xlen(q.keys.stream("rust-untrusted")) == 0


def test_default_type_is_routed_too(run, q):
    r = run("queue", "submit", "--repo", "strangers/app", "--ref", "main")
    assert r.code == 0 and q.get(r.out.strip()).agent == "generic-untrusted"
    assert "queued on pool generic-untrusted" in r.err
    assert "warning" not in r.err  # nobody asked for a trusted pool


def test_asking_for_the_untrusted_pool_of_a_trusted_repo_still_routes_by_policy(run, q):
    r = run("queue", "submit", "--repo", "mirrors/app", "--ref", "main", "--agent", "rust-untrusted", "--json")
    assert r.code == 0 and r.json()["agent"] == "rust"
    assert q.r.xlen(q.keys.stream("rust")) == 1 and q.r.xlen(q.keys.stream("rust-untrusted")) == 0


def test_a_config_file_trusts_by_owner_and_by_full_regex(run, q, isolated_env, monkeypatch):
    monkeypatch.delenv("RAIBID_AGENTS_TRUSTED_OWNERS")
    (isolated_env / "raibid.yaml").write_text("agents:\n  trusted:\n    owners: [Me]\n    repos: ['team/api-.*']\n")
    pools = {}
    for repo in ("me/app", "team/api-gw", "team/web", "xteam/api-gw", "mirrors/app"):
        r = run("queue", "submit", "--repo", repo, "--ref", "main", "--agent", "go", "--json")
        assert r.code == 0, r.err
        pools[repo] = r.json()["agent"]
    assert pools == {"me/app": "go", "team/api-gw": "go", "team/web": "go-untrusted",
                     "xteam/api-gw": "go-untrusted", "mirrors/app": "go-untrusted"}


def test_bulk_submit_routes_each_line_by_its_repo(run, q):
    lines = [{"repo": "mirrors/app", "ref": "main", "agent": "rust"},
             {"repo": "strangers/app", "ref": "main", "agent": "rust"},
             {"repo": "strangers/lib", "ref": "main"},
             {"repo": "a/b", "ref": "main", "agent": "python-untrusted"}]
    r = run("queue", "submit", "--from-file", "-", "--json", input="\n".join(json.dumps(x) for x in lines) + "\n")
    assert r.code == 0, r.err
    assert [j["agent"] for j in r.json()] == ["rust", "rust-untrusted", "generic-untrusted", "python"]
    for j in r.json():
        assert [f["job"] for _, f in q.r.xrange(q.keys.stream(j["agent"]))] == [j["id"]]
    assert "strangers/app is not in agents.trusted" in r.err and "strangers/lib" not in r.err
    assert "by pool: generic-untrusted 1, python 1, rust 1, rust-untrusted 1" in r.err


def test_a_bad_agent_is_named_as_given_not_as_its_pool(run, q):
    r = run("queue", "submit", "--repo", "strangers/app", "--ref", "main", "--agent", "Rust")
    assert r.code == 2 and "'Rust'" in r.err and "untrusted" not in r.err and q.r.dbsize() == 0


def _failed(q: Queue, repo: str, agent: str) -> str:
    job = q.submit(JobSpec(repo=repo, ref="main", agent=agent))
    q.finish(q.claim(agent, "pod"), "failed", exit_code=1)
    return job.id


def test_retry_re_routes_with_todays_agents_trusted(run, q, monkeypatch):
    """A repo taken out of agents.trusted retries in the untrusted pool, and one trusted since in the trusted."""
    was_trusted = _failed(q, "mirrors/app", "rust")
    monkeypatch.setenv("RAIBID_AGENTS_TRUSTED_OWNERS", "[a]")  # mirrors is no longer trusted
    r = run("queue", "retry", was_trusted, "--json")
    assert r.code == 0, r.err
    assert r.json()["agent"] == "rust-untrusted" and r.json()["retry_of"] == was_trusted
    assert "mirrors/app is not in agents.trusted" in r.err
    assert [f["job"] for _, f in q.r.xrange(q.keys.stream("rust-untrusted"))] == [r.json()["id"]]
    assert q.group_info(q.keys.stream("rust-untrusted")) is not None  # KEDA's group, before the entry
    assert q.claim("rust", "pod-t") is None

    now_trusted = _failed(q, "a/lib", "go-untrusted")
    plain = run("queue", "retry", now_trusted)
    assert plain.code == 0 and q.get(plain.out.strip()).agent == "go"
    assert "queued on pool go" in plain.err


def test_dlq_retry_re_routes_too(run, redis_url, monkeypatch):
    q = Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url, max_deliveries=1, min_idle_ms=0)
    job = q.submit(JobSpec(repo="mirrors/app", ref="main", agent="rust"))
    q.claim("rust", "pod-1")
    assert q.claim("rust", "pod-2") is None  # dead
    monkeypatch.delenv("RAIBID_AGENTS_TRUSTED_OWNERS")  # a default config trusts nothing
    r = run("queue", "dlq", "retry", job.id)
    assert r.code == 0, r.err
    new = q.get(r.out.strip())
    assert new.agent == "rust-untrusted" and new.retry_of == job.id and "not in agents.trusted" in r.err
    assert q.r.xlen(q.keys.stream("rust-untrusted")) == 1 and run("queue", "dlq", "list", "--json").json() == []


def test_unreachable_redis_exits_5_without_password(run, monkeypatch):
    monkeypatch.setenv("RAIBID_REDIS_URL", "redis://:s3cr3t@127.0.0.1:1/0")
    r = run("queue", "list")
    assert r.code == 5 and "redis://:***@127.0.0.1:1/0" in r.err
    assert "s3cr3t" not in r.err + r.out and "Traceback" not in r.err


@pytest.fixture
def http_not_redis():
    """Something that is not Redis on the port (a web server, a proxy): it answers each request with
    an HTTP 400 and keeps the connection open, as nginx does."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n")

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"redis://:s3cr3t@127.0.0.1:{listener.getsockname()[1]}/0"
    listener.close()


def test_a_url_that_is_not_redis_exits_5_without_a_traceback(run, monkeypatch, http_not_redis):
    monkeypatch.setenv("RAIBID_REDIS_URL", http_not_redis)
    for args in (["stats"], ["list"], ["submit", "--repo", "a/b", "--ref", "main"]):
        r = run("queue", *args)
        assert r.code == 5, args
        assert "does not answer like Redis" in r.err and "redis://:***@127.0.0.1" in r.err
        assert "hint:" in r.err and "s3cr3t" not in r.err + r.out


def test_wrong_password_exits_4(run, tmp_path, monkeypatch, redis_kind):
    from tests.harness.redis_server import RedisServer

    server = RedisServer(tmp_path / "auth", password="right-pw", kind=redis_kind).start()
    try:
        monkeypatch.setenv("RAIBID_REDIS_URL", server.url)
        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", "wrong-pw")
        r = run("queue", "stats")
        assert r.code == 4 and "wrong-pw" not in r.err
        monkeypatch.delenv("RAIBID_REDIS_PASSWORD")
        assert run("queue", "stats").code == 4
        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", "right-pw")
        assert run("queue", "stats", "--json").code == 0
    finally:
        server.kill()


def test_redis_url_auto_finds_service_and_secret(run, kube, tmp_path, monkeypatch, redis_kind):
    """`redis.url: auto` reads the Service's ClusterIP and the Secret's password from the cluster."""
    import base64

    from tests.harness.redis_server import RedisServer

    server = RedisServer(tmp_path / "incluster", password="cluster-pw", kind=redis_kind).start()
    try:
        kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
        kube.add_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "raibid-redis",
                                                                              "namespace": "raibid-ci"},
                         "spec": {"clusterIP": "127.0.0.1", "ports": [{"name": "redis", "port": server.port}]}})
        kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-redis",
                                                                             "namespace": "raibid-ci"},
                         "data": {"password": base64.b64encode(b"cluster-pw").decode()}})
        monkeypatch.setenv("RAIBID_REDIS_URL", "auto")
        r = run("queue", "submit", "--repo", "a/b", "--ref", "main")
        assert r.code == 0, r.err
        assert server.client().xlen("raibid:jobs:generic") == 1
        assert "cluster-pw" not in r.out + r.err
    finally:
        server.kill()


def test_redis_url_auto_without_service_exits_3(run, kube, monkeypatch):
    monkeypatch.setenv("RAIBID_REDIS_URL", "auto")
    r = run("queue", "list")
    assert r.code == 3 and "Service raibid-redis not found" in r.err


def test_logs_json_lines(run, q):
    job = q.submit(JobSpec(repo="a/b", ref="main"))
    claim = q.claim("generic", "pod")
    q.append_log(job.id, ["one", "two"])
    q.finish(claim, "succeeded", exit_code=0)
    r = run("queue", "logs", job.id, "--json", "--follow")
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert [x["line"] for x in rows] == ["one", "two"] and all(x["id"] for x in rows)


def test_submit_dedupe_reports_duplicates(run, q):
    args = ("queue", "submit", "--repo", "mirrors/app", "--ref", "main", "--dedupe", "mirrors/app@abc:generic")
    first = run(*args, "--json")
    assert first.code == 0, first.err
    assert first.json()["duplicate"] is False and first.json()["dedupe"] == "mirrors/app@abc:generic"
    second = run(*args, "--json")
    assert second.code == 0 and second.json()["duplicate"] is True
    assert second.json()["id"] == first.json()["id"]
    plain = run(*args)
    assert plain.out.strip() == first.json()["id"] and "duplicate" in plain.err
    lines = "\n".join(json.dumps({"repo": "mirrors/app", "ref": "main", "dedupe": d})
                      for d in ("mirrors/app@abc:generic", "mirrors/app@def:generic"))
    bulk = run("queue", "submit", "--from-file", "-", "--json", input=lines + "\n")
    assert bulk.code == 0, bulk.err
    assert [j["duplicate"] for j in bulk.json()] == [True, False]
    assert bulk.json()[0]["id"] == first.json()["id"] and "submitted 1 jobs, 1 duplicates" in bulk.err
    assert q.r.zcard(q.keys.index) == 2
    retried = run("queue", "retry", first.json()["id"])
    assert retried.code == 2  # queued: not retryable; dedupe plays no part in retry
    bad = run("queue", "submit", "--repo", "a/b", "--ref", "main", "--dedupe", "a\tb")
    assert bad.code == 2 and "control character" in bad.err


def test_bulk_submit_cut_off_prints_what_is_in_and_exits_5(run, q, redis_server, monkeypatch):
    from tests.harness.tcp_proxy import TcpProxy

    proxy = TcpProxy(redis_server.port).start()
    try:
        monkeypatch.setenv("RAIBID_REDIS_URL", proxy.url)
        monkeypatch.setenv("RAIBID_REDIS_RETRIES", "0")
        proxy.drop_reply_to(b"EVALSHA")
        lines = "\n".join(json.dumps({"repo": "mirrors/app", "ref": "main", "commit": f"{i:040x}"}) for i in range(5))
        r = run("queue", "submit", "--from-file", "-", input=lines + "\n")
        assert proxy.dropped.is_set(), (r.code, r.out, r.err)
        assert r.code == 5 and "for certain" in r.err and "Traceback" not in r.err
        printed = r.out.split()
        assert set(printed) <= set(q.r.zrange(q.keys.index, 0, -1))
    finally:
        proxy.close()


def test_queue_list_survives_a_malformed_record_and_reap_reports_ids_apart(run, q):
    job = q.submit(JobSpec(repo="mirrors/app", ref="main"))
    q.r.hset(q.keys.job(job.id), "attempt", "many")
    listed = run("queue", "list", "--json")
    assert listed.code == 0 and "malformed" in listed.err
    assert listed.json()[0]["malformed"].startswith("attempt")
    reaped = run("queue", "reap", "--json").json()
    assert {"acked_jobs", "acked_entries", "skipped", "consumers_deleted", "expired"} <= set(reaped)


def test_show_prints_env_as_json_not_a_python_dict(run, q):
    sub = run("queue", "submit", "--repo", "acme/app", "--ref", "main", "--env", "A=1", "--json")
    job_id = sub.json()["id"]
    out = run("queue", "show", job_id).out
    env_line = next(line for line in out.splitlines() if line.startswith("env:"))
    assert env_line.split(":", 1)[1].strip() == '{"A": "1"}'


def test_one_shot_commands_fail_within_redis_timeout_not_the_retry_budget(run, monkeypatch):
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on: every connect is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAIBID_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("RAIBID_REDIS_TIMEOUT", "1")
    for args in (("queue", "list"), ("queue", "stats"), ("queue", "show", "01ABC")):
        t0 = time.monotonic()
        r = run(*args)
        elapsed = time.monotonic() - t0
        assert r.code == 5 and "Traceback" not in r.err, (args, r.err)
        # redis.retries (8) of backoff would take about 11 s; one-shot commands do not retry.
        assert elapsed < 1.0, (args, elapsed)


def test_long_running_processes_get_the_retrying_queue(tmp_path):
    from raibid.app import Application
    from raibid.settings import Settings

    app = Application(settings=Settings())
    assert app.queue.retrying._retries == 0
    assert app.worker_queue.retrying._retries == app.cfg.redis.retries > 0


def test_doctor_and_top_show_both_pools_of_each_type(run, q):
    r = run("queue", "submit", "--repo", "strangers/app", "--ref", "main")
    assert r.code == 0, r.err
    checks = {c["name"]: c for c in run("doctor", "--json").json()["checks"]}
    assert checks["queue generic-untrusted"]["status"] == "ok" and "lag 1" in checks["queue generic-untrusted"]["detail"]
    assert "queue generic" in checks and "queue rust-untrusted" in checks
    top = run("top", "--once", "--json")
    pools = {p["agent"]: p for p in top.json()["queue"]["pools"]}
    assert pools["generic-untrusted"]["queued"] == 1 and pools["generic"]["queued"] in (0, None)
    assert {"rust", "rust-untrusted", "python", "python-untrusted"} <= set(pools)
OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # writes the operator's clipboard
HOSTILE_LOG = ["[/x] [bold", OSC52, "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\", "\x1b[2J\x1b[Hclear",
               "tab\there", "ok\rFAKE", "\u202egnp.exe", "\x9b31mC1"]


def _hostile_job(q):
    job = q.submit(JobSpec(repo="a/b", ref="[/x]\x1b[2J", env={"X": OSC52}))
    claim = q.claim("generic", "pod")
    q.append_log(job.id, HOSTILE_LOG)
    q.finish(claim, "failed", exit_code=1, error="step [/x] said \x1b]8;;https://evil.example\x1b\\")
    return job


def test_logs_show_control_sequences_escaped_and_raw_passes_them(run, q):
    job = _hostile_job(q)
    for args in ((), ("--follow",)):
        out = run("queue", "logs", job.id, *args).out
        assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\u202e" not in out
        assert "\x9b" not in out
        assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in out.splitlines()  # visible as text
        assert "[/x] [bold" in out and "tab\there" in out and "ok\\rFAKE" in out and "\\u202egnp.exe" in out
    raw = run("queue", "logs", job.id, "--raw").out
    assert raw == "\n".join(HOSTILE_LOG) + "\n"  # byte for byte
    js = run("queue", "logs", job.id, "--json")
    assert "\x1b" not in js.out and "\u202e" not in js.out  # JSON escapes controls itself
    assert [json.loads(line)["line"] for line in js.out.splitlines()] == HOSTILE_LOG  # exact data
    both = run("queue", "logs", job.id, "--raw", "--json")
    assert both.code == 2 and "--raw" in both.err


def test_show_and_list_escape_what_a_repo_controls(run, q):
    job = _hostile_job(q)
    shown = run("queue", "show", job.id)
    assert shown.code == 0 and "\x1b" not in shown.out and "\x07" not in shown.out
    assert "error:" in shown.out and "step [/x] said \\x1b]8;;https://evil.example\\x1b\\" in shown.out
    assert run("queue", "show", job.id, "--json").json()["env"] == {"X": OSC52}
    listed = run("queue", "list")
    row = listed.out.splitlines()[1].split("\t")
    assert row[4] == "[/x]\\x1b[2J" and "\x1b" not in listed.out


def test_list_and_show_on_a_terminal_draw_markup_as_text(q):
    from tests.cli.test_top import FakeTTY

    job = _hostile_job(q)
    for args in (["queue", "list"], ["queue", "show", job.id]):
        code, out = _on_tty(args, FakeTTY())
        assert code == 0
        assert "[/x]" in out and "\x1b]" not in out and "\x1b[2J" not in out and "\x07" not in out


def _on_tty(args, out):
    import io
    import os

    from click.testing import CliRunner

    from raibid.app import Application
    from raibid.cli import cli
    from raibid.settings import Settings
    from raibid.terminal import Terminal

    app = Application(settings=Settings(kubeconfig=os.environ.get("KUBECONFIG", "/nonexistent")),
                      terminal=Terminal(stdout=out, stdin=io.StringIO(), stderr=io.StringIO(), color=True))
    result = CliRunner().invoke(cli, args, obj=app, catch_exceptions=False)
    return result.exit_code, out.getvalue()


def test_logs_with_bytes_that_are_not_utf8_show_replacement_characters(run, q):
    job = q.submit(JobSpec(repo="a/b", ref="main"))
    claim = q.claim("generic", "pod")
    raw = redis.Redis(connection_pool=redis.ConnectionPool(**{**q.r.connection_pool.connection_kwargs,
                                                              "decode_responses": False}))
    raw.xadd(q.keys.log(job.id), {b"line": b"bad \xff\xfe \x1b[2J"})
    q.finish(claim, "succeeded", exit_code=0)
    for args in ((), ("--follow",), ("--raw",)):
        r = run("queue", "logs", job.id, *args)
        assert r.code == 0, r.err
        assert r.out.startswith("bad \ufffd\ufffd ")
    assert run("queue", "logs", job.id).out == "bad \ufffd\ufffd \\x1b[2J\n"
    assert json.loads(run("queue", "logs", job.id, "--json").out)["line"] == "bad \ufffd\ufffd \x1b[2J"


def test_logs_of_a_trimmed_log_say_why_it_is_empty(run, q):
    job = q.submit(JobSpec(repo="a/b", ref="main"))
    q.r.hset(q.keys.job(job.id), "log_trimmed", "1")  # as append_log.lua marks it
    r = run("queue", "logs", job.id)
    assert r.code == 0 and r.out == "" and "deleted to keep Redis under its maxmemory" in r.err
