"""`raibid webhook register|status|serve` against the Gitea fake, the GitHub fake and the Kubernetes fake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raibid.gitea import Gitea
from tests.conftest import GITEA_TOKEN

SECRET = "whsec-cli-sentinel-77"


@pytest.fixture
def setup(github, gitea, monkeypatch, isolated_env: Path):
    github.add_org("acme")
    github.add_repo("acme", "app", files={"README.md": "hi\n"})
    github.add_repo("acme", "locked", files={"README.md": "hi\n"})
    github.set_admin("acme", "locked", False)
    github.add_org("bigorg")
    github.add_repo("bigorg", "svc-a", files={"a": "1\n"})
    github.add_repo("bigorg", "web", files={"a": "1\n"})
    Gitea(gitea.url, GITEA_TOKEN).create_org("mirrors")
    (isolated_env / "raibid.yaml").write_text(json.dumps({
        "mirror": {"github_api": github.url, "repos": ["acme/app", "acme/locked"],
                   "orgs": [{"name": "bigorg", "include": ["^svc-"]}]},
        "webhook": {"public_url": "https://ci.example.org/"},
    }))
    monkeypatch.setenv("RAIBID_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("GITHUB_TOKEN", github.token)
    return github, gitea


def actions(r) -> dict[tuple[str, str], str]:
    return {(h["host"], h["target"]): h["action"] for h in r.json()}


def test_register_creates_each_hook_once_and_a_second_run_changes_nothing(setup, run):
    github, gitea = setup
    first = run("webhook", "register", "--json")
    assert first.code == 0, first.err
    assert actions(first) == {("gitea", "mirrors"): "created", ("github", "acme/app"): "created",
                              ("github", "acme/locked"): "skipped", ("github", "bigorg/svc-a"): "created"}
    assert "acme/locked" in first.err and "no admin rights" in first.err  # reported, not fatal
    [org_hook] = gitea.org_hooks["mirrors"]
    assert org_hook["config"]["url"] == "http://raibid-webhook.raibid-ci.svc:8080/hooks/gitea"
    assert org_hook["active"] and org_hook["events"] == ["pull_request", "push"] and org_hook["_secret"] == SECRET
    [gh_hook] = github.repo("acme", "app").hooks.values()
    assert gh_hook.config["url"] == "https://ci.example.org/hooks/github"
    assert gh_hook.config["content_type"] == "json" and gh_hook.config["secret"] == SECRET
    assert gh_hook.events == ["pull_request", "push"] and gh_hook.active
    assert not github.repo("bigorg", "web").hooks  # excluded by the org's include regex
    assert SECRET not in first.out + first.err

    writes = len([entry for entry in github.log if entry.method != "GET"])
    again = run("webhook", "register", "--json")
    assert again.code == 0, again.err
    assert set(actions(again).values()) == {"unchanged", "skipped"}
    assert len(gitea.org_hooks["mirrors"]) == 1 and len(github.repo("acme", "app").hooks) == 1
    assert len([entry for entry in github.log if entry.method != "GET"]) == writes


def test_register_repairs_a_drifted_hook_and_dry_run_changes_nothing(setup, run):
    github, gitea = setup
    assert run("webhook", "register", "--github", "--gitea-repo", "mirrors/x", "--dry-run").code == 0
    assert not github.repo("acme", "app").hooks and not gitea.org_hooks
    assert run("webhook", "register").code == 0
    [gh_hook] = github.repo("acme", "app").hooks.values()
    gh_hook.events = ["issues"]
    gitea.org_hooks["mirrors"][0]["active"] = False
    dry = run("webhook", "register", "--dry-run", "--json")
    assert {a for a in actions(dry).values()} >= {"would update"}
    assert gh_hook.events == ["issues"]
    fixed = run("webhook", "register", "--json")
    assert actions(fixed)[("github", "acme/app")] == "updated"
    assert actions(fixed)[("gitea", "mirrors")] == "updated"
    assert gh_hook.events == ["pull_request", "push"] and gh_hook.config["secret"] == SECRET
    assert gitea.org_hooks["mirrors"][0]["active"] is True


def test_register_gitea_repo_hooks_and_github_without_public_url(setup, run, isolated_env):
    github, gitea = setup
    Gitea(gitea.url, GITEA_TOKEN).create_repo("mirrors", "tool")
    r = run("webhook", "register", "--gitea", "--gitea-repo", "mirrors/tool", "--json")
    assert r.code == 0, r.err
    assert actions(r) == {("gitea", "mirrors"): "created", ("gitea", "mirrors/tool"): "created"}
    assert len(gitea.repos["mirrors/tool"].hooks) == 1
    (isolated_env / "raibid.yaml").write_text(json.dumps({"mirror": {"github_api": github.url}}))
    r = run("webhook", "register", "--github")
    assert r.code == 2 and "webhook.public_url" in r.err


def test_register_without_a_secret_says_where_it_comes_from(setup, run, monkeypatch):
    monkeypatch.delenv("RAIBID_WEBHOOK_SECRET")
    r = run("webhook", "register", "--gitea")
    assert r.code == 2 and "RAIBID_WEBHOOK_SECRET" in r.err and "cluster up -c webhook" in r.err


def test_register_reads_the_generated_secret_from_the_cluster(setup, run, monkeypatch, kube):
    from raibid.cluster.secrets import b64encode

    github, gitea = setup
    monkeypatch.delenv("RAIBID_WEBHOOK_SECRET")
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    kube.add_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raibid-webhook",
                     "namespace": "raibid-ci"}, "data": {"secret": b64encode("from-cluster-1")}})
    assert run("webhook", "register", "--gitea").code == 0
    assert gitea.org_hooks["mirrors"][0]["_secret"] == "from-cluster-1"


def test_status_reports_the_deployment_urls_and_last_deliveries(setup, run, kube):
    github, gitea = setup
    assert run("webhook", "register").code == 0
    github.deliver("acme", "app", "ping", {"zen": "hi"})  # nothing listens at ci.example.org: a failure
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "raibid-ci"}})
    kube.add_object({"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": "raibid-webhook", "namespace": "raibid-ci", "generation": 1},
                     "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                              "template": {"metadata": {"labels": {"a": "b"}},
                                           "spec": {"containers": [{"name": "r", "image": "img:1"}]}}},
                     "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1}})
    r = run("webhook", "status", "--json")
    assert r.code == 0, r.err
    st = r.json()
    assert st["deployed"] is True and st["ready"] is True and st["image"] == "img:1"
    assert st["gitea_url"].endswith("/hooks/gitea") and st["github_url"] == "https://ci.example.org/hooks/github"
    hooks = {(h["host"], h["target"]): h for h in st["hooks"]}
    assert hooks[("gitea", "mirrors")]["found"] is True
    assert hooks[("github", "acme/app")]["last_status"] == "failed"
    assert hooks[("github", "acme/locked")]["found"] is False
    plain = run("webhook", "status")
    assert plain.code == 0 and "raibid-ci/raibid-webhook" in plain.out and "acme/app" in plain.out


def test_status_without_a_cluster_still_lists_the_hooks(setup, run):
    r = run("webhook", "status", "--json")
    assert r.code == 0, r.err
    st = r.json()
    assert st["deployed"] is False and st["detail"].startswith("unknown:")
    assert {h["host"] for h in st["hooks"]} == {"gitea", "github"}


def test_serve_refuses_to_run_without_a_secret(run):
    r = run("webhook", "serve")
    assert r.code == 2 and "RAIBID_WEBHOOK_SECRET" in r.err


def test_serve_rejects_a_bad_listen_address(run, monkeypatch):
    monkeypatch.setenv("RAIBID_WEBHOOK_SECRET", SECRET)
    r = run("webhook", "serve", "--listen", "nowhere")
    assert r.code == 2 and "HOST:PORT" in r.err


def test_serve_on_a_port_in_use_or_a_host_that_does_not_resolve_exits_without_a_traceback(run, monkeypatch,
                                                                                          isolated_env):
    import socket

    monkeypatch.setenv("RAIBID_WEBHOOK_SECRET", SECRET)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        r = run("webhook", "serve", "--listen", f"127.0.0.1:{port}")
    assert r.code == 1 and f"cannot listen on 127.0.0.1:{port}: the address is already in use" in r.err
    assert "hint:" in r.err and "Traceback" not in r.err
    r = run("webhook", "serve", "--listen", "no-such-host.invalid:8080")
    assert r.code == 2 and "does not resolve" in r.err and "Traceback" not in r.err


def test_help_says_serve_is_the_long_running_pod_command(run):
    r = run("webhook", "serve", "--help")
    assert "long-running" in r.out and "raibid-webhook" in r.out


def test_cluster_up_deploys_the_receiver_keeps_its_secret_and_status_reports_it(run, kube):
    from tests.harness.kubefake import K3sController

    K3sController(kube)
    up = ("cluster", "up", "-c", "webhook", "--wait-interval", "0.02s", "--timeout", "5s")
    r = run(*up)
    assert r.code == 0, r.err
    first = kube.get_object("v1", "Secret", "raibid-webhook", "raibid-ci")["data"]["secret"]
    assert run(*up).code == 0
    assert kube.get_object("v1", "Secret", "raibid-webhook", "raibid-ci")["data"]["secret"] == first
    st = run("cluster", "status", "-c", "webhook", "--json")
    assert st.code == 0, st.err
    [webhook] = [c for c in st.json() if c["component"] == "webhook"]
    assert webhook["state"] == "healthy" and webhook["ready"] == webhook["desired"] == 1
    ws = run("webhook", "status", "--json")
    assert ws.json()["deployed"] is True and ws.json()["ready"] is True


def test_an_owner_that_cannot_be_listed_fails_register_but_the_other_hooks_are_made(setup, run, isolated_env):
    github, gitea = setup
    (isolated_env / "raibid.yaml").write_text(json.dumps({
        "mirror": {"github_api": github.url, "repos": ["acme/app"], "orgs": [{"name": "ghost"}]},
        "webhook": {"public_url": "https://ci.example.org"}}))
    r = run("webhook", "register", "--github", "--json")
    assert r.code == 1
    assert actions(r) == {("github", "ghost/*"): "failed", ("github", "acme/app"): "created"}


def test_serve_runs_as_a_process_queues_a_signed_push_and_stops_on_sigterm(redis_url, isolated_env):
    """The pod's command for real: `raibid webhook serve` in a subprocess with a bounded lifetime."""
    import hashlib
    import hmac
    import http.client
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from raibid.queue import Queue, connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAIBID_WEBHOOK_SECRET": SECRET, "RAIBID_MIRROR_MODE": "pull",
           "RAIBID_AGENTS_TRUSTED_REPOS": '["mirrors/app"]'}
    proc = subprocess.Popen([sys.executable, "-m", "raibid", "webhook", "serve", "--listen", f"127.0.0.1:{port}"],
                            cwd=isolated_env, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "serve did not answer /healthz"
                time.sleep(0.05)
        for repo in ("mirrors/app", "mirrors/other"):  # trusted by the config, and not
            body = json.dumps({"ref": "refs/heads/main", "before": "1" * 40, "after": "2" * 40,
                               "repository": {"full_name": repo}}).encode()
            signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            req = urllib.request.Request(f"{base}/hooks/gitea", data=body, method="POST",
                                         headers={"X-Gitea-Event": "push", "X-Gitea-Signature": signature,
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 202 and json.loads(resp.read())["result"] == "queued"
        # A GitHub redelivery (the same X-GitHub-Delivery) is acknowledged and does nothing.
        gh = json.dumps({"ref": "refs/heads/main", "before": "1" * 40, "after": "2" * 40,
                         "repository": {"full_name": "acme/app"}}).encode()
        answers = []
        for _ in range(2):
            req = urllib.request.Request(f"{base}/hooks/github", data=gh, method="POST", headers={
                "X-GitHub-Event": "push", "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), gh, hashlib.sha256).hexdigest(),
                "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                answers.append((resp.status, json.loads(resp.read())["result"]))
        assert answers == [(202, "ignored"), (200, "duplicate delivery")]
        # An announced body over the limit is refused before it is sent.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.putrequest("POST", "/hooks/gitea")
        conn.putheader("Content-Length", str(2 << 20))
        conn.putheader("X-Gitea-Event", "push")
        conn.endheaders()
        assert conn.getresponse().status == 413
        conn.close()
        jobs = {j.repo: j for j in Queue(connect(redis_url, None)).list()}
        assert [(j.commit, j.source) for j in jobs.values()] == [("2" * 40, "webhook")] * 2
        # The pod routes with its config's agents.trusted.
        assert (jobs["mirrors/app"].agent, jobs["mirrors/other"].agent) == ("generic", "generic-untrusted")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError("serve did not stop on SIGTERM") from None
    assert proc.returncode == 0, err
    assert f"listening on 127.0.0.1:{port}" in err and "stopped" in err
    assert SECRET not in out + err and signature not in out + err
