"""`raibid agents deploy|render|types|list|status|explain|pause|resume|scale|gc` against the API fake."""

from __future__ import annotations

import pytest
import redis
import yaml

from raibid.images.context import current
from raibid.queue import JobSpec, Queue
from tests.harness.kubefake import KEDA_CRDS, K3sController

NS = "raibid-ci"
KEDA = "keda.sh/v1alpha1"
POOLS = {"generic", "rust", "python", "node", "go"}
SCALED_JOBS = {f"raibid-agent-{t}{s}" for t in POOLS for s in ("", "-untrusted")}


@pytest.fixture
def keda(kube):
    """A cluster with KEDA installed (its CRDs served) and raibid's namespace."""
    for c in KEDA_CRDS:
        kube.add_object(c, manager="helm")
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return kube


@pytest.fixture
def q(redis_url) -> Queue:
    return Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)


def scaled_jobs(fake) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in fake.list_objects(KEDA, "ScaledJob", NS)}


def test_types_lists_builtins_with_resources_and_caches(run, isolated_env):
    (isolated_env / "raibid.yaml").write_text(
        "agents:\n  types:\n    rust-big:\n      extends: rust\n      cpu: '8'\n      memory: 16Gi\n"
        "    python:\n      caches: {uv: ''}\n      env: {PIP_INDEX_URL: 'http://pypi.local/simple'}\n")
    r = run("agents", "types", "--json")
    assert r.code == 0, r.err
    types = {t["name"]: t for t in r.json()}
    assert set(types) == POOLS | {"gpu", "image", "rust-big"}
    assert types["image"]["buildkit"] is True and types["generic"]["buildkit"] is False
    assert types["generic"]["cpu"] == "2" and types["generic"]["memory"] == "4Gi" and types["generic"]["caches"] == {}
    assert types["rust"]["env"]["RUSTC_WRAPPER"] == "sccache" and "sccache" in types["rust"]["caches"]
    assert set(types["go"]["env"]) >= {"GOMODCACHE", "GOCACHE"}
    assert types["node"]["env"]["npm_config_cache"].startswith("/cache/")
    big = types["rust-big"]
    assert big["extends"] == "rust" and big["cpu"] == "8" and big["cpu_limit"] == "8" and big["memory"] == "16Gi"
    assert big["caches"] == types["rust"]["caches"] and big["image"].endswith(f"/raibid/agent-rust:{current().tag}")
    assert big["enabled"] and not types["gpu"]["enabled"]
    assert types["gpu"]["gpu"] == 1 and types["gpu"]["runtime_class"] == "nvidia"
    assert "uv" not in types["python"]["caches"] and types["python"]["env"]["PIP_INDEX_URL"]
    table = run("agents", "types")
    assert table.out.splitlines()[0].split("\t")[:3] == ["TYPE", "POOL", "IMAGE"]


def test_unknown_extends_and_unknown_key_are_config_errors(run, isolated_env):
    (isolated_env / "raibid.yaml").write_text("agents:\n  types:\n    x:\n      extends: cobol\n")
    r = run("agents", "types")
    assert r.code == 2 and "agents.types.x.extends: unknown type 'cobol'" in r.err
    (isolated_env / "raibid.yaml").write_text("agents:\n  types:\n    rust:\n      cpus: 4\n")
    r = run("agents", "types")
    assert r.code == 2 and "unknown key 'agents.types.rust.cpus'" in r.err


def test_render_prints_only_the_pools(run):
    r = run("agents", "render", "--type", "rust")
    assert r.code == 0, r.err
    docs = [d for d in yaml.safe_load_all(r.out) if d]
    refs = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert refs == {("ServiceAccount", "raibid-agent"), ("TriggerAuthentication", "raibid-redis"),
                    ("NetworkPolicy", "raibid-agent"),
                    ("ScaledJob", "raibid-agent-rust"), ("PersistentVolumeClaim", "raibid-agent-cache-rust-trusted"),
                    ("ScaledJob", "raibid-agent-rust-untrusted"),
                    ("PersistentVolumeClaim", "raibid-agent-cache-rust-untrusted")}
    one = run("agents", "render", "--type", "rust-untrusted")
    assert {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(one.out) if d} == refs - {
        ("ScaledJob", "raibid-agent-rust"), ("PersistentVolumeClaim", "raibid-agent-cache-rust-trusted")}
    bad = run("agents", "render", "--type", "cobol")
    assert bad.code == 2 and "has no pool" in bad.err


