"""The receiver with the mirror engine (push mode) and the cron `raibid mirror sync`: one job per commit."""

from __future__ import annotations

import json

import pytest

from raibid.app import Application
from raibid.cli.webhook import _engine
from raibid.webhook.mirrors import MirrorSet
from raibid.webhook.server import build
from tests.test_webhook import SECRET, call, gitea_post, sign
from tests.test_webhook_github import DEADLINE


@pytest.fixture
def world(github, gitea, redis_url, isolated_env, monkeypatch, run):
    """acme/app on GitHub, mirrored (push mode) into Gitea's mirrors/app by a first `mirror sync`."""
    github.add_org("acme")
    github.add_repo("acme", "app", files={"README.md": "hi\n"})
    monkeypatch.setenv("GITHUB_TOKEN", github.token)
    (isolated_env / "raibid.yaml").write_text(json.dumps({"mirror": {
        "github_api": github.url, "target_org": "mirrors", "mode": "push", "repos": ["acme/app"]}}))
    first = run("mirror", "sync", "--json")
    assert first.code == 0, first.err
    assert first.json()["repos"][0]["action"] == "created"
    return github, gitea


def new_commit(github, content: str) -> tuple[str, str]:
    """(before, after) of a new commit on acme/app's main."""
    before = github.heads("acme", "app")["refs/heads/main"]
    return before, github.commit("acme", "app", "main", {"app.py": content})


def receiver(app: Application):
    """As `raibid webhook serve` builds it: the policy is the config's agents.trusted."""
    cfg = app.cfg
    return build(secret=SECRET, submit=app.queue.submit_deduped, mirrors=MirrorSet.from_config(cfg.mirror),
                 branches=cfg.mirror.trigger.branches, agent=cfg.mirror.trigger.agent, policy=app.trust_policy,
                 engine=_engine(app))


def test_push_mode_github_push_syncs_through_the_engine_and_its_trigger_queues_one_job(world):
    github, gitea = world
    app = Application()
    before, after = new_commit(github, "print(2)\n")
    service = receiver(app)
    try:
        body = json.dumps(github.push_payload("acme", "app", "main", before, after)).encode()
        headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(body)}
        status, reply = call(service.receiver, "POST", "/hooks/github", body, headers)
        assert (status, reply["result"], reply["mirror"]) == (202, "sync scheduled", "mirrors/app")
        assert service.worker.wait_idle(DEADLINE)
        assert gitea.git.refs("mirrors/app")["refs/heads/main"] == after
        jobs = app.queue.list()
        assert [(j.repo, j.ref, j.commit, j.source) for j in jobs] == [("mirrors/app", "main", after, "webhook")]
        # The same push delivered again: the engine finds nothing to move, no second job.
        call(service.receiver, "POST", "/hooks/github", body, headers)
        assert service.worker.wait_idle(DEADLINE)
        assert len(app.queue.list()) == 1 and service.worker.stats.syncs == 2
    finally:
        service.stop()


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
def test_webhook_then_the_cron_mirror_sync_for_the_same_commit_is_one_job(world, run, isolated_env, trusted):
    """Gitea's hook fires for a commit (as when a push lands in Gitea); the cron sync then moves the
    same commit and triggers with the same dedupe key: still one job, and the sync reports it.
    Both route with the same agents.trusted, so both pick the same pool, trusted or not."""
    github, gitea = world
    if trusted:
        config = json.loads((isolated_env / "raibid.yaml").read_text())
        config["agents"] = {"trusted": {"repos": ["mirrors/app"]}}
        (isolated_env / "raibid.yaml").write_text(json.dumps(config))
    pool = "generic" if trusted else "generic-untrusted"
    app = Application()
    before, after = new_commit(github, "print(3)\n")
    service = receiver(app)
    try:
        status, reply = gitea_post(service.receiver, {"ref": "refs/heads/main", "before": before, "after": after,
                                                      "repository": {"full_name": "mirrors/app"}})
        assert (status, reply["result"], reply["agent"]) == (202, "queued", pool)
    finally:
        service.stop()
    cron = run("mirror", "sync", "--json")
    assert cron.code == 0, cron.err
    [repo] = cron.json()["repos"]
    assert repo["action"] == "synced" and repo["jobs"] == [reply["job"]]
    jobs = app.queue.list()
    assert [(j.id, j.source, j.agent) for j in jobs] == [(reply["job"], "webhook", pool)]


