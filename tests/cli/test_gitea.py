"""`raibid gitea` against the stateful Gitea fake (repos are real bare repos over smart HTTP)."""

from __future__ import annotations

import base64
import os
import stat
import time
from pathlib import Path

import pytest

from tests.conftest import GITEA_TOKEN
from tests.harness.githttp import git
from tests.harness.kubefake import K3sController

GOLDEN = Path(__file__).parents[1] / "golden"


def test_status_reports_version_registry_admin_and_token(run, gitea):
    r = run("gitea", "status", "--json")
    assert r.code == 0, r.err
    st = r.json()
    assert st["reachable"] and st["version"] == "1.24.5" and st["registry_enabled"] is True
    assert st["token_valid"] and st["token_user"] == "raibid-admin" and st["admin_exists"]
    assert st["token_source"] == "env RAIBID_GITEA_TOKEN"
    assert GITEA_TOKEN not in r.out + r.err


def test_status_registry_disabled_and_unreachable(run, gitea):
    gitea.registry = False
    assert run("gitea", "status", "--json").json()["registry_enabled"] is False
    gitea.stop()
    r = run("gitea", "status", "--json")
    assert r.code == 5 and r.json()["reachable"] is False


def test_status_of_a_gitea_that_answers_an_error_is_reachable_and_failing(run, gitea):
    """Gitea's own JSON 500 is not "unreachable" (exit 5, "is Gitea running?"): it answered, and failed."""
    gitea.fail_next(1, 500, path="/version$")
    r = run("gitea", "status", "--json")
    assert r.code == 1, r.err
    st = r.json()
    assert st["reachable"] is True and "(500)" in st["error"] and st["token_valid"] is None
    assert "(500)" in r.err
    gitea.answer_next(1, "<html>login</html>", path="/version$")  # not Gitea's answer: unreachable, as before
    r = run("gitea", "status", "--json")
    assert r.code == 5 and r.json()["reachable"] is False


def test_repo_list_of_an_owner_that_does_not_exist_is_not_found(run, gitea):
    """Gitea answers 404 for the repos of a missing user; raibid says so (3), not an empty list (0)."""
    r = run("gitea", "repo", "list", "nobody-here")
    assert r.code == 3 and "no organisation or user 'nobody-here'" in r.err and "hint:" in r.err
    assert r.out == ""
    assert run("gitea", "repo", "list", "raibid-admin").code == 0  # a user that exists: its (empty) list


def test_wrong_token_exits_4_without_the_token(run, gitea, monkeypatch):
    monkeypatch.setenv("RAIBID_GITEA_TOKEN", "wrong-token-SECRET")
    r = run("gitea", "org", "list")
    assert r.code == 4 and "Gitea refused GET /api/v1/orgs (401)" in r.err
    assert "wrong-token-SECRET" not in r.out + r.err
    assert run("gitea", "status").code == 4


def test_missing_token_exits_4_with_hint(run, gitea, monkeypatch):
    monkeypatch.delenv("RAIBID_GITEA_TOKEN")
    r = run("gitea", "repo", "list")
    assert r.code == 4 and "no Gitea token" in r.err and "token create --store" in r.err


def test_token_file_is_used(run, gitea, monkeypatch, isolated_env):
    monkeypatch.delenv("RAIBID_GITEA_TOKEN")
    (isolated_env / "tok").write_text(GITEA_TOKEN + "\n")
    monkeypatch.setenv("RAIBID_GITEA_TOKEN_FILE", str(isolated_env / "tok"))
    st = run("gitea", "status", "--json").json()
    assert st["token_valid"] and st["token_source"].startswith("file ")


def test_org_create_list_and_conflict(run, gitea):
    r = run("gitea", "org", "create", "mirrors", "--visibility", "private", "--json")
    assert r.code == 0 and r.json()["created"] is True
    dup = run("gitea", "org", "create", "mirrors")
    assert dup.code == 1 and "already exists" in dup.err
    ok = run("gitea", "org", "create", "mirrors", "--exist-ok", "--json")
    assert ok.code == 0 and ok.json()["created"] is False
    orgs = run("gitea", "org", "list", "--json").json()
    assert [(o["name"], o["visibility"]) for o in orgs] == [("mirrors", "private")]


