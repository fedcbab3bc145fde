"""`raibid mirror` against the GitHub fake (token A), the Gitea fake with its git server (token B) and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from raibid.queue import Queue
from tests.conftest import GITEA_TOKEN


@pytest.fixture
def world(github, gitea, redis_url, isolated_env, monkeypatch):
    """GitHub with an org, a user and repos; Gitea empty; a config file; GITHUB_TOKEN set."""
    github.add_org("acme")
    github.add_user("solo")
    for name in ("svc-a", "svc-b", "svc-b-old", "web"):
        github.add_repo("acme", name, files={"README.md": f"# {name}\n"})
    github.add_repo("solo", "one", branches={"main": {"a.txt": "1"}, "dev": {"b.txt": "2"}})
    github.tag("solo", "one", "v1.0")
    github.add_repo("solo", "two", files={"x": "y"})
    monkeypatch.setenv("GITHUB_TOKEN", github.token)
    w = World(github, gitea, redis_url, isolated_env)
    w.config()
    return w


class World:
    def __init__(self, github, gitea, redis_url, work: Path) -> None:
        self.github, self.gitea, self.redis_url, self.work = github, gitea, redis_url, work

    def config(self, body: str | None = None, *, trusted: dict | None = None, **mirror) -> Path:
        """``trusted`` is agents.trusted; by default the mirror org is trusted, so the jobs of tests of
        other behaviour keep the type's pool (`generic`); the routing tests pass their own."""
        lines = [f"  github_api: {self.github.url}", "  target_org: mirrors"]
        for k, v in mirror.items():
            lines.append(f"  {k}: {json.dumps(v)}")
        agents = {"trusted": {"owners": ["mirrors"]} if trusted is None else trusted}
        p = self.work / "raibid.yaml"
        p.write_text(f"agents: {json.dumps(agents)}\nmirror:\n" + "\n".join(lines) + "\n" + (body or ""))
        return p

    def target_refs(self, full: str) -> dict[str, str]:
        return self.gitea.git.refs(full)

    def source_refs(self, full: str) -> dict[str, str]:
        owner, name = full.split("/")
        return {k: v for k, v in self.github.refs(owner, name).items() if k.startswith(("refs/heads/", "refs/tags/"))}

    def gitea_pushes(self) -> int:
        return sum(1 for m, p, s in self.gitea.git.requests if m == "POST" and p.endswith("git-receive-pack"))

    def jobs(self) -> list:
        q = Queue(redis.Redis.from_url(self.redis_url, decode_responses=True), url=self.redis_url)
        return q.list()


def by_source(doc: dict) -> dict[str, dict]:
    return {r["source"]: r for r in doc["repos"]}


def test_sync_repo_list_and_org_regex_creates_targets(run, world):
    (world.work / "list.txt").write_text("# mirrored from a list\n\nsolo/two  # trailing comment\n")
    world.config(repos=["solo/one"], lists=["list.txt"],
                 orgs=[{"name": "acme", "include": ["^svc-"], "exclude": ["-old$"]}])
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    repos = by_source(doc)
    assert set(repos) == {"solo/one", "solo/two", "acme/svc-a", "acme/svc-b"}
    assert all(x["action"] == "created" and x["error"] is None for x in repos.values())
    assert repos["solo/one"]["target"] == "mirrors/one" and repos["solo/one"]["refs_changed"] == 3
    assert doc["totals"]["created"] == 4 and doc["totals"]["total"] == 4 and doc["failed"] == []
    for source, res in repos.items():
        assert world.target_refs(res["target"]) == world.source_refs(source)
    assert "refs/tags/v1.0" in world.target_refs("mirrors/one")
    # Progress went to stderr, one line per repo; stdout is only the JSON document.
    assert sum("created" in line for line in r.err.splitlines()) == 4


