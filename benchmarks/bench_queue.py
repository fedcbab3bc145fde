"""Queue benchmarks against a local redis-server started by this script.

Usage: python benchmarks/bench_queue.py [--jobs N] [--rounds R] [--dispatch N]

1. Bulk submit throughput: Queue.submit_many (job record + index + XADD, one Lua
   call per job, pipelined) against a raw redis-py pipelined XADD loop, in the
   same process, interleaved rounds. The ratio is the figure to quote.
2. Dispatch latency: XADD (Queue.submit) until a worker blocked in Queue.claim
   (XREADGROUP BLOCK) holds the job; p50 and p99.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from raibid.queue import JobSpec, Queue  # noqa: E402
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


def bench_dispatch(url: str, samples: int) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushall()
    submitter = Queue(r, url=url)
    worker = Queue(redis.Redis.from_url(url, decode_responses=True), url=url)
    worker.init(["generic"])
    latencies: list[float] = []
    ready = threading.Event()
    sent: dict[str, float] = {}

    def work() -> None:
        ready.set()
        for _ in range(samples):
            claim = worker.claim("generic", "bench", block_ms=5000)
            got = time.perf_counter()
            latencies.append(got - sent[claim.job.id])
            worker.finish(claim, "succeeded", exit_code=0)

    t = threading.Thread(target=work)
    t.start()
    ready.wait()
    for _ in range(samples):
        # Wait until the worker is blocked again, then time one submit -> claim.
        while len(latencies) < len(sent):
            time.sleep(0.0005)
        time.sleep(0.002)
        job_id_holder = {}
        t0 = time.perf_counter()
        job = submitter.submit(JobSpec(repo="mirrors/app", ref="main"))
        sent[job.id] = t0
        job_id_holder["id"] = job.id
    t.join()
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
        server = RedisServer(Path(tmp)).start()
        try:
            bench_submit(server.url, args.jobs, args.rounds)
            bench_dispatch(server.url, args.dispatch)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
