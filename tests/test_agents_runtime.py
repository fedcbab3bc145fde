"""`raibid agents run` end to end: a real redis-server, real git over HTTP with token auth, real subprocesses."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from raibid.queue import JobSpec, Queue

TOKEN = "agent-secret-token-5f3c9a"


@pytest.fixture
def q(redis_url) -> Queue:
    return Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)


@pytest.fixture
def git(git_server):
    git_server.tokens.add(TOKEN)
    return git_server


@pytest.fixture
def argv_log(tmp_path: Path) -> Path:
    """A `git` first on PATH that records its argv, then runs the real git."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "git-argv.log"
    real = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    wrapper = bindir / "git"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return log


def agent_env(redis_url: str, git_server, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "RAIBID_REDIS_URL": redis_url, "RAIBID_GITEA_URL": git_server.base_url,
           "RAIBID_GITEA_TOKEN": TOKEN, "RAIBID_QUEUE_HEARTBEAT": "1", "RAIBID_QUEUE_MIN_IDLE": "30",
           "RAIBID_AGENTS_TRUSTED_OWNERS": "[acme]",
           "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.update(extra)
    return env


def start_agent(env: dict[str, str], workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "raibid", "agents", "run", "--wait", "5", "--workdir",
                             str(workdir), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(cond, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def log_text(q: Queue, job_id: str) -> str:
    return "\n".join(line for _, line in q.logs(job_id))


def submit(q: Queue, repo: str, **kw) -> str:
    return q.submit(JobSpec(repo=repo, ref=kw.pop("ref", "main"), **kw)).id


PIPELINE = """\
env:
  GREETING: hello
steps:
  - name: build
    run: |
      echo "$GREETING from $RAIBID_REPO at $RAIBID_COMMIT"
      echo "job=$RAIBID_JOB_ID registry=$RAIBID_REGISTRY type=$RAIBID_AGENT_TYPE ci=$CI raibid=$RAIBID"
      test -z "${RAIBID_REGISTRY_TOKEN:-}${RAIBID_GITEA_TOKEN:-}${RAIBID_REDIS_URL:-}${AGENT_ONLY:-}"
      test -z "${RAIBID_REDIS_PASSWORD:-}" && test -z "${GIT_CONFIG_COUNT:-}" && echo "no private env"
      for f in /proc/[0-9]*/cmdline; do { tr '\\0' ' ' < "$f"; } 2>/dev/null || true; echo; done > {dump}
  - name: test
    timeout: 30
    env:
      WHO: step-two
    run: echo "$WHO ran"; cat data.txt
"""


def test_job_runs_to_success_and_the_token_leaks_nowhere(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app")
    dump = tmp_path / "argv-dump.txt"
    sha = git.commit("acme/app", "main", {".raibid.yml": PIPELINE.replace("{dump}", str(dump)),
                                          "data.txt": "payload\n"})
    job_id = submit(q, "acme/app")
    work = tmp_path / "w"
    code, out, err = finish(start_agent(agent_env(redis_url, git, tmp_path, AGENT_ONLY="x"), work))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "succeeded" and job.exit_code == 0, (job, err, log_text(q, job_id))
    log = log_text(q, job_id)
    assert f"hello from acme/app at {sha}" in log
    registry = git.base_url.split("//", 1)[1].rstrip("/")
    assert f"job={job_id} registry={registry} type=generic ci=true raibid=1" in log and "no private env" in log
    assert "step-two ran" in log and "payload" in log
    assert "raibid: step build (1/2)" in log and "raibid: step test exited 0" in log
    forms = [TOKEN, base64.b64encode(f"raibid:{TOKEN}".encode()).decode()]
    for where, text in [("log", log), ("stdout", out), ("stderr", err),
                        (".git/config", (work / "src" / ".git" / "config").read_text()),
                        ("git argv", argv_log.read_text()), ("process argv", dump.read_text())]:
        assert not any(f in text for f in forms), f"token in {where}"
    assert "fetch" in argv_log.read_text()  # the wrapper did see the clone
    assert "http.extraheader" not in (work / "src" / ".git" / "config").read_text().lower()


def test_failed_step_is_a_processed_job(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={".raibid.yml": "steps:\n  - name: a\n    run: echo one; exit 3\n"
                                                      "  - name: b\n    run: echo never\n"})
    job_id = submit(q, "acme/app")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and job.exit_code == 3 and "step a exited 3" in job.error
    assert "never" not in log_text(q, job_id).replace("echo never", "")


def test_job_command_wins_over_pipeline_and_pipefail_applies(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={"x.txt": "x\n"})
    job_id = submit(q, "acme/app", command="false | cat; echo after")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and job.exit_code == 1
    assert "after" not in [line for _, line in q.logs(job_id)]


def test_step_timeout_kills_the_whole_process_group(q, git, redis_url, tmp_path, argv_log):
    pidfile = tmp_path / "bg.pid"
    git.create_repo("acme/app", files={".raibid.yml": (
        "steps:\n  - name: slow\n    timeout: 1\n"
        f"    run: sleep 300 & echo $! > {pidfile}; echo waiting; wait\n")})
    job_id = submit(q, "acme/app")
    t0 = time.monotonic()
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    assert time.monotonic() - t0 < 20
    job = q.get(job_id)
    assert job.status == "failed" and job.exit_code == 124 and "timed out after 1s" in job.error
    pid = int(pidfile.read_text())
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid), 10, "background sleep killed")


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"


def test_cancel_while_running_stops_the_step(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={".raibid.yml": "steps:\n  - name: s\n    run: echo started; sleep 120\n"})
    job_id = submit(q, "acme/app")
    proc = start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w")
    wait_for(lambda: "started" in log_text(q, job_id), 30, "step output")
    assert q.cancel(job_id) == "requested"
    code, _, err = finish(proc, 30)
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "cancelled"


def test_sigterm_releases_the_job_and_the_next_agent_succeeds(q, git, redis_url, tmp_path, argv_log):
    marker = tmp_path / "second-run"
    git.create_repo("acme/app", files={".raibid.yml": (
        "steps:\n  - name: s\n    run: |\n"
        f"      if [ -f {marker} ]; then echo second delivery; exit 0; fi\n"
        f"      touch {marker}; echo started; sleep 120\n")})
    job_id = submit(q, "acme/app")
    env = agent_env(redis_url, git, tmp_path)
    proc = start_agent(env, tmp_path / "w1")
    wait_for(lambda: "started" in log_text(q, job_id), 30, "step output")
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc, 30)
    assert code == 143, err
    job = q.get(job_id)
    assert job.status == "queued" and job.finished_at is None
    code, _, err = finish(start_agent(env, tmp_path / "w2"))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "succeeded" and job.deliveries == 2
    assert "second delivery" in log_text(q, job_id)


def test_sigkilled_agent_is_reclaimed_after_min_idle(q, git, redis_url, tmp_path, argv_log):
    marker = tmp_path / "second-run"
    pidfile = tmp_path / "step.pid"
    git.create_repo("acme/app", files={".raibid.yml": (
        "steps:\n  - name: s\n    run: |\n"
        f"      if [ -f {marker} ]; then echo reclaimed; exit 0; fi\n"
        f"      touch {marker}; echo $$ > {pidfile}; echo started; sleep 120\n")})
    job_id = submit(q, "acme/app")
    env = agent_env(redis_url, git, tmp_path, RAIBID_QUEUE_MIN_IDLE="2")
    proc = start_agent(env, tmp_path / "w1")
    wait_for(lambda: "started" in log_text(q, job_id), 30, "step output")
    proc.kill()
    proc.communicate(timeout=10)
    # The step runner sees the agent's end of the socket close and kills the step's group.
    pid = int(pidfile.read_text())
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid), 20, "the step killed")
    assert q.get(job_id).status == "running"
    code, _, err = finish(start_agent(env, tmp_path / "w2", "--wait", "10"))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "succeeded" and job.deliveries == 2
    assert "reclaimed" in log_text(q, job_id)


