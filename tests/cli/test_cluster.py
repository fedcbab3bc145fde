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
                      "scaledjobs": "ScaledJob", "triggerauthentications": "TriggerAuthentication",
                      "networkpolicies": "NetworkPolicy"}[plural])
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


def test_a_rejected_token_is_unauthorized_not_forbidden(run, k3s, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(k3s.write_kubeconfig(tmp_path / "stale", token="expired-token")))
    r = run("cluster", "status", "-c", "redis")
    assert r.code == 4 and "unauthorized (401)" in r.err and "forbidden" not in r.err
    assert "credentials" in r.err and "RBAC" not in r.err  # a token problem, not a permission one


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


# ----------------------------------------------------------------------------- robustness (issue 11)


def _kubeconfig(path, server: str, *, user: dict | None = None, cluster_extra: dict | None = None):
    import yaml

    cfg = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "c", "cluster": {"server": server, **(cluster_extra or {})}}],
           "users": [{"name": "u", "user": user if user is not None else {"token": "raibid-test-token"}}],
           "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
           "current-context": "ctx"}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("args", [("cluster", "status"), ("cluster", "up", "--no-wait"), ("doctor", "--json")])
def test_hung_api_server_times_out_with_exit_5(run, kube, monkeypatch, args):
    import time

    monkeypatch.setenv("RAIBID_CLUSTER_REQUEST_TIMEOUT", "0.5")
    kube.inject("hang", count=1000)
    t0 = time.monotonic()
    r = run(*args)
    elapsed = time.monotonic() - t0
    assert elapsed < 10, elapsed
    assert "Traceback" not in r.err
    if args[0] == "doctor":
        assert r.code == 1
        checks = {c["name"]: c for c in r.json()["checks"]}
        assert checks["api-server"]["status"] == "fail" and "did not answer within 0.5s" in checks["api-server"]["detail"]
    else:
        assert r.code == 5, r.err
        assert "did not answer within 0.5s" in r.err and kube.url in r.err


def test_server_credentials_are_masked_in_errors_and_doctor(run, kube, tmp_path, monkeypatch):
    url = kube.url.replace("http://", "http://admin:s3cret-pw@")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kc", url)))
    ok = run("doctor", "--json")
    assert "s3cret-pw" not in ok.out + ok.err
    assert "admin:***@" in {c["name"]: c for c in ok.json()["checks"]}["api-server"]["detail"]
    kube.inject("hang", count=1000)
    monkeypatch.setenv("RAIBID_CLUSTER_REQUEST_TIMEOUT", "0.3")
    for args in (("cluster", "status"), ("cluster", "up", "--no-wait"), ("doctor",)):
        r = run(*args)
        assert r.code in (1, 5) and "s3cret-pw" not in r.out + r.err, r.err
        assert "admin:***@" in r.out + r.err
    kube.faults.clear()
    kube.inject("html", count=1000)
    r = run("cluster", "status")
    assert r.code == 5 and "s3cret-pw" not in r.out + r.err and "admin:***@" in r.err
    kube.stop()  # refused
    for args in (("cluster", "status"), ("doctor",)):
        r = run(*args)
        assert r.code in (1, 5) and "s3cret-pw" not in r.out + r.err, r.err
        assert "admin:***@" in r.out + r.err


def test_html_answer_is_not_an_api_server(run, kube):
    kube.inject("html", count=1000)
    for args in (("cluster", "status"), ("cluster", "up", "--no-wait")):
        r = run(*args)
        assert r.code == 5, r.err
        assert "is not a Kubernetes API server" in r.err and "Traceback" not in r.err
    d = run("doctor", "--json")
    checks = {c["name"]: c for c in d.json()["checks"]}
    assert d.code == 1 and checks["api-server"]["status"] == "fail"
    assert "not a Kubernetes API server" in checks["api-server"]["detail"]
    assert "redis" in " ".join(checks)  # doctor went on with the other checks


