"""`raibid gitops` against the Gitea fake (real bare repos over smart HTTP) and the Kubernetes API fake."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest

from raibid.cluster.render import render
from raibid.config import load_config
from raibid.gitops.flux import FLUX_NAMESPACE, REQUESTED_AT
from raibid.yamlio import load
from tests.conftest import GITEA_TOKEN
from tests.harness.crdschema import SCHEMAS, validate_cr
from tests.harness.githttp import git

NS = "raibid-ci"
REPO = "raibid-admin/raibid-ci-config"
FOLDER = "clusters/dgx-spark"
SOURCE = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE = "kustomize.toolkit.fluxcd.io/v1"


@pytest.fixture
def flux(kube):
    """The API fake with Flux installed: its vendored CRDs and its namespace."""
    for f in ("source.toolkit.fluxcd.io/gitrepositories.yaml", "kustomize.toolkit.fluxcd.io/kustomizations.yaml"):
        kube.add_object(load((SCHEMAS / f).read_text()), manager="helm")
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FLUX_NAMESPACE}})
    return kube


def refs(gitea) -> dict[str, str]:
    return gitea.git.refs(REPO)


def head(gitea) -> str:
    return refs(gitea)["refs/heads/main"]


def clone(gitea, tmp_path: Path, name: str = "clone") -> Path:
    target = tmp_path / name
    git("clone", "-q", str(gitea.git.path(REPO)), str(target))
    return target


def versions(fake) -> dict:
    return {k: o["metadata"]["resourceVersion"] for k, o in fake.objects.items()}


def flux_reports(fake, sha: str, *, ready: str = "True", reason: str = "ReconciliationSucceeded",
                 message: str = "", attempted: str | None = None, source_ready: str = "True",
                 source_message: str = "stored artifact") -> None:
    """Play Flux's controllers: set the GitRepository's and the Kustomization's status."""
    rev = f"main@sha1:{sha}"
    t = "2026-11-29T18:00:00Z"
    fake.set_status(SOURCE, "GitRepository", "raibid", FLUX_NAMESPACE, {
        "artifact": {"revision": rev, "path": "x", "url": "http://x", "lastUpdateTime": t},
        "conditions": [{"type": "Ready", "status": source_ready, "reason": "Succeeded" if source_ready == "True"
                        else "GitOperationFailed", "message": source_message, "lastTransitionTime": t}]})
    status = {"lastAttemptedRevision": f"main@sha1:{attempted or sha}",
              "conditions": [{"type": "Ready", "status": ready, "reason": reason,
                              "message": message or f"Applied revision: {rev}", "lastTransitionTime": t}]}
    if ready == "True":
        status["lastAppliedRevision"] = rev
    fake.set_status(KUSTOMIZE, "Kustomization", "raibid", FLUX_NAMESPACE, status)


