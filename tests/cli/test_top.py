"""`raibid top --once/--json` against a real redis-server, the Kubernetes API fake and the Gitea fake."""

from __future__ import annotations

import io

import pytest
import redis

from raibid.queue import JobSpec, Queue
from tests.harness.kubefake import K3sController, crd
from tests.harness.redis_server import free_port

NS = "raibid-ci"
POOL = "raibid-agent-generic"


def add_pool(fake, name: str = POOL, agent: str = "generic", max_replicas: int = 8) -> None:
    fake.add_object({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"app.kubernetes.io/managed-by": "raibid", "raibid.dev/component": "agents"}},
        "spec": {"maxReplicaCount": max_replicas, "jobTargetRef": {"template": {"spec": {"containers": [
            {"name": "agent", "image": "agent:1", "args": ["agents", "run", "--type", agent]}]}}}}})
    fake.set_status("keda.sh/v1alpha1", "ScaledJob", name, NS, {"conditions": [
        {"type": "Ready", "status": "True"}, {"type": "Active", "status": "True"},
        {"type": "Paused", "status": "False"}]})


def add_agent_pod(fake, pod: str, phase: str = "Running", pool: str = POOL) -> None:
    labels = {"scaledjob.keda.sh/name": pool}
    fake.add_object({"apiVersion": "batch/v1", "kind": "Job",
                     "metadata": {"name": pod.rsplit("-", 1)[0], "namespace": NS, "labels": labels},
                     "spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}}})
    fake.set_status("batch/v1", "Job", pod.rsplit("-", 1)[0], NS, {"active": 1})
    fake.add_object({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": NS, "labels": labels},
                     "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}})
    fake.set_status("v1", "Pod", pod, NS, {"phase": phase, "startTime": "2026-01-01T00:00:00Z"})


@pytest.fixture
def cluster(kube):
    """The fake playing k3s with KEDA's CRDs and the raibid namespace."""
    K3sController(kube)
    kube.add_object(crd("keda.sh", "scaledjobs", "ScaledJob", "v1alpha1"))
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return kube


@pytest.fixture
def q(redis_url) -> Queue:
    return Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)


@pytest.fixture
def busy(cluster, q, gitea):
    """Two pods running jobs, one pending pod, queued, finished and failed jobs."""
    add_pool(cluster)
    jobs = q.submit_many([JobSpec(repo="mirrors/app", ref=f"b{i}") for i in range(7)])
    for pod in ("raibid-agent-generic-a1-x", "raibid-agent-generic-a2-y"):
        add_agent_pod(cluster, pod)
    add_agent_pod(cluster, "raibid-agent-generic-a3-z", phase="Pending")
    c1 = q.claim("generic", "raibid-agent-generic-a1-x")
    q.append_log(c1.job.id, ["cloning", "running cargo test"])
    c2 = q.claim("generic", "raibid-agent-generic-a2-y")
    c3 = q.claim("generic", "old-pod")
    q.finish(c3, "succeeded", exit_code=0)
    c4 = q.claim("generic", "old-pod")
    q.finish(c4, "failed", exit_code=1)
    return {"jobs": jobs, "running": [c1.job.id, c2.job.id]}


def test_once_json_numbers_match_queue_stats(run, busy):
    r = run("top", "--once", "--json")
    assert r.code == 0, r.err
    snap = r.json()
    stats = run("queue", "stats", "--json").json()
    for st in stats["streams"]:
        pool = next(p for p in snap["queue"]["pools"] if p["agent"] == st["agent"])
        assert (pool["queued"], pool["length"], pool["pending"], pool["oldest_queued_at"], pool["keda_desired"]) == (
            st["lag"], st["length"], st["pending"], st["oldest_queued_at"], st["keda_desired"])
    assert snap["queue"]["dead_letter"] == stats["dead_letter"]
    generic = next(p for p in snap["queue"]["pools"] if p["agent"] == "generic")
    assert generic["queued"] == 3 and generic["running"] == 2 and generic["pending"] == 2
    assert generic["finished_5m"] == 2 and generic["success_rate_5m"] == 0.5 and generic["finished_60m"] == 2
    [pool] = snap["agents"]["pools"]
    assert (pool["name"], pool["agent_type"], pool["ready"], pool["active"], pool["paused"]) == (
        POOL, "generic", True, True, False)
    assert (pool["running"], pool["pending"], pool["max_replicas"], pool["jobs_active"]) == (2, 1, 8, 3)
    pods = {p["name"]: p for p in snap["agents"]["pods"]}
    a1 = pods["raibid-agent-generic-a1-x"]
    assert a1["job_id"] == busy["running"][0] and a1["repo"] == "mirrors/app" and a1["ref"] == "b0"
    assert a1["elapsed_s"] is not None and pods["raibid-agent-generic-a3-z"]["phase"] == "Pending"
    jobs = {j["id"]: j for j in snap["jobs"]}
    assert len(jobs) == 7 and jobs[busy["running"][0]]["last_log_line"] == "running cargo test"
    assert {j["status"] for j in snap["jobs"]} == {"queued", "running", "succeeded", "failed"}
    assert snap["backends"]["redis"]["ok"] and snap["backends"]["kubernetes"]["ok"] and snap["backends"]["gitea"]["ok"]
    assert snap["header"]["namespace"] == NS and snap["header"]["gitea_version"]
    assert snap["header"]["interval_s"] is None  # a snapshot is not refreshed
    assert snap["cluster"]["gitops"] is None and snap["cluster"]["mirror"] is None
    assert {c["component"] for c in snap["cluster"]["components"]} == {"redis", "gitea", "keda", "flux", "agents"}


def test_components_match_cluster_status(run, busy):
    # The agent pool is the one `busy` made (as KEDA users would see it); the rest is raibid's to apply.
    up = ["cluster", "up", "-c", "redis", "-c", "gitea", "-c", "keda", "-c", "flux"]
    assert run(*up, "--wait-interval", "0.02s", "--timeout", "5s").code == 0
    status = {c["component"]: c for c in run("cluster", "status", "--json").json()}
    snap = run("top", "--json").json()
    for c in snap["cluster"]["components"]:
        s = status[c["component"]]
        assert (c["state"], c["ready"], c["desired"], c["version"]) == (s["state"], s["ready"], s["desired"],
                                                                         s["version"])
    assert snap["cluster"]["components"][0]["state"] == "healthy"


def test_once_plain_text_when_piped(run, busy):
    r = run("top", "--once")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].startswith("raibid top\t")
    assert "# queue" in lines and "# agents" in lines and "# jobs" in lines and "# cluster" in lines
    header = lines[lines.index("# queue") + 1].split("\t")
    row = lines[lines.index("# queue") + 2].split("\t")
    assert header[:4] == ["AGENT", "QUEUED", "RUNNING", "PENDING"] and row[:4] == ["generic", "3", "2", "2"]
    assert "\x1b[" not in r.out
    # Without --once, a pipe gets the same single snapshot.
    again = run("top")
    assert again.code == 0 and again.out.splitlines()[1:3] == lines[1:3]


def test_api_server_down_exits_5_and_other_panels_refresh(run, busy, cluster):
    cluster.inject("drop", count=10_000)
    r = run("top", "--once", "--json")
    assert r.code == 5
    assert "Traceback" not in r.err
    snap = r.json()
    kube = snap["backends"]["kubernetes"]
    assert not kube["ok"] and kube["exit_code"] == 5 and "API server" in kube["error"]
    assert "dropped the connection" in kube["error"]
    assert not kube["stale"] and snap["agents"]["pools"] == [] and snap["cluster"]["components"] == []
    assert snap["backends"]["redis"]["ok"]
    assert next(p for p in snap["queue"]["pools"] if p["agent"] == "generic")["queued"] == 3
    plain = run("top", "--once")
    assert plain.code == 5 and "kubernetes\tunavailable\t" in plain.out and "dropped the connection" in plain.out
    assert "Traceback" not in plain.err


def test_redis_down_exits_5_and_kubernetes_panels_refresh(run, cluster, gitea, monkeypatch):
    add_pool(cluster)
    add_agent_pod(cluster, "raibid-agent-generic-a1-x")
    monkeypatch.setenv("RAIBID_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    r = run("top", "--once", "--json")
    assert r.code == 5 and "Traceback" not in r.err
    snap = r.json()
    assert not snap["backends"]["redis"]["ok"] and "cannot reach Redis" in snap["backends"]["redis"]["error"]
    assert snap["queue"]["pools"] == [] and snap["jobs"] == []
    assert snap["backends"]["kubernetes"]["ok"] and snap["agents"]["pools"][0]["running"] == 1
    plain = run("top", "--once")
    assert plain.code == 5 and "redis\tunavailable\tcannot reach Redis" in plain.out
    assert "no data from Redis yet" in plain.out and "dead-letter 0" not in plain.out


def test_hung_redis_costs_a_few_seconds_not_a_minute(run, cluster, gitea, monkeypatch):
    """A Redis that accepts connections and never answers: the refresh gives up quickly and says why."""
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        monkeypatch.setenv("RAIBID_REDIS_URL", f"redis://127.0.0.1:{server.getsockname()[1]}/0")
        t0 = time.monotonic()
        r = run("top", "--json")
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        for c in held:
            c.close()
        server.close()
    assert r.code == 5 and "Traceback" not in r.err
    snap = r.json()
    assert not snap["backends"]["redis"]["ok"] and "Timeout" in snap["backends"]["redis"]["error"]
    assert snap["backends"]["kubernetes"]["ok"]
    assert elapsed < 15, f"top waited {elapsed:.0f}s on a hung Redis"


def test_keda_missing_says_so_and_is_not_a_failure(run, kube, redis_url, gitea):
    K3sController(kube)
    snap = run("top", "--json")
    assert snap.code == 0, snap.err
    data = snap.json()
    assert data["agents"]["keda_installed"] is False and "KEDA is not installed" in data["agents"]["message"]
    assert "KEDA is not installed" in run("top", "--once").out


def test_gitea_down_exits_5(run, cluster, redis_url, monkeypatch):
    monkeypatch.setenv("RAIBID_GITEA_URL", f"http://127.0.0.1:{free_port()}")
    r = run("top", "--json")
    assert r.code == 5
    snap = r.json()
    assert not snap["backends"]["gitea"]["ok"] and "cannot reach Gitea" in snap["backends"]["gitea"]["error"]
    assert snap["backends"]["redis"]["ok"] and snap["backends"]["kubernetes"]["ok"]


def test_a_real_mirror_sync_shows_up_in_top(run, busy, github, tmp_path, monkeypatch):
    # top reads the mirror's record through the mirror's own key and format (raibid/mirror/record.py).
    github.add_user("solo")
    github.add_repo("solo", "one", files={"a": "1"})
    github.add_repo("solo", "two", files={"b": "2"})
    cfg = tmp_path / "raibid.yaml"
    cfg.write_text(f"mirror:\n  github_api: {github.url}\n  target_org: mirrors\n"
                   f"  cache_dir: {tmp_path / 'cache'}\n  repos: [solo/one, solo/two, solo/gone]\n")
    monkeypatch.setenv("RAIBID_CONFIG", str(cfg))
    monkeypatch.setenv("GITHUB_TOKEN", github.token)
    sync = run("mirror", "sync", "--json", "--no-trigger")
    assert sync.code == 1, sync.err
    assert sync.json()["recorded"] is True
    snap = run("top", "--once", "--json").json()
    m = snap["cluster"]["mirror"]
    assert m is not None, "top does not see the mirror's last sync"
    assert m["counts"] == {"created": 2, "failed": 1} and m["failed"] == ["solo/gone"]
    assert m["time"] == sync.json()["finished_at"] and 0 <= m["age_s"] < 600
    assert f"mirror\t{m['time']}\t2 created, 1 failed\tfailed: solo/gone" in run("top", "--once").out


def test_an_unreadable_mirror_record_is_reported_not_fatal(run, busy, q):
    q.r.set("raibid:mirror:last", "{not json")
    r = run("top", "--once", "--json")
    assert r.code == 0, r.err
    assert r.json()["cluster"]["mirror"]["failed"] == ["unreadable mirror record"]


def test_help_lists_top(run):
    r = run("--help")
    assert "top" in r.out and "Live dashboard" in r.out
    assert "--interval" in run("top", "--help").out


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _invoke_on_tty(args: list[str], stdin: str = "") -> tuple[int, str]:
    import os

    from click.testing import CliRunner

    from raibid.app import Application
    from raibid.cli import cli
    from raibid.settings import Settings
    from raibid.terminal import Terminal

    out = FakeTTY()
    app = Application(settings=Settings(kubeconfig=os.environ["KUBECONFIG"]),
                      terminal=Terminal(stdout=out, stdin=io.StringIO(stdin), stderr=io.StringIO(), color=True))
    result = CliRunner().invoke(cli, args, obj=app, catch_exceptions=False)
    return result.exit_code, out.getvalue()


def test_live_on_a_terminal_quits_on_q_enter_and_restores_the_screen(busy):
    code, out = _invoke_on_tty(["top", "--interval", "0.2"], stdin="q\n")
    assert code == 0
    assert "\x1b[?1049h" in out and "\x1b[?1049l" in out  # the alternate screen, left on the way out
    assert "every 0.2s  q+Enter quits" in out
    assert "Queue" in out and "mirrors/app" in out and "Agents (unavailable)" not in out


def test_once_on_a_terminal_draws_rich_panels(busy):
    code, out = _invoke_on_tty(["top", "--once"])
    assert code == 0
    assert "── Queue" in out and "\x1b[" in out and "unavailable" not in out  # compact (80 columns), coloured
    assert "\x1b[?1049h" not in out  # one snapshot, not the alternate screen
    assert "q+Enter quits" not in out and "every 2s" not in out  # it neither refreshes nor reads keys


def test_top_survives_bytes_that_are_not_utf8_in_a_log(run, busy, q):
    """A log entry written as raw bytes (not UTF-8) is shown with U+FFFD, never a UnicodeDecodeError."""
    job = busy["running"][0]
    redis.Redis(connection_pool=redis.ConnectionPool(**{**q.r.connection_pool.connection_kwargs,
                                                        "decode_responses": False})).xadd(
        q.keys.log(job), {b"line": b"bad \xff\xfe utf-8 \x1b]52;c;eA==\x07"})
    r = run("top", "--once")
    assert r.code == 0, r.err
    assert "bad \ufffd\ufffd utf-8 \\x1b]52;c;eA==\\x07" in r.out and "\x1b" not in r.out
    code, out = _invoke_on_tty(["top", "--once"])
    assert code == 0 and "\x1b]52" not in out
    js = run("top", "--once", "--json")  # exact data: JSON escapes the controls itself
    assert "\x1b" not in js.out
    assert "bad \ufffd\ufffd utf-8 \x1b]52;c;eA==\x07" in [j["last_log_line"] for j in js.json()["jobs"]]