def test_no_command_and_no_pipeline_fails_with_a_message(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={"README": "hi\n"})
    job_id = submit(q, "acme/app")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and "no command and acme/app has no .raibid.yml" in job.error


def test_malformed_pipeline_fails_naming_the_line(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={".raibid.yml": "steps:\n  - name: a\n    run: echo\n    retries: 3\n"})
    job_id = submit(q, "acme/app")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and job.error.startswith(".raibid.yml:4: step 1: unknown key 'retries'")
    assert ".raibid.yml:4" in log_text(q, job_id)


def test_bad_token_fails_the_job_with_a_scrubbed_message(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", command="true")
    env = agent_env(redis_url, git, tmp_path, RAIBID_GITEA_TOKEN="wrong-token-abcdef")
    code, out, err = finish(start_agent(env, tmp_path / "w"))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and job.error.startswith("clone failed: git fetch")
    assert "wrong-token-abcdef" not in job.error + log_text(q, job_id) + out + err


def test_checks_out_the_commit_not_the_branch_tip(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={"v.txt": "one\n"})
    first = git.refs("acme/app")["refs/heads/main"]
    git.commit("acme/app", "main", {"v.txt": "two\n"})
    job_id = submit(q, "acme/app", commit=first, command="cat v.txt; git rev-parse HEAD")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    lines = [line for _, line in q.logs(job_id)]
    assert "one" in lines and first in lines and q.get(job_id).status == "succeeded"


def test_no_job_within_wait_exits_zero(redis_url, git, tmp_path, argv_log):
    import json

    t0 = time.monotonic()
    code, out, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w", "--wait", "0.5",
                                        "--json"))
    assert code == 0 and "no generic job within 0.5s" in err
    assert json.loads(out) == {"exit": 0, "job_id": None, "status": None, "exit_code": None, "error": None,
                               "first_output_s": None, "images": []}
    assert time.monotonic() - t0 < 10


