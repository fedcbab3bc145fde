"""The CRD schema harness: vendored schemas load, valid objects pass, each kind of mistake is caught."""

from __future__ import annotations

import copy
import hashlib
import re

import pytest

from raibid.cluster.render import render
from raibid.config import load_config
from tests.harness.crdschema import SCHEMAS, apply_json_patch, crd_schema, has_crd, validate_cr, vendored

NS = "raibid-ci"


def git_repository() -> dict:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "demo", "namespace": NS, "labels": {"app.kubernetes.io/part-of": "raibid"}},
        "spec": {
            "url": "http://gitea-http.raibid-ci.svc:3000/raibid/demo.git",
            "interval": "1m0s",
            "ref": {"branch": "main"},
            "secretRef": {"name": "demo-git-auth"},
        },
    }


def kustomization() -> dict:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "demo", "namespace": NS},
        "spec": {
            "interval": "10m",
            "path": "./deploy",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "demo"},
        },
    }


def scaled_job() -> dict:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": {"name": "raibid-runner", "namespace": NS},
        "spec": {
            "jobTargetRef": {
                "parallelism": 1,
                "backoffLimit": 0,
                "activeDeadlineSeconds": 3600,
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "raibid-runner"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{
                            "name": "runner",
                            "image": "ghcr.io/raibid/runner:latest",
                            "env": [{"name": "REDIS_PASSWORD", "valueFrom": {
                                "secretKeyRef": {"name": "raibid-redis", "key": "password"}}}],
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                                          "limits": {"cpu": 2, "memory": "2Gi"}},
                        }],
                    },
                },
            },
            "pollingInterval": 10,
            "maxReplicaCount": 4,
            "successfulJobsHistoryLimit": 5,
            "failedJobsHistoryLimit": 5,
            "rollout": {"strategy": "gradual"},
            "scalingStrategy": {"strategy": "accurate"},
            "triggers": [{
                "type": "redis-streams",
                "metadata": {
                    "address": "raibid-redis.raibid-ci.svc:6379",
                    "stream": "raibid:jobs",
                    "consumerGroup": "raibid-workers",
                    "pendingEntriesCount": "1",
                    "activationLagCount": "0",
                },
                "authenticationRef": {"name": "raibid-redis"},
            }],
        },
    }


def trigger_authentication() -> dict:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "raibid-redis", "namespace": NS},
        "spec": {"secretTargetRef": [{"parameter": "password", "name": "raibid-redis", "key": "password"}]},
    }


def helm_chart() -> dict:
    return {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": {"name": "raibid-keda", "namespace": "kube-system"},
        "spec": {"repo": "https://kedacore.github.io/charts", "chart": "keda", "version": "2.17.2",
                 "targetNamespace": "keda", "createNamespace": True, "timeout": "10m0s",
                 "valuesContent": "watchNamespace: raibid-ci"},
    }


def problems(obj: dict, **kw) -> str:
    with pytest.raises(AssertionError) as info:
        validate_cr(obj, **kw)
    return str(info.value)


# ----------------------------------------------------------------------------- the vendored files


def test_every_vendored_file_is_listed_in_the_readme_with_its_checksum():
    readme = (SCHEMAS / "README.md").read_text()
    files = sorted(SCHEMAS.glob("*/*.yaml"))
    assert len(files) == 6
    for path in files:
        rel = path.relative_to(SCHEMAS).as_posix()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert re.search(rf"`{re.escape(rel)}`.*{digest}", readme), f"{rel} ({digest}) missing from README"


def test_vendored_kinds_and_versions():
    assert set(vendored()) >= {
        ("source.toolkit.fluxcd.io/v1", "GitRepository"),
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
        ("keda.sh/v1alpha1", "ScaledJob"),
        ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ("helm.cattle.io/v1", "HelmChart"),
    }


def test_keda_release_patch_is_applied_to_the_scaledjob_base():
    schema, _ = crd_schema("keda.sh/v1alpha1", "ScaledJob")
    spec = schema["properties"]["spec"]["properties"]
    assert "metricType" not in spec["triggers"]["items"]["properties"]  # ScaledObject-only, removed
    template_meta = spec["jobTargetRef"]["properties"]["template"]["properties"]["metadata"]
    assert template_meta["x-kubernetes-preserve-unknown-fields"] is True


def test_apply_json_patch():
    doc = {"a": {"b": [1, 2], "c": 3, "x/y": 0}}
    out = apply_json_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 9},
                                 {"op": "add", "path": "/a/b/0", "value": 0},
                                 {"op": "remove", "path": "/a/c"},
                                 {"op": "replace", "path": "/a/x~1y", "value": 1}])
    assert out == {"a": {"b": [0, 1, 2, 9], "x/y": 1}}
    assert doc == {"a": {"b": [1, 2], "c": 3, "x/y": 0}}  # untouched


