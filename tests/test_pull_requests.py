"""Pull requests: real GitHub payloads, Gitea's, trust and approval, the mirror's PR heads, dedupe, the step env.

The GitHub payloads are `@octokit/webhooks-examples` 7.6.1 (tests/fixtures/octokit-webhooks-examples),
as GitHub sent them. The package holds no fork PR, so the fork payload is the real one with its
``pull_request.head.repo`` (and ``user``) replaced by a fork's repository object of the same shape;
the end-to-end tests retarget the real payloads' names and shas to the repos of the GitHub fake.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from raibid.agents.trust import TrustPolicy
from raibid.app import Application
from raibid.errors import UsageError
from raibid.queue import Queue
from raibid.queue.connection import connect
from raibid.webhook.events import BadPayload, parse_pull_request
from raibid.webhook.mirrors import MirrorSet
from raibid.webhook.server import build
from raibid.webhook.trigger import BuildTrigger
from tests.test_agents_runtime import agent_env, finish, log_text, start_agent
from tests.test_agents_runtime import argv_log as argv_log  # noqa: F401 - fixtures: a git wrapper on PATH,
from tests.test_agents_runtime import git as git  # noqa: F401 - and the git server with the agent's token
from tests.test_webhook import SECRET, call, gitea_post, sign
from tests.test_webhook_github import DEADLINE, wait_for
from tests.test_webhook_mirror import receiver as mirror_receiver

FIXTURE = Path(__file__).parent / "fixtures" / "octokit-webhooks-examples" / "pull-request.json"
OCTO_SHA = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"  # the examples' pull_request.head.sha
SHA_A, SHA_B = "a" * 40, "b" * 40


def octokit(action: str) -> dict:
    """The first real `pull_request` example with ``action``."""
    examples = json.loads(FIXTURE.read_text())["pull_request"]
    return copy.deepcopy(next(e for e in examples if e["action"] == action))


def as_fork(payload: dict, owner: str = "forker") -> dict:
    """The same PR opened from ``owner``'s fork: head.repo is a fork's repository object, user the forker."""
    out = copy.deepcopy(payload)
    fork = copy.deepcopy(out["repository"])
    fork["full_name"] = f"{owner}/{fork['name']}"
    fork["owner"]["login"] = owner
    fork["fork"] = True
    out["pull_request"]["head"]["repo"] = fork
    out["pull_request"]["head"]["label"] = f"{owner}:{out['pull_request']['head']['ref']}"
    out["pull_request"]["user"]["login"] = owner
    return out


def retarget(payload: dict, repo: str, number: int, sha: str, head_ref: str, *, head_repo: str | None = None,
             author: str | None = None) -> dict:
    """A real payload naming ``repo`` (and its head in ``head_repo``), PR ``number`` at ``sha``."""
    out = copy.deepcopy(payload)
    out["number"] = out["pull_request"]["number"] = number
    out["repository"]["full_name"] = repo
    out["pull_request"]["base"]["repo"]["full_name"] = repo
    out["pull_request"]["head"].update(sha=sha, ref=head_ref)
    out["pull_request"]["head"]["repo"]["full_name"] = head_repo or repo
    if author:
        out["pull_request"]["user"]["login"] = author
    return out


def gitea_pr(action: str, *, repo: str = "mirrors/app", number: int = 7, sha: str = SHA_A,
             head_ref: str = "feature", base_ref: str = "main", head_repo: str | None = None,
             author: str = "mirrors") -> dict:
    """Gitea's ``pull_request`` payload (``api.PullRequestPayload``, modules/structs/hook.go): the fields
    named as Gitea names them, around the ones raibid reads."""
    head_full = head_repo or repo
    return {"action": action, "number": number,
            "pull_request": {"id": 1000 + number, "number": number, "user": {"login": author}, "state": "open",
                             "title": "a change", "head": {"label": head_ref, "ref": head_ref, "sha": sha,
                                                           "repo_id": 2, "repo": {"full_name": head_full,
                                                                                  "fork": head_repo is not None}},
                             "base": {"label": base_ref, "ref": base_ref, "sha": SHA_B, "repo_id": 1,
                                      "repo": {"full_name": repo}}},
            "repository": {"full_name": repo, "fork": False}, "sender": {"login": author}, "commit_id": ""}


@pytest.fixture
def queue(redis_url):
    return Queue(connect(redis_url, None))


def gitea_receiver(queue: Queue, policy: TrustPolicy, branches: str = "^(main|master)$"):
    return build(secret=SECRET, submit=queue.submit_deduped, mirrors=MirrorSet.of("mirrors"), branches=branches,
                 agent="generic", policy=policy)


# ----------------------------------------------------------------------------- payloads


@pytest.mark.parametrize("action", ["opened", "synchronize", "reopened"])
def test_real_github_pull_request_payloads_build_the_head_sha(action):
    payload = octokit(action)
    pr = parse_pull_request(payload)
    assert (pr.repo, pr.number, pr.head_sha, pr.head_ref, pr.base_ref) == (
        "Codertocat/Hello-World", 2, OCTO_SHA, "changes", "master")
    assert pr.ref == "refs/pull/2/head" and pr.builds and not pr.fork and pr.author == "Codertocat"
    fork = parse_pull_request(as_fork(payload))
    assert fork.fork and fork.head_repo == "forker/Hello-World" and fork.author == "forker"


def test_other_actions_build_nothing_and_a_gone_fork_is_a_fork():
    assert not parse_pull_request(octokit("closed")).builds
    payload = octokit("opened")
    payload["pull_request"]["head"]["repo"] = None  # GitHub sends null once the fork is deleted
    assert parse_pull_request(payload).fork


@pytest.mark.parametrize("field, value", [("sha", "abc"), ("sha", OCTO_SHA + "\n"), ("ref", "a\nb"), ("ref", "")])
def test_a_bad_head_is_a_bad_payload(field, value):
    payload = octokit("opened")
    payload["pull_request"]["head"][field] = value
    with pytest.raises(BadPayload):
        parse_pull_request(payload)


# ----------------------------------------------------------------------------- Gitea: trust and approval


def test_a_gitea_same_repo_pr_builds_its_head_on_the_trusted_pool(queue):
    service = gitea_receiver(queue, TrustPolicy.of(owners=["mirrors"]))
    status, reply = gitea_post(service.receiver, gitea_pr("opened"), event="pull_request")
    assert (status, reply["result"], reply["agent"], reply["commit"]) == (202, "queued", "generic", SHA_A)
    job = queue.get(reply["job"])
    assert (job.repo, job.ref, job.commit, job.status) == ("mirrors/app", "refs/pull/7/head", SHA_A, "queued")
    assert (job.event, job.pr, job.base_ref, job.head_ref, job.origin) == ("pull_request", "7", "main", "feature",
                                                                           None)
    assert queue.r.xlen(queue.keys.stream("generic")) == 1
    # Gitea says "synchronized" for a new head commit: a new job for the new sha.
    status, reply = gitea_post(service.receiver, gitea_pr("synchronized", sha=SHA_B), event="pull_request")
    assert (reply["result"], queue.get(reply["job"]).commit) == ("queued", SHA_B)
    status, reply = gitea_post(service.receiver, gitea_pr("closed", sha=SHA_B), event="pull_request")
    assert (status, reply["result"]) == (202, "ignored")
    status, reply = gitea_post(service.receiver, gitea_pr("opened", base_ref="dev"), event="pull_request")
    assert reply["result"] == "ignored" and len(queue.list()) == 2


def test_a_fork_pr_is_untrusted_waits_for_approval_off_every_stream_then_approve_queues_it(queue):
    service = gitea_receiver(queue, TrustPolicy.of(owners=["mirrors"]))  # approval: forks (the default)
    status, reply = gitea_post(service.receiver, gitea_pr("opened", head_repo="forker/app", author="forker"),
                               event="pull_request")
    assert (status, reply["result"], reply["agent"]) == (202, "waiting for approval", "generic-untrusted")
    job = queue.get(reply["job"])
    assert job.status == "waiting-approval" and job.stream_id is None
    stream = queue.keys.stream("generic-untrusted")
    assert queue.r.xlen(stream) == 0  # KEDA sees no lag: no agent starts
    assert [j.id for j in queue.list(status="waiting-approval")] == [job.id]
    # The same PR again (a redelivery, the cron): the dedupe key holds the waiting job.
    status, again = gitea_post(service.receiver, gitea_pr("opened", head_repo="forker/app", author="forker"),
                               event="pull_request", delivery="d-2")
    assert (again["result"], again["job"]) == ("duplicate", job.id)
    approved = queue.approve(job.id)
    assert approved.status == "queued" and approved.approved_at and approved.stream_id
    assert queue.r.xrange(stream) == [(approved.stream_id, {"job": job.id})]
    events = [f for _, f in queue.r.xrange(queue.keys.events)]
    assert {"kind": "job", "job": job.id, "status": "queued"} in events
    with pytest.raises(UsageError, match="not waiting-approval"):
        queue.approve(job.id)
    assert queue.r.xlen(stream) == 1


def test_a_waiting_job_can_be_cancelled(queue):
    service = gitea_receiver(queue, TrustPolicy.of(owners=["mirrors"]))
    _, reply = gitea_post(service.receiver, gitea_pr("opened", head_repo="forker/app"), event="pull_request")
    assert queue.cancel(reply["job"]) == "cancelled"
    with pytest.raises(UsageError):
        queue.approve(reply["job"])


@pytest.mark.parametrize("approval, author, want", [
    ("none", "forker", ("queued", "generic-untrusted")),  # fork, approval none: runs untrusted at once
    ("forks", "stranger", ("queued", "generic-untrusted")),  # same repo, author not listed: untrusted
    ("untrusted", "stranger", ("waiting for approval", "generic-untrusted")),
    ("untrusted", "alice", ("queued", "generic")),  # a listed author of a same-repo PR: trusted
])
def test_approval_and_authors_decide_pool_and_wait(queue, approval, author, want):
    policy = TrustPolicy.of(owners=["mirrors"], authors=["Alice"], approval=approval)
    service = gitea_receiver(queue, policy)
    fork = "forker/app" if author == "forker" else None
    _, reply = gitea_post(service.receiver, gitea_pr("opened", head_repo=fork, author=author), event="pull_request")
    assert (reply["result"], reply["agent"]) == want


def test_a_pr_and_a_push_of_the_same_sha_are_one_job(queue):
    """A same-repo PR whose head branch also builds on push: the dedupe key is <repo>@<sha>:<pool> either way."""
    service = gitea_receiver(queue, TrustPolicy.of(owners=["mirrors"]), branches="^(main|feature)$")
    _, pushed = gitea_post(service.receiver, {"ref": "refs/heads/feature", "before": SHA_B, "after": SHA_A,
                                              "repository": {"full_name": "mirrors/app"}})
    _, pr = gitea_post(service.receiver, gitea_pr("opened"), event="pull_request", delivery="d-2")
    assert pushed["result"] == "queued" and (pr["result"], pr["job"]) == ("duplicate", pushed["job"])
    assert len(queue.list()) == 1


def test_queue_approve_exit_codes(run, queue):
    service = gitea_receiver(queue, TrustPolicy.of(owners=["mirrors"]))
    _, reply = gitea_post(service.receiver, gitea_pr("opened", head_repo="forker/app"), event="pull_request")
    listed = run("queue", "list", "--status", "waiting-approval", "--json")
    assert [j["id"] for j in listed.json()] == [reply["job"]]
    ok = run("queue", "approve", reply["job"])
    assert (ok.code, ok.out.strip()) == (0, reply["job"]) and "queued on pool generic-untrusted" in ok.err
    again = run("queue", "approve", reply["job"])
    assert again.code == 2 and "is queued, not waiting-approval" in again.err
    assert run("queue", "approve", "nope").code == 3


# ----------------------------------------------------------------------------- GitHub, push mode: the mirror


@pytest.fixture
def world(github, gitea, redis_url, isolated_env, monkeypatch, run):
    """acme/app on GitHub with a feature branch and a fork, mirrored (push mode) into mirrors/app;
    acme is trusted, so same-repo PRs build trusted."""
    github.add_org("acme")
    github.add_org("forker")
    github.add_repo("acme", "app", files={"README.md": "hi\n"})
    github.add_repo("forker", "app", fork=True, files={"README.md": "hi\n"})
    monkeypatch.setenv("GITHUB_TOKEN", github.token)
    (isolated_env / "raibid.yaml").write_text(json.dumps({
        "agents": {"trusted": {"owners": ["mirrors"]}},
        "mirror": {"github_api": github.url, "target_org": "mirrors", "mode": "push", "repos": ["acme/app"]}}))
    first = run("mirror", "sync", "--json")
    assert first.code == 0, first.err
    return github, gitea


def github_pr_post(service, payload: dict, delivery: str) -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    return call(service.receiver, "POST", "/hooks/github", body,
                {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery,
                 "X-Hub-Signature-256": "sha256=" + sign(body)})


def test_a_github_pr_webhook_brings_its_head_to_gitea_and_builds_it_once_with_the_cron(world, run):
    github, gitea = world
    github.commit("acme", "app", "feature", {"f.txt": "1\n"})
    pull = github.open_pull("acme", "app", "feature")
    app = Application()
    service = mirror_receiver(app)
    try:
        payload = retarget(octokit("opened"), "acme/app", pull.number, pull.head_sha, "feature")
        status, reply = github_pr_post(service, payload, "g-1")
        assert (status, reply["result"], reply["ref"]) == (202, "sync scheduled", "refs/pull/1/head")
        assert service.worker.wait_idle(DEADLINE)
    finally:
        service.stop()
    assert gitea.git.refs("mirrors/app")["refs/pull/1/head"] == pull.head_sha
    [job] = app.queue.list()
    assert (job.repo, job.ref, job.commit, job.agent, job.source) == (
        "mirrors/app", "refs/pull/1/head", pull.head_sha, "generic", "webhook")
    assert (job.event, job.pr, job.base_ref, job.head_ref, job.origin) == (
        "pull_request", "1", "main", "feature", "github:acme/app")
    # The cron sync next: nothing moved, one pulls request, no git work, no second job.
    fetches, pulls_before = github.git_fetches(), len(github.requests("GET", "/repos/acme/app/pulls"))
    pushes = len(gitea.git.requests)
    cron = run("mirror", "sync", "--json")
    assert cron.code == 0, cron.err
    assert cron.json()["repos"][0]["action"] == "unchanged"
    assert len(github.requests("GET", "/repos/acme/app/pulls")) == pulls_before + 1
    assert github.git_fetches() == fetches
    assert not [r for r in gitea.git.requests[pushes:] if r[1].endswith("git-receive-pack")]
    assert [j.id for j in app.queue.list()] == [job.id]


def test_the_cron_finds_a_fork_pr_builds_it_untrusted_and_holds_it_then_the_webhook_adds_nothing(world, run):
    github, gitea = world
    github.commit("forker", "app", "patch", {"evil.sh": "echo hi\n"})
    pull = github.open_pull("acme", "app", "patch", head=("forker", "app"), author="forker")
    cron = run("mirror", "sync", "--json")
    assert cron.code == 0, cron.err
    [repo] = cron.json()["repos"]
    assert repo["action"] == "synced" and len(repo["jobs"]) == 1
    app = Application()
    job = app.queue.get(repo["jobs"][0])
    assert (job.ref, job.commit, job.agent, job.status, job.source) == (
        "refs/pull/1/head", pull.head_sha, "generic-untrusted", "waiting-approval", "mirror")
    assert app.queue.r.xlen(app.queue.keys.stream("generic-untrusted")) == 0
    assert gitea.git.refs("mirrors/app")["refs/pull/1/head"] == pull.head_sha
    service = mirror_receiver(app)
    try:
        payload = retarget(as_fork(octokit("opened")), "acme/app", pull.number, pull.head_sha, "patch",
                           head_repo="forker/app")
        assert github_pr_post(service, payload, "g-2")[0] == 202
        assert service.worker.wait_idle(DEADLINE)
    finally:
        service.stop()
    assert [j.id for j in app.queue.list()] == [job.id]
    # A new commit on the fork's branch: the synchronize webhook builds the new head, held again.
    sha = github.push_to_pull("acme", "app", 1, {"evil.sh": "echo two\n"})
    service = mirror_receiver(app)
    try:
        payload = retarget(as_fork(octokit("synchronize")), "acme/app", 1, sha, "patch", head_repo="forker/app")
        assert github_pr_post(service, payload, "g-3")[0] == 202
        assert service.worker.wait_idle(DEADLINE)
    finally:
        service.stop()
    newest = app.queue.list()[0]
    assert (newest.commit, newest.status, newest.agent) == (sha, "waiting-approval", "generic-untrusted")
    assert app.queue.approve(newest.id).status == "queued"


def test_a_pr_head_that_is_also_a_pushed_trigger_branch_is_one_job_in_one_sync(world, run, isolated_env):
    github, gitea = world
    doc = json.loads((isolated_env / "raibid.yaml").read_text())
    doc["mirror"]["trigger"] = {"branches": "^(main|feature)$"}
    (isolated_env / "raibid.yaml").write_text(json.dumps(doc))
    sha = github.commit("acme", "app", "feature", {"f.txt": "1\n"})
    github.open_pull("acme", "app", "feature")
    cron = run("mirror", "sync", "--json")
    assert cron.code == 0, cron.err
    jobs = cron.json()["repos"][0]["jobs"]
    assert len(jobs) == 2 and len(set(jobs)) == 1  # the branch's and the PR's trigger: one key, one job
    [job] = Application().queue.list()
    assert job.commit == sha


# ----------------------------------------------------------------------------- the step env


STEP = """\
steps:
  - name: env
    run: echo "event=$RAIBID_EVENT pr=$RAIBID_PR base=$RAIBID_BASE_REF head=$RAIBID_HEAD_REF ref=$RAIBID_REF"