def test_wrong_shape_json_is_a_failure_not_a_traceback(run, k3s):
    k3s.inject("shape", count=1000, path="/statefulsets/raibid-redis$", body={"kind": "Status", "items": 3})
    r = run("cluster", "status", "-c", "redis")
    assert r.code == 1 and "not a Kubernetes object" in r.err and "Traceback" not in r.err
    k3s.faults.clear()
    k3s.inject("shape", count=1000, method="PATCH", body=["x"])
    r = run("cluster", "up", "-c", "redis", "--no-wait")
    assert r.code == 1 and "Traceback" not in r.err and "apply stopped" in r.err
    k3s.faults.clear()
    k3s.inject("shape", count=1000, path="^/version", body={"major": 1})
    d = run("doctor", "--json")
    checks = {c["name"]: c for c in d.json()["checks"]}
    assert checks["api-server"]["status"] == "fail" and "Traceback" not in d.err


def test_broken_certificate_authority_data_is_a_usage_error(run, kube, tmp_path, monkeypatch):
    bad = base64.b64encode(b"not a certificate").decode()
    kc = _kubeconfig(tmp_path / "kc", kube.url.replace("http://", "https://"),
                     cluster_extra={"certificate-authority-data": bad})
    monkeypatch.setenv("KUBECONFIG", str(kc))
    r = run("cluster", "status")
    assert r.code == 2 and "certificate-authority" in r.err and "Traceback" not in r.err
    assert not kube.requests()


@pytest.mark.parametrize("server", ["not a url", "127.0.0.1:6443", "https://127.0.0.1:port"])
def test_non_url_server_is_a_usage_error(run, tmp_path, monkeypatch, server):
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kc", server)))
    r = run("cluster", "status")
    assert r.code == 2, r.err
    assert "server" in r.err and "https://127.0.0.1:6443" in r.err and "Traceback" not in r.err


def test_missing_exec_plugin_is_an_error_and_sends_nothing(run, kube, tmp_path, monkeypatch):
    kc = _kubeconfig(tmp_path / "kc", kube.url, user={"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "raibid-no-such-credential-plugin",
        "interactiveMode": "Never"}})
    monkeypatch.setenv("KUBECONFIG", str(kc))
    r = run("cluster", "status")
    assert r.code == 2, r.err
    assert "exec credential plugin" in r.err and "raibid-no-such-credential-plugin" in r.err
    assert "ERROR:root" not in r.err and "Traceback" not in r.err
    assert not kube.requests()


def test_kubeconfig_list_is_merged_like_kubectl(run, kube, tmp_path, monkeypatch):
    import yaml

    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": {"server": kube.url}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}], "current-context": "ctx"}))
    users = tmp_path / "users.yaml"
    users.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config",
                                     "users": [{"name": "u", "user": {"token": kube.token}}]}))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing.yaml'}:{clusters}:{users}")
    r = run("cluster", "status", "-c", "redis", "--json")
    assert r.code == 0, r.err
    assert r.json()[0]["state"] == "missing"


@pytest.mark.parametrize("second_context", ["other", ""], ids=["set", "empty"])
def test_kubeconfig_list_uses_the_first_files_current_context(run, kube, tmp_path, monkeypatch, second_context):
    """kubectl: the first file that sets current-context wins (a later file, even with "", never does)."""
    import yaml

    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [{"name": "c", "cluster": {"server": kube.url}}],
        "users": [{"name": "u", "user": {"token": kube.token}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}], "current-context": "ctx"}))
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [{"name": "o", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "ou", "user": {"token": "x"}}],
        "contexts": [{"name": "other", "context": {"cluster": "o", "user": "ou"}}],
        "current-context": second_context}))
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    r = run("cluster", "status", "-c", "redis", "--json")
    assert r.code == 0, r.err
    assert r.json()[0]["state"] == "missing" and kube.requests()
    monkeypatch.setenv("KUBECONFIG", f"{second}:{first}")  # and the other way round
    r = run("cluster", "status", "-c", "redis", "--json")
    if second_context:
        assert r.code == 5 and "127.0.0.1:9" in r.err
    else:
        assert r.code == 0, r.err


