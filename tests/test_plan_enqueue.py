"""Pipelines at enqueue: `BuildTrigger` reads `.raibid.yml`, plans, and queues one job per pipeline
(real Redis; the mirror and the webhook end to end with real git over HTTP and the Gitea fake)."""

from __future__ import annotations

import json
import subprocess

import pytest

from raibid.agents.trust import TrustPolicy
from raibid.queue import Queue, connect
from raibid.webhook.events import changed_files, parse_push
from raibid.webhook.mirrors import MirrorSet
from raibid.webhook.server import build
from raibid.webhook.trigger import BuildTrigger, gitea_reader
from tests.conftest import GITEA_TOKEN
from tests.test_webhook import SECRET, SHA1, SHA2, gitea_post

TWO = """\
pipelines:
  - name: test
    agent: rust
    steps: [{run: cargo test}]
  - name: docs
    when: {path: 'docs/**'}
    steps: [{run: make docs}]
  - name: release
    when: {event: tag}
    steps: [{run: make release}]
"""


@pytest.fixture
def queue(redis_url):
    return Queue(connect(redis_url, None))


def statuses(queue: Queue) -> list[dict]:
    entries = queue.r.xrange(queue.keys.events)
    return [fields for _, fields in entries if fields.get("kind") == "status"]


def trigger(queue: Queue, files: dict[str, str | None], *, trusted: tuple[str, ...] = ()) -> BuildTrigger:
    """A trigger whose reader is a dict of commit -> file text (None: no file)."""
    return BuildTrigger(queue.submit_deduped, branches="^main$", agent="generic",
                        policy=TrustPolicy.of(repos=trusted), source="webhook",
                        read=lambda repo, commit: files[commit], post_status=queue.post_status)


def test_several_pipelines_give_several_jobs_with_their_contexts_and_pools(queue):
    t = trigger(queue, {SHA2: TWO}).enqueue("mirrors/app", "main", SHA2, changed=("docs/a.md",))
    jobs = {j.pipeline: queue.get(j.job_id) for j in t.jobs}
    assert sorted(jobs) == ["docs", "test"] and t.created
    assert (jobs["test"].agent, jobs["test"].context, jobs["test"].event) == ("rust-untrusted", "raibid/test", "push")
    assert (jobs["docs"].agent, jobs["docs"].context) == ("generic-untrusted", "raibid/docs")
    assert jobs["test"].dedupe == f"mirrors/app@{SHA2}:rust-untrusted/test"
    assert statuses(queue) == []


@pytest.mark.parametrize(("trusted", "pool"), [((), "rust-untrusted"), (("mirrors/app",), "rust")])
def test_agent_rust_routes_to_the_rust_stream_by_trust(queue, trusted, pool):
    text = "agent: rust\nwhen: {branch: main}\nsteps: [{run: cargo test}]\n"
    t = trigger(queue, {SHA2: text}, trusted=trusted).enqueue("mirrors/app", "main", SHA2)
    (job,) = t.jobs
    assert job.agent == pool and job.pipeline == "app" and job.context == "raibid/app"
    assert queue.r.xlen(queue.keys.stream(pool)) == 1
    assert trigger(queue, {SHA1: text}).enqueue("mirrors/app", "dev", SHA1).jobs == []  # main only


def test_the_same_commit_twice_is_one_job_per_pipeline(queue):
    tr = trigger(queue, {SHA2: TWO})
    first = tr.enqueue("mirrors/app", "main", SHA2, changed=("docs/a.md",))
    again = tr.enqueue("mirrors/app", "main", SHA2, changed=("docs/a.md",))
    assert [j.job_id for j in again.jobs] == [j.job_id for j in first.jobs] and not again.created
    assert len(queue.list()) == 2


def test_a_malformed_file_posts_one_error_status_and_queues_nothing(queue):
    bad = "pipelines:\n  - name: a\n    steps: [{run: x}]\n  - name: a\n    steps: [{run: y}]\n"
    t = trigger(queue, {SHA2: bad}).enqueue("mirrors/app", "main", SHA2, origin="github:acme/app")
    assert t.jobs == [] and queue.list() == []
    assert t.error == ".raibid.yml:4: pipeline 2: duplicate pipeline name 'a'"
    (status,) = statuses(queue)
    assert status == {"kind": "status", "repo": "mirrors/app", "commit": SHA2, "context": "raibid/app",
                      "state": "error", "description": t.error, "origin": "github:acme/app"}


def test_no_match_is_no_job_and_no_status(queue):
    t = trigger(queue, {SHA2: "when: {event: tag}\nsteps: [{run: x}]\n"}).enqueue("mirrors/app", "main", SHA2)
    assert t.jobs == [] and t.error is None and queue.list() == [] and statuses(queue) == []


