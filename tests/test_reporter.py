"""The status reporter: events -> commit statuses on the Gitea and GitHub fakes, with real Redis and real agents."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from raibid.gitea import Gitea
from raibid.github import GitHub
from raibid.queue import JobSpec, Queue
from raibid.webhook.reporter import GROUP, Reporter, commit_checks, job_statuses
from tests.conftest import GITEA_TOKEN
from tests.harness.giteafake import posted_statuses

AGENT_TOKEN = "agent-secret-token-5f3c9a"
STATUS_TOKEN = "github-status-token-9e8d7c6b"


@pytest.fixture
def q(redis_url) -> Queue:
    return Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url, min_idle_ms=200)


@pytest.fixture
def forges(gitea, github):
    """A Gitea repo acme/app mirroring GitHub's acme/app (one commit on main, the same sha on both)."""
    client = Gitea(gitea.url, GITEA_TOKEN, retries=0)
    client.create_org("acme")
    client.create_repo("acme", "app")
    gitea.add_token("raibid-admin", AGENT_TOKEN)
    github.add_org("acme")
    github.add_repo("acme", "app")
    github.add_token(STATUS_TOKEN, "repo:status")
    return gitea, github


def commit_both(gitea, github, files: dict[str, str]) -> str:
    """The same commit upstream on GitHub and in the Gitea mirror (as a push-mode mirror leaves it)."""
    sha = github.commit("acme", "app", "main", files)
    src = github.git.path("acme/app")
    subprocess.run(["git", "-C", str(src), "push", "-q", "--mirror", str(gitea.git.path("acme/app"))], check=True)
    return sha


def reporter(q: Queue, gitea, github, **kw) -> Reporter:
    return Reporter(q.r, q.keys, gitea=Gitea(gitea.url, GITEA_TOKEN, retries=0),
                    github=GitHub(github.url, STATUS_TOKEN, max_wait=0), **kw)


def states(posted: list[dict]) -> list[tuple[str, str]]:
    return [(s["state"], s["description"]) for s in posted]


def spec(sha: str, **kw) -> JobSpec:
    return JobSpec(repo="acme/app", ref="main", commit=sha, origin="github:acme/app", event="push", **kw)


def test_every_state_change_adds_one_job_event_in_order(q):
    job = q.submit(JobSpec(repo="acme/app", ref="main", commit="a" * 40))
    claim = q.claim("generic", "pod-1")
    q.finish(claim, "failed", exit_code=2, error="step test exited 2")
    again = q.retry(job.id)
    q.cancel(again.id)
    events = [(f["job"], f["status"]) for _, f in q.r.xrange(q.keys.events) if f["kind"] == "job"]
    assert events == [(job.id, "queued"), (job.id, "running"), (job.id, "failed"), (again.id, "queued"),
                      (again.id, "cancelled")]


def test_a_deduped_submit_and_a_repeated_finish_add_no_event(q):
    first = q.submit(JobSpec(repo="acme/app", ref="main", commit="a" * 40, dedupe="k"))
    assert q.submit(JobSpec(repo="acme/app", ref="main", commit="a" * 40, dedupe="k")).id == first.id
    claim = q.claim("generic", "pod-1")
    assert q.finish(claim, "succeeded", exit_code=0) and q.finish(claim, "succeeded", exit_code=0)
    assert [f["status"] for _, f in q.r.xrange(q.keys.events)] == ["queued", "running", "succeeded"]


def test_reaped_and_dead_lettered_jobs_add_queued_and_dead(q):
    q.max_deliveries = 1
    job = q.submit(JobSpec(repo="acme/app", ref="main", commit="a" * 40))
    q.claim("generic", "pod-1")
    time.sleep(0.3)  # the entry must be idle for min_idle_ms (200 ms) before a reap may take it
    assert q.reap(["generic"]).dead_lettered == [job.id]
    assert [f["status"] for _, f in q.r.xrange(q.keys.events)] == ["queued", "running", "dead"]


