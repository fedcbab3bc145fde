"""GitHub pushes end to end: a real waitress server, the GitHub fake delivering signed pushes, a Gitea
pull mirror synced through the Gitea fake, and one job in a real Redis."""

from __future__ import annotations

import threading
import time

import pytest

from raibid.agents.trust import TrustPolicy
from raibid.gitea import Gitea
from raibid.github.client import GitHub
from raibid.queue import Queue, connect
from raibid.webhook.mirrors import MirrorSet
from raibid.webhook.register import register_github
from raibid.webhook.server import build, start_server
from raibid.webhook.sync import GiteaPullSync
from tests.conftest import GITEA_TOKEN
from tests.test_webhook import SECRET, call, sign

DEADLINE = 15.0


def wait_for(cond, timeout: float = DEADLINE):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


@pytest.fixture
def mirrored(github, gitea):
    """acme/app on GitHub, pull-mirrored by Gitea as mirrors/app."""
    github.add_org("acme")
    github.add_repo("acme", "app", files={"README.md": "hi\n"})
    client = Gitea(gitea.url, GITEA_TOKEN, backoff=0.001)
    client.create_org("mirrors")
    client.migrate(github.repo_json(github.repo("acme", "app"), authenticated=True)["clone_url"], "mirrors", "app",
                   mirror=True, auth_token=github.token)
    return client


def syncs(gitea) -> int:
    return sum(1 for method, path, status in gitea.log if path.endswith("/mirror-sync") and status == 200)


def test_github_push_through_a_real_server_syncs_the_repo_then_queues_one_job(github, gitea, mirrored, redis_url):
    queue = Queue(connect(redis_url, None))
    mirrors = MirrorSet.of("mirrors", ["acme/app"])
    pull = GiteaPullSync(mirrored, mirrors, wait=DEADLINE, interval=0.02)
    # Trusting the GitHub owner does not trust its mirror: the pool is chosen for the Gitea repo the agent clones.
    service = build(secret=SECRET, submit=queue.submit_deduped, mirrors=mirrors, branches="^main$",
                    agent="generic", policy=TrustPolicy.of(owners=["acme"]), sync=pull, pull=pull)
    server, thread = start_server(service.receiver)
    try:
        url = f"http://127.0.0.1:{server.effective_port}/hooks/github"
        [hook] = register_github(GitHub(github.url, github.token), ["acme/app"], url=url, secret=SECRET)
        assert hook.action == "created"
        before = github.heads("acme", "app")["refs/heads/main"]
        after = github.commit("acme", "app", "main", {"app.py": "print(1)\n"})
        [delivery] = github.deliver("acme", "app", "push", github.push_payload("acme", "app", "main", before, after))
        assert delivery.status == 202
        jobs = wait_for(lambda: queue.list())
        assert [(j.repo, j.ref, j.commit, j.source, j.agent) for j in jobs] == [
            ("mirrors/app", "main", after, "webhook", "generic-untrusted")]
        assert queue.r.xlen(queue.keys.stream("generic-untrusted")) == 1
        assert mirrored.branch_head("mirrors", "app", "main") == after
        assert syncs(gitea) == 1
        # GitHub redelivers the same push: the sync runs again, the job stays one.
        github.deliver("acme", "app", "push", github.push_payload("acme", "app", "main", before, after))
        wait_for(lambda: syncs(gitea) == 2 and service.worker.idle())
        assert len(queue.list()) == 1
    finally:
        server.close()
        thread.join(5)
        service.stop()
    assert not thread.is_alive()


def test_ten_pushes_in_a_burst_cost_at_most_two_syncs_and_build_the_last_commit(github, gitea, mirrored, redis_url):
    import json

    queue = Queue(connect(redis_url, None))
    mirrors = MirrorSet.of("mirrors", ["acme/app"])
    pull = GiteaPullSync(mirrored, mirrors, wait=DEADLINE, interval=0.02)
    burst_done = threading.Event()

    def gated_sync(source: str) -> None:
        burst_done.wait(DEADLINE)  # the first sync starts while the burst is still arriving
        pull(source)

    service = build(secret=SECRET, submit=queue.submit_deduped, mirrors=mirrors, branches="^main$",
                    agent="generic", sync=gated_sync, pull=pull)
    try:
        head = github.heads("acme", "app")["refs/heads/main"]
        payloads = []
        for i in range(10):
            sha = github.commit("acme", "app", "main", {"n.txt": f"{i}\n"})
            payloads.append(github.push_payload("acme", "app", "main", head, sha))
            head = sha
        for p in payloads:
            body = json.dumps(p).encode()
            status, reply = call(service.receiver, "POST", "/hooks/github", body,
                                 {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(body)})
            assert (status, reply["result"]) == (202, "sync scheduled")
        burst_done.set()
        assert service.worker.wait_idle(DEADLINE)
    finally:
        service.stop()
    assert 1 <= syncs(gitea) <= 2
    jobs = queue.list()
    assert [(j.repo, j.commit) for j in jobs] == [("mirrors/app", head)]