def test_deploy_creates_pools_and_is_idempotent(run, keda):
    r = run("agents", "deploy", "--json")
    assert r.code == 0, r.err
    assert {c["action"] for c in r.json()["changes"] if c["kind"] != "Namespace"} == {"created"}
    sjs = scaled_jobs(keda)
    assert set(sjs) == SCALED_JOBS
    rust = sjs["raibid-agent-rust"]["spec"]
    assert rust["minReplicaCount"] == 0 and rust["pollingInterval"] == 5
    assert rust["triggers"][0]["metadata"]["stream"] == "raibid:jobs:rust"
    assert sjs["raibid-agent-rust-untrusted"]["spec"]["triggers"][0]["metadata"]["stream"] == "raibid:jobs:rust-untrusted"
    assert keda.get_object(KEDA, "TriggerAuthentication", "raibid-redis", NS) is not None
    assert keda.get_object("networking.k8s.io/v1", "NetworkPolicy", "raibid-agent", NS) is not None
    for trust in ("trusted", "untrusted"):
        assert keda.get_object("v1", "PersistentVolumeClaim", f"raibid-agent-cache-go-{trust}", NS) is not None
        assert keda.get_object("v1", "PersistentVolumeClaim", f"raibid-agent-cache-generic-{trust}", NS) is None
    keda.clear_log()
    again = run("agents", "deploy", "--json")
    assert {c["action"] for c in again.json()["changes"]} == {"unchanged"}
    assert not keda.requests("POST") and not keda.requests("DELETE")


def test_deploy_without_keda_says_how_to_install_it(run, kube):
    r = run("agents", "deploy")
    assert r.code == 3 and "KEDA is not installed" in r.err and "cluster up -c keda" in r.err


def test_deploy_prunes_pools_removed_from_the_config_but_keeps_caches(run, keda, isolated_env):
    assert run("agents", "deploy").code == 0
    (isolated_env / "raibid.yaml").write_text("agents:\n  pools: [generic, rust]\n")
    r = run("agents", "deploy", "--json")
    assert r.code == 0, r.err
    acts = {(c["kind"], c["name"]): c["action"] for c in r.json()["changes"]}
    assert acts[("ScaledJob", "raibid-agent-go")] == acts[("ScaledJob", "raibid-agent-go-untrusted")] == "pruned"
    assert acts[("PersistentVolumeClaim", "raibid-agent-cache-go-untrusted")] == "kept"
    assert set(scaled_jobs(keda)) == {"raibid-agent-generic", "raibid-agent-rust", "raibid-agent-generic-untrusted",
                                      "raibid-agent-rust-untrusted"}
    assert keda.get_object("v1", "PersistentVolumeClaim", "raibid-agent-cache-go-trusted", NS) is not None


def test_deploy_one_type_leaves_the_others_alone(run, keda, isolated_env):
    (isolated_env / "raibid.yaml").write_text("agents:\n  types:\n    rust: {max_replicas: 2}\n")
    r = run("agents", "deploy", "--type", "rust", "--json")
    assert r.code == 0, r.err
    assert set(scaled_jobs(keda)) == {"raibid-agent-rust", "raibid-agent-rust-untrusted"}
    assert scaled_jobs(keda)["raibid-agent-rust"]["spec"]["maxReplicaCount"] == 2
    assert scaled_jobs(keda)["raibid-agent-rust-untrusted"]["spec"]["maxReplicaCount"] == 2


def test_dry_run_changes_nothing(run, keda):
    r = run("agents", "deploy", "--dry-run", "--json")
    assert r.code == 0, r.err and r.json()["dry_run"]
    assert scaled_jobs(keda) == {}