def test_unwritable_cache_dir_is_not_unreachable(run, k3s, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir under a file fails even for root
    r = run("cluster", "status", "-c", "redis")
    assert r.code == 0, r.err
    assert "cannot reach" not in r.err


def test_down_one_component_with_purge_keeps_the_namespace_and_the_others(run, k3s):
    assert up(run).code == 0
    refused = run("cluster", "down", "-c", "redis", "--purge")
    assert refused.code == 2
    assert "the namespace stays (agents, flux, gitea, keda still installed in it)" in refused.err
    r = run("cluster", "down", "-c", "redis", "--purge", "--yes", "--json")
    assert r.code == 0, r.err
    acts = {(c["kind"], c["name"]): c for c in r.json()}
    assert acts[("Namespace", NS)]["action"] == "kept"
    assert acts[("PersistentVolumeClaim", "raibid-redis-data")]["action"] == "deleted"
    assert k3s.get_object("v1", "Namespace", NS) is not None
    assert k3s.get_object("apps/v1", "Deployment", "raibid-gitea-gitea", NS) is not None  # Gitea lives on
    assert k3s.get_object("v1", "Secret", "raibid-gitea-admin", NS) is not None
    assert not [q for q in k3s.requests("DELETE") if q.path.endswith(f"/namespaces/{NS}")]
    everything = run("cluster", "down", "--purge")
    assert everything.code == 2 and f"and the namespace {NS} with everything in it" in everything.err


def test_down_waits_until_what_it_deleted_is_gone(run, k3s):
    assert up(run, "-c", "redis").code == 0
    k3s.namespace_finalize_delay = 0.4
    r = run("cluster", "down", "-c", "redis", "--purge", "--yes", "--wait-interval", "0.02s")
    assert r.code == 0, r.err
    assert k3s.get_object("v1", "Namespace", NS) is None  # not just Terminating


def test_down_no_wait_returns_while_the_namespace_terminates(run, k3s):
    assert up(run, "-c", "redis").code == 0
    k3s.namespace_finalize_delay = 30
    r = run("cluster", "down", "-c", "redis", "--purge", "--yes", "--no-wait")
    assert r.code == 0, r.err
    assert k3s.get_object("v1", "Namespace", NS)["status"]["phase"] == "Terminating"
    again = up(run, "-c", "redis")
    assert again.code == 1 and "Traceback" not in again.err
    assert f"namespace {NS} is being deleted (Terminating)" in again.err and "forbidden (403)" not in again.err
    assert "RBAC" not in again.err and "wait until" in again.err


def test_status_says_the_namespace_is_terminating(run, k3s):
    assert up(run, "-c", "redis").code == 0
    k3s.namespace_finalize_delay = 30
    assert run("cluster", "down", "-c", "redis", "--purge", "--yes", "--no-wait").code == 0
    r = run("cluster", "status", "-c", "redis", "--json")
    assert r.code == 0 and r.json()[0]["state"] == "missing"  # stdout stays data
    assert f"namespace {NS} is being deleted (Terminating)" in r.err and "hint:" not in r.out


def test_diff_shows_a_changed_secret_masked(run, k3s, monkeypatch):
    assert up(run, "-c", "gitea").code == 0
    assert run("cluster", "diff", "-c", "gitea").code == 0
    monkeypatch.setenv("RAIBID_GITEA_ADMIN_USER", "someone-else")
    d = run("cluster", "diff", "-c", "gitea")
    assert d.code == 1, d.err
    assert "merged/Secret/raibid-ci/raibid-gitea-admin" in d.out
    assert "-  username: '*** (before)'" in d.out and "+  username: '*** (after)'" in d.out
    assert "+  password: '***'" not in d.out  # unchanged values are not part of the diff
    assert base64.b64encode(b"someone-else").decode() not in d.out


def test_diff_uses_the_same_conflict_default_as_up(run, k3s):
    assert up(run, "-c", "redis").code == 0
    sts = k3s.get_object("apps/v1", "StatefulSet", "raibid-redis", NS)
    from kubernetes import config
    from kubernetes.dynamic import DynamicClient

    api = config.new_client_from_config(str(k3s.kubeconfig), persist_config=False)
    dyn = DynamicClient(api, cache_file=str(k3s.kubeconfig) + ".cache")
    res = dyn.resources.get(api_version="apps/v1", kind="StatefulSet")
    dyn.server_side_apply(res, body={"apiVersion": "apps/v1", "kind": "StatefulSet",
                                     "metadata": {"name": sts["metadata"]["name"], "namespace": NS},
                                     "spec": {"replicas": 2}}, field_manager="kubectl", force_conflicts=True)
    d = run("cluster", "diff", "-c", "redis")
    assert d.code == 2 and 'conflict with "kubectl"' in d.err and "--force-conflicts" in d.err
    forced = run("cluster", "diff", "-c", "redis", "--force-conflicts")
    assert forced.code == 1 and "-  replicas: 2" in forced.out


def test_dry_run_reports_what_up_would_change(run, k3s, monkeypatch):
    assert up(run, "-c", "redis").code == 0
    monkeypatch.setenv("RAIBID_CLUSTER_VERSIONS_REDIS_IMAGE", "redis:7.4.3")
    r = up(run, "-c", "redis", "--dry-run", "--json")
    assert r.code == 0, r.err
    acts = {(c["kind"], c["name"]): c["action"] for c in r.json()["changes"]}
    assert acts[("StatefulSet", "raibid-redis")] == "configured"
    assert {a for k, a in acts.items() if k != ("StatefulSet", "raibid-redis")} == {"unchanged"}
    assert k3s.get_object("apps/v1", "StatefulSet", "raibid-redis", NS)["spec"]["template"]["spec"][
        "containers"][0]["image"] == "redis:7.4.2"


def test_render_out_creates_secret_files_0600_from_the_start(run, tmp_path, monkeypatch):
    import os
    import pathlib
    import stat

    def no_chmod(*a, **kw):
        raise AssertionError("a Secret file must not need a chmod after it was written")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(pathlib.Path, "chmod", no_chmod)
    old = os.umask(0o022)
    try:
        r = run("cluster", "render", "-c", "redis", "--out", str(tmp_path / "out"))
    finally:
        os.umask(old)
    assert r.code == 0, r.err
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    secrets = [n for n in modes if "secret" in n.lower()]
    assert secrets and all(modes[n] == 0o600 for n in secrets)
    assert all(m == 0o644 for n, m in modes.items() if n not in secrets)
    assert not [n for n in modes if n.startswith(".")]  # no temp files left


def test_redis_url_auto_without_cluster_ip_is_a_clear_error(run, k3s, monkeypatch):
    assert up(run, "-c", "redis").code == 0
    with k3s.lock:
        svc = next(o for k, o in k3s.objects.items() if k[1] == "services" and k[3] == "raibid-redis")
        svc["spec"]["clusterIP"] = "None"
    monkeypatch.setenv("RAIBID_REDIS_URL", "auto")
    r = run("queue", "stats")
    assert r.code == 1, r.err
    assert "has no cluster IP (headless)" in r.err and "Traceback" not in r.err


@pytest.mark.parametrize(("key", "value", "text"), [
    ("RAIBID_CLUSTER_STORAGE_CLASS", "fast-ssd", "spec is immutable after creation"),
    ("RAIBID_CLUSTER_REDIS_STORAGE", "1Gi", "can not be less than previous value")])
def test_immutable_pvc_change_is_explained(run, k3s, monkeypatch, key, value, text):
    assert up(run, "-c", "redis").code == 0
    monkeypatch.setenv(key, value)
    r = up(run, "-c", "redis")
    assert r.code == 1 and text in r.err
    assert "holds data" in r.err and "storageClassName 'local-path'" in r.err and "size 5Gi" in r.err
    assert "cluster.storage_class" in r.err and "--purge" in r.err and "Traceback" not in r.err
    assert k3s.get_object("v1", "PersistentVolumeClaim", "raibid-redis-data", NS)["spec"][
        "storageClassName"] == "local-path"


def test_diff_explains_an_immutable_pvc_change_as_up_does(run, k3s, monkeypatch):
    assert up(run, "-c", "redis").code == 0
    monkeypatch.setenv("RAIBID_CLUSTER_REDIS_STORAGE", "1Gi")
    r = run("cluster", "diff", "-c", "redis")
    assert r.code == 2 and "can not be less than previous value" in r.err
    assert "holds data" in r.err and "size 5Gi" in r.err and "cluster.storage_class" in r.err
    assert "Traceback" not in r.err and r.out == ""


def test_diff_explains_an_immutable_statefulset_change_with_up_replace(run, k3s):
    assert up(run, "-c", "redis").code == 0
    with k3s.lock:  # as an older release of raibid left it
        sts = next(o for k, o in k3s.objects.items() if k[1] == "statefulsets" and k[3] == "raibid-redis")
        sts["spec"]["serviceName"] = "raibid-redis-old"
    r = run("cluster", "diff", "-c", "redis")
    assert r.code == 2 and "holds no data" in r.err
    assert "raibid cluster up --replace" in r.err  # diff itself has no --replace


def test_kube_apply_into_a_terminating_namespace_says_so(kube):
    from raibid.cluster.client import Kube, NamespaceTerminating

    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "going"}})
    kube.namespace_finalize_delay = 30
    k = Kube.from_kubeconfig(str(kube.kubeconfig), timeout=5)
    k.delete("v1", "Namespace", "going")
    with pytest.raises(NamespaceTerminating) as e:
        k.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "going"}})
    assert "being deleted (Terminating)" in e.value.message and "RBAC" not in (e.value.hint or "")


