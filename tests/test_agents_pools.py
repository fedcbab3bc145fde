"""The pool manifests (templates/agents): KEDA schema, strict Job validation, lag mode, security, secrets."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from raibid.cluster.render import render
from raibid.config import load_config
from tests.harness.crdschema import validate_cr

SECRETS = {"redis_password": "REDIS-PW-sentinel", "gitea_admin_password": "GITEA-PW-sentinel"}


def pools(tmp_path=None, text: str | None = None) -> list:
    cfg_path = None
    if text is not None:
        cfg_path = tmp_path / "raibid.yaml"
        cfg_path.write_text(text)
    return [m for m in render(load_config(cfg_path), ["agents"], secrets=SECRETS) if m.component == "agents"]


def scaled_jobs(ms) -> dict[str, dict]:
    return {m.name: m.obj for m in ms if m.kind == "ScaledJob"}


def as_job(sj: dict) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": sj["metadata"]["name"], "namespace": "x"},
            "spec": copy.deepcopy(sj["spec"]["jobTargetRef"])}


def test_every_pool_validates_against_keda_and_strict_kubernetes(tmp_path):
    ms = pools(tmp_path, "agents:\n  pools: [generic, rust, python, node, go, gpu]\n"
                         "  types:\n    big:\n      extends: rust\n      cpu: '8'\n")
    sjs = scaled_jobs(ms)
    assert set(sjs) == {f"raibid-agent-{t}" for t in ("generic", "rust", "python", "node", "go", "gpu", "big")}
    for m in ms:
        if m.api_version.startswith("keda.sh/"):
            validate_cr(m.obj)
        else:
            kubernetes_validate.validate(m.obj, "1.31", strict=True)
    for sj in sjs.values():
        kubernetes_validate.validate(as_job(sj), "1.31", strict=True)


def test_trigger_is_lag_mode_with_string_metadata():
    for name, sj in scaled_jobs(pools()).items():
        (trigger,) = sj["spec"]["triggers"]
        assert trigger["type"] == "redis-streams"
        meta = trigger["metadata"]
        assert all(isinstance(v, str) for v in meta.values()), meta
        agent = name.removeprefix("raibid-agent-")
        assert meta == {"address": "raibid-redis.raibid-ci.svc.cluster.local:6379", "stream": f"raibid:jobs:{agent}",
                        "consumerGroup": "raibid-agents", "lagCount": "1", "activationLagCount": "0"}
        assert trigger["authenticationRef"] == {"name": "raibid-redis"}


def test_scaling_settings_and_job_limits():
    cfg = load_config()
    for sj in scaled_jobs(pools()).values():
        spec = sj["spec"]
        assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] == 8 and spec["pollingInterval"] == 5
        assert spec["rollout"] == {"strategy": "gradual"}
        assert spec["scalingStrategy"] == {"strategy": "accurate"}
        assert spec["successfulJobsHistoryLimit"] <= 5 and spec["failedJobsHistoryLimit"] <= 5
        job = spec["jobTargetRef"]
        assert job["backoffLimit"] == 0 and job["ttlSecondsAfterFinished"] > 0
        assert job["activeDeadlineSeconds"] > max(cfg.agents.max_timeout, cfg.queue.default_timeout)
        assert job["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize(("strategy", "expected"), [("eager", {"strategy": "eager"}), ("default", None)])
def test_strategy_is_selectable(tmp_path, strategy, expected):
    sj = scaled_jobs(pools(tmp_path, f"agents:\n  scaling_strategy: {strategy}\n"))["raibid-agent-generic"]
    assert sj["spec"].get("scalingStrategy") == expected


def test_pod_is_locked_down_and_runs_the_agent():
    for name, sj in scaled_jobs(pools()).items():
        pod = sj["spec"]["jobTargetRef"]["template"]["spec"]
        assert pod["serviceAccountName"] == "raibid-agent" and pod["automountServiceAccountToken"] is False
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] and psc["runAsUser"] > 0 and psc["seccompProfile"] == {"type": "RuntimeDefault"}
        (c,) = pod["containers"]
        assert c["command"] == ["raibid", "agents", "run", "--type", name.removeprefix("raibid-agent-")]
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"]
        assert c["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["workspace"] == {"name": "workspace", "emptyDir": {}}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/workspace"]["name"] == "workspace"


def test_secrets_come_from_secret_refs_and_pod_name_from_the_downward_api():
    ms = pools()
    for m in ms:
        text = yaml.safe_dump(m.obj)
        assert not any(v in text for v in SECRETS.values()), m.ref
    for sj in scaled_jobs(ms).values():
        env = {e["name"]: e for e in sj["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["env"]}
        assert env["RAIBID_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "raibid-redis", "key": "password"}
        assert env["RAIBID_GITEA_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "raibid-gitea-token"
        assert "value" not in env["RAIBID_REDIS_PASSWORD"] and "value" not in env["RAIBID_GITEA_TOKEN"]
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["RAIBID_REDIS_URL"]["value"] == "redis://raibid-redis.raibid-ci.svc.cluster.local:6379/0"
    ta = next(m.obj for m in ms if m.kind == "TriggerAuthentication")
    assert ta["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "raibid-redis", "key": "password"}]


def test_caches_mount_the_types_pvc_and_set_the_env():
    ms = pools()
    pvcs = {m.name: m.obj for m in ms if m.kind == "PersistentVolumeClaim"}
    assert set(pvcs) == {f"raibid-agent-cache-{t}" for t in ("rust", "python", "node", "go")}
    for pvc in pvcs.values():
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and pvc["spec"]["storageClassName"] == "local-path"
    sjs = scaled_jobs(ms)
    expected = {"rust": {"CARGO_HOME", "SCCACHE_DIR", "RUSTC_WRAPPER"}, "python": {"PIP_CACHE_DIR", "UV_CACHE_DIR"},
                "node": {"npm_config_cache"}, "go": {"GOMODCACHE", "GOCACHE"}}
    for t, names in expected.items():
        pod = sjs[f"raibid-agent-{t}"]["spec"]["jobTargetRef"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert names <= set(env), t
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["cache"]["persistentVolumeClaim"]["claimName"] == f"raibid-agent-cache-{t}"
        cache_mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "cache"]
        assert cache_mounts and all(m["subPath"] for m in cache_mounts)
    generic = sjs["raibid-agent-generic"]["spec"]["jobTargetRef"]["template"]["spec"]
    assert [v["name"] for v in generic["volumes"]] == ["workspace"]


def test_config_overrides_reach_the_pool(tmp_path):
    sjs = scaled_jobs(pools(tmp_path, (
        "agents:\n  polling_interval: 2\n  types:\n"
        "    rust:\n      max_replicas: 2\n      lag_count: 3\n      image: reg.local/rust:1\n"
        "    ml:\n      extends: python\n      gpu: 1\n      memory: 32Gi\n      env: {HF_HOME: /cache/hf}\n"
        "      caches: {hf: /cache/hf}\n")))
    rust = sjs["raibid-agent-rust"]["spec"]
    assert rust["maxReplicaCount"] == 2 and rust["pollingInterval"] == 2
    assert rust["triggers"][0]["metadata"]["lagCount"] == "3"
    assert rust["jobTargetRef"]["template"]["spec"]["containers"][0]["image"] == "reg.local/rust:1"
    ml = sjs["raibid-agent-ml"]["spec"]["jobTargetRef"]["template"]["spec"]
    c = ml["containers"][0]
    assert ml["runtimeClassName"] == "nvidia" and c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert c["resources"]["limits"]["memory"] == "32Gi" and c["image"].endswith("/raibid/agent-python:latest")
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HF_HOME"] == "/cache/hf" and env["PIP_CACHE_DIR"] == "/cache/pip"
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/cache/hf", "/cache/pip"}


def test_every_builtin_type_has_an_image_recipe_running_as_the_pods_uid():
    from raibid.agents.pools import AGENT_UID
    from raibid.agents.types import BUILTIN
    from raibid.cluster.render import templates_dir

    for name in BUILTIN:
        text = (templates_dir() / "images" / name / "Dockerfile").read_text()
        assert f"USER {AGENT_UID}:{AGENT_UID}" in text and f"--uid {AGENT_UID}" in text, name
        assert "pip install --no-cache-dir /src/raibid" in text and "git" in text, name