def test_cluster_up_deploys_the_pools_after_keda(run, kube):
    K3sController(kube)
    r = run("cluster", "up", "--wait-interval", "0.02s", "--timeout", "5s", "--json")
    assert r.code == 0, r.err
    assert set(scaled_jobs(kube)) == SCALED_JOBS
    order = [q.path.split("/")[-2] for q in kube.requests("PATCH")]
    assert order.index("helmcharts") < order.index("scaledjobs")
    status = {c["component"]: c["state"] for c in run("cluster", "status", "--json").json()}
    assert status["agents"] == "healthy"  # idle cache PVCs are bound on first use, not a problem


def paused(fake, name: str) -> bool:
    return (scaled_jobs(fake)[name]["metadata"].get("annotations") or {}).get("autoscaling.keda.sh/paused") == "true"


def test_pause_survives_deploy_and_resume_clears_it(run, keda):
    assert run("agents", "deploy").code == 0
    r = run("agents", "pause", "rust")
    assert r.code == 0 and r.err.count("is now paused") == 2  # a type is both its pools
    assert paused(keda, "raibid-agent-rust") and paused(keda, "raibid-agent-rust-untrusted")
    assert run("agents", "deploy").code == 0
    assert paused(keda, "raibid-agent-rust") and paused(keda, "raibid-agent-rust-untrusted")
    status = {s["queue"]: s for s in run("agents", "status", "--json").json()}
    assert status["rust"]["paused"] and status["rust-untrusted"]["paused"] and not status["go"]["paused"]
    assert status["rust-untrusted"]["trust"] == "untrusted" and status["rust-untrusted"]["agent_type"] == "rust"
    assert run("agents", "pause", "rust").err.count("already") == 2
    assert run("agents", "resume", "rust-untrusted").code == 0  # one pool by its name
    assert paused(keda, "raibid-agent-rust") and not paused(keda, "raibid-agent-rust-untrusted")
    assert run("agents", "resume", "rust", "--trust", "trusted").code == 0
    assert not paused(keda, "raibid-agent-rust")
    assert run("agents", "pause", "go", "--trust", "untrusted").code == 0
    assert paused(keda, "raibid-agent-go-untrusted") and not paused(keda, "raibid-agent-go")
    assert run("agents", "pause", "cobol").code == 2
    assert run("agents", "pause", "go-untrusted", "--trust", "trusted").code == 2


def test_scale_sets_max_until_the_next_deploy(run, keda):
    assert run("agents", "deploy").code == 0
    r = run("agents", "scale", "go", "--max", "3", "--trust", "untrusted", "--json")
    assert r.code == 0, r.err
    assert r.json() == [{"agent_type": "go", "trust": "untrusted", "pool": "raibid-agent-go-untrusted",
                         "max_before": 8, "max": 3, "configured_max": 8}]
    assert scaled_jobs(keda)["raibid-agent-go-untrusted"]["spec"]["maxReplicaCount"] == 3
    assert scaled_jobs(keda)["raibid-agent-go"]["spec"]["maxReplicaCount"] == 8
    assert scaled_jobs(keda)["raibid-agent-go-untrusted"]["spec"]["jobTargetRef"]["template"]["spec"]["containers"]
    both = run("agents", "scale", "go", "--max", "2", "--json")
    assert [(p["pool"], p["max"]) for p in both.json()] == [("raibid-agent-go", 2), ("raibid-agent-go-untrusted", 2)]
    assert run("agents", "deploy").code == 0
    assert scaled_jobs(keda)["raibid-agent-go"]["spec"]["maxReplicaCount"] == 8
    assert scaled_jobs(keda)["raibid-agent-go-untrusted"]["spec"]["maxReplicaCount"] == 8
    assert run("agents", "scale", "go", "--max", "0").code == 2


def _agent_job(fake, pool: str, name: str, *, state: str, completed: str | None = None,
               pod_phase: str | None = "Running", agent_type: str = "rust") -> None:
    fake.add_object({"apiVersion": "batch/v1", "kind": "Job",
                     "metadata": {"name": name, "namespace": NS, "labels": {"scaledjob.keda.sh/name": pool}},
                     "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                    "containers": [{"name": "agent", "image": "x"}]}}}},
                    manager="keda")
    if state != "running":
        cond = "Complete" if state == "complete" else "Failed"
        status = {"conditions": [{"type": cond, "status": "True", "lastTransitionTime": completed}]}
        if state == "complete":
            status["completionTime"] = completed
        fake.set_status("batch/v1", "Job", name, NS, status)
    if pod_phase:
        pod = f"{name}-abcde"
        fake.add_object({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": pod, "namespace": NS,
                                      "labels": {"batch.kubernetes.io/job-name": name, "job-name": name,
                                                 "raibid.dev/agent-type": agent_type}},
                         "spec": {"nodeName": "spark", "containers": [{"name": "agent", "image": "x"}]}})
        fake.set_status("v1", "Pod", pod, NS, {"phase": pod_phase})