def _unready_daemonset(fake, name: str, labels: dict) -> None:
    """A workload no controller of the fake rolls out: never ready."""
    fake.add_object({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {
        "name": name, "namespace": NS, "labels": labels},
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                     {"name": "c", "image": "busybox:1"}]}}}})


def test_wait_and_status_judge_a_chart_by_its_release_only(run, k3s):
    k3s.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    _unready_daemonset(k3s, "neighbour", {"app": "neighbour"})  # not Gitea's: never ready
    r = run("cluster", "up", "-c", "gitea", "--timeout", "3s", "--wait-interval", "0.02s")
    assert r.code == 0, r.err
    assert {c["component"]: c["state"] for c in run("cluster", "status", "-c", "gitea", "--json").json()} == {
        "gitea": "healthy"}


def test_status_and_wait_agree_on_a_rollout_not_yet_observed(run, kube):
    K3sController(kube)
    assert up(run, "-c", "gitea").code == 0
    kube.hooks.clear()  # the controllers stop: the new generation is never observed
    dep = kube.get_object("apps/v1", "Deployment", "raibid-gitea-gitea", NS)
    st = dict(dep["status"], observedGeneration=dep["metadata"]["generation"] - 1)
    kube.set_status("apps/v1", "Deployment", "raibid-gitea-gitea", NS, st)
    data = run("cluster", "status", "-c", "gitea", "--json").json()[0]
    assert data["state"] == "progressing", data
    assert any("observe the new generation" in p for p in data["problems"])
    r = run("cluster", "up", "-c", "gitea", "--timeout", "0.3s", "--wait-interval", "0.02s")
    assert r.code == 1 and "observe the new generation" in r.err


