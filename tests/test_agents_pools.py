"""The pool manifests (templates/agents): two pools per type, the two-container pod, secrets, caches, KEDA."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from raibid.agents.trust import split_pool
from raibid.cluster.render import render
from raibid.config import load_config
from raibid.images.context import current
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


TYPES = ("generic", "rust", "python", "node", "go")


def pod_of(sj: dict) -> dict:
    return sj["spec"]["jobTargetRef"]["template"]["spec"]


def containers(sj: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod_of(sj)["containers"]}


def test_every_pool_validates_against_keda_and_strict_kubernetes(tmp_path):
    ms = pools(tmp_path, "agents:\n  pools: [generic, rust, python, node, go, gpu]\n"
                         "  types:\n    big:\n      extends: rust\n      cpu: '8'\n"
                         "  secrets:\n    - {name: NPM_TOKEN, secret: npm, key: token, repos: ['me/.*']}\n")
    sjs = scaled_jobs(ms)
    names = ("generic", "rust", "python", "node", "go", "gpu", "big")
    assert set(sjs) == {f"raibid-agent-{t}{s}" for t in names for s in ("", "-untrusted")}
    for m in ms:
        if m.api_version.startswith("keda.sh/"):
            validate_cr(m.obj)
        else:
            kubernetes_validate.validate(m.obj, "1.31", strict=True)
    for sj in sjs.values():
        kubernetes_validate.validate(as_job(sj), "1.31", strict=True)


def test_each_type_has_a_trusted_and_an_untrusted_pool_on_its_own_stream():
    sjs = scaled_jobs(pools())
    assert len(sjs) == 2 * len(TYPES)
    for name, sj in sjs.items():
        (trigger,) = sj["spec"]["triggers"]
        assert trigger["type"] == "redis-streams"
        meta = trigger["metadata"]
        assert all(isinstance(v, str) for v in meta.values()), meta
        pool = name.removeprefix("raibid-agent-")
        agent_type, trusted = split_pool(pool)
        assert meta == {"address": "raibid-redis.raibid-ci.svc.cluster.local:6379", "stream": f"raibid:jobs:{pool}",
                        "consumerGroup": "raibid-agents", "lagCount": "1", "activationLagCount": "0"}
        assert trigger["authenticationRef"] == {"name": "raibid-redis"}
        labels = {"raibid.dev/agent-type": agent_type, "raibid.dev/pool": pool,
                  "raibid.dev/trust": "trusted" if trusted else "untrusted"}
        assert labels.items() <= sj["metadata"]["labels"].items()
        assert labels.items() <= sj["spec"]["jobTargetRef"]["template"]["metadata"]["labels"].items()
        assert containers(sj)["agent"]["command"] == ["raibid", "agents", "run", "--type", pool,
                                                      "--step-runner", "unix:/run/raibid/steps.sock"]


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
    sjs = scaled_jobs(pools(tmp_path, f"agents:\n  scaling_strategy: {strategy}\n"))
    for name in ("raibid-agent-generic", "raibid-agent-generic-untrusted"):
        assert sjs[name]["spec"].get("scalingStrategy") == expected


def test_pod_is_locked_down_with_an_agent_and_a_build_container():
    for sj in scaled_jobs(pools()).values():
        pod = pod_of(sj)
        assert pod["serviceAccountName"] == "raibid-agent" and pod["automountServiceAccountToken"] is False
        assert pod["shareProcessNamespace"] is False and pod["enableServiceLinks"] is False
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] and psc["runAsUser"] == psc["runAsGroup"] == psc["fsGroup"] == 10001
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        cs = containers(sj)
        assert list(cs) == ["agent", "build"]
        assert cs["build"]["command"] == ["raibid", "agents", "step-runner", "--socket", "/run/raibid/steps.sock"]
        for c in cs.values():
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["runAsNonRoot"] is True
            assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"]
        assert cs["agent"]["securityContext"]["readOnlyRootFilesystem"] is True
        # The type's budget goes to the build; the agent has a small fixed one.
        assert cs["build"]["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
        assert cs["build"]["resources"]["limits"]["ephemeral-storage"] == "20Gi"
        assert cs["agent"]["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                            "limits": {"cpu": "1", "memory": "1Gi"}}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["workspace"]["emptyDir"] == {"sizeLimit": "20Gi"}
        assert volumes["run"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Mi"}
        for c in cs.values():
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts["/workspace"] == "workspace" and mounts["/run/raibid"] == "run"
            assert volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"]
        tmp = {c: next(m["name"] for m in cs[c]["volumeMounts"] if m["mountPath"] == "/tmp") for c in cs}
        assert tmp["agent"] != tmp["build"]  # the agent's scratch files are not the build's


def test_workspace_size_is_config(tmp_path):
    for sj in scaled_jobs(pools(tmp_path, "agents:\n  workspace_size: 5Gi\n")).values():
        volumes = {v["name"]: v for v in pod_of(sj)["volumes"]}
        assert volumes["workspace"]["emptyDir"]["sizeLimit"] == "5Gi"


def secret_volumes(pod: dict) -> set[str]:
    """Volumes that carry Secret data: secret volumes and projected volumes with a secret source."""
    out = set()
    for v in pod["volumes"]:
        if "secret" in v or any("secret" in src for src in (v.get("projected") or {}).get("sources", [])):
            out.add(v["name"])
    return out


def assert_build_holds_no_secret(sj: dict) -> None:
    pod = pod_of(sj)
    build = containers(sj)["build"]
    assert "envFrom" not in build
    for e in build.get("env", []):
        assert "valueFrom" not in e, e  # no secretKeyRef, nor any other indirection
    assert not {m["name"] for m in build["volumeMounts"]} & secret_volumes(pod)
    assert not any(m["mountPath"].startswith("/var/run/raibid") for m in build["volumeMounts"])


def test_secrets_reach_only_the_agent_container_through_secret_refs():
    ms = pools()
    for m in ms:
        text = yaml.safe_dump(m.obj)
        assert not any(v in text for v in SECRETS.values()), m.ref
    for sj in scaled_jobs(ms).values():
        agent = containers(sj)["agent"]
        env = {e["name"]: e for e in agent["env"]}
        assert env["RAIBID_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "raibid-redis", "key": "password"}
        assert env["RAIBID_GITEA_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "raibid-gitea-agent"
        assert env["RAIBID_GITEA_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"
        assert "value" not in env["RAIBID_REDIS_PASSWORD"] and "value" not in env["RAIBID_GITEA_TOKEN"]
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["RAIBID_REDIS_URL"]["value"] == "redis://raibid-redis.raibid-ci.svc.cluster.local:6379/0"
        assert_build_holds_no_secret(sj)
        assert "raibid-gitea-token" not in yaml.safe_dump(sj)
    ta = next(m.obj for m in ms if m.kind == "TriggerAuthentication")
    assert ta["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "raibid-redis", "key": "password"}]


JOB_SECRETS = ("agents:\n  secrets:\n"
               "    - {name: NPM_TOKEN, secret: npm-publish, key: token, repos: ['me/.*']}\n"
               "    - {name: PYPI, secret: pypi, repos: ['me/lib']}\n")


def test_job_secrets_are_files_in_the_trusted_agent_container_only(tmp_path):
    sjs = scaled_jobs(pools(tmp_path, JOB_SECRETS))
    for name, sj in sjs.items():
        pod = pod_of(sj)
        assert_build_holds_no_secret(sj)
        if name.endswith("-untrusted"):
            assert secret_volumes(pod) == set(), name  # no job secret, even on a compromised agent
            assert not any(m["mountPath"].startswith("/var/run/raibid") for m in containers(sj)["agent"]["volumeMounts"])
            continue
        (vol,) = [v for v in pod["volumes"] if v["name"] in secret_volumes(pod)]
        assert vol["projected"]["defaultMode"] == 0o440
        assert vol["projected"]["sources"] == [
            {"secret": {"name": "npm-publish", "optional": True, "items": [{"key": "token", "path": "NPM_TOKEN"}]}},
            {"secret": {"name": "pypi", "optional": True, "items": [{"key": "PYPI", "path": "PYPI"}]}}]
        (mount,) = [m for m in containers(sj)["agent"]["volumeMounts"] if m["name"] == vol["name"]]
        assert mount == {"name": vol["name"], "mountPath": "/var/run/raibid/secrets", "readOnly": True}


def test_the_settings_env_is_read_back_by_the_config_loader(tmp_path):
    ms = pools(tmp_path, JOB_SECRETS + "  trusted:\n    owners: [me]\n    repos: ['org/(a|b)']\n")
    for sj in scaled_jobs(ms).values():
        env = {e["name"]: e["value"] for e in containers(sj)["agent"]["env"] if "value" in e}
        cfg = load_config(None, env={k: v for k, v in env.items() if k.startswith("RAIBID_AGENTS_")})
        assert cfg.agents.trusted.owners == ["me"] and cfg.agents.trusted.repos == ["org/(a|b)"]
        assert [(s.name, s.secret, s.key, s.repos) for s in cfg.agents.secrets] == [
            ("NPM_TOKEN", "npm-publish", "token", ["me/.*"]), ("PYPI", "pypi", "PYPI", ["me/lib"])]


def test_every_setting_agents_run_reads_reaches_the_agent_container(tmp_path):
    """What `raibid agents run` reads from the config must be what the operator configured, not a default."""
    text = ("agents:\n  max_pids: 77\n  log_max_bytes: 1048576\n  log_line_max_bytes: 4096\n  max_timeout: 600\n"
            "  wait: 7\nqueue:\n  log_high_water: 0.5\n  heartbeat: 11\n  min_idle: 99\n  max_deliveries: 5\n  log_maxlen: 1234\n"
            "redis:\n  prefix: ci2\n")
    want = load_config(_write(tmp_path, text))
    for sj in scaled_jobs(pools(tmp_path, text)).values():
        env = {e["name"]: e["value"] for e in containers(sj)["agent"]["env"] if "value" in e}
        got = load_config(None, env={k: v for k, v in env.items() if k.startswith("RAIBID_")})
        for section, key in [("agents", "max_pids"), ("agents", "log_max_bytes"), ("agents", "log_line_max_bytes"),
                             ("agents", "max_timeout"), ("agents", "wait"), ("queue", "heartbeat"),
                             ("queue", "min_idle"), ("queue", "max_deliveries"), ("queue", "log_maxlen"),
                             ("queue", "log_high_water"),
                             ("redis", "prefix")]:
            assert getattr(getattr(got, section), key) == getattr(getattr(want, section), key), (section, key)


def _write(tmp_path, text):
    p = tmp_path / "want.yaml"
    p.write_text(text)
    return p


def test_caches_are_per_trust_level_and_mounted_in_the_build_container_only():
    ms = pools()
    pvcs = {m.name: m.obj for m in ms if m.kind == "PersistentVolumeClaim"}
    assert set(pvcs) == {f"raibid-agent-cache-{t}-{trust}" for t in ("rust", "python", "node", "go")
                         for trust in ("trusted", "untrusted")}
    for pvc in pvcs.values():
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and pvc["spec"]["storageClassName"] == "local-path"
    sjs = scaled_jobs(ms)
    expected = {"rust": {"CARGO_HOME", "SCCACHE_DIR", "RUSTC_WRAPPER"}, "python": {"PIP_CACHE_DIR", "UV_CACHE_DIR"},
                "node": {"npm_config_cache"}, "go": {"GOMODCACHE", "GOCACHE"}}
    for t, names in expected.items():
        claims = {}
        for pool, trust in ((t, "trusted"), (f"{t}-untrusted", "untrusted")):
            sj = sjs[f"raibid-agent-{pool}"]
            pod = pod_of(sj)
            env = {e["name"]: e.get("value") for e in containers(sj)["build"]["env"]}
            assert names <= set(env), t
            volumes = {v["name"]: v for v in pod["volumes"]}
            claims[trust] = volumes["cache"]["persistentVolumeClaim"]["claimName"]
            assert claims[trust] == f"raibid-agent-cache-{t}-{trust}"
            cache_mounts = [m for m in containers(sj)["build"]["volumeMounts"] if m["name"] == "cache"]
            assert cache_mounts and all(m["subPath"] for m in cache_mounts)
            assert not [m for m in containers(sj)["agent"]["volumeMounts"] if m["name"] == "cache"]
        assert claims["trusted"] != claims["untrusted"]
    generic = pod_of(sjs["raibid-agent-generic"])
    assert "cache" not in {v["name"] for v in generic["volumes"]}


def test_config_overrides_reach_the_pool(tmp_path):
    sjs = scaled_jobs(pools(tmp_path, (
        "agents:\n  polling_interval: 2\n  types:\n"
        "    rust:\n      max_replicas: 2\n      lag_count: 3\n      image: reg.local/rust:1\n"
        "    ml:\n      extends: python\n      gpu: 1\n      memory: 32Gi\n      env: {HF_HOME: /cache/hf}\n"
        "      caches: {hf: /cache/hf}\n")))
    for pool in ("rust", "rust-untrusted"):
        rust = sjs[f"raibid-agent-{pool}"]["spec"]
        assert rust["maxReplicaCount"] == 2 and rust["pollingInterval"] == 2
        assert rust["triggers"][0]["metadata"]["lagCount"] == "3"
        assert {c["image"] for c in rust["jobTargetRef"]["template"]["spec"]["containers"]} == {"reg.local/rust:1"}
    ml = sjs["raibid-agent-ml"]
    c = containers(ml)["build"]
    assert pod_of(ml)["runtimeClassName"] == "nvidia" and c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in containers(ml)["agent"]["resources"]["requests"]
    assert c["resources"]["limits"]["memory"] == "32Gi" and c["image"].endswith(f"/raibid/agent-python:{current().tag}")
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HF_HOME"] == "/cache/hf" and env["PIP_CACHE_DIR"] == "/cache/pip"
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/cache/hf", "/cache/pip"}


def test_every_builtin_type_has_an_image_recipe_running_as_the_pods_uid():
    from raibid.agents.pools import AGENT_UID
    from raibid.agents.types import BUILTIN
    from raibid.cluster.render import templates_dir
    from raibid.images.catalog import image_for_type

    for name in BUILTIN:
        text = (templates_dir() / "images" / (image_for_type(name) or name) / "Dockerfile").read_text()
        assert f"USER {AGENT_UID}:{AGENT_UID}" in text and f"--uid {AGENT_UID}" in text, name
        assert "pip install --no-cache-dir /src/raibid" in text and "git" in text, name


def test_the_image_pool_has_a_rootless_buildkit_sidecar_that_holds_nothing(tmp_path):
    ms = pools(tmp_path, "agents:\n  pools: [generic, image]\n"
                         "  secrets:\n    - {name: RAIBID_REGISTRY_PUSH, secret: raibid-gitea-builder, key: token, "
                         "repos: ['me/.*']}\n")
    sjs = scaled_jobs(ms)
    for name in ("raibid-agent-image", "raibid-agent-image-untrusted"):
        sj = sjs[name]
        kubernetes_validate.validate(as_job(sj), "1.31", strict=True)
        validate_cr(sj)
        pod = pod_of(sj)
        assert [c["name"] for c in pod["containers"]] == ["agent", "build", "buildkitd"]
        assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "hostPath" not in yaml.safe_dump(pod) and "hostNetwork" not in pod
        kit = containers(sj)["buildkitd"]
        assert kit["image"].endswith("moby/buildkit:v0.32.2-rootless")
        assert kit["args"] == ["--addr", "tcp://127.0.0.1:1234", "--oci-worker-no-process-sandbox"]
        sc = kit["securityContext"]
        assert sc["privileged"] is False and sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000
        assert sc["seccompProfile"] == {"type": "Unconfined"} and sc["appArmorProfile"] == {"type": "Unconfined"}
        assert "env" not in kit and "envFrom" not in kit  # no Secret, no raibid setting
        assert [v["name"] for v in kit["volumeMounts"]] == ["buildkitd"]
        init = pod["initContainers"]
        assert [c["name"] for c in init] == ["buildctl"] and "env" not in init[0]
        assert init[0]["securityContext"]["allowPrivilegeEscalation"] is False
        assert init[0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        build = containers(sj)["build"]
        assert {"name": "buildctl", "mountPath": "/opt/buildkit/bin", "readOnly": True} in build["volumeMounts"]
        assert {e["name"]: e.get("value") for e in build["env"]}["PATH"].startswith("/opt/buildkit/bin:")
        assert build["securityContext"]["allowPrivilegeEscalation"] is False
        assert_build_holds_no_secret(sj)
        # Only the trusted pool's agent container has the push credential's file.
        mounts = [v["name"] for v in containers(sj)["agent"]["volumeMounts"]]
        assert ("job-secrets" in mounts) == (name == "raibid-agent-image")
        for c in (kit, *init):
            assert "job-secrets" not in yaml.safe_dump(c)
    # Other types keep the two-container pod.
    assert [c["name"] for c in pod_of(sjs["raibid-agent-generic"])["containers"]] == ["agent", "build"]
    assert "initContainers" not in pod_of(sjs["raibid-agent-generic"])
