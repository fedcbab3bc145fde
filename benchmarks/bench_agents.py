"""Agent runtime benchmarks against a local redis-server and git over HTTP, both started by this script.

Usage: python benchmarks/bench_agents.py [--lines N] [--rounds R] [--spawn R] [--flood MIB]

1. Log streaming: a step printing N short lines (a bash loop, like a chatty build),
   run by the agent's step runner (a child process, over its socket) with its
   output masked, capped and streamed to the job's log (pipelined batches from a
   background thread, then the final flush), against the same command with stdout
   to /dev/null. Interleaved rounds, medians; the ratio is the figure to quote
   (goal <= 1.5x). Every round checks that all N lines are in the log.
1b. Flood: a step writing MIB MiB of 1 KiB lines (default 1024), through the byte
   cap (agents.log_max_bytes, 64 MiB stored, the rest drained), against the same
   command to /dev/null.
2. Claim to first step output, for a small repo: the agent claims, clones over
   HTTP with the token, and runs `echo`; measured in-process by the runtime.
3. Agent start-up: `raibid agents run --wait 0` as a new process with a job
   queued, until the job is running (process start, imports, config, connect,
   claim). Together with the figures KEDA and Kubernetes add, this is the spawn
   breakdown in docs/performance.md.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from raibid.agents.pipeline import Step  # noqa: E402
from raibid.agents.runtime import Agent, AgentSettings, LogCutter, LogSink  # noqa: E402
from raibid.agents.steprunner import StepRunnerClient  # noqa: E402
from raibid.agents.trust import TrustPolicy  # noqa: E402
from raibid.gitcreds import mask_forms  # noqa: E402
from raibid.queue import JobSpec, Queue  # noqa: E402
from tests.harness.githttp import GitHTTPServer  # noqa: E402
from tests.harness.redis_server import RedisServer  # noqa: E402

TOKEN = "bench-token"


def chatty(n: int) -> str:
    return f'for i in $(seq 1 {n}); do echo "line $i: compiling crate-$i v0.1.0"; done'


def _agent(q: Queue, tmp: Path) -> Agent:
    settings = AgentSettings(agent="generic", consumer="bench", workdir=tmp, gitea_url="http://127.0.0.1:9",
                             token=TOKEN)
    return Agent(q, settings, runner=StepRunnerClient.start(None, dict(os.environ), timeout=30))


def _streamed(agent: Agent, q: Queue, job_id: str, cmd: str, tmp: Path) -> tuple[float, LogCutter]:
    q.r.delete(q.keys.log(job_id))
    t0 = time.perf_counter()
    sink = LogSink(lambda lines, j=job_id: q.append_log(j, lines))
    cutter = LogCutter(sink, mask_forms([TOKEN]), job_max=agent.s.log_max_bytes, line_max=agent.s.log_line_max_bytes)
    code, why, _ = agent._run_step(Step("bench", cmd), {}, tmp, 600, cutter, [])
    sink.close()
    assert code == 0 and why is None, (code, why)
    return time.perf_counter() - t0, cutter


def bench_logs(url: str, n: int, rounds: int, tmp: Path) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    q = Queue(r, url=url, log_maxlen=n + 50_000)
    agent = _agent(q, tmp)
    cmd = chatty(n)
    base_t, stream_t = [], []
    try:
        for k in range(rounds):
            t0 = time.perf_counter()
            subprocess.run(["bash", "-eo", "pipefail", "-c", cmd], stdout=subprocess.DEVNULL, check=True)
            base_t.append(time.perf_counter() - t0)

            job_id = f"bench-{k}"
            took, _ = _streamed(agent, q, job_id, cmd, tmp)
            stream_t.append(took)
            stored = r.xlen(q.keys.log(job_id))
            assert stored == n, f"{stored} of {n} lines in the log"
            first = r.xrange(q.keys.log(job_id), count=1)[0][1]["line"]
            last = r.xrevrange(q.keys.log(job_id), count=1)[0][1]["line"]
            assert first.startswith("line 1:") and last.startswith(f"line {n}:"), (first, last)
    finally:
        agent.runner.close()  # type: ignore[union-attr]
    b, s = statistics.median(base_t), statistics.median(stream_t)
    print(f"log streaming, {n} lines x {rounds} rounds (median); every line stored each round")
    print(f"  same step to /dev/null      {b * 1000:8.0f} ms")
    print(f"  agent, streamed to the log  {s * 1000:8.0f} ms")
    print(f"  ratio                       {s / b:8.2f}   (goal <= 1.5)")


def bench_flood(url: str, mib: int, rounds: int, tmp: Path) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    q = Queue(r, url=url)
    agent = _agent(q, tmp)
    cmd = f"yes \"$(printf '%01000d' 0)\" | head -c {mib << 20} || true"
    base_t, stream_t = [], []
    try:
        for k in range(rounds):
            t0 = time.perf_counter()
            subprocess.run(["bash", "-eo", "pipefail", "-c", cmd], stdout=subprocess.DEVNULL, check=True)
            base_t.append(time.perf_counter() - t0)
            took, cutter = _streamed(agent, q, f"flood-{k}", cmd, tmp)
            stream_t.append(took)
            assert cutter.full and cutter.stored <= agent.s.log_max_bytes, (cutter.stored, cutter.full)
            r.delete(q.keys.log(f"flood-{k}"))
    finally:
        agent.runner.close()  # type: ignore[union-attr]
    b, s = statistics.median(base_t), statistics.median(stream_t)
    print(f"flood, {mib} MiB of 1 KiB lines x {rounds} rounds (median); {agent.s.log_max_bytes >> 20} MiB stored")
    print(f"  same step to /dev/null      {b * 1000:8.0f} ms")
    print(f"  agent, through the cap      {s * 1000:8.0f} ms   ({mib / s:.0f} MiB/s)")
    print(f"  ratio                       {s / b:8.2f}")


def bench_first_output(url: str, git: GitHTTPServer, rounds: int, tmp: Path) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    q = Queue(r, url=url)
    git.create_repo("bench/small", files={"README.md": "small\n", "src/main.c": "int main(){return 0;}\n"})
    samples, total = [], []
    for k in range(rounds):
        job = q.submit(JobSpec(repo="bench/small", ref="main", command="echo hello"))
        settings = AgentSettings(agent="generic", consumer=f"bench-{k}", workdir=tmp / f"w{k}",
                                 gitea_url=git.base_url, token=TOKEN, heartbeat_s=30,
                                 policy=TrustPolicy.of(owners=["bench"]))
        t0 = time.perf_counter()
        out = Agent(q, settings).run()
        total.append(time.perf_counter() - t0)
        assert out.status == "succeeded" and out.job_id == job.id, out
        samples.append(out.first_output_s)
    print(f"claim to first step output, small repo over HTTP, {rounds} runs")
    print(f"  p50 {statistics.median(samples) * 1000:6.0f} ms   max {max(samples) * 1000:6.0f} ms"
          f"   (whole job p50 {statistics.median(total) * 1000:.0f} ms)")


def bench_startup(url: str, git: GitHTTPServer, rounds: int, tmp: Path) -> None:
    """The repo is bench/small from bench_first_output, so every job succeeds and none is left queued."""
    r = redis.Redis.from_url(url, decode_responses=True)
    q = Queue(r, url=url)
    env = {**os.environ, "RAIBID_REDIS_URL": url, "RAIBID_GITEA_URL": git.base_url, "RAIBID_GITEA_TOKEN": TOKEN,
           "RAIBID_AGENTS_TRUSTED_OWNERS": "[bench]"}
    samples = []
    for k in range(rounds):
        job = q.submit(JobSpec(repo="bench/small", ref="main", command="true"))
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "raibid", "agents", "run", "--wait", "5", "--workdir",
                              str(tmp / f"s{k}")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = t0 + 60
        while q.get(job.id).deliveries < 1:  # deliveries counts claims: set by the claim itself
            if time.perf_counter() > deadline:
                raise SystemExit("the agent did not claim the job within 60 s")
            time.sleep(0.002)
        samples.append(time.perf_counter() - t0)
        assert p.wait(60) == 0 and q.get(job.id).status == "succeeded"
    print(f"agent start-up (new process until the job is claimed), {rounds} runs")
    print(f"  p50 {statistics.median(samples) * 1000:6.0f} ms   max {max(samples) * 1000:6.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--spawn", type=int, default=10)
    ap.add_argument("--flood", type=int, default=1024, metavar="MIB")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        server = RedisServer(tmp / "redis").start()
        git = GitHTTPServer(tmp / "git", token=TOKEN).start()
        try:
            print(f"redis-server {server.client().info('server')['redis_version']}, "
                  f"{os.cpu_count()} cores, Python {sys.version.split()[0]}")
            bench_logs(server.url, args.lines, args.rounds, tmp)
            bench_flood(server.url, args.flood, 3, tmp)
            bench_first_output(server.url, git, args.spawn, tmp)
            bench_startup(server.url, git, args.spawn, tmp)
        finally:
            git.stop()
            server.stop()


if __name__ == "__main__":
    main()