def test_statuses_reach_both_forges_in_order_and_are_recorded(q, forges):
    gitea, github = forges
    sha = commit_both(gitea, github, {"a.txt": "1"})
    rep = reporter(q, gitea, github, link=lambda job_id: f"https://ci.example/jobs/{job_id}")
    job = q.submit(spec(sha, context="raibid/test"))
    claim = q.claim("generic", "pod-7")
    rep.drain()
    q.finish(claim, "failed", exit_code=3, error="step test exited 3")
    rep.drain()
    want = [("pending", "queued"), ("pending", "running on pod-7"), ("failure", "step test exited 3")]
    assert states(posted_statuses(gitea, "acme/app", sha)) == want
    assert states(github.posted_statuses("acme", "app", sha)) == want
    assert {s["context"] for s in github.posted_statuses("acme", "app", sha)} == {"raibid/test"}
    assert github.posted_statuses("acme", "app", sha)[0]["target_url"] == f"https://ci.example/jobs/{job.id}"
    posted = job_statuses(q.r, q.keys, job.id)
    assert [(p.forge, p.state, p.result) for p in posted] == [
        ("gitea", "pending", "posted"), ("gitea", "pending", "posted"), ("gitea", "failure", "posted"),
        ("github", "pending", "posted"), ("github", "pending", "posted"), ("github", "failure", "posted")]
    assert posted[-1].url == f"{github.url}/acme/app/commit/{sha}"  # not api.github.com: the API host
    [check] = commit_checks(q.r, q.keys, "acme/app", sha)
    assert (check.context, check.state, check.job) == ("raibid/test", "failure", job.id)
    assert check.forges["github"]["result"] == "posted" and check.forges["gitea"]["result"] == "posted"
    assert q.r.xpending(q.keys.events, GROUP)["pending"] == 0


def test_context_defaults_to_the_agent_type_without_untrusted(q, forges):
    gitea, github = forges
    sha = commit_both(gitea, github, {"a.txt": "1"})
    q.submit(spec(sha, agent="rust-untrusted"))
    reporter(q, gitea, github).drain()
    assert [s["context"] for s in posted_statuses(gitea, "acme/app", sha)] == ["raibid/rust"]


def test_states_map_as_woodpecker_users_expect(q, forges):
    gitea, github = forges
    sha = commit_both(gitea, github, {"a.txt": "1"})
    rep = reporter(q, gitea, github)
    cases = [("succeeded", 0, None, "success"), ("failed", 124, "job timed out after 5s", "error"),
             ("failed", None, "clone failed: not found", "error"), ("cancelled", None, "cancelled while running",
                                                                      "error")]
    for i, (status, code, error, _) in enumerate(cases):
        q.submit(spec(sha, context=f"raibid/c{i}"))
        claim = q.claim("generic", "pod-1")
        q.finish(claim, status, exit_code=code, error=error)
    rep.drain()
    finals = {s["context"]: s["state"] for s in posted_statuses(gitea, "acme/app", sha)}
    assert finals == {f"raibid/c{i}": want for i, (*_, want) in enumerate(cases)}
    descriptions = {s["context"]: s["description"] for s in posted_statuses(gitea, "acme/app", sha)
                    if s["state"] != "pending"}  # each context in order; contexts are posted side by side
    assert descriptions.pop("raibid/c0").startswith("succeeded in ") and descriptions == {
        "raibid/c1": "job timed out after 5s", "raibid/c2": "clone failed: not found",
        "raibid/c3": "cancelled while running"}


def test_a_hostile_error_is_escaped_and_cut_to_140(q, forges):
    gitea, github = forges
    sha = commit_both(gitea, github, {"a.txt": "1"})
    q.submit(spec(sha))
    claim = q.claim("generic", "pod-1")
    q.finish(claim, "failed", exit_code=1, error="step \x1b]52;c;aGk=\x07x\u202e exited 1 " + "y" * 300)
    reporter(q, gitea, github).drain()
    final = github.posted_statuses("acme", "app", sha)[-1]["description"]
    assert len(final) == 140 and "\x1b" not in final and "\u202e" not in final and "\\x1b]52" in final