def test_org_list_paginates_with_total_count(run, gitea):
    for i in range(57):
        assert run("gitea", "org", "create", f"org-{i:02d}").code == 0
    orgs = run("gitea", "org", "list", "--json").json()
    assert len(orgs) == 57
    assert sum(1 for m, p, _ in gitea.log if m == "GET" and p == "/api/v1/orgs") == 2


def test_repo_create_show_list_clone_and_delete(run, gitea, tmp_path):
    assert run("gitea", "org", "create", "mirrors").code == 0
    r = run("gitea", "repo", "create", "mirrors/app", "--init", "--json")
    assert r.code == 0, r.err
    clone_url = r.json()["repo"]["clone_url"]
    dup = run("gitea", "repo", "create", "mirrors/app")
    assert dup.code == 1 and "repository mirrors/app already exists" in dup.err
    shown = run("gitea", "repo", "show", "mirrors/app", "--json").json()
    assert shown["mirror"] is False and shown["empty"] is False and shown["clone_url"] == clone_url
    assert [x["full_name"] for x in run("gitea", "repo", "list", "mirrors", "--json").json()] == ["mirrors/app"]
    basic = base64.b64encode(f"x:{GITEA_TOKEN}".encode()).decode()
    env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
           "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}
    git("clone", "-q", clone_url, str(tmp_path / "c"), env=env)
    assert (tmp_path / "c" / "README.md").exists()
    assert run("gitea", "repo", "delete", "mirrors/app").code == 2  # no --yes off a TTY
    assert run("gitea", "repo", "delete", "mirrors/app", "--yes").code == 0
    gone = run("gitea", "repo", "show", "mirrors/app")
    assert gone.code == 3 and "no repository mirrors/app" in gone.err


def test_repo_for_the_token_user_and_missing_org(run, gitea):
    r = run("gitea", "repo", "create", "raibid-admin/personal", "--private", "--json")
    assert r.code == 0 and r.json()["repo"]["private"] is True
    assert [x["full_name"] for x in run("gitea", "repo", "list", "--json").json()] == ["raibid-admin/personal"]
    missing = run("gitea", "repo", "create", "nope/app")
    assert missing.code == 3 and "gitea org create nope" in missing.err


def test_422_shows_giteas_message(run, gitea):
    assert run("gitea", "org", "create", "mirrors").code == 0
    assert run("gitea", "repo", "create", "mirrors/app").code == 0
    # An empty --url is refused before any request now; Gitea's own 422 (its URL check) is shown as it says.
    gitea.answer_next(1, '{"message": "Missing config option: url"}', status=422,
                      content_type="application/json", method="POST", path="/hooks$")
    r = run("gitea", "hook", "add", "mirrors/app", "--url", "http://receiver/hook")
    assert r.code == 1 and "Missing config option: url" in r.err


def test_names_gitea_refuses_are_refused_before_any_request(run, gitea):
    assert run("gitea", "org", "create", "org").code == 0
    assert run("gitea", "repo", "create", "org/r1").code == 0
    gitea.log.clear()
    for args in (["repo", "delete", "org/r1?x=1", "--yes"], ["repo", "show", "../x"],
                 ["repo", "delete", "../user", "--yes"], ["repo", "create", "mirrors/bad name"],
                 ["org", "create", "bad..org"], ["hook", "list", "org/.."], ["repo", "list", "../admin"]):
        r = run("gitea", *args)
        assert r.code == 2 and "invalid" in r.err and "Traceback" not in r.err, (args, r.err)
    assert gitea.log == []
    assert "org/r1" in gitea.repos