"""


def test_the_pr_trigger_reaches_the_step_of_a_real_agent(queue, git, redis_url, tmp_path, argv_log):
    """A Gitea PR webhook's job, run by `raibid agents run`, checks out the head sha from refs/pull/<n>/head."""
    git.create_repo("acme/app")
    git.commit("acme/app", "main", {"README.md": "hi\n"})
    sha = git.commit("acme/app", "feature", {".raibid.yml": STEP})
    from tests.harness.githttp import git as run_git

    run_git("update-ref", "refs/pull/5/head", sha, cwd=git.path("acme/app"))
    run_git("update-ref", "-d", "refs/heads/feature", cwd=git.path("acme/app"))  # only the PR ref has it
    service = gitea_receiver(queue, TrustPolicy.of(owners=["acme"]))
    _, reply = gitea_post(service.receiver, gitea_pr("opened", repo="acme/app", number=5, sha=sha),
                          event="pull_request")
    assert reply["result"] == "queued"
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    job = queue.get(reply["job"])
    assert job.status == "succeeded", (err, log_text(queue, job.id))
    assert "event=pull_request pr=5 base=main head=feature ref=refs/pull/5/head" in log_text(queue, job.id)


def test_a_retried_fork_pr_stays_untrusted_even_in_a_trusted_repo(queue):
    """Retry routes again with today's policy; a PR's fork and author are not in the record, so an
    untrusted PR build must not be lifted into the trusted pool by its repo's trust."""
    policy = TrustPolicy.of(owners=["mirrors"], approval="none")
    service = gitea_receiver(queue, policy)
    _, reply = gitea_post(service.receiver, gitea_pr("opened", head_repo="forker/app"), event="pull_request")
    queue.cancel(reply["job"])
    again = queue.retry(reply["job"], trust=policy)
    assert (again.agent, again.event, again.pr) == ("generic-untrusted", "pull_request", "7")
    _, same = gitea_post(service.receiver, gitea_pr("opened", number=8, sha=SHA_B), event="pull_request")
    queue.cancel(same["job"])
    assert queue.retry(same["job"], trust=policy).agent == "generic"  # a trusted same-repo PR stays trusted


