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
from raibid.errors import TemplateError, UsageError

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