SCALEDJOB = """apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata:
  name: raibid-agents-test
  namespace: {{ namespace }}
spec:
  jobTargetRef:
    template:
      spec:
        restartPolicy: Never
        containers:
          - name: agent
            image: busybox:1
  triggers:
    - type: redis-streams
      metadata:
        stream: raibid:jobs:default
"""


@pytest.fixture
def keda_with_scaledjob(tmp_path, monkeypatch):
    """The built-in templates plus a ScaledJob in the keda component: a custom resource whose CRD
    the KEDA chart (a HelmChart in the same apply) installs."""
    import shutil

    from raibid.cluster.render import templates_dir

    root = tmp_path / "templates"
    shutil.copytree(templates_dir(), root)
    (root / "keda" / "scaledjob.yaml.j2").write_text(SCALEDJOB)
    monkeypatch.setenv("RAIBID_CLUSTER_TEMPLATES_DIR", str(root))
    return root


KEDA_CRDS = [crd("keda.sh", "scaledjobs", "ScaledJob", "v1alpha1"),
             crd("keda.sh", "triggerauthentications", "TriggerAuthentication", "v1alpha1")]


def test_custom_resources_wait_for_their_crd_from_a_chart(run, kube, keda_with_scaledjob):
    K3sController(kube, chart_crds={"raibid-keda": KEDA_CRDS}, crd_delay=0.3)
    r = up(run, "-c", "keda", "--json")
    assert r.code == 0, r.err
    acts = {(c["kind"], c["name"]): c["action"] for c in r.json()["changes"]}
    assert acts[("ScaledJob", "raibid-agents-test")] == "created"
    assert kube.get_object("keda.sh/v1alpha1", "ScaledJob", "raibid-agents-test", NS) is not None
    assert "waiting for the ScaledJob CRD (keda.sh/v1alpha1) from component keda" in r.err
    patches = [q.path for q in kube.requests("PATCH")]
    assert patches.index(next(p for p in patches if "/helmcharts/" in p)) < patches.index(
        next(p for p in patches if "/scaledjobs/" in p))