def test_list_and_status_show_jobs_pods_and_the_raibid_job(run, keda, q):
    assert run("agents", "deploy").code == 0
    _agent_job(keda, "raibid-agent-rust", "raibid-agent-rust-a1", state="running")
    _agent_job(keda, "raibid-agent-rust", "raibid-agent-rust-b2", state="running", pod_phase="Pending")
    _agent_job(keda, "raibid-agent-rust", "raibid-agent-rust-c3", state="complete", completed="2026-01-01T00:00:00Z",
               pod_phase="Succeeded")
    _agent_job(keda, "raibid-agent-rust-untrusted", "raibid-agent-rust-untrusted-d4", state="running")
    _agent_job(keda, "someone-else", "other-job", state="running")
    running = q.submit(JobSpec(repo="acme/app", ref="main", agent="rust"))
    q.submit(JobSpec(repo="acme/app", ref="main", agent="rust"))
    q.submit(JobSpec(repo="acme/app", ref="main", agent="rust"))
    assert q.claim("rust", "raibid-agent-rust-a1-abcde").job.id == running.id
    rows = run("agents", "list", "--json").json()
    by_job = {r["job"]: r for r in rows}
    assert set(by_job) == {"raibid-agent-rust-a1", "raibid-agent-rust-b2", "raibid-agent-rust-c3",
                           "raibid-agent-rust-untrusted-d4"}
    a1 = by_job["raibid-agent-rust-a1"]
    assert a1["raibid_job"] == running.id and a1["phase"] == "Running" and a1["node"] == "spark"
    assert a1["pod"] == "raibid-agent-rust-a1-abcde" and a1["agent_type"] == "rust" and a1["created_at"]
    assert a1["trust"] == "trusted" and by_job["raibid-agent-rust-untrusted-d4"]["trust"] == "untrusted"
    assert by_job["raibid-agent-rust-b2"]["phase"] == "Pending"
    status = {s["queue"]: s for s in run("agents", "status", "--json").json()}
    assert len(status) == 2 * len(POOLS)
    rust = status["rust"]
    assert rust["present"] and rust["max_replicas"] == 8 and rust["lag"] == 2
    assert rust["running"] == 2 and rust["pending"] == 1 and rust["finished"] == 1
    assert status["rust-untrusted"]["running"] == 1 and status["rust-untrusted"]["pool"] == "raibid-agent-rust-untrusted"
    assert status["go"]["running"] == 0 and status["go"]["lag"] is None  # no stream yet
    only = run("agents", "list", "--type", "rust-untrusted", "--json").json()
    assert [r["job"] for r in only] == ["raibid-agent-rust-untrusted-d4"]
    table = run("agents", "list")
    assert table.out.splitlines()[0].split("\t") == ["TYPE", "TRUST", "JOB", "POD", "RAIBID_JOB", "PHASE", "NODE",
                                                     "AGE"]


def test_status_without_deploy_names_the_fix(run, keda, redis_url):
    rows = run("agents", "status", "--json").json()
    assert all(not r["present"] and "agents deploy" in r["problems"][0] for r in rows)