def test_read_timeout_on_hook_add_makes_one_hook_and_exits_5(run, gitea, monkeypatch):
    assert run("gitea", "org", "create", "org").code == 0
    assert run("gitea", "repo", "create", "org/app").code == 0
    monkeypatch.setenv("RAIBID_GITEA_TIMEOUT", "0.5")
    gitea.delay_next(1, 1.5, "POST", "/hooks$")
    r = run("gitea", "hook", "add", "org/app", "--url", "http://10.43.0.9/hook")
    assert r.code == 5 and "timed out" in r.err
    deadline = time.monotonic() + 10
    while gitea.in_flight or not gitea.repos["org/app"].hooks:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert len(gitea.repos["org/app"].hooks) == 1


def test_hung_gitea_fails_within_total_timeout(run, gitea, monkeypatch):
    gitea.delay_next(1000, 60)
    monkeypatch.setenv("RAIBID_GITEA_TIMEOUT", "0.3")
    monkeypatch.setenv("RAIBID_GITEA_TOTAL_TIMEOUT", "1")
    monkeypatch.setenv("RAIBID_GITEA_RETRIES", "10")
    start = time.monotonic()
    r = run("gitea", "org", "list")
    assert r.code == 5 and "cannot reach Gitea" in r.err and "timed out" in r.err
    assert time.monotonic() - start < 2


HTML = "<!DOCTYPE html><html><body>Sign in to continue</body></html>"


def test_html_instead_of_gitea_exits_5_for_status_org_list_and_repo_show(run, gitea):
    gitea.answer_next(100, HTML)
    for args in (["status"], ["org", "list"], ["repo", "show", "org/app"]):
        r = run("gitea", *args)
        assert r.code == 5 and "does not answer like Gitea" in r.err + r.out and "Traceback" not in r.err, args


def test_wrong_shape_json_exits_1(run, gitea):
    assert run("gitea", "org", "create", "org").code == 0
    assert run("gitea", "repo", "create", "org/app").code == 0
    gitea.answer_next(1, '{"orgs": []}', content_type="application/json", path="/orgs$")
    r = run("gitea", "org", "list")
    assert r.code == 1 and "unexpected answer from Gitea" in r.err
    gitea.answer_next(1, '["app"]', content_type="application/json", path="/repos/org/app$")
    r = run("gitea", "repo", "show", "org/app")
    assert r.code == 1 and "unexpected answer from Gitea" in r.err
    gitea.answer_next(1, '{"x": 1}', content_type="application/json", path="/user$")
    r = run("gitea", "status", "--json")
    assert r.code == 1 and r.json()["token_valid"] is None and "unexpected answer" in r.err


def test_status_does_not_call_an_unchecked_token_invalid(run, gitea):
    gitea.stop()
    r = run("gitea", "status")
    assert r.code == 5
    assert "INVALID" not in r.out and "not checked" in r.out
    assert run("gitea", "status", "--json").json()["token_valid"] is None


def test_doctor_reports_a_gitea_that_answers_html_and_goes_on(run, gitea, redis_url):
    gitea.answer_next(100, HTML)
    r = run("doctor", "--json")
    assert r.code == 1 and "Traceback" not in r.err
    checks = {c["name"]: c for c in r.json()["checks"]}
    assert checks["gitea"]["status"] == "fail" and "does not answer like Gitea" in checks["gitea"]["detail"]
    assert checks["redis"]["status"] == "ok"  # the other checks still ran


def test_doctor_reports_wrong_shape_json_as_a_failed_check(run, gitea):
    gitea.answer_next(1, "[]", content_type="application/json", path="/user$")
    r = run("doctor", "--json")
    assert r.code == 1
    checks = {c["name"]: c for c in r.json()["checks"]}
    assert checks["gitea-token"]["status"] == "fail" and "not checked" in checks["gitea-token"]["detail"]
    assert checks["gitea-registry"]["status"] == "ok"


