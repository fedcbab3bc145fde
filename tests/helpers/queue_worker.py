"""A worker process for queue tests: claims jobs through the library API.

Usage: python -m tests.helpers.queue_worker URL PREFIX AGENT CONSUMER MODE [MIN_IDLE_MS]
MODE:
  drain  - claim and finish jobs until none is left; INCR a per-job run counter.
  hold   - claim one job, print "claimed <id>" and block forever (to be SIGKILLed).
"""

from __future__ import annotations

import sys
import threading

import redis

from raibid.queue import Queue


def main() -> None:
    url, prefix, agent, consumer, mode = sys.argv[1:6]
    min_idle = int(sys.argv[6]) if len(sys.argv) > 6 else 300_000
    r = redis.Redis.from_url(url, decode_responses=True)
    q = Queue(r, prefix=prefix, url=url, min_idle_ms=min_idle)
    if mode == "hold":
        claim = q.claim(agent, consumer, block_ms=5000)
        print(f"claimed {claim.job.id if claim else '-'}", flush=True)
        threading.Event().wait()
        return
    done = 0
    while True:
        claim = q.claim(agent, consumer, block_ms=200)
        if claim is None:
            break
        r.incr(f"test:runs:{claim.job.id}")
        q.append_log(claim.job.id, [f"built by {consumer}"])
        assert q.finish(claim, "succeeded", exit_code=0)
        done += 1
    print(f"done {done}", flush=True)


if __name__ == "__main__":
    main()
