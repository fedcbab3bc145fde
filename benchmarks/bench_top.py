"""One `raibid top` refresh: round trips and time with many jobs in Redis and agent pods in the API fake.

Usage: python benchmarks/bench_top.py [--jobs N] [--pods N] [--rounds R]

Starts its own redis-server, the Kubernetes API fake (playing k3s, with
`cluster up` applied, KEDA's CRD, one agent pool and N agent pods each running a
job) and the Gitea fake. Then, interleaved, R rounds of:

- baseline: what `raibid queue stats` does (Queue.stats) plus one LIST of the
  agent pods (what `kubectl get pods -l scaledjob.keda.sh/name` costs);
- one dashboard refresh (Dashboard.refresh: Redis, Kubernetes and Gitea), and
  drawing it on a 160x50 screen.

Redis round trips are counted on the wire (a redis-py Connection subclass that
counts sends); Kubernetes requests from the fake's request log.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from raibid.cli import cli  # noqa: E402
from raibid.cluster.client import Kube  # noqa: E402
from raibid.cluster.render import render  # noqa: E402
from raibid.cluster.secrets import generate_secrets  # noqa: E402
from raibid.config import Config  # noqa: E402
from raibid.gitea import Gitea  # noqa: E402
from raibid.queue import JobSpec, Queue  # noqa: E402
from raibid.top import Dashboard, GiteaCollector, KubeCollector, RedisCollector  # noqa: E402
from raibid.top.model import Header  # noqa: E402
from raibid.top.render import dashboard  # noqa: E402
from tests.cli.test_top import NS, add_agent_pod, add_pool  # noqa: E402
from tests.harness.giteafake import GiteaFake  # noqa: E402
from tests.harness.githttp import GitHTTPServer  # noqa: E402
from tests.harness.kubefake import K3sController, KubeFake, crd  # noqa: E402
from tests.harness.redis_server import RedisServer  # noqa: E402


class CountingConnection(redis.Connection):
    sends = 0

    def send_packed_command(self, command, check_health=True):
        type(self).sends += 1
        return super().send_packed_command(command, check_health)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--pods", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-top-"))
    server = RedisServer(tmp / "redis").start()
    fake = KubeFake().start()
    git = GitHTTPServer(tmp / "git").start()
    gitea = GiteaFake(git).start()
    try:
        run(args, tmp, server, fake, gitea)
    finally:
        gitea.stop()
        git.stop()
        fake.stop()
        server.stop()


def run(args: argparse.Namespace, tmp: Path, server: RedisServer, fake: KubeFake, gitea: GiteaFake) -> None:
    kubeconfig = fake.write_kubeconfig(tmp / "kubeconfig")
    K3sController(fake)
    fake.add_object(crd("keda.sh", "scaledjobs", "ScaledJob", "v1alpha1"))
    env = {"KUBECONFIG": str(kubeconfig), "XDG_CACHE_HOME": str(tmp / "cache"), "RAIBID_REDIS_URL": server.url}
    up = CliRunner().invoke(cli, ["cluster", "up", "--no-wait"], env=env)
    assert up.exit_code == 0, up.output
    add_pool(fake)

    url = server.url
    q = Queue(redis.Redis.from_url(url, decode_responses=True), url=url)
    t0 = time.perf_counter()
    q.submit_many([JobSpec(repo=f"mirrors/app{i % 50}", ref="main") for i in range(args.jobs)])
    print(f"submitted {args.jobs} jobs in {time.perf_counter() - t0:.1f}s")
    for i in range(args.pods):
        pod = f"raibid-agent-generic-p{i}-x"
        add_agent_pod(fake, pod)
        claim = q.claim("generic", pod)
        q.append_log(claim.job.id, [f"line {n}" for n in range(100)])
    for _ in range(args.jobs // 10):
        q.finish(q.claim("generic", "old-pod"), "succeeded", exit_code=0)

    pool = redis.ConnectionPool.from_url(url, decode_responses=True, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    kube = Kube.from_kubeconfig(str(kubeconfig))
    pools = {"generic": (1, 8)}
    dash = Dashboard(
        redis=RedisCollector(lambda: Queue(client, url=url), lambda: pools),
        kube=KubeCollector(lambda: kube, NS, lambda: render(Config(), (), namespace=NS, secrets=generate_secrets())),
        gitea=GiteaCollector(lambda: Gitea(gitea.url, None, timeout=3, retries=0).version()),
        header=Header(cluster=fake.url, namespace=NS, redis=url, gitea=gitea.url))
    stats_q = Queue(client, url=url)
    from rich.console import Console

    console = Console(file=io.StringIO(), width=160, height=50, force_terminal=True)
    dash.refresh()  # connections, discovery cache
    stats_q.stats(pools)
    kube.list("v1", "Pod", NS, label_selector="scaledjob.keda.sh/name")

    base_t, refresh_t, draw_t, redis_ms, kube_ms = [], [], [], [], []
    for _ in range(args.rounds):
        CountingConnection.sends = 0
        fake.clear_log()
        t0 = time.perf_counter()
        stats_q.stats(pools)
        kube.list("v1", "Pod", NS, label_selector="scaledjob.keda.sh/name")
        base_t.append(time.perf_counter() - t0)
        base_rt, base_kube = CountingConnection.sends, len(fake.requests())

        CountingConnection.sends = 0
        fake.clear_log()
        t0 = time.perf_counter()
        snap = dash.refresh()
        refresh_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        console.print(dashboard(snap, console))
        draw_t.append(time.perf_counter() - t0)
        top_rt, top_kube = CountingConnection.sends, len(fake.requests())
        redis_ms.append(snap.backends["redis"].elapsed_ms)
        kube_ms.append(snap.backends["kubernetes"].elapsed_ms)
        assert all(b.ok for b in snap.backends.values()), snap.backends
        assert snap.backends["redis"].round_trips == top_rt
        assert snap.backends["kubernetes"].round_trips == top_kube

    med = statistics.median
    generic = next(p for p in snap.queue.pools if p.agent == "generic")
    print(f"one refresh, {args.jobs} jobs in Redis, {args.pods} agent pods, {args.rounds} rounds (median)")
    print(f"  snapshot: queued {generic.queued}, running {generic.running}, pending {generic.pending}, "
          f"finished 60m {generic.finished_60m}, scanned {snap.queue.scanned} of {snap.queue.jobs_total}")
    print(f"  baseline (queue stats + 1 Pod LIST)  {med(base_t) * 1000:8.1f} ms  redis {base_rt:3d} rt  "
          f"kube {base_kube} req")
    print(f"  top refresh                          {med(refresh_t) * 1000:8.1f} ms  redis {top_rt:3d} rt  "
          f"kube {top_kube} req  gitea 1 req")
    print(f"    of which redis {med(redis_ms):.1f} ms, kubernetes {med(kube_ms):.1f} ms")
    print(f"  draw (160x50)                        {med(draw_t) * 1000:8.1f} ms")
    print(f"  ratio refresh/baseline               {med(refresh_t) / med(base_t):8.2f}")


if __name__ == "__main__":
    main()
