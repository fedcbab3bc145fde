"""Self-tests of the Kubernetes API fake, driven by the official client."""

from __future__ import annotations

import json

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from tests.harness.kubefake import HELM_CRD as CRD
from tests.harness.kubefake import KubeFake, mark_ready


def deployment(name: str = "web", replicas: int = 1, image: str = "nginx:1", labels: dict | None = None) -> dict:
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ci", "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "main", "image": image}]}}}}


@pytest.fixture
def api(kube: KubeFake):
    c = config.new_client_from_config(str(kube.kubeconfig), persist_config=False)
    client.CoreV1Api(c).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="ci")))
    return c


@pytest.fixture
def dyn(api, tmp_path):
    return DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))


def status_of(e: ApiException) -> dict:
    return json.loads(e.body)


def test_version_is_complete_k3s_versioninfo(api):
    info = client.VersionApi(api).get_code()
    assert info.git_version == "v1.31.4+k3s1"
    assert info.platform == "linux/arm64" and info.major == "1" and info.minor == "31"


def test_discovery_lists_core_groups_and_subresources(api):
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"apps", "batch", "rbac.authorization.k8s.io", "networking.k8s.io", "storage.k8s.io",
            "apiextensions.k8s.io"} <= groups
    names = {r.name for r in client.AppsV1Api(api).get_api_resources().resources}
    assert {"deployments", "deployments/status", "deployments/scale", "statefulsets"} <= names
    core = {r.name for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"namespaces", "pods", "secrets", "persistentvolumeclaims"} <= core


def test_crd_registers_its_kind_for_discovery_and_custom_objects(api, dyn):
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(CRD)
    crd = ext.read_custom_resource_definition("helmcharts.helm.cattle.io")
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    co = client.CustomObjectsApi(api)
    made = co.create_namespaced_custom_object("helm.cattle.io", "v1", "ci", "helmcharts", {
        "apiVersion": "helm.cattle.io/v1", "kind": "HelmChart", "metadata": {"name": "keda"},
        "spec": {"chart": "keda"}})
    assert made["metadata"]["generation"] == 1
    hc = dyn.resources.get(api_version="helm.cattle.io/v1", kind="HelmChart")
    assert hc.namespaced and dyn.get(hc, name="keda", namespace="ci").spec.chart == "keda"
    ext.delete_custom_resource_definition("helmcharts.helm.cattle.io")
    with pytest.raises(ApiException) as e:
        co.get_namespaced_custom_object("helm.cattle.io", "v1", "ci", "helmcharts", "keda")
    assert e.value.status == 404


def test_create_conflict_missing_namespace_and_generate_name(api):
    core = client.CoreV1Api(api)
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a"), data={"k": "v"})
    made = core.create_namespaced_config_map("ci", cm)
    assert made.metadata.uid and made.metadata.resource_version and made.metadata.creation_timestamp
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("ci", cm)
    assert e.value.status == 409 and status_of(e.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("nope", cm)
    assert e.value.status == 404 and 'namespaces "nope" not found' in status_of(e.value)["message"]
    gen = core.create_namespaced_config_map("ci", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(generate_name="job-")))
    assert gen.metadata.name.startswith("job-") and len(gen.metadata.name) > 4


def test_list_label_selectors(api):
    core = client.CoreV1Api(api)
    for name, labels in [("a", {"tier": "db", "env": "prod"}), ("b", {"tier": "web"}), ("c", {})]:
        core.create_namespaced_config_map("ci", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, labels=labels)))

    def names(sel: str) -> list[str]:
        out = core.list_namespaced_config_map("ci", label_selector=sel)
        return sorted(i.metadata.name for i in out.items)

    assert names("tier=db") == ["a"]
    assert names("tier!=db") == ["b", "c"]
    assert names("tier in (db,web)") == ["a", "b"]
    assert names("tier notin (db)") == ["b", "c"]
    assert names("env") == ["a"]
    assert names("!env") == ["b", "c"]
    assert names("tier,!env") == ["b"]
    lst = core.list_namespaced_config_map("ci")
    assert lst.kind == "ConfigMapList" and lst.api_version == "v1" and lst.metadata.resource_version