def test_unreachable_redis_exits_5(git, tmp_path, argv_log):
    env = agent_env("redis://127.0.0.1:1/0", git, tmp_path, RAIBID_REDIS_RETRIES="0")
    code, _, err = finish(start_agent(env, tmp_path / "w", "--wait", "0"))
    assert code == 5 and "cannot claim" in err


def test_queue_submit_then_agent_then_show_and_logs(run, git, redis_url, tmp_path, argv_log, monkeypatch):
    monkeypatch.setenv("RAIBID_AGENTS_TRUSTED_OWNERS", "[acme]")  # so `queue submit` routes to `generic`
    git.create_repo("acme/app", files={".raibid.yml": "steps:\n  - name: hi\n    run: echo hello from ci\n"})
    job_id = run("queue", "submit", "--repo", "acme/app", "--ref", "main").out.strip()
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    shown = run("queue", "show", job_id, "--json").json()
    assert shown["status"] == "succeeded" and shown["exit_code"] == 0 and shown["agent_pod"]
    assert "hello from ci" in run("queue", "logs", job_id).out


def test_an_agent_that_loses_its_claim_stops_and_records_nothing(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={".raibid.yml": "steps:\n  - name: s\n    run: echo started; sleep 120\n"})
    job_id = submit(q, "acme/app")
    env = agent_env(redis_url, git, tmp_path, RAIBID_QUEUE_HEARTBEAT="3", RAIBID_QUEUE_MIN_IDLE="1")
    proc = start_agent(env, tmp_path / "w")
    wait_for(lambda: "started" in log_text(q, job_id), 30, "step output")
    thief = Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url, min_idle_ms=1000)
    stolen = wait_for(lambda: thief.claim("generic", "thief"), 20, "another consumer reclaiming the job")
    assert stolen.job.id == job_id
    code, _, err = finish(proc, 30)
    assert code == 1 and "taken over by another agent" in err
    job = q.get(job_id)
    assert job.status == "running" and job.agent_pod == "thief" and job.finished_at is None


def test_custom_secret_env_names_are_hidden_from_steps(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", command='echo "token=${MY_TOKEN:-unset}"')
    env = agent_env(redis_url, git, tmp_path, RAIBID_GITEA_TOKEN_ENV="MY_TOKEN", MY_TOKEN=TOKEN)
    del env["RAIBID_GITEA_TOKEN"]
    code, _, err = finish(start_agent(env, tmp_path / "w"))
    assert code == 0, err
    assert q.get(job_id).status == "succeeded" and "token=unset" in log_text(q, job_id)


def test_processes_a_step_leaves_behind_are_killed_when_it_ends(q, git, redis_url, tmp_path, argv_log):
    pidfile = tmp_path / "daemon.pid"
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", command=f"sleep 300 & echo $! > {pidfile}; echo left it running")
    t0 = time.monotonic()
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    assert time.monotonic() - t0 < 30
    assert q.get(job_id).status == "succeeded" and "left it running" in log_text(q, job_id)
    pid = int(pidfile.read_text())
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid), 10, "leftover sleep killed")


