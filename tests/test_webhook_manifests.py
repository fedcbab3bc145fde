"""The webhook component's manifests: strict validity, a locked-down pod, probes, and a kept secret."""

from __future__ import annotations

import base64

import kubernetes_validate
import pytest
import yaml

from raibid.cluster.components import COMPONENTS, component
from raibid.cluster.render import render
from raibid.cluster.secrets import generated_secrets_from
from raibid.config import load_config

SECRETS = {"redis_password": "REDIS-PW-sentinel", "gitea_admin_password": "GITEA-PW-sentinel",
           "webhook_secret": "WEBHOOK-sentinel", "webhook_page_key": "PAGEKEY-sentinel"}


@pytest.fixture
def objects():
    return {m.ref: m.obj for m in render(load_config(), ["webhook"], secrets=SECRETS)}


def test_webhook_is_a_registered_component_with_its_kinds():
    assert "webhook" in COMPONENTS
    assert ("apps/v1", "Deployment") in component("webhook").kinds


def test_every_webhook_object_validates_strictly(objects):
    assert {o["kind"] for o in objects.values()} == {"Namespace", "Secret", "ConfigMap", "Deployment", "Service",
                                                     "NetworkPolicy"}
    for obj in objects.values():
        kubernetes_validate.validate(obj, "1.31", strict=True)


def test_the_receiver_pod_is_locked_down_with_limits_and_health_probes(objects):
    dep = objects["Deployment/raibid-ci/raibid-webhook"]
    pod = dep["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["command"] == ["raibid", "webhook", "serve"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8080}]
    svc = objects["Service/raibid-ci/raibid-webhook"]
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 8080


def test_secrets_reach_the_pod_only_through_secret_refs(objects):
    [c] = objects["Deployment/raibid-ci/raibid-webhook"]["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs["RAIBID_WEBHOOK_SECRET"] == {"name": "raibid-webhook", "key": "secret"}
    assert refs["RAIBID_WEBHOOK_PAGE_KEY"] == {"name": "raibid-webhook", "key": "page-key", "optional": True}
    assert refs["RAIBID_REDIS_PASSWORD"] == {"name": "raibid-redis", "key": "password"}
    assert refs["RAIBID_GITEA_TOKEN"] == {"name": "raibid-gitea-webhook", "key": "token", "optional": True}
    for ref, obj in objects.items():
        text = yaml.safe_dump(obj)
        if obj["kind"] == "Secret":
            assert base64.b64decode(obj["data"]["secret"]).decode() == "WEBHOOK-sentinel"
            assert base64.b64decode(obj["data"]["page-key"]).decode() == "PAGEKEY-sentinel"
        else:
            for sentinel in (b"WEBHOOK-sentinel", b"PAGEKEY-sentinel"):
                assert sentinel.decode() not in text and base64.b64encode(sentinel).decode() not in text, ref


def test_the_generated_secret_is_read_back_so_a_reapply_keeps_it(objects):
    live = [objects["Secret/raibid-ci/raibid-webhook"]]
    assert generated_secrets_from(live, "raibid-ci") == {"webhook_secret": "WEBHOOK-sentinel",
                                                         "webhook_page_key": "PAGEKEY-sentinel"}
    assert objects["Secret/raibid-ci/raibid-webhook"]["metadata"]["annotations"]["raibid.dev/generated"] == "true"


def test_the_pod_config_carries_mirror_and_webhook_settings_without_secrets(objects, monkeypatch):
    cm = objects["ConfigMap/raibid-ci/raibid-webhook-config"]
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    assert cfg["mirror"]["target_org"] == "mirrors" and cfg["webhook"]["secret_env"] == "RAIBID_WEBHOOK_SECRET"
    assert "lists" not in cfg["mirror"]  # list files stay on the host that ran `cluster up`


def test_the_pod_config_loads_with_the_config_loader(objects, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(objects["ConfigMap/raibid-ci/raibid-webhook-config"]["data"]["config.yaml"])
    cfg = load_config(path)
    assert cfg.webhook.listen == "0.0.0.0:8080" and cfg.mirror.trigger.branches == "^(main|master)$"


def test_an_ingress_exposes_only_the_github_hook_and_the_job_pages_when_a_host_is_set(monkeypatch):
    monkeypatch.setenv("RAIBID_WEBHOOK_INGRESS_HOST", "ci.example.org")
    monkeypatch.setenv("RAIBID_WEBHOOK_LISTEN", "0.0.0.0:9000")
    objs = {m.ref: m.obj for m in render(load_config(), ["webhook"], secrets=SECRETS)}
    ing = objs["Ingress/raibid-ci/raibid-webhook"]
    kubernetes_validate.validate(ing, "1.31", strict=True)
    [rule] = ing["spec"]["rules"]
    assert rule["host"] == "ci.example.org" and ing["spec"]["ingressClassName"] == "traefik"
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/hooks/github", "Exact"),
                                                                          ("/jobs/", "Prefix")]
    assert objs["Service/raibid-ci/raibid-webhook"]["spec"]["ports"][0]["port"] == 9000


def test_the_receiver_accepts_only_its_http_port(monkeypatch):
    monkeypatch.setenv("RAIBID_WEBHOOK_LISTEN", "0.0.0.0:9000")
    objs = {m.ref: m.obj for m in render(load_config(), ["webhook"], secrets=SECRETS)}
    pol = objs["NetworkPolicy/raibid-ci/raibid-webhook"]
    kubernetes_validate.validate(pol, "1.31", strict=True)
    assert pol["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "raibid-webhook"}}
    assert pol["spec"]["policyTypes"] == ["Ingress"]
    assert pol["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9000}]}]  # from anywhere: GitHub, Gitea
