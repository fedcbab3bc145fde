"""`raibid cluster up|diff|status|down` against the Kubernetes API fake, through --kubeconfig."""

from __future__ import annotations

import base64
import threading

import pytest

from raibid.cluster.components import kind_rank
from tests.harness.kubefake import K3sController, crd, mark_ready

NS = "raibid-ci"


@pytest.fixture
def k3s(kube):
    K3sController(kube)
    return kube


def up(run, *args, **kw):
    return run("cluster", "up", "--wait-interval", "0.02s", "--timeout", "5s", *args, **kw)


def versions(fake) -> dict[str, str]:
    out = {}
    for (g, p, ns, name), obj in fake.objects.items():
        out[f"{g}/{p}/{ns}/{name}"] = obj["metadata"]["resourceVersion"]
    return out


def test_up_creates_everything_in_kapp_order(run, k3s):
    r = up(run, "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["ok"] and data["waited"]
    assert {c["action"] for c in data["changes"]} == {"created"}
    applied = [q for q in k3s.requests("PATCH") if q.content_type == "application/apply-patch+yaml"]
    assert all(q.field_manager == "raibid" for q in applied)
    kinds = []
    for q in applied:
        plural = q.path.split("/")[-2]
        kinds.append({"namespaces": "Namespace", "secrets": "Secret", "configmaps": "ConfigMap",
                      "persistentvolumeclaims": "PersistentVolumeClaim", "statefulsets": "StatefulSet",
                      "helmcharts": "HelmChart", "services": "Service", "serviceaccounts": "ServiceAccount",
                      "scaledjobs": "ScaledJob", "triggerauthentications": "TriggerAuthentication"}[plural])
    assert kinds[0] == "Namespace"
    assert [kind_rank(k) for k in kinds] == sorted(kind_rank(k) for k in kinds)
    assert k3s.get_object("apps/v1", "StatefulSet", "raibid-redis", NS)["status"]["readyReplicas"] == 1
    hc = k3s.get_object("helm.cattle.io/v1", "HelmChart", "raibid-keda", "kube-system")
    assert hc["metadata"]["labels"]["raibid.dev/component"] == "keda"
    assert "all objects ready" in r.err


def test_second_up_changes_nothing(run, k3s):
    assert up(run).code == 0
    before = versions(k3s)
    k3s.clear_log()
    r = up(run, "--json")
    assert r.code == 0
    assert {c["action"] for c in r.json()["changes"]} == {"unchanged"}
    assert versions(k3s) == before
    assert not k3s.requests("POST") and not k3s.requests("PUT") and not k3s.requests("DELETE")


def test_passwords_are_generated_once_and_kept(run, k3s):
    assert up(run, "-c", "redis").code == 0
    first = k3s.get_object("v1", "Secret", "raibid-redis", NS)["data"]["password"]
    assert up(run, "-c", "redis").code == 0
    assert k3s.get_object("v1", "Secret", "raibid-redis", NS)["data"]["password"] == first
    sts = str(k3s.get_object("apps/v1", "StatefulSet", "raibid-redis", NS))
    assert base64.b64decode(first).decode() not in sts


def test_template_change_shows_in_diff_then_applies(run, k3s, monkeypatch):
    assert up(run).code == 0
    clean = run("cluster", "diff")
    assert clean.code == 0 and clean.out == ""
    monkeypatch.setenv("RAIBID_CLUSTER_VERSIONS_REDIS_IMAGE", "redis:7.4.3")
    d = run("cluster", "diff")
    assert d.code == 1
    assert "-        image: redis:7.4.2" in d.out and "+        image: redis:7.4.3" in d.out
    assert "merged/StatefulSet/raibid-ci/raibid-redis" in d.out
    assert "managedFields" not in d.out and "resourceVersion" not in d.out
    assert k3s.get_object("apps/v1", "StatefulSet", "raibid-redis", NS)["spec"]["template"]["spec"][
        "containers"][0]["image"] == "redis:7.4.2"  # diff persisted nothing
    r = up(run, "--json")
    changed = {c["name"]: c["action"] for c in r.json()["changes"] if c["action"] != "unchanged"}
    assert changed == {"raibid-redis": "configured"}
    assert run("cluster", "diff").code == 0


def test_diff_masks_secret_values(run, k3s):
    d = run("cluster", "diff", "-c", "redis")
    assert d.code == 1
    secret = k3s  # nothing applied yet: every object is a creation
    assert secret.get_object("v1", "Secret", "raibid-redis", NS) is None
    assert "+  password: '***'" in d.out
    assert "+  auth.conf: '***'" in d.out
    for line in d.out.splitlines():  # no base64 value of any Secret key leaks
        if line.startswith("+  ") and ":" in line and "Secret" not in line:
            value = line.split(":", 1)[1].strip()
            if len(value) > 20 and value.endswith("="):
                raise AssertionError(f"base64 value in diff: {line}")



def test_prune_removes_dropped_objects_only(run, k3s):
    assert up(run, "-c", "redis").code == 0
    labels = {"app.kubernetes.io/managed-by": "raibid", "app.kubernetes.io/part-of": "raibid",
              "raibid.dev/component": "redis"}
    k3s.add_object({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "raibid-old", "namespace": NS, "labels": labels}})
    k3s.add_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "neighbour", "namespace": NS}})
    k3s.add_object({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "raibid-old-data", "namespace": NS, "labels": labels},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    r = up(run, "-c", "redis", "--prune", "--json")
    assert r.code == 0, r.err
    acts = {c["name"]: c["action"] for c in r.json()["changes"]}
    assert acts["raibid-old"] == "pruned" and acts["raibid-old-data"] == "kept"
    assert "neighbour" not in acts
    assert k3s.get_object("v1", "ConfigMap", "raibid-old", NS) is None
    assert k3s.get_object("v1", "ConfigMap", "neighbour", NS) is not None
    assert k3s.get_object("v1", "PersistentVolumeClaim", "raibid-old-data", NS) is not None
    r = up(run, "-c", "redis", "--prune", "--prune-pvcs", "--json")
    assert {c["name"]: c["action"] for c in r.json()["changes"]}["raibid-old-data"] == "pruned"
    assert k3s.get_object("v1", "PersistentVolumeClaim", "raibid-old-data", NS) is None


def test_wait_succeeds_when_controller_becomes_ready_later(run, kube):
    K3sController(kube, ready=False)
    timer = {}

    def later(fake, verb, obj):
        if obj["kind"] in ("StatefulSet", "PersistentVolumeClaim") and verb == "create":
            t = threading.Timer(0.3, mark_ready, args=(fake, fake.get_object(obj["apiVersion"], obj["kind"],
                                                                               obj["metadata"]["name"], NS)))
            timer[obj["kind"]] = t
            t.start()

    kube.on_write(later)
    r = up(run, "-c", "redis")
    assert r.code == 0, r.err
    assert "ready StatefulSet/raibid-ci/raibid-redis" in r.err
    for t in timer.values():
        t.join()


def test_wait_times_out_naming_objects_and_crashloop(run, kube):
    K3sController(kube, ready=False)
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube.add_object({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "raibid-redis-0", "namespace": NS, "labels": {"app.kubernetes.io/name": "raibid-redis"}},
        "spec": {"containers": [{"name": "redis", "image": "redis:7"}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "redis", "ready": False, "restartCount": 5, "image": "redis:7", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s restarting"}}}]}})
    r = run("cluster", "up", "-c", "redis", "--timeout", "0.5s", "--wait-interval", "0.05s")
    assert r.code == 1
    assert "timed out after" in r.err
    assert "StatefulSet/raibid-ci/raibid-redis: 0/1 replicas ready" in r.err or \
        "StatefulSet/raibid-ci/raibid-redis: waiting" in r.err
    assert "pod raibid-ci/raibid-redis-0: CrashLoopBackOff" in r.err
    assert "PersistentVolumeClaim/raibid-ci/raibid-redis-data: phase Pending" in r.err
    assert "Traceback" not in r.err


def test_failed_helm_install_job_fails_fast(run, kube):
    K3sController(kube, helm_fails=True)
    r = run("cluster", "up", "-c", "keda", "--timeout", "30s", "--wait-interval", "0.02s", "--json")
    assert r.code == 1
    assert "Job kube-system/helm-install-raibid-keda failed: BackoffLimitExceeded" in r.err
    assert r.json()["ok"] is False


def test_no_wait_returns_after_apply(run, kube):
    K3sController(kube, ready=False)
    r = run("cluster", "up", "--no-wait", "--json")
    assert r.code == 0 and r.json()["waited"] is False


def test_dry_run_persists_nothing(run, k3s):
    r = up(run, "--dry-run", "--json")
    assert r.code == 0 and {c["action"] for c in r.json()["changes"]} == {"created"}
    assert k3s.get_object("v1", "Namespace", NS) is None
    assert all(q.query.get("dryRun") == "All" for q in k3s.requests("PATCH"))


def test_partial_failure_reports_and_rerun_converges(run, k3s):
    k3s.inject("status", count=1, status=500, method="PATCH", path="/statefulsets/", message="etcdserver: timeout")
    r = up(run, "-c", "redis", "--json")
    assert r.code == 1
    acts = {c["name"]: c["action"] for c in r.json()["changes"]}
    assert acts["raibid-ci"] == "created" and acts["raibid-redis-data"] == "created"
    assert acts["raibid-redis"] == "failed" or list(acts.values()).count("not-applied") >= 1
    assert "apply stopped after" in r.err and "etcdserver: timeout" in r.err
    again = up(run, "-c", "redis", "--json")
    assert again.code == 0
    assert {c["kind"]: c["action"] for c in again.json()["changes"]}["StatefulSet"] == "created"


def test_unreachable_api_server_exits_5(run, kube):
    kube.stop()
    r = run("cluster", "up", "--no-wait")
    assert r.code == 5 and "cannot reach the API server" in r.err and "Traceback" not in r.err


def test_dropped_connection_exits_5(run, k3s):
    k3s.inject("drop", count=50)
    r = run("cluster", "status")
    assert r.code == 5 and "Traceback" not in r.err


def test_forbidden_exits_4_naming_verb_resource_namespace(run, k3s):
    k3s.inject("status", count=1, status=403, method="PATCH", path="/secrets/",
               message='secrets "raibid-redis" is forbidden: User "ci" cannot patch resource "secrets"')
    r = up(run, "-c", "redis")
    assert r.code == 4
    assert "apply Secret/raibid-redis in namespace raibid-ci: forbidden (403)" in r.err


def test_server_422_shows_its_message(run, k3s):
    k3s.inject("status", count=1, status=422, method="PATCH", path="/services/",
               message='Service "raibid-redis" is invalid: spec.ports[0].port: Invalid value: 0')
    r = up(run, "-c", "redis")
    assert r.code == 1 and "spec.ports[0].port: Invalid value: 0" in r.err


def test_conflict_names_manager_unless_forced(run, k3s):
    assert up(run, "-c", "redis").code == 0
    k3s.clear_log()
    from kubernetes import client, config
    from kubernetes.dynamic import DynamicClient

    api = config.new_client_from_config(str(k3s.kubeconfig), persist_config=False)
    dyn = DynamicClient(api, cache_file=str(k3s.kubeconfig) + ".cache")
    res = dyn.resources.get(api_version="apps/v1", kind="StatefulSet")
    dyn.server_side_apply(res, body={"apiVersion": "apps/v1", "kind": "StatefulSet",
                                     "metadata": {"name": "raibid-redis", "namespace": NS},
                                     "spec": {"replicas": 2}}, field_manager="kubectl", force_conflicts=True)
    r = up(run, "-c", "redis")
    assert r.code == 1 and 'conflict with "kubectl"' in r.err and ".spec.replicas" in r.err
    assert "--force-conflicts" in r.err
    assert client.AppsV1Api(api).read_namespaced_stateful_set("raibid-redis", NS).spec.replicas == 2
    ok = up(run, "-c", "redis", "--force-conflicts")
    assert ok.code == 0
    assert client.AppsV1Api(api).read_namespaced_stateful_set("raibid-redis", NS).spec.replicas == 1


def test_status_and_check(run, k3s):
    missing = run("cluster", "status", "--json")
    assert {c["component"]: c["state"] for c in missing.json()} == {
        "redis": "missing", "gitea": "missing", "keda": "missing", "flux": "missing", "agents": "missing"}
    assert run("cluster", "status", "--check").code == 1
    assert up(run).code == 0
    data = {c["component"]: c for c in run("cluster", "status", "--json").json()}
    assert data["redis"]["state"] == "healthy" and data["redis"]["ready"] == 1 and data["redis"]["desired"] == 1
    assert data["redis"]["version"] == "7.4.2"
    assert data["keda"]["version"].startswith("2.17") and data["keda"]["state"] == "healthy"
    assert run("cluster", "status", "--check").code == 0
    table = run("cluster", "status")
    assert table.out.splitlines()[0].split("\t")[:3] == ["COMPONENT", "STATE", "READY"]


def test_status_reports_pending_pvc_and_failed_helm_job(run, kube):
    K3sController(kube, ready=False, helm_fails=True)
    run("cluster", "up", "--no-wait")
    data = {c["component"]: c for c in run("cluster", "status", "--json").json()}
    assert any("raibid-redis-data is Pending" in p for p in data["redis"]["problems"])
    assert data["gitea"]["state"] == "degraded"
    assert any("helm-install-raibid-gitea failed" in p for p in data["gitea"]["problems"])


def test_down_keeps_data_unless_purge(run, k3s):
    assert up(run).code == 0
    refused = run("cluster", "down")
    assert refused.code == 2 and "--yes" in refused.err
    r = run("cluster", "down", "--yes", "--json")
    assert r.code == 0
    acts = {(c["kind"], c["name"]): c["action"] for c in r.json()}
    assert acts[("PersistentVolumeClaim", "raibid-redis-data")] == "kept"
    assert acts[("Secret", "raibid-redis")] == "kept"
    assert acts[("StatefulSet", "raibid-redis")] == "deleted"
    assert k3s.get_object("v1", "PersistentVolumeClaim", "raibid-redis-data", NS) is not None
    assert k3s.get_object("helm.cattle.io/v1", "HelmChart", "raibid-gitea", "kube-system") is None
    deletes = [q.path for q in k3s.requests("DELETE")]
    assert deletes.index(next(p for p in deletes if "helmcharts" in p)) < deletes.index(
        next(p for p in deletes if "configmaps" in p))  # reverse order: workloads before config
    r = run("cluster", "down", "--yes", "--purge")
    assert r.code == 0
    assert k3s.get_object("v1", "Namespace", NS) is None


def test_doctor_reports_keda_and_flux_crds(run, k3s):
    checks = {c["name"]: c for c in run("doctor", "--json").json()["checks"]}
    assert checks["KEDA CRDs"]["status"] == "warn" and checks["Flux CRDs"]["status"] == "warn"
    k3s.add_object(crd("keda.sh", "scaledjobs", "ScaledJob", "v1alpha1"))
    k3s.add_object(crd("keda.sh", "triggerauthentications", "TriggerAuthentication", "v1alpha1"))
    k3s.add_object(crd("kustomize.toolkit.fluxcd.io", "kustomizations", "Kustomization"))
    k3s.add_object(crd("source.toolkit.fluxcd.io", "gitrepositories", "GitRepository"))
    checks = {c["name"]: c for c in run("doctor", "--json").json()["checks"]}
    assert checks["KEDA CRDs"]["status"] == "ok" and checks["Flux CRDs"]["status"] == "ok"