def test_replace_with_stale_resource_version_conflicts(api):
    core = client.CoreV1Api(api)
    made = core.create_namespaced_config_map("ci", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="a"), data={"k": "1"}))
    made.data = {"k": "2"}
    updated = core.replace_namespaced_config_map("a", "ci", made)
    assert int(updated.metadata.resource_version) > int(made.metadata.resource_version)
    made.data = {"k": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("a", "ci", made)
    assert e.value.status == 409 and "has been modified" in status_of(e.value)["message"]


def test_merge_json_and_strategic_patches(api):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("ci", deployment())
    out = apps.patch_namespaced_deployment("web", "ci", {"metadata": {"labels": {"x": "1"}}},
                                           _content_type="application/merge-patch+json")
    assert out.metadata.labels == {"app": "web", "x": "1"}
    out = apps.patch_namespaced_deployment("web", "ci", [{"op": "replace", "path": "/spec/replicas", "value": 3}],
                                           _content_type="application/json-patch+json")
    assert out.spec.replicas == 3
    out = apps.patch_namespaced_deployment(
        "web", "ci", {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "busybox"}]}}}})
    assert [c.name for c in out.spec.template.spec.containers] == ["main", "side"]


def test_generation_bumps_only_on_spec_changes(api, kube):
    apps = client.AppsV1Api(api)
    d = apps.create_namespaced_deployment("ci", deployment())
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("web", "ci", {"metadata": {"labels": {"x": "1"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("web", "ci", {"spec": {"replicas": 2}})
    assert d.metadata.generation == 2


def test_status_and_scale_subresources(api, kube):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("ci", deployment())
    apps.patch_namespaced_deployment_status("web", "ci", {"status": {"readyReplicas": 1, "replicas": 1}})
    d = apps.read_namespaced_deployment("web", "ci")
    assert d.status.ready_replicas == 1
    # The main endpoint ignores status.
    d = apps.patch_namespaced_deployment("web", "ci", {"status": {"readyReplicas": 9}})
    assert d.status.ready_replicas == 1
    scale = apps.read_namespaced_deployment_scale("web", "ci")
    assert scale.spec.replicas == 1
    apps.patch_namespaced_deployment_scale("web", "ci", {"spec": {"replicas": 4}})
    assert apps.read_namespaced_deployment("web", "ci").spec.replicas == 4


def test_secret_string_data_becomes_data(api):
    core = client.CoreV1Api(api)
    s = core.create_namespaced_secret("ci", client.V1Secret(metadata=client.V1ObjectMeta(name="s"),
                                                             string_data={"password": "hunter2"}))
    assert s.data == {"password": "aHVudGVyMg=="} and not s.string_data


def test_server_side_apply_records_managers_and_is_idempotent(dyn, kube):
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    first = dyn.server_side_apply(res, body=deployment(), field_manager="raibid")
    again = dyn.server_side_apply(res, body=deployment(), field_manager="raibid")
    assert again.metadata.resourceVersion == first.metadata.resourceVersion
    mf = again.to_dict()["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in mf] == [("raibid", "Apply")]
    assert "f:replicas" in mf[0]["fieldsV1"]["f:spec"]


def test_server_side_apply_requires_field_manager(dyn):
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    with pytest.raises(Exception) as e:
        dyn.patch(res, body=deployment(), content_type="application/apply-patch+yaml")
    assert e.value.status == 422 and "fieldManager is required" in str(e.value.body)


@pytest.mark.parametrize("force", [True, "true"])  # the client sends True as "True"
def test_server_side_apply_conflicts_unless_forced(dyn, kube, force):
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    dyn.server_side_apply(res, body=deployment(replicas=1), field_manager="raibid")
    with pytest.raises(Exception) as e:
        dyn.server_side_apply(res, body=deployment(replicas=5), field_manager="kubectl")
    assert e.value.status == 409
    assert 'conflict with "raibid" using apps/v1: .spec.replicas' in json.loads(e.value.body)["message"]
    # Same value: shared ownership, no conflict.
    dyn.server_side_apply(res, body=deployment(replicas=1), field_manager="kubectl")
    out = dyn.server_side_apply(res, body=deployment(replicas=5), field_manager="kubectl", force_conflicts=force)
    assert out.spec.replicas == 5
    owners = {m["manager"]: m["fieldsV1"] for m in out.to_dict()["metadata"]["managedFields"]}
    assert "f:replicas" not in owners["raibid"]["f:spec"]


def test_server_side_apply_removes_fields_the_manager_stopped_applying(dyn):
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    dyn.server_side_apply(res, body=deployment(labels={"app": "web", "old": "1"}), field_manager="raibid")
    out = dyn.server_side_apply(res, body=deployment(labels={"app": "web"}), field_manager="raibid").to_dict()
    assert out["metadata"]["labels"] == {"app": "web"}
    assert out["metadata"]["generation"] == 1


def test_dry_run_persists_nothing(dyn, kube):
    res = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    out = dyn.server_side_apply(res, body=deployment(), field_manager="raibid", dry_run="All")
    assert out.metadata.name == "web"
    assert kube.get_object("apps/v1", "Deployment", "web", "ci") is None
    dyn.server_side_apply(res, body=deployment(), field_manager="raibid")
    dry = dyn.server_side_apply(res, body=deployment(replicas=7), field_manager="raibid", dry_run="All")
    assert dry.spec.replicas == 7
    assert kube.get_object("apps/v1", "Deployment", "web", "ci")["spec"]["replicas"] == 1


def test_delete_namespace_cascades_and_deletecollection(api, kube):
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    for n in ("a", "b"):
        core.create_namespaced_config_map("ci", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=n, labels={"grp": "x"})))
    core.delete_collection_namespaced_config_map("ci", label_selector="grp=x")
    assert core.list_namespaced_config_map("ci").items == []
    batch.create_namespaced_job("ci", {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                                       "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                                           {"name": "c", "image": "busybox"}]}}}})
    core.delete_namespace("ci")
    assert kube.list_objects("batch/v1", "Job") == []
    with pytest.raises(ApiException) as e:
        core.read_namespace("ci")
    assert e.value.status == 404 and status_of(e.value)["kind"] == "Status"


def test_controller_hook_marks_workloads_ready(api, kube):
    kube.on_write(lambda fake, verb, obj: mark_ready(fake, obj) if verb == "create" else None)
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("ci", deployment(replicas=2))
    d = apps.read_namespaced_deployment("web", "ci")
    assert d.status.ready_replicas == 2 and d.status.observed_generation == 1


def test_fault_injection_status_drop_and_request_log(kube):
    cfg = client.Configuration()
    cfg.retries = 0
    api = config.new_client_from_config(str(kube.kubeconfig), persist_config=False, client_configuration=cfg)
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="ci")))
    kube.inject("status", count=1, status=500)
    with pytest.raises(ApiException) as e:
        core.read_namespace("ci")
    assert e.value.status == 500
    assert core.read_namespace("ci").metadata.name == "ci"
    kube.inject("drop", count=1)
    with pytest.raises(Exception) as e:
        core.read_namespace("ci")
    assert "reset" in str(e.value).lower() or "aborted" in str(e.value).lower() or "closed" in str(e.value).lower()
    assert [r.status for r in kube.requests("GET", r"/api/v1/namespaces/ci$")][-3:] == [500, 200, 0]


def test_wrong_token_is_unauthorized(kube, tmp_path):
    kc = kube.write_kubeconfig(tmp_path / "bad", token="wrong")
    c = config.new_client_from_config(str(kc), persist_config=False)
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(c).list_namespace()
    assert e.value.status == 401


def test_fault_injection_delay_applies_to_matching_requests_only(api, kube):
    import time

    core = client.CoreV1Api(api)
    kube.inject("delay", count=1, delay=0.3, path=r"/namespaces/ci$")
    t0 = time.monotonic()
    core.list_namespace()
    fast = time.monotonic() - t0
    t0 = time.monotonic()
    core.read_namespace("ci")
    slow = time.monotonic() - t0
    assert slow >= 0.3 > fast


def _raw(kube: KubeFake, method: str, path: str, body: dict | None = None, timeout: float = 5.0):
    """One plain HTTP request to the fake: (status, content type, body bytes)."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(kube.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    headers = {"Authorization": f"Bearer {kube.token}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.getheader("Content-Type"), data


def test_hang_fault_accepts_and_never_answers(kube):
    import socket

    kube.inject("hang", count=1, path=r"^/version")
    with pytest.raises(socket.timeout):
        _raw(kube, "GET", "/version", timeout=0.3)
    assert _raw(kube, "GET", "/version")[0] == 200  # only the next matching request hangs
    assert kube.requests("GET", "^/version")[0].status == 0


def test_html_and_wrong_shape_faults(kube):
    kube.inject("html", count=1)
    status, ctype, data = _raw(kube, "GET", "/api/v1/namespaces")
    assert status == 200 and ctype.startswith("text/html") and data.startswith(b"<!DOCTYPE html>")
    kube.inject("shape", count=1, body={"items": "nope"})
    status, ctype, data = _raw(kube, "GET", "/api/v1/namespaces")
    assert status == 200 and ctype == "application/json" and json.loads(data) == {"items": "nope"}


def test_dry_run_values_other_than_all_are_rejected(kube):
    status, _, data = _raw(kube, "POST", "/api/v1/namespaces?dryRun=true",
                           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    assert status == 400 and 'Unsupported value: "true"' in json.loads(data)["message"]
    assert kube.get_object("v1", "Namespace", "x") is None


def test_list_items_have_no_kind_or_api_version(api):
    items = json.loads(_raw_list(api))["items"]
    assert items and all("kind" not in i and "apiVersion" not in i for i in items)


def _raw_list(api) -> bytes:
    return client.CoreV1Api(api).list_namespace(_preload_content=False).data


def test_propagation_policy_orphan_keeps_dependents(api, kube):
    apps = client.AppsV1Api(api)
    owner = apps.create_namespaced_deployment("ci", deployment())
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
        "name": "web-1", "namespace": "ci", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner.metadata.uid}]},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": deployment()["spec"]["template"]}}
    kube.add_object(rs)
    apps.delete_namespaced_deployment("web", "ci", propagation_policy="Orphan")
    kept = kube.get_object("apps/v1", "ReplicaSet", "web-1", "ci")
    assert kept is not None and "ownerReferences" not in kept["metadata"]
    owner = apps.create_namespaced_deployment("ci", deployment())
    rs["metadata"]["ownerReferences"][0]["uid"] = owner.metadata.uid
    apps.delete_namespaced_replica_set("web-1", "ci")
    kube.add_object(rs)
    apps.delete_namespaced_deployment("web", "ci", propagation_policy="Background")
    assert kube.get_object("apps/v1", "ReplicaSet", "web-1", "ci") is None
    with pytest.raises(ApiException) as e:
        apps.delete_namespaced_replica_set("none", "ci", propagation_policy="Sometimes")
    assert e.value.status == 400


def test_terminating_namespace_refuses_new_content_then_goes(api, kube):
    import time

    core = client.CoreV1Api(api)
    kube.namespace_finalize_delay = 0.3
    core.delete_namespace("ci")
    ns = core.read_namespace("ci")
    assert ns.status.phase == "Terminating" and ns.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("ci", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a")))
    body = status_of(e.value)
    assert e.value.status == 403 and "because it is being terminated" in body["message"]
    assert body["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    deadline = time.monotonic() + 5
    while kube.get_object("v1", "Namespace", "ci") is not None:
        assert time.monotonic() < deadline, "namespace never went away"
        time.sleep(0.02)


def test_pvc_spec_is_immutable_and_size_only_grows(dyn, kube):
    res = dyn.resources.get(api_version="v1", kind="PersistentVolumeClaim")

    def pvc(size: str, sc: str = "local-path") -> dict:
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "ci"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": sc,
                         "resources": {"requests": {"storage": size}}}}

    dyn.server_side_apply(res, body=pvc("5Gi"), field_manager="raibid")
    dyn.server_side_apply(res, body=pvc("6Gi"), field_manager="raibid")  # growing is allowed
    for body, text in ((pvc("6Gi", "fast"), "spec is immutable after creation"),
                       (pvc("1Gi"), "field can not be less than previous value")):
        with pytest.raises(ApiException) as e:
            dyn.server_side_apply(res, body=body, field_manager="raibid", dry_run="All")
        assert e.value.status == 422 and text in status_of(e.value)["message"]
    assert kube.get_object("v1", "PersistentVolumeClaim", "data", "ci")["spec"]["resources"]["requests"][
        "storage"] == "6Gi"