def test_gc_deletes_old_finished_jobs_and_orphaned_pods_only(run, keda):
    _agent_job(keda, "raibid-agent-rust", "old-ok", state="complete", completed="2026-01-01T00:00:00Z",
               pod_phase=None)
    _agent_job(keda, "raibid-agent-rust", "old-failed", state="failed", completed="2026-01-01T00:00:00Z",
               pod_phase=None)
    _agent_job(keda, "raibid-agent-rust", "busy", state="running")
    from raibid.timeutil import now_rfc3339

    _agent_job(keda, "raibid-agent-rust", "fresh", state="complete", completed=now_rfc3339(), pod_phase=None)
    _agent_job(keda, "foreign", "foreign-old", state="complete", completed="2026-01-01T00:00:00Z", pod_phase=None)
    keda.add_object({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "orphan", "namespace": NS, "labels": {"raibid.dev/agent-type": "rust", "job-name": "gone"}},
        "spec": {"containers": [{"name": "agent", "image": "x"}]}})
    dry = run("agents", "gc", "--dry-run", "--json")
    assert {(r["kind"], r["name"]) for r in dry.json()} == {("Job", "old-ok"), ("Job", "old-failed"),
                                                            ("Pod", "orphan")}
    assert keda.get_object("batch/v1", "Job", "old-ok", NS) is not None
    r = run("agents", "gc", "--json")
    assert r.code == 0, r.err
    assert {r["action"] for r in r.json()} == {"deleted"}
    left = {o["metadata"]["name"] for o in keda.list_objects("batch/v1", "Job", NS)}
    assert left == {"busy", "fresh", "foreign-old"}
    assert keda.get_object("v1", "Pod", "orphan", NS) is None
    assert keda.get_object("v1", "Pod", "busy-abcde", NS) is not None


def test_explain_works_the_formula_with_live_numbers(run, keda, q):
    assert run("agents", "deploy").code == 0
    q.init(["rust"])
    for _ in range(5):
        q.submit(JobSpec(repo="acme/app", ref="main", agent="rust"))
    _agent_job(keda, "raibid-agent-rust", "raibid-agent-rust-a1", state="running")
    _agent_job(keda, "raibid-agent-rust", "raibid-agent-rust-b2", state="running", pod_phase="Pending")
    r = run("agents", "explain", "rust", "--json")
    assert r.code == 0, r.err
    e, untrusted = r.json()  # both pools of the type
    assert untrusted["pool"] == "raibid-agent-rust-untrusted" and untrusted["lag"] is None
    assert e["keda_installed"] and e["scaledjob_present"] and not e["paused"]
    assert e["redis_lag_ok"] and e["group_exists"] and e["entries_read_valid"]
    s = e["scale"]
    assert (s["lag"], s["running"], s["pending"], s["max_scale"], s["strategy"]) == (5, 2, 1, 5, "accurate")
    assert s["new_jobs"] == 4 and e["scaling"]  # 5 + 2 - 1 = 6 <= 8, so maxScale - pending
    text = run("agents", "explain", "rust", "--trust", "trusted").out
    assert "maxScale = min(max 8, ceil(lag 5 / lagCount 1)) = 5" in text and "=> 4 new Job(s)" in text
    run("agents", "pause", "rust")
    [e] = run("agents", "explain", "rust-untrusted", "--json").json()
    assert not e["scaling"] and "paused" in e["verdict"]


def test_explain_gpu_pool_without_a_gpu_node(run, keda, redis_url, isolated_env):
    (isolated_env / "raibid.yaml").write_text("agents:\n  pools: [generic, gpu]\n")
    assert run("agents", "deploy").code == 0
    keda.add_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "spark"},
                     "status": {"allocatable": {"cpu": "20", "memory": "128Gi"}}})
    [e] = run("agents", "explain", "gpu", "--trust", "trusted", "--json").json()
    assert e["gpu_requested"] == 1 and e["gpu_allocatable"] == 0
    assert "nvidia.com/gpu" in e["verdict"] and "Pending" in e["verdict"]
    sj = scaled_jobs(keda)["raibid-agent-gpu"]["spec"]["jobTargetRef"]["template"]["spec"]
    assert sj["runtimeClassName"] == "nvidia"
    build = next(c for c in sj["containers"] if c["name"] == "build")
    assert build["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_explain_without_keda(run, kube, redis_url):
    found = run("agents", "explain", "generic", "--json").json()
    assert len(found) == 2
    assert all(not e["keda_installed"] and "KEDA is not installed" in e["verdict"] for e in found)


def test_doctor_reports_whether_the_node_advertises_gpus(run, kube, redis_url, isolated_env):
    def gpu_check():
        return next(c for c in run("doctor", "--json").json()["checks"] if c["name"] == "gpu")

    kube.add_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "spark"},
                     "status": {"allocatable": {"cpu": "20"}}})
    assert gpu_check()["status"] == "ok"  # no GPU type enabled: nothing needs one
    (isolated_env / "raibid.yaml").write_text("agents:\n  pools: [generic, gpu]\n")
    check = gpu_check()
    assert check["status"] == "warn" and "gpu would stay Pending" in check["detail"]
    kube.set_status("v1", "Node", "spark", "", {"allocatable": {"cpu": "20", "nvidia.com/gpu": "1"}})
    assert gpu_check() == {**gpu_check(), "status": "ok", "detail": "nodes advertise 1 nvidia.com/gpu"}


