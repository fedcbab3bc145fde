"""The step runner over its protocol: a real local runner (a child process), real steps, no Redis or git.

What a step leaves behind (a ``setsid`` daemon, a double fork, a fork bomb, a process outside the runner
holding its output) ends with the step; the runner's hello to an agent that left is quiet; the secrets
an agent read are gone from its /proc/<pid>/environ.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raibid.agents.steprunner import KILL_GRACE_S, StepRunnerClient, wait_exit

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics")


def alive(pid: int) -> bool:
    """A process that still runs (a zombie is not running; the runner reaps its own)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def descendants(root: int) -> list[int]:
    """Every process under ``root``, zombies too (read here, not with the runner's own code)."""
    parent = {}
    for name in os.listdir("/proc"):
        try:
            parent[int(name)] = int(Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
        except (ValueError, OSError):
            continue
    found, todo = [], [root]
    while todo:
        kids = [pid for pid, ppid in parent.items() if ppid == todo[-1]]
        todo.pop()
        found += kids
        todo += kids
    return found


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def runner(tmp_path):
    client = StepRunnerClient.start(None, {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, timeout=30)
    client.sock.settimeout(30)  # a runner that never answers fails the test instead of hanging it
    yield client
    client.close()


def run(client: StepRunnerClient, script: str, cwd: Path) -> tuple[int, str]:
    out = bytearray()
    client.begin(script, cwd, {})
    code, _ = client.wait(out.extend)
    return code, out.decode(errors="replace")


def kill_leftovers(*pidfiles: Path) -> None:
    for f in pidfiles:
        if f.exists():
            for pid in f.read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_what_a_step_orphans_or_detaches_is_killed_when_its_shell_exits(runner, tmp_path):
    daemon, watcher = tmp_path / "daemon.pid", tmp_path / "watcher.pid"
    script = (f"setsid sleep 300 >/dev/null 2>&1 & echo $! > {daemon}\n"
              f"( ( exec sleep 301 ) >/dev/null 2>&1 & echo $! > {watcher} )\n"  # a double fork: an orphan
              "echo left them")
    try:
        t0 = time.monotonic()
        code, out = run(runner, script, tmp_path)
        assert code == 0 and "left them" in out and time.monotonic() - t0 < 10
        pids = [int(daemon.read_text()), int(watcher.read_text())]
        assert [pid for pid in pids if alive(pid)] == []  # already when the step's exit is reported
        assert descendants(runner.hello["pid"]) == []  # and nothing left to reap
    finally:
        kill_leftovers(daemon, watcher)


def test_a_fork_bomb_ends_with_its_step(runner, tmp_path):
    # Bounded (the tests run as root, where RLIMIT_NPROC does not hold): 2^8 shells in their own session,
    # still forking while the runner kills them, and the step's shell gone before most of them exist.
    name = f"raibid-bomb-{os.getpid()}-{tmp_path.name}"
    bomb_script = f"b() {{ [ $1 -gt 0 ] && {{ b $(($1-1)) & b $(($1-1)) & }}; exec -a {name} sleep 300; }}; b 8"
    script = f"setsid bash -c '{bomb_script}' >/dev/null 2>&1 & sleep 0.2"

    def bomb() -> list[int]:
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).startswith(name.encode())]

    try:
        code, _ = run(runner, script, tmp_path)
        assert code == 0
        assert [pid for pid in bomb() if alive(pid)] == [] and descendants(runner.hello["pid"]) == []
    finally:  # on failure: the bomb is bounded, so it ends once a pass finds nothing
        deadline = time.monotonic() + 10
        while (left := bomb()) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_kill_stops_what_the_step_started_outside_its_group(runner, tmp_path):
    daemon = tmp_path / "daemon.pid"
    try:
        runner.begin(f"setsid sleep 300 & echo $! > {daemon}; echo started; sleep 300", tmp_path, {})
        wait_for(daemon.exists, 10, "the step")
        t0 = time.monotonic()
        runner.kill()
        code, _ = runner.wait(lambda chunk: None)
        assert code == -signal.SIGTERM and time.monotonic() - t0 < KILL_GRACE_S
        assert not alive(int(daemon.read_text()))
    finally:
        kill_leftovers(daemon)


def test_output_held_by_a_process_outside_the_runner_is_read_for_a_bounded_time(runner, tmp_path):
    pidfile, go = tmp_path / "shell.pid", tmp_path / "go"
    runner.begin(f"echo $$ > {pidfile}; while [ ! -e {go} ]; do sleep 0.01; done; echo bye", tmp_path, {})
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the step")
    held = os.open(f"/proc/{pidfile.read_text().strip()}/fd/1", os.O_WRONLY)  # this test holds the pipe
    try:
        go.touch()
        t0 = time.monotonic()
        out = bytearray()
        code, _ = runner.wait(out.extend)
        assert code == 0 and b"bye" in out and time.monotonic() - t0 < 5
    finally:
        os.close(held)


def test_the_runner_is_quiet_when_the_agent_left_before_its_hello():
    code = ("import os, sys; from raibid.agents.steprunner import spawn_local\n"
            "proc, sock = spawn_local(os.environ); sock.close(); sys.exit(proc.wait())")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_scrub_environ_overwrites_the_values_proc_shows():
    code = ("import os; from raibid.agents.steprunner import scrub_environ\n"
            "os.environ['LATER'] = 'value-set-later-4c1d'\n"
            "before = open('/proc/self/environ', 'rb').read()\n"
            "assert b'value-from-exec-9a7e' in before\n"
            "scrub_environ(['RAIBID_X_SECRET', 'LATER'])\n"
            "after = open('/proc/self/environ', 'rb').read()\n"
            "assert b'value-from-exec-9a7e' not in after, after\n"
            "assert b'KEEP=kept' in after and os.environ['KEEP'] == 'kept'\n"
            "assert 'RAIBID_X_SECRET' not in os.environ and 'LATER' not in os.environ\n"
            "assert os.getenv('RAIBID_X_SECRET') is None\n"
            "print('ok')")
    env = {**os.environ, "RAIBID_X_SECRET": "value-from-exec-9a7e", "KEEP": "kept"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_wait_exit_reaps_an_exited_child_and_times_out_on_a_live_one():
    """The agent's bounded wait for its local runner: False while it runs (it is left alive for the kill),
    True once it has exited, with the process reaped."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        t0 = time.monotonic()
        assert wait_exit(proc, 0.2) is False
        assert time.monotonic() - t0 >= 0.15 and proc.poll() is None
        proc.kill()
        assert wait_exit(proc, 10) is True
        assert proc.returncode == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    quick = subprocess.Popen(["true"])
    assert wait_exit(quick, 10) is True and quick.returncode == 0