def test_gitea_url_typos_exit_2_naming_the_setting(run, gitea, monkeypatch, isolated_env):
    for url, problem in (("http://127.0.0.1:30a80", "port"), ("http://gitea host:3000", "space"),
                         ("admin:s3cret-pw@127.0.0.1:3000", "http://"), ("127.0.0.1:3000", "http://")):
        monkeypatch.setenv("RAIBID_GITEA_URL", url)
        r = run("gitea", "status")
        assert r.code == 2 and "gitea.url" in r.err and problem in r.err, (url, r.err)
        assert "s3cret-pw" not in r.out + r.err and "Traceback" not in r.err
    monkeypatch.setenv("RAIBID_GITEA_URL", gitea.url)
    (isolated_env / "raibid.yaml").write_text("gitea:\n  timeout: 0\n")
    r = run("gitea", "status")
    assert r.code == 2 and "raibid.yaml:2: 'gitea.timeout' must be greater than 0" in r.err


def test_503_succeeds_after_retry(run, gitea):
    gitea.fail_next(2, 503, method="GET", path="/orgs$")
    r = run("gitea", "org", "list", "--json")
    assert r.code == 0 and r.json() == []
    statuses = [s for m, p, s in gitea.log if p == "/api/v1/orgs"]
    assert statuses == [503, 503, 200]


def test_connection_refused_exits_5(run, gitea, monkeypatch):
    gitea.stop()
    r = run("gitea", "repo", "list")
    assert r.code == 5 and "cannot reach Gitea at http://127.0.0.1:" in r.err and "Traceback" not in r.err


def test_hooks_are_active_and_secret_comes_from_env(run, gitea, monkeypatch):
    run("gitea", "org", "create", "mirrors")
    run("gitea", "repo", "create", "mirrors/app")
    monkeypatch.setenv("HOOK_SECRET", "hmac-SECRET")
    r = run("gitea", "hook", "add", "mirrors/app", "--url", "http://10.43.0.9:8080/hook", "--secret-env",
            "HOOK_SECRET", "--events", "push,create", "--branch-filter", "main", "--json")
    assert r.code == 0, r.err
    h = r.json()
    assert h["active"] is True and h["events"] == ["push", "create"] and h["branch_filter"] == "main"
    assert gitea.repos["mirrors/app"].hooks[0]["_secret"] == "hmac-SECRET"
    listed = run("gitea", "hook", "list", "mirrors/app", "--json").json()
    assert [x["url"] for x in listed] == ["http://10.43.0.9:8080/hook"]
    assert "hmac-SECRET" not in r.out + r.err
    unset = run("gitea", "hook", "add", "mirrors/app", "--url", "http://x", "--secret-env", "NOPE_UNSET")
    assert unset.code == 2


def test_token_create_with_password_on_stdin(run, gitea):
    r = run("gitea", "token", "create", "--admin-user", "raibid-admin", "--name", "ci", "--json",
            input="admin-pass\n")
    assert r.code == 0, r.err
    data = r.json()
    assert data["name"] == "ci" and len(data["token"]) == 40 and data["stored"] is False
    assert data["token"] in gitea.tokens
    bad = run("gitea", "token", "create", "--admin-user", "raibid-admin", input="wrong\n")
    assert bad.code == 4 and "wrong" not in bad.err


def test_token_create_from_cluster_secret_and_store(run, gitea, kube):
    K3sController(kube)
    assert run("cluster", "up", "-c", "gitea", "--no-wait").code == 0
    secret = kube.get_object("v1", "Secret", "raibid-gitea-admin", "raibid-ci")
    gitea.users["raibid-admin"].password = base64.b64decode(secret["data"]["password"]).decode()
    r = run("gitea", "token", "create", "--store")
    assert r.code == 0, r.err
    assert r.out == ""  # stored, not printed
    stored = kube.get_object("v1", "Secret", "raibid-gitea-token", "raibid-ci")
    token = base64.b64decode(stored["data"]["token"]).decode()
    assert token in gitea.tokens
    assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "raibid"


def test_token_from_cluster_secret_is_used(run, gitea, kube, monkeypatch):
    monkeypatch.delenv("RAIBID_GITEA_TOKEN")
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-gitea-token",
                                                                          "namespace": "raibid-ci"},
                     "data": {"token": base64.b64encode(GITEA_TOKEN.encode()).decode()}})
    st = run("gitea", "status", "--json").json()
    assert st["token_valid"] and st["token_source"] == "secret raibid-ci/raibid-gitea-token"