def test_no_file_queues_the_one_job_of_before_and_a_tag_without_a_file_nothing(queue):
    tr = trigger(queue, {SHA2: None, SHA1: None})
    (job,) = tr.enqueue("mirrors/app", "main", SHA2).jobs
    stored = queue.get(job.job_id)
    assert (stored.pipeline, stored.context, stored.dedupe) == (None, None, f"mirrors/app@{SHA2}:generic-untrusted")
    assert tr.enqueue("mirrors/app", "v1", SHA1, event="tag").jobs == []


def test_a_tag_builds_the_pipelines_that_want_tags_and_the_job_says_so(queue):
    t = trigger(queue, {SHA2: TWO}).enqueue("mirrors/app", "v1.0", SHA2, event="tag")
    assert sorted(j.pipeline for j in t.jobs) == ["docs", "release", "test"]
    stored = queue.get(next(j.job_id for j in t.jobs if j.pipeline == "release"))
    assert (stored.event, stored.ref) == ("tag", "v1.0")


def test_the_pr_fields_are_carried_and_a_pr_matches_branch_on_its_base(queue):
    text = "when: {event: pull_request, branch: main}\nsteps: [{run: x}]\n"
    t = trigger(queue, {SHA2: text}).enqueue("mirrors/app", "feature", SHA2, event="pull_request", pr="7",
                                             base_ref="main", head_ref="feature")
    stored = queue.get(t.jobs[0].job_id)
    assert (stored.event, stored.pr, stored.base_ref, stored.head_ref) == ("pull_request", "7", "main", "feature")


@pytest.mark.parametrize(("payload", "expected"), [
    ({"commits": [{"added": ["a"], "modified": ["b"], "removed": []}, {"added": [], "modified": ["a"],
                                                                        "removed": ["c"]}]}, ("a", "b", "c")),
    ({"commits": []}, ()),  # an empty push: an empty diff
    ({}, None),  # no commits list: unknown
    ({"commits": [{"added": ["a"]}], "forced": True}, None),  # a force push: the list misses what was dropped
    ({"commits": [{"added": ["a"]}], "total_commits": 30}, None),  # the sender cut the list
    ({"commits": ["junk"]}, None),
])
def test_changed_files_come_from_the_payload_when_it_can_tell(payload, expected):
    assert changed_files(payload, SHA1) == expected


def test_a_new_branch_has_unknown_changed_files():
    assert changed_files({"commits": [{"added": ["a"]}]}, "0" * 40) is None


# ----------------------------------------------------------------------------- the Gitea contents API


def commit_files(gitea, repo: str, files: dict[str, str], branch: str = "main") -> str:
    return gitea.git.commit(repo, branch, files)


def test_gitea_contents_api_reads_a_file_at_a_commit_and_404_is_none(gitea):
    from raibid.gitea import Gitea

    client = Gitea(gitea.url, GITEA_TOKEN)
    client.create_org("mirrors", exist_ok=True)
    client.create_repo("mirrors", "app")
    first = commit_files(gitea, "mirrors/app", {".raibid.yml": "steps: [{run: a}]\n", "docs/x.md": "x"})
    second = commit_files(gitea, "mirrors/app", {".raibid.yml": "steps: [{run: b}]\n"})
    assert client.file_at("mirrors", "app", ".raibid.yml", first).content == b"steps: [{run: a}]\n"
    assert client.file_at("mirrors", "app", ".raibid.yml", second).content == b"steps: [{run: b}]\n"
    assert client.file_at("mirrors", "app", "docs", first).type == "dir"
    assert client.file_at("mirrors", "app", "missing.yml", first) is None
    assert client.file_at("mirrors", "app", ".raibid.yml", "f" * 40) is None
    assert gitea_reader(client)("mirrors/app", first) == "steps: [{run: a}]\n"


def test_a_symlinked_file_is_refused_at_enqueue_with_an_error_status(gitea, queue, tmp_path):
    from raibid.gitea import Gitea

    client = Gitea(gitea.url, GITEA_TOKEN)
    client.create_org("mirrors", exist_ok=True)
    client.create_repo("mirrors", "app")
    bare = gitea.git.path("mirrors/app")
    work = tmp_path / "w"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    (work / "real.yml").write_text("steps: [{run: a}]\n")
    (work / ".raibid.yml").symlink_to("real.yml")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin"}
    for args in (["add", "-A"], ["commit", "-qm", "link"], ["push", "-q", "origin", "HEAD:main"]):
        subprocess.run(["git", *args], cwd=work, check=True, capture_output=True, env=env)
    sha = gitea.git.refs("mirrors/app")["refs/heads/main"]
    tr = BuildTrigger(queue.submit_deduped, branches="^main$", agent="generic", read=gitea_reader(client),
                      post_status=queue.post_status)
    t = tr.enqueue("mirrors/app", "main", sha)
    assert t.jobs == [] and "symbolic link" in (t.error or "")
    assert [s["state"] for s in statuses(queue)] == ["error"]