def test_a_pr_listing_github_refuses_still_syncs_the_branches(world, run):
    github, gitea = world
    sha = github.commit("acme", "app", "main", {"n.txt": "2\n"})
    github.fail_next(1, status=403, path="/pulls$")
    cron = run("mirror", "sync", "--json")
    assert cron.code == 0, cron.err
    [repo] = cron.json()["repos"]
    assert repo["action"] == "synced" and "open pull requests not listed" in repo["note"]
    assert gitea.git.refs("mirrors/app")["refs/heads/main"] == sha


# ----------------------------------------------------------------------------- GitHub, pull mode


def test_pull_mode_a_github_fork_pr_delivered_by_github_waits_for_gitea_then_is_held(github, gitea, redis_url):
    """A real waitress server, the hook registered through the API, GitHub's delivery of the real payload:
    Gitea's pull mirror syncs (copying refs/pull/*), the receiver waits for the head there, then holds it."""
    from raibid.gitea import Gitea
    from raibid.github import GitHub
    from raibid.webhook.register import register_github
    from raibid.webhook.server import start_server
    from raibid.webhook.sync import GiteaPullSync
    from tests.conftest import GITEA_TOKEN

    github.add_org("acme")
    github.add_org("forker")
    github.add_repo("acme", "app", files={"README.md": "hi\n"})
    github.add_repo("forker", "app", fork=True, files={"README.md": "hi\n"})
    client = Gitea(gitea.url, GITEA_TOKEN, backoff=0.001)
    client.create_org("mirrors")
    client.migrate(github.repo_json(github.repo("acme", "app"), authenticated=True)["clone_url"], "mirrors", "app",
                   mirror=True, auth_token=github.token)
    queue = Queue(connect(redis_url, None))
    mirrors = MirrorSet.of("mirrors", ["acme/app"])
    pull = GiteaPullSync(client, mirrors, wait=DEADLINE, interval=0.02)
    service = build(secret=SECRET, submit=queue.submit_deduped, mirrors=mirrors, branches="^main$", agent="generic",
                    policy=TrustPolicy.of(owners=["mirrors"]), sync=pull, pull=pull)
    server, thread = start_server(service.receiver)
    try:
        url = f"http://127.0.0.1:{server.effective_port}/hooks/github"
        [hook] = register_github(GitHub(github.url, github.token), ["acme/app"], url=url, secret=SECRET)
        [registered] = github.repo("acme", "app").hooks.values()
        assert hook.action == "created" and "pull_request" in registered.events
        github.commit("forker", "app", "patch", {"x.sh": "echo\n"})
        pr = github.open_pull("acme", "app", "patch", head=("forker", "app"), author="forker")
        payload = retarget(as_fork(octokit("opened")), "acme/app", pr.number, pr.head_sha, "patch",
                           head_repo="forker/app")
        payload["pull_request"]["base"]["ref"] = "main"
        [delivery] = github.deliver("acme", "app", "pull_request", payload)
        assert delivery.status == 202
        [job] = wait_for(lambda: queue.list())
    finally:
        server.close()
        thread.join(5)
        service.stop()
    assert gitea.git.refs("mirrors/app")["refs/pull/1/head"] == pr.head_sha
    assert (job.repo, job.ref, job.commit, job.agent, job.status, job.origin) == (
        "mirrors/app", "refs/pull/1/head", pr.head_sha, "generic-untrusted", "waiting-approval", "github:acme/app")


