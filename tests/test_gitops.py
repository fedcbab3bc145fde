"""raibid.gitops without the CLI: the tree, the git side (real git over smart HTTP), Flux objects and verdicts."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from raibid.cluster.render import render, templates_dir
from raibid.config import Config, load_config
from raibid.errors import UsageError
from raibid.gitops.flux import (
    FLUX_NAMESPACE,
    GITEA_HTTP_PORT,
    GITEA_HTTP_SERVICE,
    ObjectStatus,
    check_interval,
    decide,
    flux_objects,
    in_cluster_url,
    revision_sha,
)
from raibid.gitops.repo import FileChange, PushRejected, auth_env, check_branch, checkout, parse_repo
from raibid.gitops.sync import commit_message
from raibid.gitops.tree import KUSTOMIZATION, check_path, render_tree
from raibid.yamlio import load
from tests.harness.crdschema import validate_cr
from tests.harness.githttp import git

NS = "raibid-ci"
SHA = "a" * 40


def manifests(**secrets: str):
    return render(load_config(), namespace=NS, secrets=secrets or None)


# ----------------------------------------------------------------------------- the tree


def test_tree_holds_no_secret_and_does_not_depend_on_the_passwords():
    a = render_tree(manifests(redis_password="first-pw-AAAA", gitea_admin_password="first-admin-BBBB"))
    b = render_tree(manifests(redis_password="other-pw-CCCC", gitea_admin_password="other-admin-DDDD"))
    assert a == b
    text = "".join(f.text for f in a)
    assert "kind: Secret" not in text and "first-pw" not in text and "first-admin" not in text


def test_tree_files_are_named_by_component_kind_and_name_and_listed_in_kustomization():
    tree = render_tree(manifests())
    names = [f.name for f in tree]
    assert names[-1] == KUSTOMIZATION
    assert "redis-statefulset-raibid-redis.yaml" in names and "gitea-helmchart-raibid-gitea.yaml" in names
    assert all(re.fullmatch(r"[a-z0-9.-]+\.yaml", n) for n in names)
    kustomization = load(tree[-1].text)
    assert kustomization["resources"] == sorted(names[:-1])
    assert all(f.text.startswith("# Managed by raibid") for f in tree)


def test_flux_never_prunes_the_namespace_or_the_data_volume():
    tree = {f.name: load(f.text) for f in render_tree(manifests())}
    keep = {n for n, o in tree.items()
            if (o.get("metadata", {}).get("annotations") or {}).get("kustomize.toolkit.fluxcd.io/prune") == "disabled"}
    assert keep == {"namespace-namespace-raibid-ci.yaml", "redis-persistentvolumeclaim-raibid-redis-data.yaml"}


@pytest.mark.parametrize("bad", ["", "/abs/path", "../up", "a/../../b", ".", "a/.git/b", "c:\\x"])
def test_bad_paths_are_usage_errors(bad):
    with pytest.raises(UsageError):
        check_path(bad)


def test_paths_are_normalised():
    assert check_path("clusters/dgx-spark/") == "clusters/dgx-spark"
    assert check_path("./clusters//x") == "clusters/x"


@pytest.mark.parametrize("bad", ["name", "/name", "owner/", "a/b/c", "own er/x", "o/x.git", "",
                                 # names Gitea refuses (its rules, raibid.gitea.names), caught before any request
                                 "-o/x", "o-/x", "o..o/x", "o/x.wiki", "o/..", "o/a..b", "o/r?x=1"])
def test_repo_must_be_owner_slash_name(bad):
    with pytest.raises(UsageError, match="expected OWNER/NAME"):
        parse_repo(bad)


def test_branch_and_interval_are_checked():
    assert check_branch("main") == "main" and check_branch("release/1.x") == "release/1.x"
    for bad in ("-x", "a..b", "a.lock", "x/", "a b", "a~1"):
        with pytest.raises(UsageError):
            check_branch(bad)
    assert check_interval("1m30s") == "1m30s"
    for bad in ("1 minute", "10", "1d"):
        with pytest.raises(UsageError):
            check_interval(bad)


# ----------------------------------------------------------------------------- Flux objects


def test_flux_objects_validate_against_fluxs_crd_schemas():
    secret, source, kustomization = flux_objects(url=in_cluster_url(NS, "o", "r"), branch="main",
                                                 path="clusters/dgx-spark", interval="1m", username="o",
                                                 token="tok-SECRET")
    validate_cr(source)
    validate_cr(kustomization)
    assert base64.b64decode(secret["data"]["password"]).decode() == "tok-SECRET"
    assert "tok-SECRET" not in str(source) + str(kustomization)
    assert kustomization["spec"]["prune"] is True and kustomization["spec"]["path"] == "./clusters/dgx-spark"


def test_flux_namespace_and_gitea_service_match_the_templates():
    flux = load((templates_dir() / "flux" / "helmchart.yaml.j2").read_text().replace("{{", "#").replace("}}", ""))
    assert flux["spec"]["targetNamespace"] == FLUX_NAMESPACE
    gitea = [m for m in manifests() if m.kind == "HelmChart" and m.component == "gitea"][0]
    values = load(gitea.obj["spec"]["valuesContent"])
    assert values["service"]["http"]["port"] == GITEA_HTTP_PORT
    # The Gitea chart names its HTTP Service <release>-http; the release is the HelmChart's name.
    assert GITEA_HTTP_SERVICE == f"{gitea.name}-http" and gitea.obj["spec"]["chart"] == "gitea"
    assert in_cluster_url(NS, "o", "r") == f"http://raibid-gitea-http.{NS}.svc.cluster.local:3000/o/r.git"


# ----------------------------------------------------------------------------- verdicts


def obj(kind: str, **kw) -> ObjectStatus:
    return ObjectStatus(kind, "raibid", FLUX_NAMESPACE, exists=True, **kw)


@pytest.mark.parametrize("source, ks, head, verdict", [
    (ObjectStatus("GitRepository", "raibid", "flux-system"), obj("Kustomization"), SHA, "not-bootstrapped"),
    (obj("GitRepository"), obj("Kustomization"), None, "not-bootstrapped"),
    (obj("GitRepository", ready="True"), obj("Kustomization"), SHA, "pending"),
    (obj("GitRepository", ready="True"), obj("Kustomization", ready="Unknown", reason="Progressing",
                                             revision=f"main@sha1:{'b' * 40}"), SHA, "pending"),
    (obj("GitRepository", ready="True"), obj("Kustomization", ready="True", revision=f"main@sha1:{SHA}"), SHA,
     "in-sync"),
    (obj("GitRepository", ready="True"), obj("Kustomization", ready="True", revision=f"main/{SHA}"), SHA,
     "in-sync"),  # v1beta2 revision format
    (obj("GitRepository", ready="True"), obj("Kustomization", ready="False", message="build failed"), SHA,
     "failed"),
    (obj("GitRepository", ready="False", message="auth failed"), obj("Kustomization", ready="True",
                                                                      revision=f"main@sha1:{SHA}"), SHA, "failed"),
    (obj("GitRepository", ready="True"), obj("Kustomization", stalled=True, message="invalid path"), SHA, "failed"),
    (obj("GitRepository", ready="True"), obj("Kustomization", suspended=True), SHA, "pending"),
])
def test_verdicts(source, ks, head, verdict):
    got, message = decide(head, source, ks)
    assert got == verdict
    if verdict == "failed":
        assert (ks.message or source.message) in message


def test_revision_sha_reads_every_flux_format():
    assert revision_sha(f"main@sha1:{SHA}") == SHA
    assert revision_sha(f"main/{SHA}") == SHA
    assert revision_sha(f"sha1:{SHA}") == SHA
    assert revision_sha(None) is None


def test_commit_message_names_the_version_and_every_object():
    files = [FileChange("modified", "p/redis-pvc.yaml", "PersistentVolumeClaim/raibid-ci/raibid-redis-data")]
    msg = commit_message(files, version="9.9.9", path="p")
    assert msg.splitlines()[0] == "raibid 9.9.9: modified PersistentVolumeClaim/raibid-ci/raibid-redis-data"
    many = files + [FileChange("added", "p/a.yaml", "ConfigMap/ns/a"), FileChange("deleted", "p/kustomization.yaml")]
    msg = commit_message(many, version="9.9.9", path="p", subject="Bigger Redis")
    assert msg.splitlines()[0] == "Bigger Redis"
    assert "raibid 9.9.9" in msg and "added ConfigMap/ns/a" in msg and "deleted p/kustomization.yaml" in msg


# ----------------------------------------------------------------------------- git (real, over smart HTTP)


@pytest.fixture
def remote(git_server):
    git_server.create_repo("o/cfg", files={"README.md": "theirs\n", "clusters/x/old.yaml": "kind: ConfigMap\n"
                                           "metadata: {name: old, namespace: ns}\n"})
    return git_server


def test_checkout_keeps_the_token_out_of_git_config_and_the_remote_url(remote):
    env = auth_env("o", remote.token)
    with checkout(remote.url("o/cfg"), "main", env) as co:
        config = (co.root / ".git" / "config").read_text()
        assert remote.token not in config and co.repo.remotes.origin.url == remote.url("o/cfg")
        assert base64.b64encode(f"o:{remote.token}".encode()).decode() not in config
        assert (co.root / "README.md").read_text() == "theirs\n"  # the auth header worked
        root = co.root
    assert not Path(root).exists()  # the working clone is gone


def test_write_replaces_the_folder_and_names_objects_then_commit_only_on_change(remote):
    tree = render_tree(manifests())
    env = auth_env("o", remote.token)
    with checkout(remote.url("o/cfg"), "main", env) as co:
        changes = co.write("clusters/x", tree)
        assert FileChange("deleted", "clusters/x/old.yaml", "ConfigMap/ns/old") in changes
        assert {c.action for c in changes} == {"added", "deleted"}
        assert co.commit("clusters/x", "m", author_name="a", author_email="a@x") is not None
        co.push()
    with checkout(remote.url("o/cfg"), "main", env) as co:
        assert co.write("clusters/x", tree) == []
        assert co.commit("clusters/x", "m", author_name="a", author_email="a@x") is None
        assert (co.root / "README.md").exists()  # files outside the folder are kept


def test_push_after_the_remote_moved_is_rejected_and_changes_nothing(remote):
    env = auth_env("o", remote.token)
    with checkout(remote.url("o/cfg"), "main", env) as co:
        co.write("clusters/x", render_tree(manifests()))
        co.commit("clusters/x", "m", author_name="a", author_email="a@x")
        theirs = remote.commit("o/cfg", "main", {"README.md": "edited\n"}, "edit")
        with pytest.raises(PushRejected, match="someone pushed") as e:
            co.push()
        assert e.value.exit_code == 1 and remote.token not in e.value.message
    assert remote.refs("o/cfg")["refs/heads/main"] == theirs


def test_empty_remote_gets_a_root_commit(git_server):
    git_server.create_repo("o/empty")
    env = auth_env("o", git_server.token)
    with checkout(git_server.url("o/empty"), "main", env) as co:
        assert co.base is None
        co.write("p", render_tree(manifests()))
        sha = co.commit("p", "first", author_name="a", author_email="a@x")
        assert co.push() == sha
    assert git_server.refs("o/empty")["refs/heads/main"] == sha
    assert git("rev-list", "--count", "main", cwd=git_server.path("o/empty")) == "1"


def test_wrong_token_is_an_auth_error(remote):
    from raibid.errors import AuthError

    with pytest.raises(AuthError) as e, checkout(remote.url("o/cfg"), "main", auth_env("o", "wrong-SECRET")):
        pass
    assert "wrong-SECRET" not in e.value.message


# ----------------------------------------------------------------------------- config


def test_gitops_repo_defaults_to_the_admin_users_raibid_ci_config():
    cfg = Config()
    assert cfg.gitops_repo == "raibid-admin/raibid-ci-config"
    cfg.gitops.repo = "ci/state"
    assert cfg.gitops_repo == "ci/state"


def test_wait_applied_refuses_a_zero_poll_interval_before_asking_anything():
    from raibid.errors import UsageError
    from raibid.gitops.flux import wait_applied

    class NoKube:
        def get(self, *a, **kw):
            raise AssertionError("asked the API server")

    with pytest.raises(UsageError, match="wait interval"):
        wait_applied(NoKube(), head="a" * 40, timeout=1.0, interval=0.0)  # type: ignore[arg-type]
