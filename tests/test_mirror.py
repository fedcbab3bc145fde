"""The mirror's pieces: config, GitHub client (pagination, rate limits), credentials, lock, ref reading."""

from __future__ import annotations

import base64
import os
import subprocess

import pytest

from raibid.config import load_config
from raibid.errors import ConfigError, Locked
from raibid.gitcreds import git_env, origin_of, scrub
from raibid.github import GitHub, RateLimited
from raibid.mirror import gitengine as g
from raibid.mirror.lock import SyncLock
from raibid.mirror.resolve import normalize_url, read_list, source_of
from tests.harness.githubfake import FakeClock, GitHubFake

# ----------------------------------------------------------------------------- config


def write(path, text):
    path.write_text(text)
    return path


def test_mirror_entries_as_strings_or_mappings(isolated_env):
    p = write(isolated_env / "raibid.yaml", """\
mirror:
  repos:
    - solo/one
    - {source: solo/two, target: team/deux, branches: "^main$"}
  orgs:
    - name: acme
      kind: org
      include: ["^svc-"]
      exclude: ["-old$"]
      on_missing: archive
  trigger:
    on_create: true
""")
    m = load_config(p).mirror
    assert m.repos[0] == "solo/one"
    assert (m.repos[1].source, m.repos[1].target, m.repos[1].branches) == ("solo/two", "team/deux", "^main$")
    assert m.orgs[0].include == ["^svc-"] and m.orgs[0].on_missing == "archive" and not m.orgs[0].forks
    assert m.trigger.on_create is True


@pytest.mark.parametrize("body, expected", [
    ("mirror:\n  orgs:\n    - name: acme\n      exclude: ['[a-']\n", "mirror.orgs entry 'acme' exclude[0]: invalid regex"),
    ("mirror:\n  orgs:\n    - name: acme\n      on_missing: burn\n", "'burn' is not one of keep, archive, delete"),
    ("mirror:\n  orgs:\n    - kind: user\n", "'name' is required"),
    ("mirror:\n  repos:\n    - {source: a/b, branches: '(('}\n", "mirror.repos entry 'a/b' branches: invalid regex"),
    ("mirror:\n  repos:\n    - not-a-repo\n", "'not-a-repo' is not OWNER/NAME"),
    ("mirror:\n  repos:\n    - 5\n", "must be a string or a mapping"),
    ("mirror:\n  trigger:\n    branches: '(('\n", "mirror.trigger.branches: invalid regex"),
    ("mirror:\n  mode: both\n", "'mirror.mode' must be one of push, pull, got 'both'"),
])
def test_bad_mirror_entries_name_file_line_and_entry(isolated_env, body, expected):
    p = write(isolated_env / "raibid.yaml", body)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert expected in e.value.message and str(p) in e.value.message


def test_list_files_skip_comments_and_reject_junk(tmp_path):
    p = write(tmp_path / "l.txt", "# header\n\na/b\n  c/d   # why\n")
    assert read_list(p) == [(3, "a/b"), (4, "c/d")]
    write(p, "a/b\nnot a repo\n")
    with pytest.raises(ConfigError, match=r"l.txt:2: 'not a repo' is not OWNER/NAME"):
        read_list(p)


def test_source_of_reads_original_url_or_the_description_marker():
    from raibid.gitea.models import Repo

    def repo(**kw):
        return Repo(owner="m", name="x", full_name="m/x", private=False, mirror=False, empty=False, clone_url="",
                    html_url="", **kw)

    assert source_of(repo(original_url="https://github.com/Acme/Svc.git")) == "acme/svc"
    assert source_of(repo(description="Mirror of https://ghe.example/api/../acme/web")) == "acme/web"
    assert source_of(repo(description="my own repo")) is None
    assert normalize_url("https://tok@github.com/a/b.git/") == "github.com/a/b"


# ----------------------------------------------------------------------------- GitHub client


@pytest.fixture
def clocked(tmp_path):
    clock = FakeClock()
    fake = GitHubFake(tmp_path / "gh", clock=clock).start()
    yield fake, clock
    fake.stop()