REGISTRY_TOKEN = "registry-read-package-token-42"


@pytest.fixture
def registry_secret(kube):
    """The read:package token `gitea bootstrap` keeps for k3s (Secret raibid-gitea-registry)."""
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-gitea-registry",
                                                                          "namespace": "raibid-ci"},
                     "data": {"token": base64.b64encode(REGISTRY_TOKEN.encode()).decode()}})
    return REGISTRY_TOKEN


def test_registry_config_matches_golden_and_is_0600(run, gitea, isolated_env, monkeypatch, registry_secret):
    monkeypatch.setenv("RAIBID_GITEA_URL", "http://192.168.1.50:30080")
    out = isolated_env / "etc" / "registries.yaml"
    r = run("gitea", "registry", "config", "--write", str(out))
    assert r.code == 0, r.err
    assert out.read_text() == (GOLDEN / "registries.yaml").read_text().replace("@TOKEN@", REGISTRY_TOKEN)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "systemctl restart k3s" in r.err
    assert REGISTRY_TOKEN not in r.out + r.err
    shown = run("gitea", "registry", "config")
    assert REGISTRY_TOKEN not in shown.out and "<redacted" in shown.out
    assert "endpoint:\n    - http://192.168.1.50:30080" in shown.out


def test_registry_config_never_uses_the_admin_token(run, gitea, kube, isolated_env):
    """registries.yaml held the admin's write:repository token; now only the CI user's read:package one."""
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    r = run("gitea", "registry", "config", "--write", str(isolated_env / "registries.yaml"))
    assert r.code == 4 and "raibid-gitea-registry" in r.err and "gitea bootstrap" in r.err
    assert not (isolated_env / "registries.yaml").exists()
    assert GITEA_TOKEN not in r.out + r.err


def test_registry_config_write_never_puts_the_token_in_a_readable_file(run, gitea, isolated_env, monkeypatch,
                                                                        registry_secret):
    """An existing 0644 file was truncated and rewritten in place, then chmodded: readable for a moment."""
    out = isolated_env / "registries.yaml"
    out.write_text("old\n")
    out.chmod(0o644)
    peek = isolated_env / "peek"
    os.link(out, peek)  # what another reader of the old file would see
    r = run("gitea", "registry", "config", "--write", str(out))
    assert r.code == 0, r.err
    assert registry_secret in out.read_text() and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert peek.read_text() == "old\n"
    assert [p.name for p in isolated_env.iterdir() if p.name.endswith(".tmp")] == []


def test_registry_config_write_into_a_path_that_cannot_be_created_exits_2(run, gitea, isolated_env,
                                                                          registry_secret):
    (isolated_env / "afile").write_text("")
    r = run("gitea", "registry", "config", "--write", str(isolated_env / "afile" / "registries.yaml"))
    assert r.code == 2 and "cannot write" in r.err and "Traceback" not in r.err
    assert registry_secret not in r.out + r.err


def test_doctor_gitea_checks(run, gitea, monkeypatch):
    checks = {c["name"]: c for c in run("doctor", "--json").json()["checks"]}
    assert checks["gitea"]["status"] == "ok" and "1.24.5" in checks["gitea"]["detail"]
    assert checks["gitea-token"]["status"] == "ok" and checks["gitea-registry"]["status"] == "ok"
    monkeypatch.setenv("RAIBID_GITEA_TOKEN", "bad")
    gitea.registry = False
    checks = {c["name"]: c for c in run("doctor", "--json").json()["checks"]}
    assert checks["gitea-token"]["status"] == "fail" and checks["gitea-registry"]["status"] == "fail"


def test_non_utf8_token_file_exits_2(run, gitea, monkeypatch, isolated_env):
    monkeypatch.delenv("RAIBID_GITEA_TOKEN")
    (isolated_env / "tok").write_bytes(b"\xff\xfe\x00t")
    monkeypatch.setenv("RAIBID_GITEA_TOKEN_FILE", str(isolated_env / "tok"))
    r = run("gitea", "org", "list")
    assert r.code == 2 and "not UTF-8" in r.err and "Traceback" not in r.err