# ----------------------------------------------------------------------------- with pipelines (the merge)

PIPELINES = """\
pipelines:
  - name: test
    steps: [{run: make test}]
  - name: pr-only
    when: {event: pull_request, branch: main}
    steps: [{run: make check}]
  - name: push-only
    when: {event: push}
    steps: [{run: make deploy}]
"""


def planning_trigger(queue: Queue, policy: TrustPolicy, text: str = PIPELINES) -> BuildTrigger:
    return BuildTrigger(queue.submit_deduped, branches="^(main|feature)$", agent="generic", policy=policy,
                        read=lambda repo, commit: text, post_status=queue.post_status)


def test_a_pr_is_planned_per_pipeline_and_shares_each_pipelines_key_with_a_push(queue):
    t = planning_trigger(queue, TrustPolicy.of(owners=["mirrors"]))
    push = t.enqueue("mirrors/app", "feature", SHA_A, event="push")
    assert sorted(j.pipeline for j in push.jobs) == ["push-only", "test"]
    pr = t.enqueue("mirrors/app", "refs/pull/7/head", SHA_A, event="pull_request", pr="7", base_ref="main",
                   head_ref="feature", author="mirrors")
    by = {j.pipeline: j for j in pr.jobs}
    assert sorted(by) == ["pr-only", "test"]  # branch: matches the PR's base, event: pull_request
    pushed_test = next(j for j in push.jobs if j.pipeline == "test")
    assert (by["test"].created, by["test"].job_id) == (False, pushed_test.job_id)  # one job for the sha
    stored = queue.get(by["pr-only"].job_id)
    assert (stored.dedupe, stored.ref, stored.event, stored.pr, stored.status) == (
        f"mirrors/app@{SHA_A}:generic/pr-only", "refs/pull/7/head", "pull_request", "7", "queued")
    assert not pr.waiting and len(queue.list()) == 3


