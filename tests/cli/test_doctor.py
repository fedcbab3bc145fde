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