# ----------------------------------------------------------------------------- the webhook, end to end


def test_a_gitea_push_reads_the_file_through_the_contents_api_and_queues_its_pipelines(gitea, queue):
    from raibid.gitea import Gitea

    client = Gitea(gitea.url, GITEA_TOKEN)
    client.create_org("mirrors", exist_ok=True)
    client.create_repo("mirrors", "app")
    before = commit_files(gitea, "mirrors/app", {"README.md": "hi"})
    after = commit_files(gitea, "mirrors/app", {".raibid.yml": TWO, "src/lib.rs": "fn x() {}"})
    service = build(secret=SECRET, submit=queue.submit_deduped, mirrors=MirrorSet.of("mirrors"), branches="^main$",
                    agent="generic", read=gitea_reader(client), post_status=queue.post_status)
    payload = {"ref": "refs/heads/main", "before": before, "after": after, "repository": {"full_name": "mirrors/app"},
               "commits": [{"added": [".raibid.yml", "src/lib.rs"], "modified": [], "removed": []}],
               "total_commits": 1}
    assert parse_push(payload).changed == (".raibid.yml", "src/lib.rs")
    status, reply = gitea_post(service.receiver, payload)
    assert (status, reply["result"]) == (202, "queued")
    assert [(j["pipeline"], j["agent"]) for j in reply["jobs"]] == [("test", "rust-untrusted")]  # no docs/ change
    # The malformed file at the next commit: one error status, no job, and the reply says why.
    bad = commit_files(gitea, "mirrors/app", {".raibid.yml": "steps:\n  - run: x\n    retries: y\n"})
    status, reply = gitea_post(service.receiver, {**payload, "before": after, "after": bad, "commits": []},
                               delivery="d-2")
    assert (status, reply["result"]) == (202, "invalid pipeline file")
    assert reply["reason"].startswith(".raibid.yml:3: step 1: unknown key 'retries'")
    assert [(s["commit"], s["state"], s["context"]) for s in statuses(queue)] == [(bad, "error", "raibid/app")]
    assert len(queue.list()) == 1
    # A tag push: event tag, the branch regex does not apply; the release pipeline and the unfiltered ones.
    gitea.git.tag("mirrors/app", "v1", after)
    status, reply = gitea_post(service.receiver, {"ref": "refs/tags/v1", "before": "0" * 40, "after": after,
                                                  "repository": {"full_name": "mirrors/app"}}, delivery="d-3")
    assert reply["result"] == "queued"
    assert sorted((j["pipeline"], j["created"]) for j in reply["jobs"]) == [
        ("docs", True), ("release", True), ("test", False)]  # test of this commit exists: the same job
    # A deleted branch: nothing.
    status, reply = gitea_post(service.receiver, {"ref": "refs/heads/main", "before": after, "after": "0" * 40,
                                                  "repository": {"full_name": "mirrors/app"}}, delivery="d-4")
    assert reply["result"] == "ignored" and len(queue.list()) == 3


# ----------------------------------------------------------------------------- the mirror, end to end


@pytest.fixture
def mirrored(github, gitea, redis_url, isolated_env, monkeypatch, run):
    """acme/app on GitHub with a two-pipeline .raibid.yml, mirrored (push mode) by a first `mirror sync`."""
    github.add_org("acme")
    github.add_repo("acme", "app", files={"README.md": "hi\n", ".raibid.yml": TWO})
    monkeypatch.setenv("GITHUB_TOKEN", github.token)
    (isolated_env / "raibid.yaml").write_text(json.dumps({"mirror": {
        "github_api": github.url, "target_org": "mirrors", "mode": "push", "repos": ["acme/app"]}}))
    first = run("mirror", "sync", "--json")
    assert first.code == 0, first.err
    return github, gitea