def test_html_error_pages_mean_not_gitea_not_not_found(run, gitea):
    gitea.answer_next(1, "<html>404 Not Found</html>", status=404, path="/orgs$")
    r = run("gitea", "org", "list")
    assert r.code == 5 and "does not answer like Gitea" in r.err and "404 text/html" in r.err
    gitea.answer_next(10, "<html>502 Bad Gateway</html>", status=502, path="/repos/org/app$")
    r = run("gitea", "repo", "show", "org/app")
    assert r.code == 5 and "502 text/html" in r.err
    gitea.faults.clear()
    r = run("gitea", "repo", "show", "org/app")  # Gitea's own JSON 404 is still "not found"
    assert r.code == 3 and "no repository org/app" in r.err


def test_hook_add_message_masks_credentials_in_the_receiver_url(run, gitea):
    run("gitea", "org", "create", "org")
    run("gitea", "repo", "create", "org/app")
    r = run("gitea", "hook", "add", "org/app", "--url", "http://ci:hook-PW@10.43.0.9/hook")
    assert r.code == 0 and "hook-PW" not in r.err and "http://ci:***@10.43.0.9/hook" in r.err


def test_hook_list_and_json_never_print_credentials_of_the_receiver_url(run, gitea):
    """`hook add` masked the URL in its message, but `--json` and `hook list` (table and JSON) printed it."""
    run("gitea", "org", "create", "org")
    run("gitea", "repo", "create", "org/app")
    added = run("gitea", "hook", "add", "org/app", "--url", "http://ci:hook-PW@10.43.0.9/hook", "--json")
    assert added.code == 0 and added.json()["url"] == "http://ci:***@10.43.0.9/hook"
    for args in (("gitea", "hook", "list", "org/app"), ("gitea", "hook", "list", "org/app", "--json")):
        r = run(*args)
        assert r.code == 0 and "hook-PW" not in r.out + r.err and "http://ci:***@10.43.0.9/hook" in r.out
    # Gitea keeps the real URL: only what raibid prints is masked.
    assert gitea.repos["org/app"].hooks[0]["config"]["url"] == "http://ci:hook-PW@10.43.0.9/hook"


@pytest.mark.parametrize("url", ["", "not a url", "10.43.0.9/hook", "ftp://x/hook", "http://"])
def test_hook_add_refuses_a_receiver_url_that_is_not_one(run, gitea, url):
    run("gitea", "org", "create", "org")
    run("gitea", "repo", "create", "org/app")
    r = run("gitea", "hook", "add", "org/app", "--url", url)
    assert r.code == 2 and "invalid --url" in r.err and "hint:" in r.err
    assert gitea.repos["org/app"].hooks == []


def test_doctor_says_version_unknown_when_gitea_fails_its_version_request(run, gitea):
    gitea.fail_next(1, 500, path="/version$")
    check = next(c for c in run("doctor", "--json").json()["checks"] if c["name"] == "gitea")
    assert check["status"] == "fail" and "version unknown" in check["detail"] and "None" not in check["detail"]


# ----------------------------------------------------------------------------- identities

import yaml  # noqa: E402

ROLE_SECRETS = ("raibid-gitea-agent", "raibid-gitea-mirror", "raibid-gitea-webhook", "raibid-gitea-registry")


def _secret_token(kube, name: str) -> str:
    return base64.b64decode(kube.get_object("v1", "Secret", name, "raibid-ci")["data"]["token"]).decode()


@pytest.fixture
def admin_secret(kube, gitea):
    """The chart's admin Secret as `cluster up` left it, holding the fake's admin password."""
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "raibid-gitea-admin", "namespace": "raibid-ci", "annotations": {"raibid.dev/generated": "true"}},
        "data": {"username": base64.b64encode(b"raibid-admin").decode(),
                 "password": base64.b64encode(b"admin-pass").decode()}})
    gitea.require_signin = True