def test_deploy_waits_for_kedas_crds_on_a_fresh_cluster(run, kube):
    import threading

    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    K3sController(kube)  # serves HelmChart; KEDA's chart is "being installed"
    kube.add_object({"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
                     "metadata": {"name": "raibid-keda", "namespace": "kube-system"}, "spec": {"chart": "other"}})
    def install_once_asked() -> None:  # the CRDs appear only after deploy has looked for them
        import time

        deadline = time.monotonic() + 20
        while not kube.requests("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/scaledjobs.keda.sh"):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        for c in KEDA_CRDS:
            kube.add_object(c, manager="helm")

    helper = threading.Thread(target=install_once_asked)
    helper.start()
    try:
        r = run("agents", "deploy", "--timeout", "20s")
    finally:
        helper.join()
    assert r.code == 0, r.err
    assert "waiting for KEDA's CRDs" in r.err and set(scaled_jobs(kube)) == SCALED_JOBS


def test_cluster_down_keeps_the_cache_pvcs_unless_purged(run, kube):
    K3sController(kube)
    assert run("cluster", "up", "--wait-interval", "0.02s", "--timeout", "5s").code == 0
    r = run("cluster", "down", "--yes", "-c", "agents", "--json")
    acts = {(c["kind"], c["name"]): c["action"] for c in r.json()}
    assert acts[("PersistentVolumeClaim", "raibid-agent-cache-rust-untrusted")] == "kept"
    assert acts[("ScaledJob", "raibid-agent-rust")] == acts[("ScaledJob", "raibid-agent-rust-untrusted")] == "deleted"
    assert kube.get_object("v1", "PersistentVolumeClaim", "raibid-agent-cache-rust-trusted", NS) is not None
    run("cluster", "down", "--yes", "--purge", "-c", "agents")
    assert kube.get_object("v1", "PersistentVolumeClaim", "raibid-agent-cache-rust-trusted", NS) is None


def test_top_shows_both_pools_of_each_type_with_their_queues(run, keda, q, gitea):
    assert run("agents", "deploy").code == 0
    q.submit(JobSpec(repo="mirrors/app", ref="main", agent="rust-untrusted"))
    snap = run("top", "--once", "--json").json()
    pools = {p["name"]: p for p in snap["agents"]["pools"]}
    assert set(pools) == SCALED_JOBS
    assert pools["raibid-agent-rust-untrusted"]["agent_type"] == pools["raibid-agent-rust"]["agent_type"] == "rust"
    queues = {p["agent"]: p for p in snap["queue"]["pools"]}
    assert {"rust", "rust-untrusted"} <= set(queues) and queues["rust-untrusted"]["queued"] == 1


# ----------------------------------------------------------------------------- the runtime's commands


def test_run_refuses_a_step_runner_that_is_not_a_unix_socket(run, redis_url):
    r = run("agents", "run", "--wait", "0", "--step-runner", "tcp://10.0.0.1:9")
    assert r.code == 2 and "--step-runner must be unix:PATH, not 'tcp://10.0.0.1:9'" in r.err


def test_step_runner_with_no_agent_exits_5_and_leaves_no_socket(run, tmp_path):
    sock = tmp_path / "steps.sock"
    r = run("agents", "step-runner", "--socket", str(sock), "--accept-timeout", "0.2")
    assert r.code == 5 and f"no agent connected to {sock} within 0.2s" in r.err
    assert "agents run --step-runner unix:" in r.err and not sock.exists()
