"""Image lookups in a registry speaking the token flow; the doctor's image, k3s-registry and userns checks;
`cluster up` checking (and building) images."""

from __future__ import annotations

import base64

import pytest

from raibid.config import Config
from raibid.doctor.checks import Status
from raibid.doctor.images import image_checks_for, registries_yaml_check, userns_check
from raibid.errors import AuthError
from raibid.images import catalog
from raibid.images.registry import Registry, parse_challenge
from tests.harness.kubefake import KEDA_CRDS, K3sController
from tests.harness.registryfake import RegistryFake

NS = "raibid-ci"


@pytest.fixture
def registry():
    fake = RegistryFake({"raibid-ci": "pull-token"}).start()
    yield fake
    fake.stop()


def test_a_manifest_lookup_follows_the_challenge_to_the_token_endpoint(registry):
    registry.push("raibid/raibid", "1-abc", ("linux/arm64", "linux/amd64"))
    client = Registry(registry.base_url, "raibid-ci", "pull-token")
    found = client.manifests([("raibid/raibid", "1-abc"), ("raibid/agent-rust", "1-abc")])
    assert [(m.exists, m.platforms) for m in found] == [(True, ["linux/amd64", "linux/arm64"]), (False, [])]
    assert found[0].digest and found[0].digest.startswith("sha256:")
    # One challenge, one token for both repositories, then one manifest request each.
    assert [(r.path, r.status) for r in registry.requests()] == [
        ("/v2/raibid/raibid/manifests/1-abc", 401), ("/v2/token", 200),
        ("/v2/raibid/raibid/manifests/1-abc", 200), ("/v2/raibid/agent-rust/manifests/1-abc", 404)]
    assert client.requests == 4


def test_a_wrong_pull_credential_is_an_auth_error(registry):
    with pytest.raises(AuthError, match="refused the pull credential"):
        Registry(registry.base_url, "raibid-ci", "wrong").manifest("raibid/raibid", "1")


def test_parse_challenge():
    assert parse_challenge('Bearer realm="http://r/v2/token",service="container_registry",scope="a:b:pull"') == {
        "realm": "http://r/v2/token", "service": "container_registry", "scope": "a:b:pull"}
    assert parse_challenge('Basic realm="x"') == {}


def test_doctor_image_checks_name_what_is_missing_and_the_wrong_architecture(registry):
    refs = [("raibid/raibid", "1"), ("raibid/agent-rust", "1"), ("raibid/agent-go", "1")]
    registry.push("raibid/raibid", "1", ("linux/arm64",))
    registry.push("raibid/agent-go", "1", ("linux/amd64",))
    found = Registry(registry.base_url, "raibid-ci", "pull-token").manifests(refs)
    checks = list(image_checks_for(refs, found, {"arm64"}, "h"))
    assert [c.status for c in checks] == [Status.OK, Status.FAIL, Status.FAIL]
    assert "h/raibid/agent-rust:1 is not in the registry" in checks[1].detail and checks[1].hint == "raibid images build"
    assert checks[2].name == "image go" and "not the nodes' arm64" in checks[2].detail
    assert "--only go --platform linux/arm64" in checks[2].hint


def test_doctor_checks_the_images_the_deployed_pods_reference(run, kube, registry):
    K3sController(kube)
    env = {"RAIBID_GITEA_URL": registry.base_url}
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for c in KEDA_CRDS:
        kube.add_object(c)
    add_pull_secret(kube)
    assert run("cluster", "up", "-c", "agents", "--no-build-images", "--wait-interval", "0.02s", "--timeout", "5s",
               env=env).code == 0
    cfg = Config()
    cfg.gitea.url = registry.base_url
    refs = catalog.deployed(cfg)
    for r in refs[1:]:
        registry.push(r.repository, r.tag)
    checks = {c["name"]: c for c in run("doctor", "--json", env=env).json()["checks"]}
    assert checks["image raibid"]["status"] == "fail" and refs[0].ref in checks["image raibid"]["detail"]
    assert {checks[f"image {r.name}"]["status"] for r in refs[1:]} == {"ok"}


