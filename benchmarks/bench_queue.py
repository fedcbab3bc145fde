"""Queue benchmarks against a local redis-server started by this script.

Usage: python benchmarks/bench_queue.py [--jobs N] [--rounds R] [--dispatch N]

1. Bulk submit throughput, in-process: Queue.submit_many (job record + index +
   XADD, one Lua call per batch, pipelined) against a raw redis-py pipelined XADD
   loop, interleaved rounds. The ratio is the library's figure.
2. Bulk submit, whole process: `raibid queue submit --from-file FILE` against a
   baseline process that parses the same JSON Lines file and pipelines one XADD
   per line (what a user would write instead), interleaved rounds, wall time
   including interpreter start-up. The ratio is the CLI's figure.
3. Dispatch latency: Queue.submit until a worker blocked in Queue.claim
   (XREADGROUP BLOCK) holds the job; p50 and p99.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from raibid.queue import JobSpec, Queue, new_job_id  # noqa: E402
from tests.harness.redis_server import RedisServer  # noqa: E402


def bench_submit(url: str, n: int, rounds: int) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    specs = [JobSpec(repo="mirrors/app", ref="main", commit=f"{i:040x}", env={"CI": "1"}) for i in range(n)]
    raw_t, raibid_t = [], []
    for _ in range(rounds):
        r.flushall()
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd("bench:raw", {"job": f"{i:026d}"})
            if len(pipe) >= 500:
                pipe.execute()
        pipe.execute()
        raw_t.append(time.perf_counter() - t0)
        r.flushall()
        q = Queue(r, url=url)
        t0 = time.perf_counter()
        q.submit_many(specs)
        raibid_t.append(time.perf_counter() - t0)
    raw, rb = statistics.median(raw_t), statistics.median(raibid_t)
    print(f"bulk submit, {n} jobs x {rounds} rounds (median)")
    print(f"  raw pipelined XADD      {n / raw:10.0f} jobs/s")
    print(f"  raibid submit_many      {n / rb:10.0f} jobs/s")
    print(f"  ratio raibid/raw        {raw / rb:10.2f}")


BASELINE = """
import json, sys, redis
r = redis.Redis.from_url(sys.argv[1], decode_responses=True)
pipe = r.pipeline(transaction=False)
with open(sys.argv[2]) as f:
    for line in f:
        obj = json.loads(line)
        pipe.xadd("bench:raw", {"repo": obj["repo"], "ref": obj["ref"], "commit": obj.get("commit", ""),
                                "env": json.dumps(obj.get("env", {}))})
        if len(pipe) >= 500:
            pipe.execute()
pipe.execute()
"""


def bench_submit_process(url: str, n: int, rounds: int, tmp: Path) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    jobs = tmp / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"repo": "mirrors/app", "ref": "main", "commit": f"{i:040x}",
                                        "env": {"CI": "1"}}) + "\n" for i in range(n)))
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIBID_")}
    env.update(HOME=str(home), RAIBID_REDIS_URL=url, XDG_CONFIG_HOME=str(home / ".config"))
    base_t, raibid_t = [], []
    for _ in range(rounds):
        r.flushall()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", BASELINE, url, str(jobs)], check=True, env=env)
        base_t.append(time.perf_counter() - t0)
        assert r.xlen("bench:raw") == n
        r.flushall()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "raibid", "queue", "submit", "--from-file", str(jobs)], check=True,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        raibid_t.append(time.perf_counter() - t0)
        assert r.zcard("raibid:jobs:index") == n
    base, rb = statistics.median(base_t), statistics.median(raibid_t)
    print(f"bulk submit from JSON Lines, whole process, {n} jobs x {rounds} rounds (median wall time)")
    print(f"  baseline: parse + pipelined XADD   {base:7.3f} s   {n / base:10.0f} jobs/s")
    print(f"  raibid queue submit --from-file    {rb:7.3f} s   {n / rb:10.0f} jobs/s")
    print(f"  ratio raibid/baseline              {base / rb:7.2f}")


def bench_dispatch(url: str, samples: int) -> None:
    """One job at a time: wait until the worker is blocked in XREADGROUP (the server counts it as a
    blocked client), then time submit -> claim. The send time is recorded under the job's id before
    the job exists (client-made ids), so the worker can never see a job whose time is missing."""
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushall()
    submitter = Queue(r, url=url)
    worker = Queue(redis.Redis.from_url(url, decode_responses=True), url=url)
    worker.init(["generic"])
    latencies: list[float] = []
    sent: dict[str, float] = {}
    done = threading.Semaphore(0)
    failed: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(samples):
                claim = None
                while claim is None:
                    claim = worker.claim("generic", "bench", block_ms=5000)
                got = time.perf_counter()
                latencies.append(got - sent[claim.job.id])
                worker.finish(claim, "succeeded", exit_code=0)
                done.release()
        except BaseException as e:  # reported by the main thread
            failed.append(e)
            done.release()

    t = threading.Thread(target=work, daemon=True)
    t.start()
    for _ in range(samples):
        deadline = time.monotonic() + 30
        while int(r.info("clients")["blocked_clients"]) < 1:  # the worker is waiting for work
            if failed or time.monotonic() > deadline:
                raise SystemExit(f"worker stopped: {failed[0] if failed else 'not blocked within 30 s'}")
            time.sleep(0.0005)
        job_id = new_job_id()
        sent[job_id] = time.perf_counter()
        submitter.submit(JobSpec(repo="mirrors/app", ref="main"), job_id=job_id)
        if not done.acquire(timeout=30) or failed:
            raise SystemExit(f"worker stopped: {failed[0] if failed else 'no claim within 30 s'}")
    t.join(30)
    lat = sorted(latencies)
    p50 = lat[len(lat) // 2] * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    print(f"dispatch latency, {samples} jobs: p50 {p50:.2f} ms, p99 {p99:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dispatch", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            bench_submit(server.url, args.jobs, args.rounds)
            bench_submit_process(server.url, args.jobs, args.rounds, Path(tmp))
            bench_dispatch(server.url, args.dispatch)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