def test_second_run_is_unchanged_without_fetch_or_push(run, world):
    world.config(repos=["solo/one", "solo/two"], orgs=[{"name": "acme"}])
    assert run("mirror", "sync").code == 0
    fetches, pushes = world.github.git_fetches(), world.gitea_pushes()
    assert fetches >= 6 and pushes >= 6
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert {x["action"] for x in doc["repos"]} == {"unchanged"} and doc["totals"]["unchanged"] == 6
    assert world.github.git_fetches() == fetches  # the fast path fetched nothing
    assert world.gitea_pushes() == pushes  # and pushed nothing


def test_new_commit_is_synced_and_triggers_exactly_one_job(run, world):
    world.config(repos=["solo/one"])
    assert run("mirror", "sync").code == 0
    assert world.jobs() == []  # a first mirror builds nothing (trigger.on_create is off)
    sha = world.github.commit("solo", "one", "main", {"a.txt": "2"})
    world.github.commit("solo", "one", "dev", {"b.txt": "3"})  # not a trigger branch
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    res = r.json()["repos"][0]
    assert res["action"] == "synced" and res["refs_changed"] == 2 and len(res["jobs"]) == 1
    assert world.target_refs("mirrors/one")["refs/heads/main"] == sha
    jobs = world.jobs()
    assert len(jobs) == 1
    job = jobs[0]
    assert (job.repo, job.ref, job.commit, job.source, job.agent) == ("mirrors/one", "main", sha, "mirror", "generic")
    # The same commit reaching the trigger again (a later run, a webhook) makes no second job.
    assert run("mirror", "sync").code == 0
    assert len(world.jobs()) == 1


def test_partial_failure_retrigger_returns_the_existing_job(run, world):
    """A push that landed but whose run died before the trigger: the next trigger of that commit is deduped."""
    world.config(repos=["solo/one"])
    assert run("mirror", "sync").code == 0
    sha = world.github.commit("solo", "one", "main", {"a.txt": "2"})
    first = run("mirror", "sync", "--json").json()["repos"][0]["jobs"]
    from raibid.queue import JobSpec, dedupe_key

    q = Queue(redis.Redis.from_url(world.redis_url, decode_responses=True), url=world.redis_url)
    job, created = q.submit_deduped(JobSpec(repo="mirrors/one", ref="main", commit=sha, agent="generic",
                                            source="mirror", dedupe=dedupe_key("mirrors/one", sha, "generic")))
    assert not created and [job.id] == first


def test_on_create_triggers_first_mirror_and_no_trigger_disables(run, world):
    world.config("  trigger:\n    on_create: true\n", repos=["solo/one"])
    r = run("mirror", "sync", "--no-trigger", "--json")
    assert r.code == 0 and r.json()["triggered"] == 0 and world.jobs() == []
    run("gitea", "repo", "delete", "mirrors/one", "--yes")
    world.gitea.repos.pop("mirrors/one", None)
    import shutil

    shutil.rmtree(world.gitea.git.path("mirrors/one"), ignore_errors=True)
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    assert r.json()["repos"][0]["action"] == "created" and len(world.jobs()) == 1


def test_deleted_branch_and_tag_are_pruned(run, world):
    world.config(repos=["solo/one"])
    assert run("mirror", "sync").code == 0
    assert "refs/heads/dev" in world.target_refs("mirrors/one")
    world.github.delete_branch("solo", "one", "dev")
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    assert r.json()["repos"][0]["refs_changed"] == 1
    assert "refs/heads/dev" not in world.target_refs("mirrors/one")
    assert world.target_refs("mirrors/one") == world.source_refs("solo/one")


def test_branches_regex_mirrors_only_matching_branches(run, world):
    world.config(repos=[{"source": "solo/one", "target": "other/uno", "branches": "^main$"}])
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    refs = world.target_refs("other/uno")
    assert "refs/heads/main" in refs and "refs/heads/dev" not in refs and "refs/tags/v1.0" in refs