def test_the_userns_check_prints_the_exact_fix(tmp_path):
    f = tmp_path / "apparmor_restrict_unprivileged_userns"
    f.write_text("1\n")
    bad = userns_check(f)
    assert bad.status is Status.FAIL and "moby/moby#47480" in bad.detail
    assert bad.hint == ("echo 'kernel.apparmor_restrict_unprivileged_userns=0' | sudo tee "
                        "/etc/sysctl.d/99-raibid-buildkit.conf && sudo sysctl --system")
    f.write_text("0\n")
    assert userns_check(f).status is Status.OK
    assert userns_check(tmp_path / "absent").status is Status.SKIP


def test_the_k3s_registry_check_wants_the_mirror_and_a_credential(tmp_path):
    from raibid.gitea.registry import registries_yaml

    f = tmp_path / "registries.yaml"
    assert registries_yaml_check("10.0.0.5:30080", f).status is Status.FAIL
    f.write_text(registries_yaml("http://10.0.0.5:30080", "raibid-ci", "tok"))
    assert registries_yaml_check("10.0.0.5:30080", f).status is Status.OK
    assert "no mirror for 10.0.0.9:30080" in registries_yaml_check("10.0.0.9:30080", f).detail
    f.write_text(registries_yaml("http://10.0.0.5:30080", "raibid-ci", None))
    assert registries_yaml_check("10.0.0.5:30080", f).status is Status.FAIL


def add_pull_secret(kube, token="pull-token"):
    kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-gitea-registry",
                     "namespace": NS}, "data": {"token": base64.b64encode(token.encode()).decode()}})


def test_cluster_up_where_every_image_exists_costs_one_manifest_request_per_image(run, kube, registry):
    K3sController(kube)
    env = {"RAIBID_GITEA_URL": registry.base_url}
    cfg = Config()
    cfg.gitea.url = registry.base_url
    refs = catalog.deployed(cfg)
    for r in refs:
        registry.push(r.repository, r.tag)
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for c in KEDA_CRDS:
        kube.add_object(c)
    add_pull_secret(kube)
    r = run("cluster", "up", "-c", "agents", "--wait-interval", "0.02s", "--timeout", "5s", "--json", env=env)
    assert r.code == 0, r.err
    assert r.json()["images"] == {"checked": True, "missing": [], "built": [], "ok": True}
    manifest_requests = [q for q in registry.requests() if "/manifests/" in q.path]
    assert len(manifest_requests) == len(refs) + 1  # the first one is the challenge
    assert len(registry.requests("/v2/token")) == 1
    assert not kube.list_objects("batch/v1", "Job", NS)  # nothing built


def test_cluster_up_builds_the_missing_image(run, kube, registry):
    from tests.test_images import OK_LOG, BuildController

    K3sController(kube)
    BuildController(kube, OK_LOG)
    env = {"RAIBID_GITEA_URL": registry.base_url}
    cfg = Config()
    cfg.gitea.url = registry.base_url
    refs = catalog.deployed(cfg)
    for r in refs[1:]:
        registry.push(r.repository, r.tag)
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for c in KEDA_CRDS:
        kube.add_object(c)
    add_pull_secret(kube)
    kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-gitea-builder",
                     "namespace": NS}, "data": {"token": base64.b64encode(b"push-token").decode()}})
    r = run("cluster", "up", "-c", "agents", "--wait-interval", "0.02s", "--timeout", "5s", "--json", env=env)
    assert r.code == 0, r.err
    assert r.json()["images"]["missing"] == [refs[0].ref] and r.json()["images"]["built"] == [refs[0].ref]
    (job,) = kube.list_objects("batch/v1", "Job", NS)
    assert job["metadata"]["labels"]["raibid.dev/image"] == "raibid"