def test_a_retry_posts_again_and_an_older_attempts_late_event_does_not_win(q, forges):
    gitea, github = forges
    sha = commit_both(gitea, github, {"a.txt": "1"})
    rep = reporter(q, gitea, github)
    job = q.submit(spec(sha))
    q.finish(q.claim("generic", "pod-1"), "failed", exit_code=1, error="step a exited 1")
    retry = q.retry(job.id)
    q.finish(q.claim("generic", "pod-2"), "succeeded", exit_code=0)
    # a late event of the first attempt (as a second reporter, or a replay, would deliver it)
    q.r.xadd(q.keys.events, {"kind": "job", "job": job.id, "status": "failed"})
    rep.drain()
    posted = states(posted_statuses(gitea, "acme/app", sha))
    assert posted[-1][0] == "success" and [s for s, _ in posted].count("failure") == 1
    assert job_statuses(q.r, q.keys, job.id)[-1].result == "not posted: superseded by job " + retry.id
    assert commit_checks(q.r, q.keys, "acme/app", sha)[0].job == retry.id


def test_a_kind_status_event_is_posted(q, forges):
    gitea, github = forges
    sha = commit_both(gitea, github, {"a.txt": "1"})
    q.post_status("acme/app", sha, "raibid/test", "error", ".raibid.yml:3: bad key", origin="github:acme/app")
    reporter(q, gitea, github).drain()
    assert states(github.posted_statuses("acme", "app", sha)) == [("error", ".raibid.yml:3: bad key")]
    assert commit_checks(q.r, q.keys, "acme/app", sha)[0].state == "error"


def test_a_forge_answering_500_or_429_delays_its_statuses_in_order_and_the_other_forge_goes_on(q, forges):
    gitea, github = forges
    sha = commit_both(gitea, github, {"a.txt": "1"})
    clock = [time.time()]
    rep = reporter(q, gitea, github, clock=lambda: clock[0])
    github.secondary_limit(retry_after=30, status=429, count=1)
    gitea.fail_next(2, 500, "POST")
    q.submit(spec(sha))
    q.finish(q.claim("generic", "pod-1"), "succeeded", exit_code=0)  # the build is not held up
    rep.run_once(block_ms=1)
    assert posted_statuses(gitea, "acme/app", sha) == [] and github.posted_statuses("acme", "app", sha) == []
    assert q.r.xpending(q.keys.events, GROUP)["pending"] == 3
    clock[0] += 5  # past Gitea's back-off, within GitHub's Retry-After
    for _ in range(3):
        rep.run_once(block_ms=1)
        clock[0] += 2
    assert states(posted_statuses(gitea, "acme/app", sha))[-1][0] == "success"
    assert github.posted_statuses("acme", "app", sha) == []
    assert "retrying" in job_statuses(q.r, q.keys, q.list()[0].id)[-1].result
    clock[0] += 30
    rep.drain()
    assert [s for s, _ in states(github.posted_statuses("acme", "app", sha))] == ["pending", "pending", "success"]
    assert [s for s, _ in states(posted_statuses(gitea, "acme/app", sha))] == ["pending", "pending", "success"]


def test_a_token_without_the_status_scope_is_given_up_on_with_the_reason(q, forges):
    gitea, github = forges
    sha = commit_both(gitea, github, {"a.txt": "1"})
    github.add_token("hooks-only-token", "admin:repo_hook")
    rep = Reporter(q.r, q.keys, gitea=Gitea(gitea.url, GITEA_TOKEN, retries=0),
                   github=GitHub(github.url, "hooks-only-token", max_wait=0))
    job = q.submit(spec(sha))
    rep.drain()
    [gave_up] = [p for p in job_statuses(q.r, q.keys, job.id) if p.forge == "github"]
    assert gave_up.result.startswith("gave up: GitHub refused POST /repos/acme/app/statuses/")
    assert "403" in gave_up.result and len(posted_statuses(gitea, "acme/app", sha)) == 1
    assert q.r.xpending(q.keys.events, GROUP)["pending"] == 0


