"""`raibid status` and the statuses part of `raibid queue show`, from Redis, after a real reporter posted."""

from __future__ import annotations

import redis

from raibid.gitea import Gitea
from raibid.queue import JobSpec, Queue
from raibid.webhook.reporter import Reporter
from tests.conftest import GITEA_TOKEN


def setup(redis_url: str, gitea) -> tuple[Queue, str, str]:
    q = Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)
    client = Gitea(gitea.url, GITEA_TOKEN, retries=0)
    client.create_org("acme")
    client.create_repo("acme", "app")
    sha = "b" * 40
    job = q.submit(JobSpec(repo="acme/app", ref="refs/heads/main", commit=sha, context="raibid/test"))
    q.submit(JobSpec(repo="acme/app", ref="refs/heads/main", commit=sha, context="raibid/lint"))
    q.finish(q.claim("generic", "pod-1"), "failed", exit_code=2, error="step \x1b[2Jtest exited 2")
    Reporter(q.r, q.keys, gitea=Gitea(gitea.url, GITEA_TOKEN, retries=0)).drain()
    return q, sha, job.id


def test_status_lists_a_commits_checks_by_ref_and_by_short_sha(run, redis_url, gitea):
    _, sha, job_id = setup(redis_url, gitea)
    r = run("status", "acme/app@main", "--json")
    assert r.code == 1, r.err  # one check failed
    data = r.json()
    assert (data["commit"], data["ref"]) == (sha, "refs/heads/main")
    checks = {c["context"]: c for c in data["checks"]}
    assert checks["raibid/test"]["state"] == "failure" and checks["raibid/test"]["job"] == job_id
    assert checks["raibid/test"]["description"] == "step \\x1b[2Jtest exited 2"
    assert checks["raibid/lint"]["state"] == "pending" and checks["raibid/test"]["forges"]["gitea"]["result"] == "posted"
    assert "github" not in checks["raibid/test"]["forges"]
    plain = run("status", f"acme/app@{sha[:8]}")
    assert plain.code == 1 and "\x1b" not in plain.out
    assert plain.out.splitlines()[0].split("\t") == ["CHECK", "STATE", "DESCRIPTION", "JOB", "GITEA", "GITHUB", "AGE"]
    assert any(line.startswith("raibid/test\tfailure\tstep \\x1b[2Jtest exited 2") for line in plain.out.splitlines())


def test_status_exit_codes_for_pending_and_unknown(run, redis_url, gitea):
    q, sha, _ = setup(redis_url, gitea)
    q.r.hdel(q.keys.commit_checks("acme/app", sha), "raibid/test")
    assert run("status", f"acme/app@{sha}").code == 8  # only the pending one is left
    missing = run("status", "acme/app@nope")
    assert missing.code == 3 and "no job of acme/app@nope" in missing.err
    assert run("status", "not-a-repo").code == 2


def test_queue_show_prints_what_was_posted_where(run, redis_url, gitea):
    _, sha, job_id = setup(redis_url, gitea)
    shown = run("queue", "show", job_id, "--json").json()
    assert [(s["forge"], s["state"], s["result"]) for s in shown["commit_statuses"]] == [
        ("gitea", "pending", "posted"), ("gitea", "pending", "posted"), ("gitea", "failure", "posted")]
    assert shown["commit_statuses"][0]["url"] == f"{gitea.url}/acme/app/commit/{sha}"
    plain = run("queue", "show", job_id).out
    assert "status_url:" in plain and f"{gitea.url}/acme/app/commit/{sha}" in plain
    assert 'status gitea: failure "step \\x1b[2Jtest exited 2" (raibid/test): posted' in plain
    assert "\x1b" not in plain