def test_bootstrap_stores_four_role_secrets_and_prints_no_token(run, gitea, kube, admin_secret):
    r = run("-vv", "gitea", "bootstrap")
    assert r.code == 0, r.err
    values = [_secret_token(kube, n) for n in ROLE_SECRETS]
    assert len(set(values)) == 4 and all(gitea.tokens[v][0] == "raibid-ci" for v in values)
    assert "rollout restart deployment/raibid-webhook" in r.err
    again = run("-vv", "gitea", "bootstrap", "--json")
    assert again.code == 0, again.err
    data = again.json()
    assert data["ci_user"] == "raibid-ci" and {s["action"] for s in data["steps"]} == {"unchanged"}
    assert data["secrets"]["agent"] == "raibid-gitea-agent"
    for out in (r.out, r.err, again.out, again.err):
        assert not any(v in out for v in values) and "admin-pass" not in out
    # Tokens only ever in Secrets: no other object the cluster holds carries one.
    for (_, plural, _, _), obj in kube.objects.items():
        if plural != "secrets":
            assert not any(v in yaml.safe_dump(obj) for v in values), obj["metadata"]["name"]
    applied = [q for q in kube.requests("PATCH") if "secrets" in q.path]
    assert applied and all(q.content_type == "application/apply-patch+yaml" for q in applied)


def test_bootstrap_with_the_admin_password_on_stdin_never_takes_it_as_an_argument(run, gitea, kube):
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    r = run("gitea", "bootstrap", "--admin-user", "raibid-admin", input="admin-pass\n")
    assert r.code == 0, r.err
    assert _secret_token(kube, "raibid-gitea-agent") in gitea.tokens
    wrong = run("gitea", "bootstrap", "--admin-user", "raibid-admin", input="not-it-SECRET\n")
    assert wrong.code == 4 and "not-it-SECRET" not in wrong.out + wrong.err


def test_bootstrap_rotate_one_role(run, gitea, kube, admin_secret):
    assert run("gitea", "bootstrap").code == 0
    before = {n: _secret_token(kube, n) for n in ROLE_SECRETS}
    r = run("gitea", "bootstrap", "--rotate", "mirror", "--json")
    assert r.code == 0, r.err
    after = {n: _secret_token(kube, n) for n in ROLE_SECRETS}
    assert after["raibid-gitea-mirror"] != before["raibid-gitea-mirror"]
    assert before["raibid-gitea-mirror"] not in gitea.tokens
    assert [n for n in ROLE_SECRETS if after[n] != before[n]] == ["raibid-gitea-mirror"]
    assert run("gitea", "bootstrap", "--rotate", "admin").code == 2


def test_migration_revokes_the_admin_token_pods_held(run, gitea, kube, admin_secret):
    """An old install: the webhook Deployment reads raibid-gitea-token (the admin's token)."""
    kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-gitea-token",
                                                                          "namespace": "raibid-ci"},
                     "data": {"token": base64.b64encode(GITEA_TOKEN.encode()).decode()}})
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "raibid-webhook",
                                                                       "namespace": "raibid-ci"},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "x", "envFrom": [
                        {"secretRef": {"name": "raibid-gitea-token"}}]}]}}}}
    kube.add_object(dep)
    doctor = {c["name"]: c for c in run("doctor", "--json").json()["checks"]}
    assert doctor["gitea-admin-in-pods"]["status"] == "fail"
    assert "Deployment raibid-ci/raibid-webhook" in doctor["gitea-admin-in-pods"]["detail"]
    r = run("gitea", "bootstrap", "--revoke-admin-tokens")
    assert r.code == 2 and "raibid-webhook" in r.err and "cluster up" in r.err
    assert GITEA_TOKEN in gitea.tokens
    kube.objects = {k: v for k, v in kube.objects.items() if v["metadata"]["name"] != "raibid-webhook"
                    or v["kind"] != "Deployment"}
    r = run("gitea", "bootstrap", "--revoke-admin-tokens")
    assert r.code == 0, r.err
    assert GITEA_TOKEN not in gitea.tokens
    assert _secret_token(kube, "raibid-gitea-token") not in (GITEA_TOKEN, "")