def test_a_fork_prs_planned_jobs_are_untrusted_and_each_held_with_a_waiting_approval_event(queue):
    t = planning_trigger(queue, TrustPolicy.of(owners=["mirrors"]))  # approval: forks
    pr = t.enqueue("mirrors/app", "refs/pull/8/head", SHA_B, event="pull_request", pr="8", base_ref="main",
                   head_ref="feature", fork=True, author="forker")
    assert sorted(j.pipeline for j in pr.jobs) == ["pr-only", "test"] and pr.waiting
    assert {(j.agent, j.waiting) for j in pr.jobs} == {("generic-untrusted", True)}
    assert {queue.get(j.job_id).dedupe for j in pr.jobs} == {
        f"mirrors/app@{SHA_B}:generic-untrusted/test", f"mirrors/app@{SHA_B}:generic-untrusted/pr-only"}
    assert queue.r.xlen(queue.keys.stream("generic-untrusted")) == 0
    events = [f for _, f in queue.r.xrange(queue.keys.events)]
    assert events == [{"kind": "job", "job": j.job_id, "status": "waiting-approval"} for j in pr.jobs]
    queue.approve(pr.jobs[0].job_id)
    assert [f for _, f in queue.r.xrange(queue.keys.events)][-1] == {
        "kind": "job", "job": pr.jobs[0].job_id, "status": "queued"}
    assert queue.cancel(pr.jobs[1].job_id) == "cancelled"
    assert [f for _, f in queue.r.xrange(queue.keys.events)][-1] == {
        "kind": "job", "job": pr.jobs[1].job_id, "status": "cancelled"}


