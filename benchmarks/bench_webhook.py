"""Webhook receiver benchmarks: `raibid webhook serve` (waitress) in a subprocess, a local redis-server.

Usage: python benchmarks/bench_webhook.py [--requests N] [--clients C]

1. Latency of one valid, signed Gitea push (HMAC check, JSON parse, deduplicated enqueue,
   response), one client on a keep-alive connection, every push a new commit: p50/p99
   over N requests. Baselines in the same run: `Queue.submit_deduped` called directly
   (the enqueue alone, no HTTP), and `GET /healthz` on the same server (HTTP alone).
2. Throughput with C concurrent clients (threads, one keep-alive connection each), against
   C threads calling `Queue.submit_deduped` directly.
3. Push webhook -> `pending` posted on the commit (docs/statuses.md): a second receiver whose reporter
   posts to the Gitea fake (tests/harness/giteafake.py) on loopback; C concurrent clients, each push a
   new commit; p50/p99 of push sent -> 202 (the bare enqueue) and push sent -> the fake holding the
   `pending` status, in the same run, plus the fake's own status POST latency.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raibid.queue import JobSpec, Queue, connect, dedupe_key  # noqa: E402
from tests.harness.redis_server import RedisServer  # noqa: E402

SECRET = "bench-secret"
_commits = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def push_body() -> bytes:
    n = next(_commits)
    return json.dumps({"ref": "refs/heads/main", "before": f"{n - 1:040x}", "after": f"{n:040x}",
                       "repository": {"full_name": "mirrors/app"}, "pusher": {"login": "dev"},
                       "commits": [{"id": f"{n:040x}", "message": "change"}]}).encode()


def post_push(conn: http.client.HTTPConnection) -> None:
    body = push_body()
    sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    conn.request("POST", "/hooks/gitea", body, {"Content-Type": "application/json", "X-Gitea-Event": "push",
                                                "X-Gitea-Signature": sig})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 202 or b'"queued"' not in data:
        raise SystemExit(f"unexpected reply {resp.status}: {data[:200]!r}")


def get_health(conn: http.client.HTTPConnection) -> None:
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise SystemExit(f"healthz answered {resp.status}")


def direct_submit(q: Queue) -> None:
    n = next(_commits)
    sha = f"{n:040x}"
    _, created = q.submit_deduped(JobSpec(repo="mirrors/app", ref="main", commit=sha, agent="generic",
                                          source="webhook", dedupe=dedupe_key("mirrors/app", sha, "generic")))
    assert created


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def throughput(make, fn, clients: int, per_client: int) -> float:
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def client() -> None:
        ctx = make()
        barrier.wait()
        try:
            for _ in range(per_client):
                fn(ctx)
        except BaseException as e:  # report, do not hang the barrier
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return clients * per_client / elapsed


def start_receiver(env: dict[str, str], tmp: str, port: int) -> tuple[subprocess.Popen, http.client.HTTPConnection]:
    server = subprocess.Popen([sys.executable, "-m", "raibid", "webhook", "serve", "--listen",
                               f"127.0.0.1:{port}", "--threads", "8"], cwd=tmp, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            get_health(conn)
            return server, conn
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("the receiver did not start") from None
            time.sleep(0.1)


def bench_statuses(env: dict[str, str], tmp: str, clients: int, per_client: int) -> None:
    """Section 3: push -> 202 and push -> `pending` on the Gitea fake, C concurrent clients."""
    from raibid.gitea import Gitea
    from tests.harness.giteafake import GiteaFake
    from tests.harness.githttp import GitHTTPServer

    git = GitHTTPServer(Path(tmp) / "git").start()
    fake = GiteaFake(git).start()
    token = fake.add_token("raibid-admin", "bench-gitea-token-0123456789")
    admin = Gitea(fake.url, token, retries=0)
    admin.create_org("mirrors")
    admin.create_repo("mirrors", "app")
    port = free_port()
    server, conn = start_receiver({**env, "RAIBID_GITEA_URL": fake.url, "RAIBID_GITEA_TOKEN": token}, tmp, port)
    seen: dict[str, float] = {}
    landed: dict[str, threading.Event] = {}

    class Landing(dict):  # the fake's per-commit shelf: notes when each commit's first status lands
        def setdefault(self, sha, default=None):
            if sha not in self:
                seen[sha] = time.perf_counter()
                landed.setdefault(sha, threading.Event()).set()
            return super().setdefault(sha, default)

    fake.statuses = {"mirrors/app": Landing()}

    sent: dict[str, float] = {}
    acked: list[float] = []
    lock = threading.Lock()

    def client(c: http.client.HTTPConnection) -> None:
        for _ in range(per_client):
            body = push_body()
            sha = json.loads(body)["after"]
            sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            t0 = time.perf_counter()
            c.request("POST", "/hooks/gitea", body, {"Content-Type": "application/json", "X-Gitea-Event": "push",
                                                     "X-Gitea-Signature": sig})
            resp = c.getresponse()
            resp.read()
            with lock:
                sent[sha] = t0
                acked.append(time.perf_counter() - t0)
                event = landed.setdefault(sha, threading.Event())
            if not event.wait(10):  # one push in flight per client: C concurrent pushes in all
                raise SystemExit(f"no status for {sha} within 10 s")

    try:
        timed(lambda: post_push(conn), 20)  # warm up (their statuses land too)
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(clients)]
        threads = [threading.Thread(target=client, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        posted = [seen[sha] - t0 for sha, t0 in sent.items()]
        own = timed(lambda: admin.post_status("mirrors", "app", "f" * 40, state="pending", context="bench"), 200)
        print(f"push -> pending posted, {clients} concurrent clients x {per_client} pushes (ms)")
        print(f"  {'':38} {'p50':>7} {'p99':>7}")
        for name, values in (("push -> 202 (the bare enqueue)", acked), ("push -> pending on the Gitea fake", posted),
                             ("Gitea fake's own status POST", own)):
            print(f"  {name:38} {pct(values, 50):7.2f} {pct(values, 99):7.2f}")
    finally:
        server.terminate()
        server.wait(10)
        fake.stop()
        git.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--statuses-only", action="store_true", help="Only section 3 (push -> pending posted).")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp) / "redis").start()
        port = free_port()
        env = {**os.environ, "RAIBID_REDIS_URL": redis_server.url, "RAIBID_WEBHOOK_SECRET": SECRET,
               "RAIBID_MIRROR_MODE": "pull", "HOME": tmp, "XDG_CONFIG_HOME": f"{tmp}/cfg"}
        env.pop("RAIBID_CONFIG", None)
        if args.statuses_only:
            try:
                bench_statuses(env, tmp, args.clients, max(1, args.requests // args.clients))
            finally:
                redis_server.stop()
            return
        server = subprocess.Popen([sys.executable, "-m", "raibid", "webhook", "serve", "--listen",
                                   f"127.0.0.1:{port}", "--threads", "8"], cwd=tmp, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    get_health(conn)
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the receiver did not start") from None
                    time.sleep(0.1)
            q = Queue(connect(redis_server.url, None))
            warm = min(100, args.requests)
            timed(lambda: post_push(conn), warm)
            timed(lambda: direct_submit(q), warm)
            direct = timed(lambda: direct_submit(q), args.requests)
            health = timed(lambda: get_health(conn), args.requests)
            push = timed(lambda: post_push(conn), args.requests)
            print(f"latency, {args.requests} requests, one client (ms)")
            print(f"  {'':38} {'p50':>7} {'p99':>7} {'x direct p50':>13}")
            base = pct(direct, 50)
            for name, values in (("Queue.submit_deduped direct (baseline)", direct),
                                 ("GET /healthz over HTTP", health), ("POST /hooks/gitea valid push", push)):
                print(f"  {name:38} {pct(values, 50):7.2f} {pct(values, 99):7.2f} {pct(values, 50) / base:13.2f}")
            per = max(1, args.requests // args.clients)
            d_rate = throughput(lambda: Queue(connect(redis_server.url, None)), direct_submit, args.clients, per)
            w_rate = throughput(lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=30), post_push,
                                args.clients, per)
            print(f"throughput, {args.clients} concurrent clients x {per} requests")
            print(f"  Queue.submit_deduped direct (baseline) {d_rate:9.0f} /s")
            print(f"  POST /hooks/gitea valid push           {w_rate:9.0f} /s   ratio {w_rate / d_rate:.2f}")
            jobs = q.r.zcard(q.keys.index)
            print(f"jobs queued in total: {jobs} (every push a new commit)")
        finally:
            server.terminate()
            server.wait(10)
        try:
            bench_statuses(env, tmp, args.clients, max(1, args.requests // args.clients))
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()