def test_the_cron_mirror_reads_the_file_from_its_bare_cache_and_diffs_for_path_conditions(mirrored, run):
    from raibid.app import Application

    github, _ = mirrored
    queue = Application().queue
    src_only = github.commit("acme", "app", "main", {"src/lib.rs": "1"})
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    jobs = {j.pipeline: j for j in queue.list()}
    assert sorted(jobs) == ["test"]  # docs/ did not change
    assert (jobs["test"].agent, jobs["test"].context, jobs["test"].origin, jobs["test"].source) == (
        "rust-untrusted", "raibid/test", "github:acme/app", "mirror")
    docs = github.commit("acme", "app", "main", {"docs/index.md": "x"})
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    assert {(j.pipeline, j.commit) for j in queue.list()} == {("docs", docs), ("test", docs), ("test", src_only)}
    # A tag: event tag (its own pipeline plus the unfiltered ones; test of this commit exists already).
    github.git.tag("acme/app", "v1", docs)
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    assert sorted((j.pipeline, j.event) for j in queue.list() if j.commit == docs) == [
        ("docs", "push"), ("release", "tag"), ("test", "push")]
    # A malformed file: one error status on the commit, no job.
    bad = github.commit("acme", "app", "main", {".raibid.yml": "pipelines: {}\n"})
    assert run("mirror", "sync", "--json").code == 0
    assert [j for j in queue.list() if j.commit == bad] == []
    assert [(s["commit"], s["state"], s["origin"]) for s in statuses(queue)] == [(bad, "error", "github:acme/app")]


def test_a_no_change_mirror_sync_runs_no_git_process(mirrored, run, tmp_path, monkeypatch):
    """The fast path stays two ref reads per repo and no process: planning adds git work only for a moved ref."""
    import os
    import shutil

    log = tmp_path / "git.log"
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nexec {shutil.which('git')} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    def raibids() -> list[str]:  # the git servers of the fakes run `git http-backend` themselves
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in lines if line.split()[:1] != ["http-backend"]]

    r = run("mirror", "sync", "--json")
    assert r.code == 0 and r.json()["repos"][0]["action"] == "unchanged"
    assert raibids() == []
    github, _ = mirrored
    github.commit("acme", "app", "main", {"src/x.rs": "1"})
    assert run("mirror", "sync", "--json").code == 0
    lines = raibids()
    assert sum(" ls-tree " in f" {line} " for line in lines) == 1  # the file, once, from the bare cache
    assert sum(" diff --name-only " in line for line in lines) == 1  # the changed files, once


def test_pull_mode_reads_the_file_through_gitea_after_its_mirror_sync(github, gitea, queue):
    """A GitHub push in pull mode: Gitea's mirror-sync, then the file at the commit through the contents
    API of the pull mirror, and the payload's commits for `path:`."""
    from raibid.gitea import Gitea
    from raibid.webhook.server import start_server
    from raibid.webhook.sync import GiteaPullSync
    from tests.test_webhook_github import DEADLINE, wait_for

    github.add_org("acme")
    github.add_repo("acme", "app", files={"README.md": "hi\n", ".raibid.yml": TWO})
    client = Gitea(gitea.url, GITEA_TOKEN, backoff=0.001)
    client.create_org("mirrors")
    client.migrate(github.repo_json(github.repo("acme", "app"), authenticated=True)["clone_url"], "mirrors", "app",
                   mirror=True, auth_token=github.token)
    mirrors = MirrorSet.of("mirrors", ["acme/app"])
    pull = GiteaPullSync(client, mirrors, wait=DEADLINE, interval=0.02)
    service = build(secret=SECRET, submit=queue.submit_deduped, mirrors=mirrors, branches="^main$", agent="generic",
                    sync=pull, pull=pull, read=gitea_reader(client), post_status=queue.post_status)
    server, thread = start_server(service.receiver)
    try:
        before = github.heads("acme", "app")["refs/heads/main"]
        after = github.commit("acme", "app", "main", {"docs/guide.md": "x"})
        payload = {**github.push_payload("acme", "app", "main", before, after),
                   "commits": [{"added": ["docs/guide.md"], "modified": [], "removed": []}]}
        body = json.dumps(payload).encode()
        import hashlib
        import hmac
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{server.effective_port}/hooks/github", data=body,
                                     method="POST", headers={
                                         "X-GitHub-Event": "push", "Content-Type": "application/json",
                                         "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body,
                                                                                     hashlib.sha256).hexdigest()})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 202
        jobs = wait_for(lambda: len(queue.list()) == 2 and queue.list())
        assert sorted((j.pipeline, j.agent, j.context, j.origin) for j in jobs) == [
            ("docs", "generic-untrusted", "raibid/docs", "github:acme/app"),
            ("test", "rust-untrusted", "raibid/test", "github:acme/app")]
        assert {j.commit for j in jobs} == {after}
    finally:
        server.close()
        thread.join(5)
        service.stop()