def test_the_cronjob_and_the_receiver_read_the_clis_agents_trusted(isolated_env, monkeypatch):
    """Render both pods' configs from the CLI's, load them with the loader the pods use: every repo
    gets the same pool in the CLI, the mirror CronJob and the receiver."""
    from raibid.agents.trust import TrustPolicy
    from raibid.cluster.render import render
    from raibid.config import load_config
    from raibid.webhook.trigger import BuildTrigger

    (isolated_env / "raibid.yaml").write_text(json.dumps({
        "agents": {"default_type": "python", "trusted": {"owners": ["Me"], "repos": ["mirrors/own-.*"]}},
        "mirror": {"target_org": "mirrors", "orgs": [{"name": "acme", "include": ["^svc-"]}],
                   "trigger": {"agent": "rust"}}}))
    monkeypatch.setenv("RAIBID_AGENTS_TRUSTED_OWNERS", "[me, team]")  # env overrides reach the pods too
    cli = load_config()
    objs = {m.ref: m.obj for m in render(cli, ["mirror", "webhook"],
                                         secrets={"redis_password": "r", "gitea_admin_password": "g",
                                                  "webhook_secret": "w", "webhook_page_key": "p"})}
    pods = {"mirror": objs["ConfigMap/raibid-ci/raibid-mirror-config"]["data"]["raibid.yaml"],
            "webhook": objs["ConfigMap/raibid-ci/raibid-webhook-config"]["data"]["config.yaml"]}
    monkeypatch.delenv("RAIBID_AGENTS_TRUSTED_OWNERS")  # the pods have no such env
    repos = ["me/app", "ME/x", "team/api", "mirrors/own-lib", "mirrors/svc-a", "mirrors/own", "acme/svc-a",
             "other/app"]

    def pools(cfg) -> list[str]:
        trigger = BuildTrigger(lambda spec: None, branches=".", agent=cfg.mirror.trigger.agent,  # type: ignore
                               policy=TrustPolicy.from_config(cfg.agents.trusted))
        return [trigger.pool(r) for r in repos]

    want = ["rust", "rust", "rust", "rust", "rust-untrusted", "rust-untrusted", "rust-untrusted", "rust-untrusted"]
    assert pools(cli) == want
    for name, text in pods.items():
        path = isolated_env / f"{name}.yaml"
        path.write_text(text)
        pod = load_config(path, env={})
        assert pod.agents.trusted.owners == ["me", "team"] and pod.agents.trusted.repos == ["mirrors/own-.*"], name
        assert pod.agents.default_type == "python", name
        assert pools(pod) == want, name


def test_a_push_mode_sync_failure_is_counted_and_queues_nothing(world):
    github, gitea = world
    app = Application()
    before, after = new_commit(github, "print(4)\n")
    github.delete_repo("acme", "app")  # gone upstream between the push and the sync
    service = receiver(app)
    try:
        body = json.dumps({"ref": "refs/heads/main", "before": before, "after": after,
                           "repository": {"full_name": "acme/app"}}).encode()
        call(service.receiver, "POST", "/hooks/github", body,
             {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(body)})
        assert service.worker.wait_idle(DEADLINE)
        assert service.worker.stats.failures == 1 and service.worker.stats.syncs == 0
        assert app.queue.list() == []
        assert call(service.receiver, "GET", "/healthz")[1]["sync"]["failures"] == 1
    finally:
        service.stop()


def test_each_push_mode_sync_has_its_own_rate_limit_budget(world, isolated_env):
    """mirror.max_wait bounds each sync's waits, not the sum over the receiver's lifetime."""
    github, gitea = world
    cfg = isolated_env / "raibid.yaml"
    doc = json.loads(cfg.read_text())
    doc["mirror"]["max_wait"] = 3  # each wait below is about 2 s: two fit one budget only if it is per sync
    cfg.write_text(json.dumps(doc))
    app = Application()
    service = receiver(app)
    try:
        for n in range(2):
            before, after = new_commit(github, f"print({n})\n")
            github.rate_limit(0, reset_in=1)
            body = json.dumps(github.push_payload("acme", "app", "main", before, after)).encode()
            headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(body)}
            assert call(service.receiver, "POST", "/hooks/github", body, headers)[0] == 202
            assert service.worker.wait_idle(DEADLINE)
            assert service.worker.stats.failures == 0, f"sync {n} gave up on the rate limit"
            assert gitea.git.refs("mirrors/app")["refs/heads/main"] == after
            github.reset_limits()
    finally:
        service.stop()