def test_the_gitea_fake_refuses_a_status_outside_its_swagger(forges):
    gitea, _ = forges
    client = Gitea(gitea.url, GITEA_TOKEN, retries=0)
    from raibid.errors import AuthError, GiteaError

    with pytest.raises(GiteaError, match="invalid state"):
        client.post_status("acme", "app", "a" * 40, state="queued", context="raibid/x")
    reader = gitea.add_token("raibid-admin", "read-only-token-1234", ["read:repository"])
    with pytest.raises(AuthError, match="write:repository"):
        Gitea(gitea.url, reader, retries=0).post_status("acme", "app", "a" * 40, state="pending", context="c")


# ---------------------------------------------------------------------- real agents, a real reporter process
def agent_env(redis_url: str, gitea, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "RAIBID_REDIS_URL": redis_url, "RAIBID_GITEA_URL": gitea.git.base_url,
           "RAIBID_GITEA_TOKEN": AGENT_TOKEN, "RAIBID_QUEUE_HEARTBEAT": "1", "RAIBID_QUEUE_MIN_IDLE": "1",
           "RAIBID_AGENTS_TRUSTED_OWNERS": "[acme]"}
    env.update(extra)
    return env


def run_agent(env: dict[str, str], workdir: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raibid", "agents", "run", "--wait", "5", "--workdir", str(workdir)],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_real_agents_push_to_success_and_a_failing_step_is_named(q, forges, redis_url, tmp_path):
    gitea, github = forges
    ok = commit_both(gitea, github, {".raibid.yml": "steps:\n  - name: build\n    run: echo fine\n"})
    q.submit(spec(ok, context="raibid/ok"))
    assert run_agent(agent_env(redis_url, gitea, tmp_path), tmp_path / "w1").returncode == 0
    bad = commit_both(gitea, github, {".raibid.yml": "steps:\n  - name: lint\n    run: exit 4\n"})
    q.submit(spec(bad, context="raibid/bad"))
    assert run_agent(agent_env(redis_url, gitea, tmp_path), tmp_path / "w2").returncode == 0
    reporter(q, gitea, github).drain()
    for posted in (posted_statuses(gitea, "acme/app", ok), github.posted_statuses("acme", "app", ok)):
        assert [s["state"] for s in posted] == ["pending", "pending", "success"]
        assert posted[1]["description"].startswith("running on ")
    for posted in (posted_statuses(gitea, "acme/app", bad), github.posted_statuses("acme", "app", bad)):
        assert [s["state"] for s in posted] == ["pending", "pending", "failure"]
        assert posted[-1]["description"] == "step lint exited 4"


def test_a_sigkilled_agent_reclaimed_and_rerun_gives_one_final_state(q, forges, redis_url, tmp_path):
    gitea, github = forges
    sha = commit_both(gitea, github, {".raibid.yml": "steps:\n  - name: slow\n    run: "
                                                     "touch started; test -e ../../second || sleep 60\n"})
    job = q.submit(spec(sha))
    env = agent_env(redis_url, gitea, tmp_path)
    first = subprocess.Popen([sys.executable, "-m", "raibid", "agents", "run", "--wait", "5", "--workdir",
                              str(tmp_path / "w1")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "w1" / "src" / "started").exists():
        assert time.monotonic() < deadline, "the first agent never started the step"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    (tmp_path / "second").touch()
    # the next agent reclaims the entry once it has been idle for RAIBID_QUEUE_MIN_IDLE (1 s)
    done = run_agent(env, tmp_path / "w2")
    assert done.returncode == 0, done.stderr
    assert q.get(job.id).status == "succeeded"
    reporter(q, gitea, github).drain()
    for posted in (posted_statuses(gitea, "acme/app", sha), github.posted_statuses("acme", "app", sha)):
        finals = [s["state"] for s in posted if s["state"] != "pending"]
        assert finals == ["success"], posted
        assert [s["description"].split(" on ")[0] for s in posted[:2]] == ["queued", "running"]


def test_the_reporter_killed_mid_run_catches_up_with_nothing_lost_or_reordered(q, forges, redis_url, tmp_path):
    gitea, github = forges
    shas = [commit_both(gitea, github, {"n.txt": str(i)}) for i in range(6)]
    for sha in shas:
        q.submit(spec(sha))
    env = {**os.environ, "RAIBID_REDIS_URL": redis_url, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    script = (f"import redis, time\nfrom raibid.queue import Keys\nfrom raibid.gitea import Gitea\n"
              f"from raibid.github import GitHub\nfrom raibid.webhook.reporter import Reporter\n"
              f"r = redis.Redis.from_url({redis_url!r}, decode_responses=True)\n"
              f"Reporter(r, Keys(), gitea=Gitea({gitea.url!r}, {GITEA_TOKEN!r}, retries=0),\n"
              f"         github=GitHub({github.url!r}, {STATUS_TOKEN!r}, max_wait=0), consumer='reporter').run()\n")
    gitea.delay_next(100, 0.2, "POST", "/statuses/")  # slow enough to kill it between posts
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while sum(len(posted_statuses(gitea, "acme/app", s)) for s in shas) < 2:
        assert time.monotonic() < deadline, "the reporter posted nothing"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gitea.delays.clear()
    while gitea.in_flight:  # a post the killed reporter had sent lands late: let it land before the restart
        assert time.monotonic() < deadline, "the fake never answered"
        time.sleep(0.01)
    for i in range(3):  # the builds go on while it is down
        q.finish(q.claim("generic", f"pod-{i}"), "succeeded", exit_code=0)
    reporter(q, gitea, github).drain()
    for sha in shas:
        job = next(j for j in q.list() if j.commit == sha)
        want = ["pending"] + (["pending", "success"] if job.status == "succeeded" else [])
        for posted in (posted_statuses(gitea, "acme/app", sha), github.posted_statuses("acme", "app", sha)):
            pairs = [(s["state"], s["description"]) for s in posted]
            # a post that landed just before the kill may be posted again (harmless); the order holds
            once = [p for i, p in enumerate(pairs) if i == 0 or pairs[i - 1] != p]
            assert [state for state, _ in once] == want, (sha, posted)


# ---------------------------------------------------------------------- the pod: manifests and `webhook serve`
def test_only_the_receiver_pod_holds_the_github_status_token():
    from raibid.cluster.components import COMPONENTS
    from raibid.cluster.render import render
    from raibid.config import load_config

    secrets = {"redis_password": "r", "gitea_admin_password": "g", "webhook_secret": "w", "webhook_page_key": "p"}
    holders = []
    for m in render(load_config(), list(COMPONENTS), secrets=secrets):
        if "'name': 'raibid-github-status'" in repr(m.obj):  # a secretKeyRef or a volume of that Secret
            holders.append(m.ref)
    assert holders == ["Deployment/raibid-ci/raibid-webhook"]
    dep = next(m.obj for m in render(load_config(), ["webhook"], secrets=secrets) if m.ref == holders[0])
    [c] = dep["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs["RAIBID_GITHUB_STATUS_TOKEN"] == {"name": "raibid-github-status", "key": "token", "optional": True}


def test_webhook_serve_posts_pending_for_a_gitea_push(forges, redis_url, isolated_env):
    """The pod's command for real: a signed Gitea push to `raibid webhook serve` becomes `pending` on the commit."""
    import hashlib
    import hmac
    import json
    import socket
    import urllib.request

    gitea, github = forges
    sha = commit_both(gitea, github, {"a.txt": "1"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAIBID_WEBHOOK_SECRET": "s3cret", "RAIBID_MIRROR_MODE": "pull",
           "RAIBID_GITEA_URL": gitea.url, "RAIBID_GITEA_TOKEN": GITEA_TOKEN,
           "RAIBID_AGENTS_TRUSTED_OWNERS": "[acme]", "RAIBID_WEBHOOK_PAGE_KEY": "page-key-for-the-test",
           "RAIBID_WEBHOOK_PAGE_URL": f"http://127.0.0.1:{port}"}
    proc = subprocess.Popen([sys.executable, "-m", "raibid", "webhook", "serve", "--listen", f"127.0.0.1:{port}"],
                            cwd=isolated_env, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        body = json.dumps({"ref": "refs/heads/main", "before": "0" * 40, "after": sha,
                           "repository": {"full_name": "acme/app"}}).encode()
        sig = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/gitea", data=body, method="POST",
                                             headers={"X-Gitea-Event": "push", "X-Gitea-Signature": sig,
                                                      "Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    assert json.loads(resp.read())["result"] == "queued"
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        while not posted_statuses(gitea, "acme/app", sha):
            assert time.monotonic() < deadline, "no status was posted"
            time.sleep(0.02)
        assert states(posted_statuses(gitea, "acme/app", sha)) == [("pending", "queued")]
        assert github.posted_statuses("acme", "app", sha) == []  # no status token: Gitea only
        # The status links to the job's page, with the capability the same receiver checks.
        from raibid.webhook.jobpage import JobLinks

        [status] = posted_statuses(gitea, "acme/app", sha)
        job_id = status["target_url"].split("/jobs/", 1)[1].split("?", 1)[0]
        assert status["target_url"] == JobLinks(f"http://127.0.0.1:{port}", "page-key-for-the-test").url(job_id)
        with urllib.request.urlopen(status["target_url"], timeout=5) as page:
            assert page.status == 200 and job_id in page.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_without_a_github_status_token_a_mirror_job_posts_to_gitea_and_says_why_not_github(q, forges):
    gitea, github = forges
    sha = commit_both(gitea, github, {"a.txt": "1"})
    job = q.submit(spec(sha))
    Reporter(q.r, q.keys, gitea=Gitea(gitea.url, GITEA_TOKEN, retries=0)).drain()
    assert [(p.forge, p.result) for p in job_statuses(q.r, q.keys, job.id)] == [
        ("gitea", "posted"), ("github", "not posted: no github token")]
    assert github.posted_statuses("acme", "app", sha) == []


def test_a_held_pr_build_posts_pending_waiting_for_approval_then_queued_once_approved(q, forges):
    gitea, github = forges
    sha = commit_both(gitea, github, {"a.txt": "1"})
    rep = reporter(q, gitea, github)
    job = q.submit(JobSpec(repo="acme/app", ref="refs/pull/1/head", commit=sha, origin="github:acme/app",
                           event="pull_request", pr="1", agent="generic-untrusted", context="raibid/test",
                           hold=True))
    rep.drain()
    assert states(posted_statuses(gitea, "acme/app", sha)) == [("pending", "waiting for approval")]
    q.approve(job.id)
    rep.drain()
    want = [("pending", "waiting for approval"), ("pending", "queued")]
    assert states(posted_statuses(gitea, "acme/app", sha)) == want
    assert states(github.posted_statuses("acme", "app", sha)) == want


def test_a_succeeded_jobs_description_names_its_image_and_short_digest(q):
    from raibid.webhook.reporter import DESCRIPTION_MAX, clean, describe

    job = q.submit(JobSpec(repo="acme/app", ref="main", agent="image"))
    claim = q.claim("image", "pod-1")
    digest = "sha256:" + "0123456789ab" + "f" * 52
    refs = [f"gitea.local:30080/acme/app:{'c' * 40}@{digest}", f"gitea.local:30080/acme/app:main@{digest}"]
    assert q.finish(claim, "succeeded", exit_code=0, image=" ".join(refs))
    state, text = describe(q.get(job.id), "succeeded")
    assert state == "success" and text.startswith("succeeded") and text.endswith(
        "; image acme/app@sha256:0123456789ab (+1 more)")
    assert len(clean(text)) <= DESCRIPTION_MAX and clean(text) == text
    plain = q.submit(JobSpec(repo="acme/app", ref="main", agent="image"))
    assert q.finish(q.claim("image", "pod-1"), "succeeded", exit_code=0)
    assert "image" not in describe(q.get(plain.id), "succeeded")[1]
