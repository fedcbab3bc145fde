"""`raibid run` overhead: a one-step `echo` pipeline, whole process, against `bash -c 'echo'`.

Usage: python benchmarks/bench_run.py [--rounds R]

1. Whole process: `raibid run --json` of a git repo whose .raibid.yml has one step
   `echo hi`, as a new process (interpreter start, imports, config, plan, the embedded
   Valkey started and stopped, the working-tree snapshot, submit, one agent: its step
   runner, clone and step, the log followed, the summary), against `bash -c 'echo hi'`
   and against starting and stopping the embedded Valkey alone, interleaved rounds,
   medians. Overhead = raibid run - bash (goal < 0.5 s).
2. Breakdown, in one process, the same phases timed one by one: imports, config and
   agent types, plan, Valkey start, snapshot, connect and submit, the runtime (agent
   start to job finished, log followed), Valkey stop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

YML = "steps:\n  - name: echo\n    run: echo hi\n"
ID = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "b",
      "GIT_COMMITTER_EMAIL": "b@example.com"}


def make_repo(path: Path) -> Path:
    path.mkdir()
    (path / ".raibid.yml").write_text(YML)
    env = {**os.environ, **ID}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True)
    return path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd} exited {p.returncode}: {p.stderr.decode()[-500:]}")
    return elapsed



def valkey_alone_s(rounds: int) -> float:
    """Valkey start (until PING answers) and stop, in this process: the server's own share."""
    from raibid.local.valkey import EmbeddedValkey

    out = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(dir="/tmp") as d:
            t0 = time.perf_counter()
            EmbeddedValkey(Path(d) / "v").start().stop()
            out.append(time.perf_counter() - t0)
    return statistics.median(out)


def whole_process(repo: Path, rounds: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIBID_")}
    env.update({"NO_COLOR": "1", "TMPDIR": "/tmp"})
    # The warm-up writes raibid's .pyc files, as an install does (pip byte-compiles): with
    # PYTHONDONTWRITEBYTECODE set (as in some CI shells) a checkout's ~40 modules would be
    # compiled again on every run, 0.04 s that no installed raibid pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    raibid = [sys.executable, "-m", "raibid", "run", "--json", str(repo)]
    bash = ["bash", "-c", "echo hi"]
    timed(raibid, env)  # warm the page cache and .pyc files
    runs: dict[str, list[float]] = {"raibid_run": [], "bash": [], "python_pass": []}
    for _ in range(rounds):
        runs["raibid_run"].append(timed(raibid, env))
        runs["bash"].append(timed(bash, env))
        runs["python_pass"].append(timed([sys.executable, "-c", "pass"], env))
    return {k: statistics.median(v) for k, v in runs.items()}


def breakdown(repo: Path) -> dict[str, float]:
    """The phases of one run, in a fresh interpreter so the imports are cold."""
    code = r'''
import sys, time, tempfile
t = [time.perf_counter()]
out = {}
def lap(name):
    now = time.perf_counter(); out[name] = now - t[0]; t[0] = now
sys.path.insert(0, sys.argv[1])
import raibid.cli.run, raibid.local.run, raibid.local.source, raibid.local.valkey, raibid.agents.runtime
import raibid.agents.plan, raibid.queue, redis
lap("imports")
from pathlib import Path
from raibid.config.loader import load_config
from raibid.agents.types import enabled_types
cfg = load_config(); enabled_types(cfg)
lap("config_and_types")
from raibid.agents.plan import TriggerInfo, plan
from raibid.local import source
top = Path(sys.argv[2])
trigger = TriggerInfo("push", source.repo_name(top), "0" * 40, branch=source.current_branch(top))
jobs = plan(source.read_file(top, ".raibid.yml", None), "x", trigger)
lap("plan")
from raibid.local.valkey import EmbeddedValkey
tmp = Path(tempfile.mkdtemp(dir="/tmp"))
v = EmbeddedValkey(tmp / "v").start()
lap("valkey_start")
snap = source.snapshot(top, tmp / "src", ref=trigger.branch)
lap("snapshot")
from raibid.local.run import LocalRun, RunSpec, run_prefix
from raibid.queue import Queue, connect
q = Queue(connect(v.url, None), prefix=run_prefix())
(tmp / "work").mkdir()
run = LocalRun(q, RunSpec(trigger=trigger, jobs=jobs, snapshot=snap), tmp / "work", on_line=lambda p, l: None)
run.submit()
lap("queue_connect_submit")
results = run.run()
assert results[0].result == "succeeded", results
lap("runtime")
v.stop()
lap("valkey_stop")
import json, shutil; shutil.rmtree(tmp); print(json.dumps(out))
'''
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIBID_")}
    p = subprocess.run([sys.executable, "-c", code, str(ROOT), str(repo)], capture_output=True, text=True,
                       env=env, check=True)
    import json

    return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        repo = make_repo(Path(d) / "echo")
        whole = whole_process(repo, args.rounds)
        valkey = valkey_alone_s(args.rounds)
        phases = [breakdown(repo) for _ in range(3)]
    print(f"raibid run (one `echo` step), whole process: {whole['raibid_run']:.3f} s  (median of {args.rounds})")
    print(f"bash -c 'echo hi':                            {whole['bash']:.3f} s")
    print(f"python -c pass (interpreter start):          {whole['python_pass']:.3f} s")
    print(f"embedded Valkey start + stop alone:          {valkey:.3f} s")
    overhead = whole["raibid_run"] - whole["bash"]
    print(f"overhead (raibid run - bash):                {overhead:.3f} s  (goal < 0.5 s: "
          f"{'met' if overhead < 0.5 else 'NOT met'})")
    print("breakdown (medians of 3 cold runs):")
    for name in phases[0]:
        print(f"  {name:22s} {statistics.median(p[name] for p in phases):.3f} s")


if __name__ == "__main__":
    main()