def test_listing_follows_link_pagination_and_sends_bearer(github):
    github.add_org("big")
    for i in range(230):
        github.add_repo("big", f"r{i:03d}")
    gh = GitHub(github.url, github.token)
    repos = gh.list_repos("big")
    assert len(repos) == 230 and len({r.name for r in repos}) == 230
    pages = github.requests("GET", r"/repos$")
    assert len(pages) == 3 and all(p.auth for p in pages)  # per_page=100, then Link rel="next" twice
    assert repos[0].clone_url.startswith(github.git.base_url)  # clone URLs come from the API


def test_clone_url_comes_from_the_api_not_a_host(github):
    github.add_user("solo")
    github.add_repo("solo", "one", files={"a": "b"})
    repo = GitHub(github.url + "/", github.token).get_repo("solo", "one")
    assert repo.clone_url == github.git.url("solo/one") and "github.com" not in repo.clone_url


def test_primary_rate_limit_waits_until_reset(clocked):
    fake, clock = clocked
    fake.add_org("acme")
    fake.add_repo("acme", "a")
    fake.rate_limit(remaining=0, reset_in=120)
    slept = []

    def sleep(s):
        slept.append(s)
        clock.advance(s)

    gh = GitHub(fake.url, fake.token, max_wait=300, sleep=sleep, clock=clock)
    assert [r.name for r in gh.list_repos("acme")] == ["a"]
    assert len(slept) == 1 and 120 <= slept[0] <= 122


def test_secondary_rate_limit_honours_retry_after(clocked):
    fake, clock = clocked
    fake.add_org("acme")
    fake.add_repo("acme", "a")
    fake.secondary_limit(retry_after=30, status=429, count=1)
    gh = GitHub(fake.url, fake.token, max_wait=60, sleep=clock.advance, clock=clock)
    assert len(gh.list_repos("acme")) == 1 and 30 <= gh.waited <= 31


def test_rate_limit_beyond_max_wait_fails_clearly(clocked):
    fake, clock = clocked
    fake.add_org("acme")
    fake.rate_limit(remaining=0, reset_in=3600)
    gh = GitHub(fake.url, fake.token, max_wait=60, sleep=clock.advance, clock=clock)
    with pytest.raises(RateLimited, match=r"resets in 36\d\ds, more than --max-wait allows \(60s\)"):
        gh.list_repos("acme")


def test_remaining_zero_on_a_success_waits_before_the_next_request(clocked):
    fake, clock = clocked
    fake.add_org("acme")
    fake.add_repo("acme", "a")
    fake.rate_limit(remaining=1, reset_in=10)
    gh = GitHub(fake.url, fake.token, max_wait=60, sleep=clock.advance, clock=clock)
    gh.get_repo("acme", "a")  # uses the last request of the window
    gh.get_repo("acme", "a")  # waits for the reset instead of earning a 403
    assert all(r.status == 200 for r in fake.requests()) and gh.waited >= 10


# ----------------------------------------------------------------------------- credentials