def test_adopts_existing_targets_by_name_and_by_original_url(run, world):
    from tests.harness.giteafake import Repo as FakeRepo

    world.config(repos=["solo/one", "solo/two"])
    world.gitea.users["mirrors"] = __import__("tests.harness.giteafake", fromlist=["User"]).User(
        900, "mirrors", "", is_org=True)
    # mirrors/one exists with unrelated history; mirrors/deux was migrated earlier from solo/two's clone URL.
    world.gitea.git.create_repo("mirrors/one", files={"old.txt": "old"})
    world.gitea.repos["mirrors/one"] = FakeRepo(901, "mirrors", "one")
    world.gitea.git.create_repo("mirrors/deux")
    clone = world.github.git.url("solo/two")
    world.gitea.repos["mirrors/deux"] = FakeRepo(902, "mirrors", "deux", original_url=clone)
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    repos = by_source(r.json())
    assert repos["solo/one"]["action"] == "synced" and repos["solo/one"]["adopted"] is True
    assert repos["solo/two"]["target"] == "mirrors/deux" and repos["solo/two"]["adopted"] is True
    assert world.target_refs("mirrors/one") == world.source_refs("solo/one")
    assert world.target_refs("mirrors/deux") == world.source_refs("solo/two")
    assert sorted(world.gitea.repos) == ["mirrors/deux", "mirrors/one"]  # no -1/-2 duplicates


@pytest.mark.parametrize("allow", [False, True])
def test_on_missing_keep_archive_delete(run, world, allow):
    for org in ("k", "a", "d"):
        world.github.add_org(org)
        world.github.add_repo(org, f"{org}-gone", files={"f": org})
        world.github.add_repo(org, f"{org}-stays", files={"f": org})
    world.config(orgs=[{"name": "k", "on_missing": "keep"}, {"name": "a", "on_missing": "archive"},
                       {"name": "d", "on_missing": "delete"}])
    assert run("mirror", "sync").code == 0
    for org in ("k", "a", "d"):
        world.github.delete_repo(org, f"{org}-gone")
    args = ["mirror", "sync", "--json"] + (["--allow-delete"] if allow else [])
    r = run(*args)
    assert r.code == 0, r.err
    repos = by_source(r.json())
    assert repos["k/k-gone"]["action"] == "skipped"
    assert repos["a/a-gone"]["action"] == "archived"
    assert world.gitea.repos["mirrors/a-gone"].archived is True
    assert "mirrors/k-gone" in world.gitea.repos
    if allow:
        assert repos["d/d-gone"]["action"] == "deleted" and "mirrors/d-gone" not in world.gitea.repos
    else:
        assert repos["d/d-gone"]["action"] == "skipped" and "--allow-delete" in repos["d/d-gone"]["note"]
        assert "mirrors/d-gone" in world.gitea.repos
    assert {repos[f"{o}/{o}-stays"]["action"] for o in "kad"} == {"unchanged"}


def test_one_bad_source_fails_alone_with_exit_1(run, world):
    world.config(repos=["solo/one", "solo/missing", "solo/two"])
    r = run("mirror", "sync", "--json")
    assert r.code == 1
    repos = by_source(r.json())
    assert repos["solo/missing"]["action"] == "failed" and "not found" in repos["solo/missing"]["error"]
    assert repos["solo/one"]["action"] == repos["solo/two"]["action"] == "created"
    assert r.json()["failed"] == ["solo/missing"]


