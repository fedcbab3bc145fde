"""`raibid doctor` against the API fake and a real Redis."""

from __future__ import annotations

from tests.harness.kubefake import HELM_CRD as CRD


def by_name(data: dict) -> dict:
    return {c["name"]: c for c in data["checks"]}


def test_doctor_reports_k3s_version_crd_and_redis(run, kube, redis_url, gitea):
    kube.add_object(CRD)
    r = run("doctor", "--json")
    data = r.json()
    checks = by_name(data)
    assert checks["api-server"]["status"] == "ok" and "v1.31.4+k3s1" in checks["api-server"]["detail"]
    assert checks["k3s"]["status"] == "ok"
    assert checks["helm-controller CRD (HelmChart)"]["status"] == "ok"
    assert checks["redis-version"]["status"] == "ok"
    assert r.code == 0 and data["ok"] is True


def test_doctor_fails_without_helm_crd_and_on_non_k3s(run, kube, redis_url):
    kube.git_version = "v1.31.4"
    r = run("doctor", "--json")
    checks = by_name(r.json())
    assert checks["k3s"]["status"] == "warn"
    assert checks["helm-controller CRD (HelmChart)"]["status"] == "fail"
    assert r.code == 1


def test_doctor_unreachable_api_server_and_redis(run, kube, monkeypatch):
    kube.stop()
    monkeypatch.setenv("RAIBID_REDIS_URL", "redis://:pw@127.0.0.1:1/0")
    r = run("doctor", "--json")
    checks = by_name(r.json())
    assert checks["api-server"]["status"] == "fail" and "cannot reach the API server" in checks["api-server"]["detail"]
    assert checks["redis"]["status"] == "fail" and ":***@127.0.0.1:1" in checks["redis"]["detail"]
    assert "pw@" not in r.out
    assert r.code == 1


def test_doctor_table_is_plain_text_when_piped(run, kube, redis_url):
    r = run("doctor")
    header = r.out.splitlines()[0]
    assert header == "CHECK\tSTATUS\tDETAIL\tHINT"
    assert "\x1b[" not in r.out


def test_doctor_reports_queue_streams_and_groups(run, redis_url):
    first = {c["name"]: c for c in run("doctor", "--json").json()["checks"]}
    assert first["queue generic"]["status"] == "warn"
    assert run("queue", "init").code == 0
    after = {c["name"]: c for c in run("doctor", "--json").json()["checks"]}
    assert after["queue generic"]["status"] == "ok" and "lag 0" in after["queue generic"]["detail"]
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.xgroup_destroy("raibid:jobs:generic", "raibid-agents")
    broken = {c["name"]: c for c in run("doctor", "--json").json()["checks"]}
    assert broken["queue generic"]["status"] == "fail" and "queue init" in broken["queue generic"]["hint"]


def _secret(kube, name: str, key: str, value: str) -> None:
    import base64

    kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "raibid-ci"},
                     "data": {key: base64.b64encode(value.encode()).decode()}})


def test_doctor_fails_when_a_role_secret_holds_the_admin_token_or_a_pod_reads_an_admin_secret(
        run, kube, redis_url, gitea):
    from tests.conftest import GITEA_TOKEN

    kube.add_object(CRD)
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    _secret(kube, "raibid-gitea-admin", "password", "admin-pass")
    assert run("gitea", "bootstrap").code == 0
    r = run("doctor", "--json")
    checks = by_name(r.json())
    assert r.code == 0, checks
    assert {checks[f"gitea-role {n}"]["status"] for n in ("agent", "mirror", "webhook", "registry")} == {"ok"}
    assert checks["gitea-admin-in-pods"]["status"] == "ok"
    # An old install: the webhook's Secret holds the admin's token, a CronJob reads the admin password.
    kube.objects = {k: v for k, v in kube.objects.items() if v["metadata"]["name"] != "raibid-gitea-webhook"}
    _secret(kube, "raibid-gitea-webhook", "token", GITEA_TOKEN)
    kube.add_object({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "raibid-mirror",
                                                                               "namespace": "raibid-ci"},
                     "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                         "restartPolicy": "Never", "containers": [{"name": "m", "image": "x"}],
                         "volumes": [{"name": "a", "secret": {"secretName": "raibid-gitea-admin"}}]}}}}}})
    r = run("doctor", "--json")
    checks = by_name(r.json())
    assert r.code == 1
    assert checks["gitea-role webhook"]["status"] == "fail" and "admin" in checks["gitea-role webhook"]["detail"]
    assert "--rotate webhook" in checks["gitea-role webhook"]["hint"]
    held = checks["gitea-admin-in-pods"]
    assert held["status"] == "fail" and "CronJob raibid-ci/raibid-mirror" in held["detail"]
    assert "raibid-gitea-admin" in held["detail"] and "bootstrap" in held["hint"]
    assert GITEA_TOKEN not in r.out + r.err


def test_doctor_without_role_secrets_warns_and_still_passes(run, kube, redis_url, gitea):
    kube.add_object(CRD)
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    r = run("doctor", "--json")
    checks = by_name(r.json())
    assert checks["gitea-role agent"]["status"] == "warn" and "gitea bootstrap" in checks["gitea-role agent"]["hint"]
    assert r.code == 0


def _node(kube, *addresses):
    kube.add_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "spark"}, "spec": {}})
    kube.set_status("v1", "Node", "spark", "", {"addresses": [
        {"type": t, "address": a} for t, a in (("InternalIP", addresses[0]), ("Hostname", "spark"),
                                               *(("ExternalIP", a) for a in addresses[1:]))]})


def test_doctor_fails_when_agent_pods_can_reach_a_public_node_address(run, kube, redis_url, monkeypatch):
    kube.add_object(CRD)
    _node(kube, "192.168.1.20", "203.0.113.7")  # a LAN address (excluded) and a public one (not)
    checks = by_name(run("doctor", "--json").json())
    assert checks["agent egress"]["status"] == "fail"
    assert "203.0.113.7" in checks["agent egress"]["detail"] and "192.168" not in checks["agent egress"]["detail"]
    assert "cluster.node_ip: 203.0.113.7" in checks["agent egress"]["hint"]
    monkeypatch.setenv("RAIBID_CLUSTER_NODE_IP", "203.0.113.7")
    assert by_name(run("doctor", "--json").json())["agent egress"]["status"] == "ok"
    monkeypatch.delenv("RAIBID_CLUSTER_NODE_IP")
    monkeypatch.setenv("RAIBID_AGENTS_INTERNET", "false")
    assert by_name(run("doctor", "--json").json())["agent egress"]["status"] == "ok"