# ----------------------------------------------------------------------------- trust, secrets, caps

SECRET = "s3cr3t-deploy-value/with+chars=&more"
SECRETS_ENV = '[{name: DEPLOY_KEY, secret: deploy, repos: ["acme/.*"]}, {name: OTHER, secret: o, repos: ["x/y"]}]'


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "DEPLOY_KEY").write_text(SECRET)
    (d / "OTHER").write_text("other-value-123456")
    return d


def test_a_trusted_build_gets_its_secret_and_every_form_is_masked_in_the_log(q, git, redis_url, tmp_path,
                                                                              argv_log, secrets_dir):
    git.create_repo("acme/app", files={".raibid.yml": (
        "secrets: [DEPLOY_KEY]\nsteps:\n  - name: use\n    run: |\n"
        '      test "$DEPLOY_KEY" = \'' + SECRET + '\' && echo "got it"\n'
        '      echo "plain $DEPLOY_KEY end"\n'
        '      printf %s "$DEPLOY_KEY" | base64 -w0; echo\n'
        '      printf "ab%s" "$DEPLOY_KEY" | base64 -w0; echo\n'
        '      python3 -c \'import os, urllib.parse; print(urllib.parse.quote(os.environ["DEPLOY_KEY"], safe=""))\'\n'
        '      python3 -c \'import os, urllib.parse; print(urllib.parse.quote_plus(os.environ["DEPLOY_KEY"]))\'\n'
        '      python3 long.py\n'  # a line longer than the cap, the value across the cut, in small pieces
        '      echo after\n'),
        "long.py": ("import os, sys\nline = 'x' * 16370 + os.environ['DEPLOY_KEY'] + 'y' * 100\n"
                    "for i in range(0, len(line), 7):\n    sys.stdout.write(line[i:i + 7]); sys.stdout.flush()\n"
                    "print()\n")})
    job_id = submit(q, "acme/app")
    env = agent_env(redis_url, git, tmp_path, RAIBID_AGENTS_SECRETS=SECRETS_ENV)
    code, out, err = finish(start_agent(env, tmp_path / "w", "--secrets-dir", str(secrets_dir)))
    assert code == 0, err
    log = log_text(q, job_id)
    assert q.get(job_id).status == "succeeded", log
    assert "got it" in log and "plain *** end" in log and "after" in log
    assert "x" * 16370 + "***" + "y" * 11 + " [log truncated: line longer than 16384 bytes]" in log  # masked, then cut
    from raibid.gitcreds import secret_forms

    for form in secret_forms(SECRET):
        assert form not in log + out + err, form
    assert base64.b64encode(SECRET.encode()).decode() in secret_forms(SECRET)


@pytest.mark.parametrize(("pipeline_secret", "repo", "message"), [
    ("NOPE", "acme/app", "asks for secret NOPE, but no agents.secrets entry is named NOPE (configured: DEPLOY_KEY, "
                         "OTHER)"),
    ("OTHER", "acme/app", "asks for secret OTHER, but the agents.secrets entry OTHER does not allow acme/app "
                          "(repos: x/y)"),
])
def test_a_trusted_build_asking_for_a_secret_it_may_not_have_fails_naming_it(q, git, redis_url, tmp_path, argv_log,
                                                                             secrets_dir, pipeline_secret, repo,
                                                                             message):
    marker = tmp_path / "ran"
    git.create_repo(repo, files={".raibid.yml": f"secrets: [{pipeline_secret}]\nsteps:\n  - run: touch {marker}\n"})
    job_id = submit(q, repo)
    env = agent_env(redis_url, git, tmp_path, RAIBID_AGENTS_SECRETS=SECRETS_ENV)
    code, _, err = finish(start_agent(env, tmp_path / "w", "--secrets-dir", str(secrets_dir)))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and message in job.error, job.error
    assert not marker.exists() and "other-value-123456" not in log_text(q, job_id)