def test_dry_run_writes_nothing(run, world):
    world.config(repos=["solo/one"], orgs=[{"name": "acme"}])
    r = run("mirror", "sync", "--dry-run", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["dry_run"] is True and doc["totals"]["created"] == 5 and doc["recorded"] is None
    assert world.gitea.repos == {} and "mirrors" not in world.gitea.users
    assert world.gitea_pushes() == 0 and world.github.git_fetches() == 0
    assert not (world.work.parent / "home" / ".cache" / "raibid").exists()
    assert redis.Redis.from_url(world.redis_url).keys("*") == []


def test_summary_recorded_in_redis_and_sync_works_without_redis(run, world, monkeypatch):
    world.config(repos=["solo/one", "solo/missing"])
    assert run("mirror", "sync").code == 1
    raw = redis.Redis.from_url(world.redis_url, decode_responses=True).get("raibid:mirror:last")
    rec = json.loads(raw)
    assert rec["totals"]["created"] == 1 and rec["totals"]["failed"] == 1
    assert rec["failed"][0]["source"] == "solo/missing" and rec["finished_at"].endswith("Z")
    monkeypatch.setenv("RAIBID_REDIS_URL", "redis://127.0.0.1:1/0")
    world.config(repos=["solo/two"])
    r = run("mirror", "sync", "--json", "--no-trigger")
    assert r.code == 0 and r.json()["recorded"] is False
    assert "could not record" in r.err


def test_concurrent_sync_second_process_exits_6_at_once(world, isolated_env):
    world.config(repos=["solo/one"])
    world.github.hang_next(1, seconds=30, path="/repos/solo/one")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    cmd = [sys.executable, "-m", "raibid", "mirror", "sync"]
    first = subprocess.Popen(cmd, env=env, cwd=isolated_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        lock = Path(os.environ["XDG_CACHE_HOME"]) / "raibid" / "mirror" / "mirror.lock"
        deadline = time.monotonic() + 20
        while not (lock.exists() and lock.read_text().startswith("pid")):
            assert time.monotonic() < deadline, "the first sync never took the lock"
            time.sleep(0.05)
        t0 = time.monotonic()
        second = subprocess.run(cmd, env=env, cwd=isolated_env, capture_output=True, text=True, timeout=30)
        assert second.returncode == 6, second.stderr
        assert time.monotonic() - t0 < 10
        assert f"pid {first.pid}" in second.stderr
    finally:
        world.github._released.set()  # let the hung API request answer
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err


def test_rate_limit_waits_for_the_reset(run, world):
    world.config(orgs=[{"name": "acme"}])
    world.github.rate_limit(remaining=0, reset_in=1)
    t0 = time.monotonic()
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    assert time.monotonic() - t0 >= 0.5 and r.json()["totals"]["created"] == 4


def test_rate_limit_beyond_max_wait_fails_that_org(run, world):
    world.config(repos=["solo/one"], orgs=[{"name": "acme"}])
    world.github.secondary_limit(retry_after=3600, count=1)
    r = run("mirror", "sync", "--json", "--max-wait", "5")
    assert r.code == 1
    failed = [x for x in r.json()["repos"] if x["action"] == "failed"]
    assert len(failed) == 1 and "rate limit" in failed[0]["error"] and "--max-wait" in failed[0]["error"]


def test_tokens_never_reach_argv_cache_or_output(run, world, tmp_path, monkeypatch):
    """A git wrapper records every argv; the cache dir, the output and that record hold neither token."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    log = tmp_path / "argv.log"
    (bindir / "git").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    (bindir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    world.config(repos=["solo/one", "solo/missing"], orgs=[{"name": "acme"}])
    first = run("-v", "mirror", "sync", "--json")
    world.github.commit("solo", "one", "main", {"z": "1"})
    second = run("-v", "mirror", "sync", "--json")
    assert first.code == second.code == 1, first.err + second.err
    assert log.read_text().count("push") >= 5  # the wrapper did see the pushes
    haystack = [first.out, first.err, second.out, second.err, log.read_text()]
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "raibid" / "mirror"
    for f in cache.rglob("*"):
        if f.is_file():
            haystack.append(f.read_bytes().decode("latin-1"))
    import base64

    for token in (world.github.token, GITEA_TOKEN):
        forms = [token, base64.b64encode(f"x-access-token:{token}".encode()).decode()]
        assert not any(form in text for form in forms for text in haystack)


def test_status_reports_each_state_and_exits_1_on_drift(run, world):
    world.config(repos=["solo/one", "solo/two"])
    assert run("mirror", "sync").code == 0
    r = run("mirror", "status", "--json")
    assert r.code == 0 and {x["state"] for x in r.json()} == {"in-sync"}
    world.github.commit("solo", "one", "main", {"a.txt": "new"})
    world.github.add_repo("solo", "three", files={"n": "1"})
    world.config(repos=["solo/one", "solo/two", "solo/three", "solo/nope"])
    # mirrors/two diverges: someone pushed a commit to the mirror that upstream never had.
    world.gitea.git.commit("mirrors/two", "main", {"rogue": "1"})
    r = run("mirror", "status", "--json")
    assert r.code == 1
    states = {x["source"]: x["state"] for x in r.json()}
    assert states == {"solo/one": "behind", "solo/two": "diverged", "solo/three": "missing-target",
                      "solo/nope": "missing-source"}
    table = run("mirror", "status")
    assert table.code == 1 and table.out.splitlines()[0].split("\t")[:3] == ["SOURCE", "TARGET", "STATE"]



def test_status_when_github_cannot_answer_is_unknown_not_missing_source(run, world):
    # A source GitHub did not answer for (rate limit, 5xx, 403) is "diverged" (a side could not be read),
    # never "missing-source", which says the repo is gone.
    world.config(repos=["solo/one", "solo/two"], orgs=[{"name": "acme", "include": ["^web$"]}])
    assert run("mirror", "sync", "--no-trigger").code == 0
    world.github.fail_next(10, status=500, path="/repos/solo/two")
    world.github.fail_next(10, status=500, path="/orgs/acme/repos")
    r = run("mirror", "status", "--json")
    assert r.code == 1
    rows = {x["source"]: x for x in r.json()}
    assert rows["solo/one"]["state"] == "in-sync"
    assert rows["solo/two"]["state"] == "diverged" and "(500)" in rows["solo/two"]["error"]
    assert rows["acme/*"]["state"] == "diverged" and "(500)" in rows["acme/*"]["error"]


def test_list_shows_entries_and_resolved_repos(run, world):
    world.github.add_repo("acme", "fork-x", fork=True)
    world.github.add_repo("acme", "svc-archived", archived=True)
    world.config(repos=["solo/one"], orgs=[{"name": "acme", "include": ["^svc"], "target_org": "team",
                                            "archived": True}])
    r = run("mirror", "list", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    org = next(e for e in doc["entries"] if e["entry"] == "orgs[acme]")
    assert sorted(x["source"] for x in org["repos"]) == ["acme/svc-a", "acme/svc-archived", "acme/svc-b",
                                                         "acme/svc-b-old"]
    assert {x["target"].split("/")[0] for x in org["repos"]} == {"team"}
    assert doc["repos"] == 5


def test_sync_selection_by_repo_and_org(run, world):
    world.config(repos=["solo/one"], orgs=[{"name": "acme", "exclude": ["^web$"]}])
    r = run("mirror", "sync", "--repo", "solo/two", "--json")
    assert r.code == 0 and [x["source"] for x in r.json()["repos"]] == ["solo/two"]
    r = run("mirror", "sync", "--org", "acme", "--json")
    assert r.code == 0 and sorted(x["source"] for x in r.json()["repos"]) == ["acme/svc-a", "acme/svc-b",
                                                                               "acme/svc-b-old"]
    r = run("mirror", "sync", "--repo", "acme/web", "--json")  # an org entry's repo, asked for by name
    assert r.code == 0 and [x["target"] for x in r.json()["repos"]] == ["mirrors/web"]
    r = run("mirror", "sync", "--org", "solo", "--json")  # not configured, and a user rather than an org
    assert r.code == 0 and sorted(x["source"] for x in r.json()["repos"]) == ["solo/one", "solo/two"]


def test_pull_mode_migrates_then_mirror_syncs(run, world):
    world.config(repos=["solo/one"], mode="pull")
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    assert r.json()["repos"][0]["action"] == "created"
    repo = world.gitea.repos["mirrors/one"]
    assert repo.mirror and repo.auth_token == world.github.token
    assert run("mirror", "sync", "--json").json()["repos"][0]["action"] == "unchanged"
    sha = world.github.commit("solo", "one", "main", {"a.txt": "pull"})
    r = run("mirror", "sync", "--json")
    assert r.json()["repos"][0]["action"] == "synced"
    assert world.target_refs("mirrors/one")["refs/heads/main"] == sha


def test_unreachable_github_exits_5(run, world):
    world.config(repos=["solo/one"], github_api="http://127.0.0.1:1")
    r = run("mirror", "sync")
    assert r.code == 5 and "GitHub" in r.err


def test_a_github_server_error_fails_only_that_entry(run, world):
    # A 500 on one org listing or one repo lookup is that entry's failure: the rest syncs, the summary is printed.
    world.config(repos=["solo/one", "solo/two"], orgs=[{"name": "acme", "include": ["^svc-a$"]}])
    world.github.fail_next(10, status=500, path="/orgs/acme/repos")
    world.github.fail_next(10, status=500, path="/repos/solo/two")
    r = run("mirror", "sync", "--json", "--no-trigger")
    assert r.code == 1, r.err
    doc = by_source(r.json())
    assert doc["solo/one"]["action"] == "created"
    assert doc["acme/*"]["action"] == "failed" and "(500)" in doc["acme/*"]["error"]
    assert doc["solo/two"]["action"] == "failed" and "(500)" in doc["solo/two"]["error"]
    assert world.target_refs("mirrors/one") == world.source_refs("solo/one")
    listed = run("mirror", "list", "--json")
    assert listed.code == 0, listed.err



def test_a_github_403_on_one_repo_fails_that_repo_but_a_401_stops_the_run(run, world, monkeypatch):
    # 403 without a rate limit (SAML SSO, no access to one private repo) concerns that repo only.
    world.config(repos=["solo/one", "solo/two"])
    world.github.fail_next(10, status=403, path="/repos/solo/two")
    r = run("mirror", "sync", "--json", "--no-trigger")
    assert r.code == 1, r.err
    doc = by_source(r.json())
    assert doc["solo/one"]["action"] == "created"
    assert doc["solo/two"]["action"] == "failed" and "(403)" in doc["solo/two"]["error"]
    world.github.faults.clear()
    monkeypatch.setenv("GITHUB_TOKEN", "not-the-token")
    r = run("mirror", "sync", "--json")
    assert r.code == 4 and "401" in r.err and "github_token_env" in r.err


def test_bad_regex_is_a_config_error_naming_the_entry(run, world):
    world.config(orgs=[{"name": "acme", "include": ["(unclosed"]}])
    r = run("mirror", "list")
    assert r.code == 2
    assert "raibid.yaml:" in r.err and "'acme'" in r.err and "include[0]" in r.err and "invalid regex" in r.err
    world.config(orgs=[{"name": "acme", "colour": "red"}])
    r = run("mirror", "list")
    assert r.code == 2 and "unknown key 'mirror.orgs.0.colour'" in r.err


def test_trigger_lost_to_a_redis_outage_is_retried_by_the_next_run(run, world, monkeypatch):
    # The jobs a push owes are written to Redis before the push; with Redis down nothing is pushed,
    # so the next run sees the same difference, pushes and triggers.
    world.config(repos=["solo/one"])
    assert run("mirror", "sync").code == 0
    before = world.target_refs("mirrors/one")["refs/heads/main"]
    sha = world.github.commit("solo", "one", "main", {"a.txt": "outage"})
    monkeypatch.setenv("RAIBID_REDIS_URL", "redis://127.0.0.1:1/0")
    r = run("mirror", "sync", "--json")
    assert r.code == 1
    res = r.json()["repos"][0]
    assert res["action"] == "failed" and "nothing was pushed" in res["error"]
    assert world.target_refs("mirrors/one")["refs/heads/main"] == before
    monkeypatch.setenv("RAIBID_REDIS_URL", world.redis_url)
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    res = r.json()["repos"][0]
    assert res["action"] == "synced" and len(res["jobs"]) == 1
    assert [(j.commit, j.ref) for j in world.jobs()] == [(sha, "main")]
    assert run("mirror", "sync", "--json").json()["repos"][0]["jobs"] == []


def test_each_repo_has_its_own_timeout(world, tmp_path):
    """A source that accepts connections and never answers fails that repo only, within its timeout."""
    import socket

    from raibid.gitea import Gitea
    from raibid.mirror import Options, Resolved, Syncer, TargetIndex

    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(16)
    try:
        gitea = Gitea(world.gitea.url, GITEA_TOKEN)
        syncer = Syncer(gitea, TargetIndex(gitea), Options(cache_dir=tmp_path / "c", timeout=1.5, jobs=2,
                                                           github_token=world.github.token,
                                                           gitea_token=GITEA_TOKEN))
        good = world.github.repo("solo", "one")
        hung = Resolved("solo/hung", "mirrors/hung", "repos[0]",
                        clone_url=f"http://127.0.0.1:{sink.getsockname()[1]}/solo/hung.git")
        ok = Resolved("solo/one", "mirrors/one", "repos[1]", clone_url=world.github.git.url(good.full_name))
        t0 = time.monotonic()
        summary = syncer.run([hung, ok])
        assert time.monotonic() - t0 < 10
    finally:
        sink.close()
    results = {r.source: r for r in summary.repos}
    assert results["solo/hung"].action == "failed" and "timed out" in results["solo/hung"].error
    assert results["solo/hung"].duration_s < 5
    assert results["solo/one"].action == "created"


def test_a_repo_another_process_is_syncing_waits_for_it_instead_of_racing_its_git(world, tmp_path):
    """The webhook receiver syncs single repos without the run lock: two git fetches into one cache repo
    fail with "cannot lock ref". The engine serialises each repo's work on a lock beside its cache repo."""
    import fcntl

    from raibid.gitea import Gitea
    from raibid.mirror import Options, Resolved, Syncer, TargetIndex
    from raibid.mirror import gitengine as g

    gitea = Gitea(world.gitea.url, GITEA_TOKEN)
    url = world.github.git.url("solo/one")
    repo = Resolved("solo/one", "mirrors/one", "repos[0]", clone_url=url)

    def syncer(timeout: float) -> Syncer:
        return Syncer(gitea, TargetIndex(gitea), Options(cache_dir=tmp_path / "c", timeout=timeout,
                                                         github_token=world.github.token, gitea_token=GITEA_TOKEN))

    lock = g.cache_path(tmp_path / "c", url, "solo/one").with_suffix(".git.lock")
    lock.parent.mkdir(parents=True)
    with open(lock, "a") as held:  # what a concurrent process working on this repo holds
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = syncer(timeout=1.0).run([repo]).repos[0]
        assert busy.action == "failed" and "busy" in busy.error, busy
        assert world.gitea_pushes() == 0
    [done] = syncer(timeout=30).run([repo]).repos
    assert done.action == "created" and world.target_refs("mirrors/one") == world.source_refs("solo/one")


def test_a_dotdot_repo_in_the_config_is_a_config_error_naming_the_entry(run, world):
    world.config(repos=["solo/one", "../etc"])
    r = run("mirror", "sync")
    assert r.code == 2 and "mirror.repos entry '../etc'" in r.err and "hint:" in r.err
    world.config(repos=[{"source": "solo/one", "target": "mirrors/.."}])
    r = run("mirror", "list")
    assert r.code == 2 and "'mirrors/..' is not OWNER/NAME" in r.err


def test_jobs_name_the_repo_as_gitea_spells_it_so_its_webhook_dedupes(run, world):
    # target_org "Mirrors" finds Gitea's org "mirrors"; a job for "Mirrors/one" would not dedupe
    # against the Gitea push webhook's "mirrors/one" and the commit would be built twice.
    from raibid.gitea import Gitea
    from raibid.queue import JobSpec, dedupe_key

    Gitea(world.gitea.url, GITEA_TOKEN).create_org("mirrors")
    world.config(repos=["solo/one"], target_org="Mirrors")
    first = run("mirror", "sync", "--json")
    assert first.code == 0, first.err
    assert first.json()["repos"][0]["target"] == "mirrors/one"
    sha = world.github.commit("solo", "one", "main", {"a.txt": "case"})
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    [repo] = r.json()["repos"]
    assert repo["target"] == "mirrors/one" and len(repo["jobs"]) == 1
    q = Queue(redis.Redis.from_url(world.redis_url, decode_responses=True), url=world.redis_url)
    job, created = q.submit_deduped(JobSpec(repo="mirrors/one", ref="main", commit=sha, agent="generic",
                                            source="webhook", dedupe=dedupe_key("mirrors/one", sha, "generic")))
    assert not created and job.id == repo["jobs"][0]
    assert [j.repo for j in world.jobs()] == ["mirrors/one"]


def test_empty_source_repo_is_created_then_unchanged(run, world):
    world.github.add_repo("solo", "empty")
    world.config(repos=["solo/empty"])
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    assert r.json()["repos"][0]["action"] == "created" and world.target_refs("mirrors/empty") == {}
    assert run("mirror", "sync", "--json").json()["repos"][0]["action"] == "unchanged"


def test_every_git_server_unreachable_is_exit_5_in_the_summary(world, tmp_path):
    import socket

    from raibid.gitea import Gitea
    from raibid.mirror import Options, Resolved, Syncer, TargetIndex

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    gitea = Gitea(world.gitea.url, GITEA_TOKEN)
    syncer = Syncer(gitea, TargetIndex(gitea), Options(cache_dir=tmp_path / "c", gitea_token=GITEA_TOKEN))
    down = [Resolved(f"o/r{i}", f"mirrors/r{i}", "repos", clone_url=f"http://127.0.0.1:{port}/o/r{i}.git")
            for i in range(2)]
    summary = syncer.run(down)
    assert summary.unreachable and summary.totals["failed"] == 2
    good = world.github.repo("solo", "one")
    summary = syncer.run([*down, Resolved("solo/one", "mirrors/one", "repos", clone_url=world.github.git.url(
        good.full_name))])
    assert not summary.unreachable and summary.totals["failed"] == 2, [r.error for r in summary.repos]
    assert summary.totals["created"] == 1


def test_env_override_of_the_mode_is_checked_too(run, world, monkeypatch):
    monkeypatch.setenv("RAIBID_MIRROR_MODE", "both")
    r = run("mirror", "sync")
    assert r.code == 2 and "'mirror.mode' must be one of push, pull, got 'both'" in r.err


# ----------------------------------------------------------------------------- routing by agents.trusted


def test_org_regex_mirrors_are_untrusted_unless_agents_trusted_names_them(run, world):
    """An org regex brings in third-party code: its jobs go to the untrusted pool; only agents.trusted,
    naming the Gitea repo, makes one trusted (a mirror entry or the GitHub owner does not)."""
    world.config("  trigger:\n    on_create: true\n    agent: rust\n",
                 trusted={"owners": ["acme", "solo"], "repos": ["mirrors/svc-a"]},
                 repos=["solo/one"], orgs=[{"name": "acme", "include": ["^svc-"], "exclude": ["-old$"]}])
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    pools = {j.repo: j.agent for j in world.jobs()}
    assert pools == {"mirrors/svc-a": "rust", "mirrors/svc-b": "rust-untrusted", "mirrors/one": "rust-untrusted"}
    q = Queue(redis.Redis.from_url(world.redis_url, decode_responses=True), url=world.redis_url)
    assert q.r.xlen(q.keys.stream("rust")) == 1 and q.r.xlen(q.keys.stream("rust-untrusted")) == 2
    for job in world.jobs():
        assert job.dedupe == f"{job.repo}@{job.commit}:{job.agent}"


def test_a_default_config_sends_every_mirror_job_to_the_untrusted_pool(run, world):
    world.config(trusted={}, repos=["solo/one"])
    assert run("mirror", "sync").code == 0
    sha = world.github.commit("solo", "one", "main", {"a.txt": "2"})
    r = run("mirror", "sync", "--json")
    assert r.code == 0, r.err
    [job] = world.jobs()
    assert (job.repo, job.commit, job.agent, job.source) == ("mirrors/one", sha, "generic-untrusted", "mirror")
    assert job.dedupe == f"mirrors/one@{sha}:generic-untrusted"