def test_git_env_scopes_each_token_to_its_host_and_drops_inherited_config():
    env = git_env({"http://127.0.0.1:5000/a/b.git": "TOKEN-A", "https://gitea.local/x.git": None},
                  base={"PATH": "/bin", "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                        "GIT_CONFIG_VALUE_0": "Authorization: Basic evil"})
    keys = [env[f"GIT_CONFIG_KEY_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))]
    assert keys == ["credential.helper", "core.askPass", "http.http://127.0.0.1:5000/.extraHeader",
                    "core.hooksPath"]
    assert base64.b64decode(env["GIT_CONFIG_VALUE_2"].split()[-1]).decode() == "x-access-token:TOKEN-A"
    assert "evil" not in "".join(env.values()) and env["GIT_TERMINAL_PROMPT"] == "0"
    assert origin_of("https://u:p@h.example:8443/a/b") == "https://h.example:8443/"


def test_scrub_removes_tokens_in_every_form():
    basic = base64.b64encode(b"x-access-token:SeCrEt").decode()
    text = f"fatal: https://user:SeCrEt@h/x: Authorization: Basic {basic} and SeCrEt again"
    out = scrub(text, ["SeCrEt"])
    assert "SeCrEt" not in out and basic not in out and "https://***@h/x" in out


def test_ls_remote_reads_the_advertisement_and_reports_missing_repos(git_server):
    git_server.create_repo("o/r")
    sha = git_server.commit("o/r", "main", {"a": "1"})
    git_server.tag("o/r", "v1")
    refs = g.ls_remote(g.Remote(git_server.url("o/r"), git_server.token))
    assert refs["refs/heads/main"] == sha and refs["refs/tags/v1"] == sha
    git_server.create_repo("o/empty")
    assert g.ls_remote(g.Remote(git_server.url("o/empty"), git_server.token)) == {}
    with pytest.raises(g.SourceGone):
        g.ls_remote(g.Remote(git_server.url("o/nope"), git_server.token))
    with pytest.raises(g.GitFailed, match="access denied"):
        g.ls_remote(g.Remote(git_server.url("o/r"), "wrong-token"))


def test_fetch_failure_is_scrubbed_and_leaves_no_half_made_cache(git_server, tmp_path):
    path = tmp_path / "cache" / "o" / "r.git"
    with pytest.raises(g.GitFailed) as e:
        g.fetch(path, g.Remote(git_server.url("o/missing"), "tok-XYZ-secret"))
    assert "tok-XYZ-secret" not in e.value.message
    assert not path.exists() and list(path.parent.iterdir()) == []


def test_mirrored_refs_skip_pull_refs_and_filter_branches():
    import re

    refs = {"refs/heads/main": "1", "refs/heads/dev": "2", "refs/tags/v1": "3", "refs/tags/v1^{}": "4",
            "refs/pull/1/head": "5", "HEAD": "1"}
    assert g.mirrored(refs) == {"refs/heads/main": "1", "refs/heads/dev": "2", "refs/tags/v1": "3"}
    assert g.mirrored(refs, re.compile("^main$")) == {"refs/heads/main": "1", "refs/tags/v1": "3"}
    assert g.changes({"a": "1", "b": "2"}, {"b": "9", "c": "3"}) == {"a": (None, "1"), "b": ("9", "2"),
                                                                     "c": ("3", None)}


# ----------------------------------------------------------------------------- lock


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    with SyncLock(tmp_path):
        with pytest.raises(Locked) as e:
            SyncLock(tmp_path).acquire()
        assert f"pid {os.getpid()}" in e.value.message and e.value.exit_code == 6
    SyncLock(tmp_path).acquire().release()  # free again once released


def test_lock_dies_with_its_process(tmp_path):
    code = ("import sys, os; from pathlib import Path; from raibid.mirror.lock import SyncLock; "
            f"SyncLock(Path({str(tmp_path)!r})).acquire(); os._exit(0)")
    subprocess.run([os.sys.executable, "-c", code], check=True)
    SyncLock(tmp_path).acquire().release()  # no stale lock after the holder exited without releasing


# ----------------------------------------------------------------------------- the CronJob component


def test_mirror_component_renders_a_valid_forbid_cronjob_with_tokens_from_secrets(isolated_env, monkeypatch):
    import json

    import kubernetes_validate

    from raibid.cluster.render import render

    monkeypatch.setenv("GITHUB_TOKEN", "ghp-sentinel-token")
    p = write(isolated_env / "raibid.yaml", "mirror:\n  repos: [a/b]\n  orgs: [{name: acme, include: ['^x']}]\n"
              "  schedule: '0 * * * *'\n")
    cfg = load_config(p)
    docs = {m.kind: m for m in render(cfg, ["mirror"], secrets={"redis_password": "r", "gitea_admin_password": "g"})
            if m.component == "mirror"}
    cron, cm = docs["CronJob"].obj, docs["ConfigMap"].obj
    for obj in (cron, cm):
        kubernetes_validate.validate(obj, "1.31", strict=True)
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["schedule"] == "0 * * * *"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["mirror", "sync", "--json"]
    env = {e["name"]: e for e in container["env"]}
    assert env["GITHUB_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "raibid-mirror-github"
    assert env["RAIBID_GITEA_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "raibid-gitea-mirror"
    pod_cfg = json.loads(cm["data"]["raibid.yaml"])
    assert pod_cfg["mirror"]["orgs"][0]["include"] == ["^x"] and pod_cfg["mirror"]["cache_dir"] == "/cache"
    # Its triggers route as the CLI does (tests/test_webhook_mirror.py loads it and compares pools).
    assert pod_cfg["agents"] == {"default_type": "generic", "approval": "forks",
                                 "trusted": {"owners": [], "repos": [], "authors": []}}
    assert pod_cfg["mirror"]["pull_requests"] is True
    assert "ghp-sentinel-token" not in json.dumps([cron, cm])
    # The pod's config is a valid raibid config.
    write(isolated_env / "pod.yaml", cm["data"]["raibid.yaml"])
    assert load_config(isolated_env / "pod.yaml").mirror.repos == ["a/b"]


# ----------------------------------------------------------------------------- progress


class _TTY:
    def __init__(self) -> None:
        import io

        self.buf = io.StringIO()

    def write(self, s: str) -> int:
        return self.buf.write(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_progress_is_a_bar_on_a_tty_and_lines_otherwise(tty):
    import io

    from raibid.app import Application
    from raibid.cli.mirror import _progress
    from raibid.mirror import RepoResult
    from raibid.terminal import Terminal

    err = _TTY() if tty else io.StringIO()
    out = io.StringIO()
    app = Application(terminal=Terminal(stdout=out, stderr=err, color=False))
    with _progress(app, 2) as tick:
        tick(RepoResult("a/ok", "m/ok", "unchanged"))
        tick(RepoResult("a/bad", "m/bad", "failed", error="boom"))
    text = err.buf.getvalue() if tty else err.getvalue()
    assert out.getvalue() == ""  # never on stdout
    assert "a/bad -> m/bad: boom" in text
    if not tty:
        assert text.splitlines()[0].startswith("unchanged") and len(text.splitlines()) == 2


def test_git_failing_silently_says_why_not_an_empty_message(tmp_path, monkeypatch):
    # `git config --get` of a missing key exits 1 and prints nothing.
    with pytest.raises(g.GitFailed) as e:
        g.run_git(["config", "--file", str(tmp_path / "none"), "--get", "raibid.missing"])
    assert e.value.message == "git config failed: git exited with code 1 and printed nothing"
    # A git that Ctrl-C (SIGINT to the process group) stops also prints nothing.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\nkill -INT $$\nsleep 5\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(g.GitFailed) as e:
        g.run_git(["push", "http://127.0.0.1:1/x.git"])
    assert e.value.message.startswith("git push failed: git was stopped by SIGINT")


@pytest.mark.parametrize("name", ["../etc", "./x", "solo/..", "solo/."])
def test_dot_and_dotdot_are_never_owner_or_repo_names(name, tmp_path, github):
    from raibid.errors import UsageError
    from raibid.mirror.resolve import check_full_name

    with pytest.raises(UsageError):
        check_full_name(name, "--repo")
    listing = tmp_path / "repos.txt"
    listing.write_text(f"solo/ok\n{name}\n")
    with pytest.raises(ConfigError, match=":2:"):
        read_list(listing)
    owner, _, repo = name.partition("/")
    with pytest.raises(UsageError):
        GitHub(github.url, github.token).get_repo(owner, repo)


def test_a_first_fetch_killed_midway_leaves_nothing_the_next_fetch_keeps(git_server, tmp_path):
    # SIGTERM/SIGKILL skip the cleanup of the temporary bare repo; the next fetch of that repo removes it.
    git_server.create_repo("o/r", files={"a": "1"})
    path = tmp_path / "cache" / "o" / "r.git"
    path.parent.mkdir(parents=True)
    leftover = path.parent / ".r.git.k1ll3d_x"
    (leftover / "objects").mkdir(parents=True)
    other = path.parent / ".r.git.lock.abcdefgh"  # not r.git's: another name's leftover is left alone
    other.mkdir()
    remote = g.Remote(git_server.url("o/r"), git_server.token)
    with g.repo_lock(path):
        assert g.fetch(path, remote) is True
    assert (path / "HEAD").exists() and not leftover.exists() and other.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == [".r.git.lock.abcdefgh", "r.git", "r.git.lock"]


def test_a_trailing_newline_is_never_a_name(tmp_path, github):
    """Each name check matches the whole string: "$" let "acme/app\\n" (and "app\\n") through."""
    from raibid.errors import UsageError
    from raibid.mirror.resolve import check_full_name

    with pytest.raises(UsageError):
        check_full_name("acme/app\n", "--repo")  # the mirror's OWNER/NAME rule
    with pytest.raises(UsageError):
        GitHub(github.url, github.token).get_repo("acme", "app\n")  # the GitHub client's path segments
    with pytest.raises(UsageError):
        GitHub(github.url, github.token).list_repos("acme\n")
    # The first fetch's leftover cleanup removes only its own temporary dirs, not ".r.git.abcdefgh\n".
    path = tmp_path / "o" / "r.git"
    path.parent.mkdir(parents=True)
    (path.parent / ".r.git.abcdefgh\n").mkdir()
    (path.parent / ".r.git.abcdefgh").mkdir()
    g._remove_leftovers(path)
    assert [p.name for p in path.parent.iterdir()] == [".r.git.abcdefgh\n"]


HOSTILE_URL = "--upload-pack=touch PWNED; git-upload-pack"  # a clone_url an API answer could carry


def test_a_url_that_starts_with_a_dash_is_never_a_git_option(git_server, tmp_path, monkeypatch):
    """ls-remote, fetch and push put --end-of-options before the URL and the refs."""
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "remote", "add", "origin", git_server.url("o/r")], check=True)
    git_server.create_repo("o/r", files={"a": "1"})
    monkeypatch.chdir(work)  # where a bare `git ls-remote --upload-pack=...` would take origin and run it
    with pytest.raises(g.GitFailed):
        g.ls_remote(g.Remote(HOSTILE_URL))
    cache = tmp_path / "cache" / "r.git"
    with g.repo_lock(cache), pytest.raises(g.GitFailed):
        g.fetch(cache, g.Remote(HOSTILE_URL))  # first fetch: config and fetch
    assert g.fetch(cache, g.Remote(git_server.url("o/r"), git_server.token)) is True
    with pytest.raises(g.GitFailed):
        g.fetch(cache, g.Remote(HOSTILE_URL))  # a later fetch
    with pytest.raises(g.GitFailed):
        g.push(cache, g.Remote(HOSTILE_URL), {"refs/heads/x": (None, "HEAD")})
    assert not list(tmp_path.rglob("PWNED")) and not (work / "PWNED").exists()


def test_a_trigger_owed_by_a_run_is_enqueued_by_the_next_run_in_a_fresh_pod(github, gitea, redis_url, tmp_path):
    """The pending-trigger state is in Redis, not the cache dir (an emptyDir in the CronJob): a run whose
    enqueue failed after its push leaves the job owed, and a run with a new, empty cache enqueues it."""
    import redis

    from raibid.errors import Unreachable
    from raibid.gitea import Gitea
    from raibid.mirror import Options, Resolved, Syncer, TargetIndex, Trigger
    from raibid.mirror.pending import PendingTriggers
    from raibid.queue import JobSpec, Queue, dedupe_key
    from tests.conftest import GITEA_TOKEN

    github.add_user("solo")
    github.add_repo("solo", "one", branches={"main": {"a.txt": "1"}})
    queue = Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)
    calls = []

    def submit(build) -> list[str]:
        repo, branch, commit = build.repo, build.ref, build.commit
        calls.append((repo, branch, commit))
        if len(calls) == 1:  # the first pod loses Redis (or is killed) right after its push
            raise Unreachable("cannot reach Redis at redis://redis:6379: connection refused")
        job, created = queue.submit_deduped(JobSpec(repo=repo, ref=branch, commit=commit, source="mirror",
                                                    dedupe=dedupe_key(repo, commit, "generic")))
        return [job.id]

    def pod(name: str):  # a fresh pod: a new cache dir, new clients, the same Redis
        client = Gitea(gitea.url, GITEA_TOKEN)
        opts = Options(cache_dir=tmp_path / name, github_token=github.token, gitea_token=GITEA_TOKEN,
                       trigger=Trigger("^main$", submit, on_create=False, pending=PendingTriggers(
                           lambda: Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url))))
        return Syncer(client, TargetIndex(client), opts)

    repo = Resolved("solo/one", "mirrors/one", "repos[0]", clone_url=github.git.url("solo/one"))
    assert pod("pod-0").run([repo]).repos[0].action == "created"  # the first sync triggers nothing
    sha = github.commit("solo", "one", "main", {"a.txt": "2"})
    first = pod("pod-1").run([repo]).repos[0]
    assert first.action == "failed" and "kept for the next run" in first.error and queue.list() == []
    assert gitea.git.refs("mirrors/one")["refs/heads/main"] == sha  # the push landed
    assert queue.r.smembers("raibid:mirror:pending:mirrors/one") == {f'["main", "{sha}"]'}
    second = pod("pod-2").run([repo]).repos[0]  # nothing of pod-1's cache dir is left
    assert second.action == "unchanged" and len(second.jobs) == 1
    assert [(j.repo, j.ref, j.commit) for j in queue.list()] == [("mirrors/one", "main", sha)]
    assert queue.r.exists("raibid:mirror:pending:mirrors/one") == 0  # paid
    assert pod("pod-3").run([repo]).repos[0].jobs == []
    assert not (tmp_path / "pod-1" / "pending").exists()


def test_unchanged_repos_are_not_failed_by_a_redis_outage(github, gitea, tmp_path):
    """Reading what is owed is best effort for an unchanged repo, and asked once per run when Redis is away."""
    from raibid.gitea import Gitea
    from raibid.mirror import Options, Resolved, Syncer, TargetIndex, Trigger
    from raibid.mirror.pending import PendingTriggers
    from raibid.queue import Queue, connect
    from tests.conftest import GITEA_TOKEN
    from tests.harness.redis_server import free_port

    github.add_user("solo")
    repos = []
    for name in ("one", "two", "three"):
        github.add_repo("solo", name, branches={"main": {"a.txt": name}})
        repos.append(Resolved(f"solo/{name}", f"mirrors/{name}", "repos[0]", clone_url=github.git.url(f"solo/{name}")))

    class Reads:  # the PendingStore protocol around the real store, counting its reads
        def __init__(self, inner) -> None:
            self.inner, self.reads = inner, 0

        def add(self, target, owed):
            self.inner.add(target, owed)

        def items(self, target):
            self.reads += 1
            return self.inner.items(target)

        def done(self, target, item):
            self.inner.done(target, item)

    def syncer(pending) -> Syncer:
        client = Gitea(gitea.url, GITEA_TOKEN)
        return Syncer(client, TargetIndex(client), Options(
            cache_dir=tmp_path / "c", jobs=1, github_token=github.token, gitea_token=GITEA_TOKEN,
            trigger=Trigger("^main$", lambda *a: ("job", True), pending=pending)))

    assert {r.action for r in syncer(None).run(repos).repos} == {"created"}
    store = Reads(PendingTriggers(lambda: Queue(connect(f"redis://127.0.0.1:{free_port()}", None, timeout=0.5))))
    summary = syncer(store).run(repos)
    assert [r.action for r in summary.repos] == ["unchanged"] * 3 and summary.ok
    assert store.reads == 1  # a hung Redis would cost one timeout per run, not one per repo