def bootstrap(run, *args):
    return run("gitops", "bootstrap", "--json", *args)


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_creates_repo_pushes_tree_and_points_flux_at_it(run, gitea, flux):
    r = bootstrap(run)
    assert r.code == 0, r.err
    data = r.json()
    assert data["created_repo"] is True and data["commit"] == head(gitea)
    assert gitea.repos[REPO.lower()].private is True
    assert {f["action"] for f in data["files"]} == {"added"}
    assert f"{FOLDER}/kustomization.yaml" in {f["file"] for f in data["files"]}

    secret = flux.get_object("v1", "Secret", "raibid-gitops-auth", FLUX_NAMESPACE)
    assert base64.b64decode(secret["data"]["username"]).decode() == "raibid-admin"
    assert base64.b64decode(secret["data"]["password"]).decode() == GITEA_TOKEN
    source = flux.get_object(SOURCE, "GitRepository", "raibid", FLUX_NAMESPACE)
    assert source["spec"]["url"] == \
        "http://raibid-gitea-http.raibid-ci.svc.cluster.local:3000/raibid-admin/raibid-ci-config.git"
    assert source["spec"]["ref"] == {"branch": "main"}
    assert source["spec"]["secretRef"] == {"name": "raibid-gitops-auth"}
    ks = flux.get_object(KUSTOMIZE, "Kustomization", "raibid", FLUX_NAMESPACE)
    assert ks["spec"]["path"] == f"./{FOLDER}" and ks["spec"]["prune"] is True
    assert ks["spec"]["interval"] == "1m" and ks["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "raibid"}
    for obj in (source, ks):  # as applied, against Flux's own CRD schemas
        validate_cr({k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec")} | {
            "metadata": {k: obj["metadata"][k] for k in ("name", "namespace", "labels")}})
    # The Secrets git never holds are applied directly, in their namespace.
    assert flux.get_object("v1", "Secret", "raibid-redis", NS) is not None
    assert flux.get_object("v1", "Secret", "raibid-gitea-admin", NS) is not None
    # Everything else is Flux's to apply: raibid did not apply it.
    assert flux.get_object("apps/v1", "StatefulSet", "raibid-redis", NS) is None
    assert "Flux follows" not in r.out and GITEA_TOKEN not in r.out + r.err
    assert base64.b64encode(GITEA_TOKEN.encode()).decode() not in r.out + r.err


def test_pushed_tree_parsed_equals_render_output_without_secrets(run, gitea, flux, tmp_path):
    assert bootstrap(run).code == 0
    folder = clone(gitea, tmp_path) / FOLDER
    files = sorted(p.name for p in folder.iterdir())
    kustomization = load((folder / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == [f for f in files if f != "kustomization.yaml"]
    pushed = [load((folder / f).read_text()) for f in kustomization["resources"]]
    expected = [m.obj for m in render(load_config(), namespace=NS) if m.kind != "Secret"]

    def key(o):
        return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])

    assert sorted(pushed, key=key) == sorted(expected, key=key)
    assert {o["kind"] for o in pushed} >= {"Namespace", "StatefulSet", "HelmChart", "PersistentVolumeClaim"}


def test_second_bootstrap_makes_no_commit_and_no_change(run, gitea, flux):
    assert bootstrap(run).code == 0
    before_refs, before_objects = refs(gitea), versions(flux)
    flux.clear_log()
    gitea.git.requests.clear()
    r = bootstrap(run)
    assert r.code == 0, r.err
    data = r.json()
    assert data["commit"] is None and data["files"] == [] and data["created_repo"] is False
    assert {c["action"] for c in data["flux"] + data["applied"]} == {"unchanged"}
    assert refs(gitea) == before_refs
    assert versions(flux) == before_objects
    assert not flux.requests("POST") and not flux.requests("PUT") and not flux.requests("DELETE")
    assert gitea.git.requests and not [q for q in gitea.git.requests if "receive-pack" in q[1]]  # no push
    r = run("gitops", "bootstrap")
    assert "is up to date" in r.err and "nothing to commit" in r.err


def test_changed_config_through_cluster_up_is_one_commit_touching_one_file(run, gitea, flux, monkeypatch, tmp_path):
    assert bootstrap(run).code == 0
    first = head(gitea)
    monkeypatch.setenv("RAIBID_CLUSTER_MODE", "gitops")
    monkeypatch.setenv("RAIBID_CLUSTER_REDIS_STORAGE", "10Gi")
    r = run("cluster", "up")
    assert r.code == 0, r.err
    assert "cluster.mode is gitops" in r.err and "raibid gitops sync" in r.err
    second = head(gitea)
    work = clone(gitea, tmp_path)
    assert git("rev-list", f"{first}..{second}", cwd=work).split() == [second]
    changed = git("diff", "--name-only", first, second, cwd=work).split()
    assert changed == [f"{FOLDER}/redis-persistentvolumeclaim-raibid-redis-data.yaml"]
    pvc = load((work / changed[0]).read_text())
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    message = git("log", "-1", "--format=%B", second, cwd=work)
    assert "raibid 0.1.0" in message and "PersistentVolumeClaim/raibid-ci/raibid-redis-data" in message
    assert git("log", "-1", "--format=%an <%ae>", second, cwd=work) == "raibid <raibid@localhost>"
    # gitops mode applied nothing but the Namespace and Secrets: the PVC is Flux's to change.
    assert flux.get_object("v1", "PersistentVolumeClaim", "raibid-redis-data", NS) is None
    # And again: nothing changed, no commit.
    assert run("cluster", "up").code == 0
    assert head(gitea) == second


def test_sync_message_is_the_subject_and_dry_run_pushes_nothing(run, gitea, flux, monkeypatch, tmp_path):
    assert bootstrap(run).code == 0
    first = head(gitea)
    monkeypatch.setenv("RAIBID_CLUSTER_VERSIONS_REDIS_IMAGE", "redis:7.4.3")
    dry = run("gitops", "sync", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert [f["object"] for f in dry.json()["files"]] == ["StatefulSet/raibid-ci/raibid-redis"]
    assert dry.json()["commit"] is None and head(gitea) == first
    r = run("gitops", "sync", "-m", "Redis 7.4.3")
    assert r.code == 0, r.err
    assert "pushed" in r.err
    work = clone(gitea, tmp_path)
    assert git("log", "-1", "--format=%s", cwd=work) == "Redis 7.4.3"
    assert "StatefulSet/raibid-ci/raibid-redis" in git("log", "-1", "--format=%b", cwd=work)


def test_no_password_or_token_anywhere_in_the_pushed_history(run, gitea, flux, monkeypatch, tmp_path):
    assert bootstrap(run).code == 0
    monkeypatch.setenv("RAIBID_CLUSTER_REDIS_STORAGE", "9Gi")
    assert run("gitops", "sync").code == 0
    secrets = [GITEA_TOKEN]
    for name in ("raibid-redis", "raibid-gitea-admin"):
        data = flux.get_object("v1", "Secret", name, NS)["data"]
        secrets.append(base64.b64decode(data["password"]).decode())
    needles = secrets + [base64.b64encode(s.encode()).decode() for s in secrets]
    work = clone(gitea, tmp_path)
    for rev in git("rev-list", "--all", cwd=work).split():
        for needle in needles:
            found = subprocess_grep(work, needle, rev)
            assert not found, f"{needle[:4]}... found in {rev}: {found}"
    assert "kind: Secret" not in git("grep", "-h", "kind:", "HEAD", cwd=work)
    bare_config = (gitea.git.path(REPO) / "config").read_text()
    assert GITEA_TOKEN not in bare_config


def subprocess_grep(work: Path, needle: str, rev: str) -> str:
    import subprocess

    p = subprocess.run(["git", "grep", "-F", "-l", needle, rev], cwd=work, capture_output=True, text=True)
    return p.stdout.strip()


def test_bootstrap_dry_run_creates_and_applies_nothing(run, gitea, flux):
    r = bootstrap(run, "--dry-run")
    assert r.code == 0, r.err
    data = r.json()
    assert data["dry_run"] is True and data["commit"] is None
    assert f"{FOLDER}/kustomization.yaml" in {f["file"] for f in data["files"]}
    assert {c["action"] for c in data["flux"]} == {"created"}
    assert REPO.lower() not in gitea.repos
    assert flux.get_object(SOURCE, "GitRepository", "raibid", FLUX_NAMESPACE) is None
    assert flux.get_object("v1", "Secret", "raibid-redis", NS) is None


# ----------------------------------------------------------------------------- bad input


def test_repo_name_not_owner_slash_name_is_a_usage_error(run, gitea, flux, monkeypatch):
    monkeypatch.setenv("RAIBID_GITOPS_REPO", "just-a-name")
    r = run("gitops", "bootstrap")
    assert r.code == 2
    assert "invalid gitops.repo 'just-a-name': expected OWNER/NAME" in r.err and "Traceback" not in r.err
    assert gitea.repos == {} and not flux.requests("PATCH")


@pytest.mark.parametrize(("key", "value"), [("REPO", "a/b/c"), ("REPO", "-o/x"), ("REPO", "o/x.wiki"),
                                          ("BRANCH", "-x"), ("BRANCH", "a..b"), ("PATH", "../etc"),
                                          ("INTERVAL", "1d")])
def test_every_bad_gitops_value_is_exit_2_with_a_hint_naming_the_setting(run, gitea, flux, monkeypatch, key, value):
    monkeypatch.setenv(f"RAIBID_GITOPS_{key}", value)
    monkeypatch.setenv("RAIBID_CLUSTER_MODE", "gitops")  # so that `top` shows the verdict, and checks the config
    for command in (("gitops", "status"), ("gitops", "sync"), ("top", "--json")):
        r = run(*command)
        assert r.code == 2 and f"invalid gitops.{key.lower()} {value!r}" in r.err
        assert f"hint: set gitops.{key.lower()} in raibid.yaml (or RAIBID_GITOPS_{key})" in r.err
    assert gitea.repos == {} and flux.requests("PATCH") == []


def test_gitea_down_exits_5_and_writes_nothing(run, gitea, flux):
    gitea.stop()
    r = run("gitops", "bootstrap")
    assert r.code == 5, r.err
    assert "cannot reach Gitea" in r.err and GITEA_TOKEN not in r.err
    assert flux.get_object(SOURCE, "GitRepository", "raibid", FLUX_NAMESPACE) is None
    assert flux.get_object("v1", "Secret", "raibid-gitops-auth", FLUX_NAMESPACE) is None


def test_bootstrap_without_flux_installed_exits_3_before_creating_the_repo(run, gitea, kube):
    r = run("gitops", "bootstrap")
    assert r.code == 3
    assert "Flux is not installed" in r.err and "cluster up -c flux" in r.err
    assert gitea.repos == {}


def test_push_rejected_because_someone_pushed_meanwhile(run, gitea, flux, monkeypatch, tmp_path):
    assert bootstrap(run).code == 0
    monkeypatch.setenv("RAIBID_CLUSTER_REDIS_STORAGE", "10Gi")
    theirs = {}

    def someone_pushes(method: str, path: str, query: str) -> None:
        # Just before raibid's push asks for the refs, a colleague pushes a README.
        if "service=git-receive-pack" in query and not theirs:
            theirs["sha"] = gitea.git.commit(REPO, "main", {"README.md": "hello\n"}, "docs: readme")

    gitea.git.on_request = someone_pushes
    secrets_before = versions(flux)
    r = run("gitops", "sync")
    assert r.code == 1, r.err
    assert "rejected" in r.err and "someone pushed" in r.err and "nothing was pushed" in r.err
    assert "hint:" in r.err and "Traceback" not in r.err and GITEA_TOKEN not in r.err
    assert head(gitea) == theirs["sha"]  # their commit stands, ours is not there
    assert versions(flux) == secrets_before  # the cluster was not touched
    # Running again starts from their head and keeps their file.
    gitea.git.on_request = None
    assert run("gitops", "sync").code == 0
    work = clone(gitea, tmp_path)
    assert (work / "README.md").read_text() == "hello\n"
    assert git("rev-parse", "HEAD~1", cwd=work) == theirs["sha"]


def test_push_rejected_prints_only_raibids_message_in_a_real_process(run, gitea, flux, monkeypatch):
    """No stray GitPython log line: outside pytest no logging is configured, so a library warning would
    reach stderr through Python's last-resort handler next to raibid's own error."""
    import os
    import subprocess
    import sys

    assert bootstrap(run).code == 0
    monkeypatch.setenv("RAIBID_CLUSTER_REDIS_STORAGE", "10Gi")

    def someone_pushes(method: str, path: str, query: str) -> None:
        if "service=git-receive-pack" in query and gitea.git.on_request:
            gitea.git.on_request = None
            gitea.git.commit(REPO, "main", {"README.md": "hello\n"}, "docs: readme")

    gitea.git.on_request = someone_pushes
    p = subprocess.run([sys.executable, "-m", "raibid", "gitops", "sync"], capture_output=True, text=True,
                       env=os.environ, timeout=120)
    assert p.returncode == 1 and "someone pushed" in p.stderr
    lines = p.stderr.splitlines()
    assert [ln.split(":", 1)[0] for ln in lines] == ["error", "hint"], p.stderr


def test_component_option_is_refused_in_gitops_mode(run, gitea, flux, monkeypatch):
    monkeypatch.setenv("RAIBID_CLUSTER_MODE", "gitops")
    r = run("cluster", "up", "-c", "redis")
    assert r.code == 2 and "--component does not apply" in r.err


def test_sync_before_bootstrap_names_bootstrap(run, gitea, flux):
    r = run("gitops", "sync")
    assert r.code == 3 and "raibid gitops bootstrap" in r.err


# ----------------------------------------------------------------------------- status


def test_status_not_bootstrapped(run, gitea, flux):
    r = run("gitops", "status", "--json")
    assert r.code == 1
    assert r.json()["verdict"] == "not-bootstrapped" and r.json()["head"] is None


def test_status_pending_until_flux_applies_the_head(run, gitea, flux):
    assert bootstrap(run).code == 0
    r = run("gitops", "status", "--json")
    assert r.code == 1 and r.json()["verdict"] == "pending"
    assert r.json()["head"] == head(gitea)
    flux_reports(flux, "0" * 40)  # Flux is still at an older revision
    r = run("gitops", "status", "--json")
    assert r.code == 1 and r.json()["verdict"] == "pending" and "0000000000" in r.json()["message"]


def test_status_in_sync(run, gitea, flux):
    assert bootstrap(run).code == 0
    flux_reports(flux, head(gitea))
    r = run("gitops", "status", "--json")
    assert r.code == 0, r.err
    st = r.json()
    assert st["verdict"] == "in-sync"
    assert st["kustomization"]["revision"] == f"main@sha1:{head(gitea)}"
    assert st["source"]["ready"] == "True" and st["source"]["revision"] == f"main@sha1:{head(gitea)}"
    plain = run("gitops", "status")
    assert plain.code == 0 and "verdict:" in plain.out and "in-sync" in plain.out


def test_status_failed_carries_fluxs_message(run, gitea, flux):
    assert bootstrap(run).code == 0
    flux_reports(flux, head(gitea), ready="False", reason="BuildFailed",
                 message="kustomize build failed: accumulating resources")
    r = run("gitops", "status", "--json")
    assert r.code == 1
    assert r.json()["verdict"] == "failed" and "kustomize build failed" in r.json()["message"]
    flux_reports(flux, head(gitea), source_ready="False", source_message="authentication required")
    assert "authentication required" in run("gitops", "status", "--json").json()["message"]


def test_status_says_bootstrap_again_when_the_config_moved_the_folder(run, gitea, flux, monkeypatch):
    assert bootstrap(run).code == 0
    flux_reports(flux, head(gitea))
    monkeypatch.setenv("RAIBID_GITOPS_PATH", "clusters/other")
    assert run("gitops", "sync").code == 0  # the new folder is pushed; Flux still applies the old one
    flux_reports(flux, head(gitea))
    r = run("gitops", "status", "--json")
    assert r.code == 1 and r.json()["verdict"] == "not-bootstrapped"
    assert "./clusters/dgx-spark" in r.json()["message"] and "./clusters/other" in r.json()["message"]
    assert bootstrap(run).code == 0
    assert run("gitops", "status", "--json").json()["verdict"] == "in-sync"


def test_top_shows_the_verdict_gitops_status_gives(run, gitea, flux, redis_url, monkeypatch):
    """`raibid top` and `raibid gitops status` read the same objects and head and judge them by one rule."""
    monkeypatch.setenv("RAIBID_CLUSTER_MODE", "gitops")

    def both() -> str:
        st, top = run("gitops", "status", "--json"), run("top", "--json")
        assert top.code == 0, top.err
        s, g = st.json(), top.json()["cluster"]["gitops"]
        assert (g["verdict"], g["message"], g["head"]) == (s["verdict"], s["message"], s["head"])
        assert st.code == (0 if s["verdict"] == "in-sync" else 1)
        return g["verdict"]

    assert both() == "not-bootstrapped"  # no repo yet
    assert bootstrap(run).code == 0
    assert both() == "pending"
    flux_reports(flux, head(gitea), ready="False", reason="BuildFailed", message="kustomize build failed")
    assert both() == "failed"
    flux_reports(flux, head(gitea))
    assert both() == "in-sync"
    monkeypatch.setenv("RAIBID_GITOPS_PATH", "clusters/other")
    assert run("gitops", "sync").code == 0  # a new commit, in a folder Flux does not follow
    assert both() == "not-bootstrapped"
    assert bootstrap(run).code == 0
    assert both() == "pending"  # Flux follows the new folder but has not applied the new head


# ----------------------------------------------------------------------------- reconcile


def test_reconcile_sets_requested_at_on_source_and_kustomization(run, gitea, flux):
    assert bootstrap(run).code == 0
    r = run("gitops", "reconcile", "--json")
    assert r.code == 0, r.err
    token = r.json()["requested_at"]
    for api, kind in ((SOURCE, "GitRepository"), (KUSTOMIZE, "Kustomization")):
        obj = flux.get_object(api, kind, "raibid", FLUX_NAMESPACE)
        assert obj["metadata"]["annotations"][REQUESTED_AT] == token
        assert obj["spec"]["prune" if kind == "Kustomization" else "url"]  # the spec is untouched
    # A later bootstrap (field manager raibid) keeps the annotation another manager owns.
    assert bootstrap(run).code == 0
    ks = flux.get_object(KUSTOMIZE, "Kustomization", "raibid", FLUX_NAMESPACE)
    assert ks["metadata"]["annotations"][REQUESTED_AT] == token


def test_reconcile_wait_returns_once_flux_applied_the_head(run, gitea, flux):
    assert bootstrap(run).code == 0
    sha = head(gitea)
    timers = []

    def flux_controller(fake, verb, obj):
        annotations = obj["metadata"].get("annotations") or {}
        if obj["kind"] == "Kustomization" and REQUESTED_AT in annotations and not timers:
            t = threading.Timer(0.3, flux_reports, args=(fake, sha))
            timers.append(t)
            t.start()

    flux.on_write(flux_controller)
    r = run("gitops", "reconcile", "--wait", "--wait-interval", "0.05s", "--timeout", "10s", "--json")
    for t in timers:
        t.join()
    assert r.code == 0, r.err
    assert r.json()["status"]["verdict"] == "in-sync" and r.json()["waited"] is True


def test_reconcile_wait_fails_with_fluxs_message_or_times_out(run, gitea, flux):
    assert bootstrap(run).code == 0
    r = run("gitops", "reconcile", "--wait", "--wait-interval", "0.02s", "--timeout", "0.2s")
    assert r.code == 1 and "has not applied" in r.err
    flux_reports(flux, head(gitea), ready="False", reason="HealthCheckFailed", message="timeout waiting for: StatefulSet")
    r = run("gitops", "reconcile", "--wait", "--wait-interval", "0.02s", "--timeout", "5s")
    assert r.code == 1 and "Flux failed to apply" in r.err and "timeout waiting for: StatefulSet" in r.err


@pytest.mark.parametrize("interval", ["0", "0s", "0m"])
def test_reconcile_wait_interval_zero_is_a_usage_error_before_anything_is_written(run, gitea, flux, interval):
    """A zero poll interval would ask the API server as fast as it answers, for the whole timeout."""
    assert bootstrap(run).code == 0
    flux.clear_log()
    r = run("gitops", "reconcile", "--wait", "--wait-interval", interval, "--timeout", "2s")
    assert r.code == 2 and "--wait-interval" in r.err and "hint:" in r.err
    assert flux.requests() == []


def test_reconcile_before_bootstrap_exits_3(run, gitea, flux):
    r = run("gitops", "reconcile")
    assert r.code == 3 and "raibid gitops bootstrap" in r.err