def test_an_untrusted_build_runs_without_the_secret_and_says_why(q, git, redis_url, tmp_path, argv_log, secrets_dir):
    git.create_repo("stranger/app", files={".raibid.yml": (
        "secrets: [DEPLOY_KEY]\nsteps:\n  - run: echo \"key=${DEPLOY_KEY:-none}\"\n")})
    job_id = q.submit(JobSpec(repo="stranger/app", ref="main", agent="generic-untrusted")).id
    env = agent_env(redis_url, git, tmp_path, RAIBID_AGENTS_SECRETS=SECRETS_ENV)
    code, _, err = finish(start_agent(env, tmp_path / "w", "--type", "generic-untrusted",
                                      "--secrets-dir", str(secrets_dir)))
    assert code == 0, err
    log = log_text(q, job_id)
    assert q.get(job_id).status == "succeeded" and "key=none" in log
    assert ("secret DEPLOY_KEY withheld: this build runs in the untrusted pool generic-untrusted (stranger/app is "
            "not in agents.trusted)") in log


def test_a_trusted_pool_refuses_an_untrusted_repo_and_runs_nothing(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("stranger/app", files={"x": "x\n"})
    job_id = submit(q, "stranger/app", command=f"touch {tmp_path / 'ran'}")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and job.error.startswith(
        "stranger/app is not trusted (agents.trusted) but its job is in the trusted pool generic; nothing was run")
    assert not (tmp_path / "ran").exists() and "fetch" not in (argv_log.read_text() if argv_log.exists() else "")


def test_a_ref_that_looks_like_an_option_is_a_ref(q, git, redis_url, tmp_path, argv_log):
    marker = tmp_path / "pwned"
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", ref=f"--upload-pack=touch {marker}", command="true")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and job.error.startswith("clone failed: git fetch"), job.error
    assert not marker.exists()
    assert f"--end-of-options origin --upload-pack=touch {marker}" in argv_log.read_text()


def test_the_job_log_is_capped_in_bytes_and_the_step_is_drained_not_blocked(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", command="seq 1 200000; head -c 300000 /dev/zero | tr '\\0' z; echo; echo done")
    env = agent_env(redis_url, git, tmp_path, RAIBID_AGENTS_LOG_MAX_BYTES="100000",
                    RAIBID_AGENTS_LOG_LINE_MAX_BYTES="1000")
    code, _, err = finish(start_agent(env, tmp_path / "w"))
    assert code == 0, err
    lines = [line for _, line in q.logs(job_id)]
    assert q.get(job_id).status == "succeeded"
    output = [line for line in lines if not line.startswith("raibid: ")]
    assert sum(len(line) + 1 for line in output) <= 100_000 and output[-1] != "done"
    assert any("[log truncated: this job's log reached 100000 bytes (agents.log_max_bytes)" in line for line in lines)
    assert any(line.startswith("raibid: [log truncated: ") and "bytes of output were not stored" in line
               for line in lines)
    assert "raibid: step command exited 0" in "\n".join(lines)


def test_steps_run_in_a_step_runner_over_a_unix_socket(q, git, redis_url, tmp_path, argv_log):
    sock = tmp_path / "run" / "steps.sock"
    runner_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "BUILD_ONLY": "from-the-build-container"}
    runner = subprocess.Popen([sys.executable, "-m", "raibid", "agents", "step-runner", "--socket", str(sock)],
                              env=runner_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", command='echo "runner pid $PPID, $BUILD_ONLY, token=${RAIBID_GITEA_TOKEN:-none}"')
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w",
                                      "--step-runner", f"unix:{sock}", "--step-runner-timeout", "30"))
    assert code == 0, err
    assert f"runner pid {runner.pid}, from-the-build-container, token=none" in log_text(q, job_id)
    assert runner.wait(20) == 0  # the agent hung up: the runner is done
    assert not sock.exists()


def test_no_step_runner_on_the_socket_is_exit_5_with_a_clear_message(redis_url, git, tmp_path, argv_log):
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w", "--step-runner",
                                      f"unix:{tmp_path / 'none.sock'}", "--step-runner-timeout", "0.5"))
    assert code == 5
    assert f"no step runner at unix:{tmp_path / 'none.sock'} within 0.5s" in err
    assert f"raibid agents step-runner --socket {tmp_path / 'none.sock'}" in err