def test_crd_that_never_comes_names_the_component_that_provides_it(run, kube, keda_with_scaledjob):
    K3sController(kube, chart_crds={"raibid-keda": []})  # this chart installs no CRDs
    r = run("cluster", "up", "-c", "keda", "--timeout", "0.5s", "--wait-interval", "0.05s", "--json")
    assert r.code == 1, r.err
    assert "ScaledJob (keda.sh/v1alpha1) is not served" in r.err and "within 0.5s" in r.err
    assert "component keda" in r.err and "Traceback" not in r.err
    acts = {(c["kind"], c["name"]): c["action"] for c in r.json()["changes"]}
    assert acts[("HelmChart", "raibid-keda")] == "created" and acts[("ScaledJob", "raibid-agents-test")] == "failed"


def test_dry_run_reports_a_custom_resource_whose_crd_comes_later(run, k3s, keda_with_scaledjob):
    r = up(run, "-c", "keda", "--dry-run", "--json")
    assert r.code == 0, r.err
    acts = {(c["kind"], c["name"]): (c["action"], c["detail"]) for c in r.json()["changes"]}
    assert acts[("ScaledJob", "raibid-agents-test")][0] == "created"
    assert "not checked" in acts[("ScaledJob", "raibid-agents-test")][1]


def test_replace_recreates_an_object_whose_immutable_field_changed(run, k3s):
    assert up(run, "-c", "redis").code == 0
    pvc_uid = k3s.get_object("v1", "PersistentVolumeClaim", "raibid-redis-data", NS)["metadata"]["uid"]
    with k3s.lock:  # as an older release of raibid left it
        sts = next(o for k, o in k3s.objects.items() if k[1] == "statefulsets" and k[3] == "raibid-redis")
        sts["spec"]["serviceName"] = "raibid-redis-old"
    r = up(run, "-c", "redis")
    assert r.code == 1 and "updates to statefulset spec" in r.err
    assert "holds no data" in r.err and "--replace" in r.err
    dry = up(run, "-c", "redis", "--replace", "--dry-run", "--json")
    assert {(c["kind"], c["name"]): c["action"] for c in dry.json()["changes"]}[
        ("StatefulSet", "raibid-redis")] == "replaced"
    assert k3s.get_object("apps/v1", "StatefulSet", "raibid-redis", NS)["spec"]["serviceName"] == "raibid-redis-old"
    ok = up(run, "-c", "redis", "--replace", "--json")
    assert ok.code == 0, ok.err
    acts = {(c["kind"], c["name"]): c["action"] for c in ok.json()["changes"]}
    assert acts[("StatefulSet", "raibid-redis")] == "replaced"
    assert k3s.get_object("apps/v1", "StatefulSet", "raibid-redis", NS)["spec"]["serviceName"] == "raibid-redis"
    assert k3s.get_object("v1", "PersistentVolumeClaim", "raibid-redis-data", NS)["metadata"]["uid"] == pvc_uid
    deletes = k3s.requests("DELETE")
    assert [q.path.rsplit("/", 1)[-1] for q in deletes] == ["raibid-redis"]


def test_replace_never_replaces_a_pvc(run, k3s, monkeypatch):
    assert up(run, "-c", "redis").code == 0
    monkeypatch.setenv("RAIBID_CLUSTER_STORAGE_CLASS", "fast-ssd")
    r = up(run, "-c", "redis", "--replace")
    assert r.code == 1 and "holds data" in r.err
    assert not k3s.requests("DELETE")


def test_status_counts_a_custom_resource_without_its_crd_as_missing(run, k3s, keda_with_scaledjob):
    r = run("cluster", "status", "-c", "keda", "--json")
    assert r.code == 0, r.err
    row = r.json()[0]
    assert row["state"] == "missing" and "ScaledJob/raibid-ci/raibid-agents-test missing" in row["problems"]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_request_timeout_must_be_positive(run, kube, monkeypatch, value):
    monkeypatch.setenv("RAIBID_CLUSTER_REQUEST_TIMEOUT", value)
    r = run("cluster", "status")
    assert r.code == 2 and "cluster.request_timeout" in r.err and not kube.requests()


@pytest.mark.parametrize("cmd", [("up",), ("down", "--purge", "--yes")])
def test_a_zero_wait_interval_is_refused_before_anything_changes(run, k3s, cmd):
    k3s.clear_log()
    r = run("cluster", *cmd, "--wait-interval", "0")
    assert r.code == 2 and "--wait-interval '0': it must be more than 0" in r.err
    assert [q for q in k3s.requests() if q.method not in ("GET",)] == []