def test_cluster_up_gitea_bootstraps_the_identities_once_gitea_answers(run, gitea, kube, admin_secret):
    K3sController(kube)
    r = run("cluster", "up", "-c", "gitea", "--wait-interval", "0.02s", "--timeout", "5s", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["gitea_bootstrap"]["ci_user"] == "raibid-ci"
    assert all(_secret_token(kube, n) in gitea.tokens for n in ROLE_SECRETS)
    assert not any(_secret_token(kube, n) in r.out + r.err for n in ROLE_SECRETS)
    assert not gitea.users["raibid-ci"].is_admin


def test_cluster_up_with_gitea_not_answering_says_to_run_bootstrap(run, kube, monkeypatch):
    K3sController(kube)
    monkeypatch.setenv("RAIBID_GITEA_URL", "http://127.0.0.1:9")
    r = run("cluster", "up", "-c", "gitea", "--wait-interval", "0.02s", "--timeout", "5s", "--json")
    assert r.code == 0, r.err
    assert "raibid gitea bootstrap" in r.err and "skipped" in r.json()["gitea_bootstrap"]
    nowait = run("cluster", "up", "-c", "gitea", "--no-wait")
    assert nowait.code == 0 and "raibid gitea bootstrap" in nowait.err


def _gitea_values(run, *env: tuple[str, str], monkeypatch=None) -> dict:
    r = run("cluster", "render", "-c", "gitea")
    assert r.code == 0, r.err
    docs = [d for d in yaml.safe_load_all(r.out) if d and d["kind"] == "HelmChart"]
    return yaml.safe_load(docs[0]["spec"]["valuesContent"])


def test_helmchart_closes_registration_and_anonymous_views_and_names_the_real_host(run, monkeypatch):
    monkeypatch.setenv("RAIBID_GITEA_URL", "http://192.168.1.50:30080")
    cfg = _gitea_values(run)["gitea"]["config"]
    assert cfg["service"] == {"DISABLE_REGISTRATION": True, "REQUIRE_SIGNIN_VIEW": True}
    assert cfg["server"]["DOMAIN"] == cfg["server"]["SSH_DOMAIN"] == "192.168.1.50"
    assert cfg["server"]["ROOT_URL"] == "http://192.168.1.50:30080/"
    assert "git.example.com" not in yaml.safe_dump(cfg)
    monkeypatch.setenv("RAIBID_GITEA_URL", "https://[fd00::5]:3443/git")
    monkeypatch.setenv("RAIBID_GITEA_REQUIRE_SIGNIN_VIEW", "false")
    cfg = _gitea_values(run)["gitea"]["config"]
    assert cfg["server"]["DOMAIN"] == "[fd00::5]" and cfg["server"]["ROOT_URL"] == "https://[fd00::5]:3443/git/"
    assert cfg["service"]["REQUIRE_SIGNIN_VIEW"] is False and cfg["service"]["DISABLE_REGISTRATION"] is True


def test_status_works_on_a_gitea_that_requires_sign_in(run, gitea):
    gitea.require_signin = True
    r = run("gitea", "status", "--json")
    assert r.code == 0, r.err
    assert r.json()["version"] == "1.24.5" and r.json()["admin_exists"]


def test_cluster_up_with_a_wrong_admin_password_applies_and_says_why_no_identities(run, gitea, kube, admin_secret):
    K3sController(kube)
    gitea.users["raibid-admin"].password = "changed-in-gitea"
    r = run("cluster", "up", "-c", "gitea", "--wait-interval", "0.02s", "--timeout", "5s", "--json")
    assert r.code == 0, r.err
    assert "(401)" in r.json()["gitea_bootstrap"]["error"] and "raibid gitea bootstrap" in r.err
    assert "raibid-ci" not in gitea.users and "changed-in-gitea" not in r.out + r.err