def _cutter(**kw):
    from raibid.agents.runtime import LogCutter, LogSink
    from raibid.gitcreds import mask_forms

    stored: list[str] = []
    sink = LogSink(stored.extend)
    return LogCutter(sink, mask_forms([SECRET]), **kw), sink, stored


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_the_log_masks_a_secret_split_across_reads_and_across_the_line_cut(piece):
    cutter, sink, stored = _cutter(job_max=1 << 20, line_max=100)
    data = (f"a {SECRET} b\n" + "x" * 90 + SECRET + "y" * 50 + "\n" + "tail " + SECRET).encode()
    for i in range(0, len(data), piece):
        cutter.feed(data[i:i + piece])
    cutter.end_step()
    sink.close()
    assert stored == ["a *** b", "x" * 90 + "***" + "y" * 7 + " [log truncated: line longer than 100 bytes]",
                      "tail ***"]


def test_the_log_cap_counts_bytes_and_drops_the_rest():
    cutter, sink, stored = _cutter(job_max=1000, line_max=100)
    cutter.feed(b"0123456789\n" * 200)
    cutter.note("step exited 0")
    sink.close()
    assert stored[:90] == ["0123456789"] * 90 and stored[90].startswith("raibid: [log truncated: this job's log "
                                                                         "reached 1000 bytes")
    assert stored[-1] == "raibid: step exited 0" and cutter.dropped == 110 * 11


def test_pipeline_secrets_are_names_with_file_and_line_errors():
    from raibid.agents.pipeline import PipelineError, parse_pipeline

    p = parse_pipeline("secrets: [A, B_2]\nsteps:\n  - run: make\n")
    assert p.secrets == ["A", "B_2"] and [s.run for s in p.steps] == ["make"]
    for text, message in [
        ("secrets: A\nsteps:\n  - run: x\n", ".raibid.yml:1: `secrets` must be a list of names"),
        ("secrets:\n  - A\n  - 1x\nsteps:\n  - run: x\n", ".raibid.yml:3: `secrets`: '1x' is not a secret name"),
        ("secrets:\n  - A\n  - A\nsteps:\n  - run: x\n", ".raibid.yml:3: `secrets`: A is listed twice"),
        ("steps:\n  - run: x\nsecrets: [{a: b}]\n", ".raibid.yml:3: `secrets`: an item is not a secret name"),
    ]:
        with pytest.raises(PipelineError) as e:
            parse_pipeline(text)
        assert e.value.message.startswith(message), e.value.message


def test_a_symlinked_pipeline_is_refused_before_the_agent_reads_it(q, git, redis_url, tmp_path, argv_log):
    from tests.harness.githttp import git as run_git

    git.create_repo("acme/app")
    work = tmp_path / "src"
    run_git("clone", "-q", git.url("acme/app").replace("://", f"://x:{TOKEN}@"), str(work))
    (work / ".raibid.yml").symlink_to("/proc/self/environ")
    run_git("add", ".raibid.yml", cwd=work)
    run_git("commit", "-qm", "link", cwd=work)
    run_git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=work)
    job_id = submit(q, "acme/app")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err
    job = q.get(job_id)
    assert job.status == "failed" and job.error == ".raibid.yml is a symbolic link; it must be a regular file"
    assert TOKEN not in log_text(q, job_id)


# ----------------------------------------------------------------------------- what a step can do to its runner


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and _proc_state(pid) not in ("Z", "X")


def _kill_pids(*pidfiles: Path) -> None:
    for f in pidfiles:
        for pid in (f.read_text().split() if f.exists() else ()):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_no_process_of_a_step_outlives_its_job(q, git, redis_url, tmp_path, argv_log):
    daemon, watcher = tmp_path / "daemon.pid", tmp_path / "watcher.pid"
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", command=(
        f"setsid sleep 300 >/dev/null 2>&1 & echo $! > {daemon}; "
        f"( ( exec sleep 301 ) >/dev/null 2>&1 & echo $! > {watcher} ); echo left them"))
    try:
        code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
        assert code == 0, err
        assert q.get(job_id).status == "succeeded" and "left them" in log_text(q, job_id)
        assert [pid for f in (daemon, watcher) if _running(pid := int(f.read_text()))] == []
    finally:
        _kill_pids(daemon, watcher)


