"""Rendering the templates: labels, validity, secrets, ordering, errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest

from raibid.cluster.components import kind_rank
from raibid.cluster.labels import COMPONENT, MANAGED_BY, PART_OF
from raibid.cluster.render import render, templates_dir
from raibid.config import load_config
from raibid.errors import ConfigError, TemplateError, UsageError

ROOT = Path(__file__).parents[1]
SECRETS = {"redis_password": "REDIS-PW-sentinel", "gitea_admin_password": "GITEA-PW-sentinel"}


@pytest.fixture
def manifests():
    return render(load_config(), secrets=SECRETS)


def test_every_object_carries_the_raibid_labels(manifests):
    assert manifests
    for m in manifests:
        labels = m.obj["metadata"]["labels"]
        assert labels[MANAGED_BY] == "raibid" and labels[PART_OF] == "raibid"
        assert labels[COMPONENT] == m.component


def test_core_kinds_validate_strictly_against_1_31(manifests):
    core = [m for m in manifests if m.kind != "HelmChart" and not m.api_version.startswith("keda.sh/")]
    assert {m.kind for m in core} >= {"Namespace", "Secret", "ConfigMap", "PersistentVolumeClaim",
                                      "StatefulSet", "Service"}
    for m in core:
        kubernetes_validate.validate(m.obj, "1.31", strict=True)


def test_secret_values_appear_only_in_secrets(manifests):
    import base64

    import yaml

    encoded = [base64.b64encode(v.encode()).decode() for v in SECRETS.values()]
    for m in manifests:
        text = yaml.safe_dump(m.obj)
        assert not any(v in text for v in SECRETS.values()), m.ref  # never in clear text
        if m.kind == "Secret":
            decoded = [base64.b64decode(v).decode() for v in m.obj["data"].values()]
            assert any(s in d for s in SECRETS.values() for d in decoded), m.ref
        else:
            assert not any(e in text for e in encoded), m.ref


def test_objects_follow_kapp_order(manifests):
    ranks = [kind_rank(m.kind) for m in manifests]
    assert ranks == sorted(ranks)
    kinds = [m.kind for m in manifests]
    assert kinds[0] == "Namespace"
    assert kinds.index("Secret") < kinds.index("StatefulSet")


def test_redis_is_durable_never_evicts_and_has_probes(manifests):
    by = {m.ref: m.obj for m in manifests}
    conf = by["ConfigMap/raibid-ci/raibid-redis-config"]["data"]["redis.conf"]
    for line in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"):
        assert line in conf.splitlines()
    sts = by["StatefulSet/raibid-ci/raibid-redis"]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["image"].startswith("redis:7")
    assert c["readinessProbe"] and c["livenessProbe"] and c["resources"]["limits"]
    assert by["Service/raibid-ci/raibid-redis"]["spec"]["type"] == "ClusterIP"
    assert by["PersistentVolumeClaim/raibid-ci/raibid-redis-data"]["spec"]["storageClassName"] == "local-path"


def test_helmcharts_pin_versions_and_gitea_values(manifests):
    import yaml

    charts = {m.name: m.obj for m in manifests if m.kind == "HelmChart"}
    assert set(charts) == {"raibid-gitea", "raibid-keda", "raibid-flux"}
    for hc in charts.values():
        assert hc["metadata"]["namespace"] == "kube-system"
        assert hc["spec"]["version"] and hc["spec"]["targetNamespace"]
    keda_version = tuple(int(x) for x in charts["raibid-keda"]["spec"]["version"].split("."))
    assert keda_version >= (2, 17)
    values = yaml.safe_load(charts["raibid-gitea"]["spec"]["valuesContent"])
    assert values["postgresql-ha"]["enabled"] is False and values["valkey-cluster"]["enabled"] is False
    assert values["gitea"]["config"]["packages"]["ENABLED"] is True
    assert "private" in values["gitea"]["config"]["webhook"]["ALLOWED_HOST_LIST"]
    assert values["gitea"]["admin"]["existingSecret"] == "raibid-gitea-admin"
    assert values["gitea"]["config"]["server"]["ROOT_URL"] == "http://127.0.0.1:30080/"
    assert values["service"]["http"]["nodePort"] == 30080
    flux = yaml.safe_load(charts["raibid-flux"]["spec"]["valuesContent"])
    assert flux["sourceController"]["create"] and flux["kustomizeController"]["create"]


def test_config_overrides_reach_the_manifests(monkeypatch):
    monkeypatch.setenv("RAIBID_CLUSTER_VERSIONS_REDIS_IMAGE", "redis:7.2.5")
    monkeypatch.setenv("RAIBID_CLUSTER_NAMESPACE", "ci")
    ms = render(load_config(), ["redis"], secrets=SECRETS)
    sts = next(m for m in ms if m.kind == "StatefulSet")
    assert sts.namespace == "ci"
    assert sts.obj["spec"]["template"]["spec"]["containers"][0]["image"] == "redis:7.2.5"
    assert [m.component for m in ms if m.kind == "HelmChart"] == []


def test_unknown_component_is_a_usage_error():
    with pytest.raises(UsageError) as e:
        render(load_config(), ["postgres"])
    assert "unknown component 'postgres'" in e.value.message and "redis" in (e.value.hint or "")


def test_missing_value_names_template_line_and_variable(tmp_path):
    custom = tmp_path / "t"
    shutil.copytree(templates_dir(), custom)
    (custom / "keda" / "helmchart.yaml.j2").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: {{ namespace }}\n"
        "data:\n  a: {{ cluster.no_such_value }}\n")
    with pytest.raises(TemplateError) as e:
        render(load_config(), ["keda"], templates=custom)
    assert e.value.message.startswith("templates/keda/helmchart.yaml.j2:7: missing template value")
    assert "no_such_value" in e.value.message


def test_wheel_ships_the_templates(tmp_path):
    subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    wheel = next(tmp_path.glob("raibid-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "raibid/_templates/redis/statefulset.yaml.j2" in names
    assert "raibid/_templates/gitea/helmchart.yaml.j2" in names


# ----------------------------------------------------------------------------- pods and their policies

ALL = ["redis", "gitea", "keda", "flux", "webhook", "mirror", "agents"]
ADMIN_SECRETS = ("raibid-gitea-token", "raibid-gitea-admin")


def everything(**env: str) -> list:
    cfg = load_config(None, env={"RAIBID_WEBHOOK_INGRESS_HOST": "ci.example.org", **env})
    return render(cfg, ALL, secrets={**SECRETS, "webhook_secret": "WEBHOOK-sentinel",
                                               "webhook_page_key": "PAGEKEY-sentinel"})


def pod_templates(manifests) -> list[tuple[str, str, dict, dict]]:
    """(ref, namespace, pod labels, pod spec) of every pod raibid's objects create, and the Gitea chart's pod."""
    out = []
    for m in manifests:
        spec = m.obj.get("spec") or {}
        path = {"Deployment": ("template",), "StatefulSet": ("template",),
                "CronJob": ("jobTemplate", "spec", "template"), "ScaledJob": ("jobTargetRef", "template")}.get(m.kind)
        if path is not None:
            t = spec
            for key in path:
                t = t[key]
            out.append((m.ref, m.namespace, t["metadata"]["labels"], t["spec"]))
        elif m.kind == "HelmChart" and m.name == "raibid-gitea":
            # The chart's selector labels: the chart's name and the release, which k3s names after the HelmChart.
            out.append((m.ref, spec["targetNamespace"], {"app.kubernetes.io/name": "gitea",
                                                          "app.kubernetes.io/instance": m.name}, {}))
    return out


def selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        assert e["operator"] == "In", e  # the only operator raibid's policies use
        if labels.get(e["key"]) not in e["values"]:
            return False
    return True


def policies(manifests) -> dict[str, dict]:
    return {m.name: m.obj for m in manifests if m.kind == "NetworkPolicy"}


def test_every_pod_is_selected_by_a_strictly_valid_network_policy():
    ms = everything()
    pols = policies(ms)
    assert set(pols) == {"raibid-redis", "raibid-gitea", "raibid-webhook", "raibid-mirror", "raibid-agent"}
    for p in pols.values():
        kubernetes_validate.validate(p, "1.31", strict=True)
    pods = pod_templates(ms)
    assert len(pods) == 1 + 1 + 1 + 1 + 10  # Redis, Gitea, the receiver, the mirror, two pools per type
    for ref, ns, labels, _ in pods:
        mine = [n for n, p in pols.items() if p["metadata"]["namespace"] == ns and selects(p["spec"]["podSelector"],
                                                                                          labels)]
        assert len(mine) == 1, (ref, mine)


def test_a_pod_without_its_policy_is_caught():
    ms = [m for m in everything() if not (m.kind == "NetworkPolicy" and m.name == "raibid-mirror")]
    pols = policies(ms)
    uncovered = [ref for ref, ns, labels, _ in pod_templates(ms)
                 if not any(selects(p["spec"]["podSelector"], labels) for p in pols.values())]
    assert uncovered == ["CronJob/raibid-ci/raibid-mirror"]


def test_no_pod_holds_an_admin_credential_and_no_build_container_a_secret():
    import yaml

    pods = pod_templates(everything(RAIBID_AGENTS_SECRETS='[{name: NPM, secret: npm, repos: [".*"]}]'))
    builds = 0
    for ref, _, _, spec in pods:
        text = yaml.safe_dump(spec)
        assert not any(s in text for s in ADMIN_SECRETS), ref
        secret_volumes = {v["name"] for v in spec.get("volumes", [])
                          if "secret" in v or any("secret" in s for s in (v.get("projected") or {}).get("sources", []))}
        for c in spec.get("containers", []):
            if c["name"] != "build":
                continue
            builds += 1
            assert "envFrom" not in c and all("valueFrom" not in e for e in c.get("env", [])), ref
            assert not {m["name"] for m in c["volumeMounts"]} & secret_volumes, ref
    assert builds == 10


def test_agent_pods_reach_only_dns_redis_gitea_and_the_internet():
    ms = everything(RAIBID_CLUSTER_NODE_IP="203.0.113.7")
    pol = policies(ms)["raibid-agent"]["spec"]
    assert pol["policyTypes"] == ["Ingress", "Egress"] and pol["ingress"] == []
    dns, redis_rule, gitea, internet = pol["egress"]
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert redis_rule == {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "raibid-redis"}}}],
                          "ports": [{"protocol": "TCP", "port": 6379}]}
    assert gitea["ports"] == [{"protocol": "TCP", "port": 3000}]
    # The Gitea selector is the chart's pods of raibid's release (the HelmChart's name).
    charts = {m.name: m.obj for m in ms if m.kind == "HelmChart"}
    assert gitea["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] in charts
    [block] = internet["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert block["ipBlock"]["except"] == ["10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
                                          "192.168.0.0/16", "203.0.113.7/32"]
    # Nothing else: no other namespace, no other pod (not the receiver, not another agent, not KEDA or Flux).
    for rule in pol["egress"][:3]:
        for peer in rule["to"]:
            assert "ipBlock" not in peer


def test_the_internet_rule_is_config_and_excludes_the_cluster_cidrs(tmp_path):
    off = policies(everything(RAIBID_AGENTS_INTERNET="false"))["raibid-agent"]["spec"]["egress"]
    assert [r for r in off if any("ipBlock" in p for p in r["to"])] == []
    ms = everything(RAIBID_CLUSTER_POD_CIDR="172.30.0.0/16", RAIBID_CLUSTER_SERVICE_CIDR="198.18.0.0/16",
                    RAIBID_AGENTS_EGRESS_ALLOW='["192.168.1.20/32"]')
    egress = policies(ms)["raibid-agent"]["spec"]["egress"]
    internet, extra = egress[3], egress[4]
    excluded = internet["to"][0]["ipBlock"]["except"]
    assert "198.18.0.0/16" in excluded and "172.30.0.0/16" not in excluded  # inside 172.16.0.0/12, listed once
    assert "127.0.0.1/32" not in excluded  # the default node_ip is loopback: not routable from a pod anyway
    assert extra == {"to": [{"ipBlock": {"cidr": "192.168.1.20/32"}}]}
    (tmp_path / "bad.yaml").write_text("cluster:\n  pod_cidr: 10.42.0.0/33\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "bad.yaml")
    assert "cluster.pod_cidr" in e.value.message


def test_redis_accepts_only_raibids_pods_and_kedas_operator():
    ms = everything()
    pol = policies(ms)["raibid-redis"]["spec"]
    assert pol["policyTypes"] == ["Ingress", "Egress"] and pol["egress"] == []
    [rule] = pol["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    ours, keda = rule["from"]
    names = {labels.get("app.kubernetes.io/name") for _, _, labels, _ in pod_templates(ms)}
    assert set(ours["podSelector"]["matchExpressions"][0]["values"]) == names - {"raibid-redis", "gitea"}
    # KEDA's operator runs the redis-streams scaler: its chart's label, in the namespace the HelmChart targets.
    chart = next(m.obj for m in ms if m.kind == "HelmChart" and m.name == "raibid-keda")
    assert keda == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": chart["spec"]["targetNamespace"]}},
                    "podSelector": {"matchLabels": {"app": "keda-operator"}}}


def test_gitea_and_the_mirror_accept_what_they_serve():
    pols = policies(everything())
    assert pols["raibid-gitea"]["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 3000},
                                                                  {"protocol": "TCP", "port": "ssh"}]}]
    assert pols["raibid-mirror"]["spec"] == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "raibid-mirror"}},
                                             "policyTypes": ["Ingress"], "ingress": []}


def test_network_policies_come_before_the_pods_they_isolate():
    kinds = [m.kind for m in everything()]
    last_policy = max(i for i, k in enumerate(kinds) if k == "NetworkPolicy")
    assert all(i > last_policy for i, k in enumerate(kinds) if k in ("StatefulSet", "Deployment", "CronJob",
                                                                      "ScaledJob", "HelmChart"))


def test_the_mirror_cronjob_is_hardened_like_the_receiver():
    ms = everything()
    cron = next(m.obj for m in ms if m.kind == "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] and psc["runAsUser"] == 10001 and psc["seccompProfile"] == {"type": "RuntimeDefault"}
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc == {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"] and c["resources"]["requests"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"] and volumes[mounts["/cache"]]["emptyDir"]["sizeLimit"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    assert refs == {"raibid-mirror-github", "raibid-gitea-mirror", "raibid-redis"}


# ----------------------------------------------------------------------------- Redis memory


def test_redis_maxmemory_is_below_its_memory_limit(tmp_path):
    from raibid.units import quantity_bytes, redis_bytes

    by = {m.ref: m.obj for m in render(load_config(), ["redis"], secrets=SECRETS)}
    conf = by["ConfigMap/raibid-ci/raibid-redis-config"]["data"]["redis.conf"].splitlines()
    [maxmemory] = [line.split()[1] for line in conf if line.startswith("maxmemory ")]
    assert "maxmemory-policy noeviction" in conf
    c = by["StatefulSet/raibid-ci/raibid-redis"]["spec"]["template"]["spec"]["containers"][0]
    limit = c["resources"]["limits"]["memory"]
    assert c["resources"]["requests"]["memory"] == limit == "2Gi" and maxmemory == "1536mb"
    assert redis_bytes(maxmemory) < quantity_bytes(limit)
    (tmp_path / "r.yaml").write_text("redis:\n  memory: 1Gi\n  maxmemory: 1gb\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "r.yaml")
    assert "redis.maxmemory (1gb) must be above 0 and below redis.memory (1Gi)" in e.value.message
    (tmp_path / "r.yaml").write_text("redis:\n  maxmemory: lots\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "r.yaml")
    assert e.value.message.startswith("redis.maxmemory: 'lots' is not a Redis memory size")


def test_a_log_flood_gets_oom_errors_while_redis_stays_up_and_job_records_stay_readable(tmp_path):
    """The rendered maxmemory settings on a real redis-server, scaled down: a flood of XADDs is refused."""
    import redis as redis_lib

    from raibid.queue import JobSpec, Queue
    from tests.harness.redis_server import RedisServer

    by = {m.ref: m.obj for m in render(load_config(), ["redis"], secrets=SECRETS)}
    conf = dict(line.split(None, 1) for line in by["ConfigMap/raibid-ci/raibid-redis-config"]["data"][
        "redis.conf"].splitlines() if line and not line.startswith("#") and " " in line)
    from raibid.units import quantity_bytes, redis_bytes

    limit = by["StatefulSet/raibid-ci/raibid-redis"]["spec"]["template"]["spec"]["containers"][0]["resources"][
        "limits"]["memory"]
    assert redis_bytes(conf["maxmemory"]) < quantity_bytes(limit) and conf["maxmemory-policy"] == "noeviction"
    server = RedisServer(tmp_path / "redis").start()
    try:
        r = server.client()
        q = Queue(r, url=server.url)
        job = q.submit(JobSpec(repo="acme/app", ref="main", agent="rust-untrusted"))
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory-policy", conf["maxmemory-policy"])
        r.config_set("maxmemory", str(used + 8 * 2**20))  # the 1536mb default, scaled down to 8 MiB of headroom
        piece = "x" * 64 * 1024  # the largest log piece an agent writes
        refused = written = 0
        for _ in range(400):  # 25 MiB: three times what fits
            try:
                r.xadd("raibid:log:flood", {"line": piece})
                written += 1
            except redis_lib.exceptions.OutOfMemoryError:  # the server's "-OOM command not allowed" reply
                refused += 1
        assert written and refused > 200
        assert server.proc is not None and server.proc.poll() is None and r.ping()
        assert q.get(job.id).repo == "acme/app"  # nothing evicted: the job record is whole
        assert r.dbsize() >= 2
        r.delete("raibid:log:flood")  # once the flood is gone, writes work again
        r.xadd("raibid:log:other", {"line": "ok"})
    finally:
        server.stop()