# ----------------------------------------------------------------------------- valid objects


@pytest.mark.parametrize("make", [git_repository, kustomization, scaled_job, trigger_authentication, helm_chart])
def test_valid_objects_pass_strictly(make):
    obj = make()
    assert has_crd(obj)
    validate_cr(obj)
    validate_cr(obj, strict=False)


def test_raibid_rendered_custom_resources_validate():
    rendered = [m for m in render(load_config(), secrets={"redis_password": "x", "gitea_admin_password": "y"})
                if has_crd(m.obj)]
    assert {m.kind for m in rendered} >= {"HelmChart"}
    for m in rendered:
        validate_cr(m.obj)


def test_keda_2_17_schema_has_no_enums_for_strategies():
    """KEDA added enums in 2.20; the vendored 2.17.2 schema takes any string. Flip this on re-vendoring."""
    obj = scaled_job()
    obj["spec"]["rollout"]["strategy"] = "sideways"
    obj["spec"]["scalingStrategy"]["strategy"] = "greedy"
    validate_cr(obj)


def test_template_metadata_keeps_unknown_fields_and_int_or_string_accepts_both():
    obj = scaled_job()
    obj["spec"]["jobTargetRef"]["template"]["metadata"]["annotations"] = {"a": "b"}
    obj["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "1500m"
    validate_cr(obj)


# ----------------------------------------------------------------------------- failures


def test_missing_required_fields_are_named():
    obj = git_repository()
    del obj["spec"]["url"]
    del obj["spec"]["secretRef"]["name"]
    msg = problems(obj)
    assert "GitRepository raibid-ci/demo (source.toolkit.fluxcd.io/v1)" in msg
    assert "2 problem(s)" in msg
    assert "spec.url: missing required field" in msg
    assert "spec.secretRef.name: missing required field" in msg

    obj = kustomization()
    del obj["spec"]["sourceRef"]
    assert "spec.sourceRef: missing required field" in problems(obj, strict=False)


def test_wrong_types():
    obj = kustomization()
    obj["spec"]["prune"] = "yes"
    assert "spec.prune: 'yes' is not of type 'boolean'" in problems(obj)

    obj = scaled_job()
    obj["spec"]["triggers"][0]["metadata"]["pendingEntriesCount"] = 1  # KEDA metadata is string-only
    assert "spec.triggers[0].metadata.pendingEntriesCount: 1 is not of type 'string'" in problems(obj)

    obj = scaled_job()
    obj["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = True
    assert "limits.cpu: True must be an integer or a string" in problems(obj)


def test_patterns_are_checked():
    obj = git_repository()
    obj["spec"]["interval"] = "one minute"
    assert "spec.interval: 'one minute' does not match" in problems(obj)


def test_unknown_fields_fail_only_in_strict_mode():
    obj = kustomization()
    obj["spec"]["sourceRef"]["branch"] = "main"
    obj["spec"]["pruen"] = True
    obj["metadata"]["label"] = {"a": "b"}
    msg = problems(obj)
    assert "(strict), 3 problem(s)" in msg
    for path in ("spec.sourceRef.branch", "spec.pruen", "metadata.label"):
        assert f"{path}: unknown field" in msg
    validate_cr(obj, strict=False)


def test_fields_removed_by_the_keda_patch_are_unknown():
    obj = scaled_job()
    obj["spec"]["triggers"][0]["metricType"] = "AverageValue"
    assert "spec.triggers[0].metricType: unknown field" in problems(obj)


def test_wrong_enums():
    obj = kustomization()
    obj["spec"]["sourceRef"]["kind"] = "HelmRepository"
    assert ("spec.sourceRef.kind: 'HelmRepository' is not one of ['OCIRepository', 'GitRepository', 'Bucket', "
            "'ExternalArtifact']") in problems(obj, strict=False)

    obj = helm_chart()
    obj["spec"]["failurePolicy"] = "explode"
    assert "spec.failurePolicy: 'explode' is not one of" in problems(obj)


def test_list_map_keys_must_be_unique():
    obj = scaled_job()
    container = obj["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]
    container["ports"].append(copy.deepcopy(container["ports"][0]))
    assert "containers[0].ports: items 0 and 1 share the map key (containerPort=8080, protocol='TCP')" \
        in problems(obj)


def test_api_version_kind_and_version_must_be_vendored_and_served():
    obj = git_repository()
    obj["apiVersion"] = "source.toolkit.fluxcd.io/v1beta2"
    assert "GitRepository version 'v1beta2' is not served by source.toolkit.fluxcd.io/gitrepositories.yaml " \
           "(served: v1)" in problems(obj)
    assert "no vendored CRD for example.com/v1 Widget" in problems(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert "needs apiVersion and kind" in problems({"metadata": {"name": "w"}})
    assert not has_crd({"apiVersion": "v1", "kind": "ConfigMap"})