def test_a_timeout_ends_a_step_that_detached_a_process_within_seconds(q, git, redis_url, tmp_path, argv_log):
    daemon = tmp_path / "daemon.pid"
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", timeout=3, command=f"setsid sleep 60 & echo $! > {daemon}; sleep 60")
    try:
        t0 = time.monotonic()
        code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"), 40)
        assert code == 0, err
        job = q.get(job_id)
        assert job.status == "failed" and job.exit_code == 124 and "timed out after 3s" in job.error
        assert time.monotonic() - t0 < 15 and not _running(int(daemon.read_text()))
    finally:
        _kill_pids(daemon)


def test_a_cancel_ends_a_step_that_detached_a_process(q, git, redis_url, tmp_path, argv_log):
    daemon = tmp_path / "daemon.pid"
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", command=f"setsid sleep 60 & echo $! > {daemon}; echo started; sleep 60")
    try:
        proc = start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w")
        wait_for(lambda: "started" in log_text(q, job_id), 30, "step output")
        t0 = time.monotonic()
        assert q.cancel(job_id) == "requested"
        code, _, err = finish(proc, 40)
        assert code == 0, err
        assert q.get(job_id).status == "cancelled" and time.monotonic() - t0 < 12
        assert not _running(int(daemon.read_text()))
    finally:
        _kill_pids(daemon)


def test_a_step_that_stops_its_runner_cannot_hold_the_agent_past_its_deadline(q, git, redis_url, tmp_path,
                                                                               argv_log):
    from raibid.agents.steprunner import EXIT_GRACE_S

    pidfile = tmp_path / "step.pid"
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", timeout=3, command=f"echo $$ > {pidfile}; kill -STOP $PPID; sleep 60")
    try:
        t0 = time.monotonic()
        code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"), 60)
        elapsed = time.monotonic() - t0
        assert code == 0, err
        job = q.get(job_id)
        assert job.status == "failed" and job.exit_code == 124 and "timed out after 3s" in job.error
        assert elapsed < 3 + EXIT_GRACE_S + 10, elapsed
        assert not _running(int(pidfile.read_text()))  # the agent killed its runner and what it ran
    finally:
        _kill_pids(pidfile)


def test_a_step_that_sigterms_its_runner_fails_and_is_not_redelivered(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", command="kill -TERM $PPID; sleep 2; echo after")
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w"))
    assert code == 0, err  # not 143: this agent was not terminated
    job = q.get(job_id)
    assert job.status == "failed" and job.exit_code not in (0, None) and job.deliveries == 1, job
    assert "after" not in [line for _, line in q.logs(job_id)]


def test_the_agents_environ_no_longer_holds_the_token_it_read(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={"x": "x\n"})
    job_id = submit(q, "acme/app", command="echo started; sleep 60")
    proc = start_agent(agent_env(redis_url, git, tmp_path), tmp_path / "w")
    try:
        wait_for(lambda: "started" in log_text(q, job_id), 30, "step output")
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()  # root reads it despite PR_SET_DUMPABLE 0
        assert b"RAIBID_QUEUE_HEARTBEAT=1" in environ  # the block is there
        assert TOKEN.encode() not in environ and redis_url.encode() not in environ
    finally:
        q.cancel(job_id)
        finish(proc, 30)


def test_each_job_has_a_fresh_home_and_tmpdir_removed_after_it(q, git, redis_url, tmp_path, argv_log):
    git.create_repo("acme/app", files={"x": "x\n"})
    work = tmp_path / "w"
    plant = submit(q, "acme/app", command=(
        'echo "home=$HOME tmp=$TMPDIR"; test -z "$(ls -A "$HOME" "$TMPDIR")" && echo empty; '
        'git config --global core.hooksPath "$HOME/hooks"; echo x > "$TMPDIR/left"; mkdir "$HOME/locked"; '
        'chmod 0 "$HOME/locked"'))
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), work))
    assert code == 0, err
    log = log_text(q, plant)
    assert f"home={work / 'home'} tmp={work / 'tmp'}" in log and "empty" in log, log
    assert not (work / "home").exists() and not (work / "tmp").exists()
    later = submit(q, "acme/app", command='test ! -e "$HOME/.gitconfig" && test ! -e "$TMPDIR/left" && echo fresh')
    code, _, err = finish(start_agent(agent_env(redis_url, git, tmp_path), work))
    assert code == 0, err
    assert q.get(later).status == "succeeded" and "fresh" in log_text(q, later)