def test_a_gitea_fork_pr_with_pipelines_answers_waiting_for_approval_with_its_jobs(queue):
    service = build(secret=SECRET, submit=queue.submit_deduped, mirrors=MirrorSet.of("mirrors"),
                    branches="^main$", agent="generic", policy=TrustPolicy.of(owners=["mirrors"]),
                    read=lambda repo, commit: PIPELINES, post_status=queue.post_status)
    status, reply = gitea_post(service.receiver, gitea_pr("opened", head_repo="forker/app", author="forker"),
                               event="pull_request")
    assert (status, reply["result"]) == (202, "waiting for approval")
    assert sorted((j["pipeline"], j["agent"], j["waiting"]) for j in reply["jobs"]) == [
        ("pr-only", "generic-untrusted", True), ("test", "generic-untrusted", True)]


def test_the_engine_submits_a_pr_build_with_its_trigger(queue):
    from raibid.mirror.sync import Build, _pull_build

    t = planning_trigger(queue, TrustPolicy.of(owners=["mirrors"]))
    trigger = json.dumps({"event": "pull_request", "pr": "3", "base_ref": "main", "head_ref": "feature",
                          "origin": "github:acme/app", "fork": True, "author": "forker"})
    build_ = _pull_build("mirrors/app", "refs/pull/3/head", SHA_A, trigger, None)
    assert build_ == Build("mirrors/app", "refs/pull/3/head", SHA_A, "pull_request", origin="github:acme/app",
                           pr="3", base_ref="main", head_ref="feature", fork=True, author="forker")
    ids = t.submit_for_engine(build_)
    jobs = [queue.get(i) for i in ids]
    assert sorted(j.pipeline for j in jobs) == ["pr-only", "test"]
    assert {(j.agent, j.status, j.origin, j.pr, j.head_ref) for j in jobs} == {
        ("generic-untrusted", "waiting-approval", "github:acme/app", "3", "feature")}
