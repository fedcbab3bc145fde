"""The dashboard's collectors, views and live loop, driven directly with real Redis and the API fake."""

from __future__ import annotations

import io
import re

import pytest
import redis

from raibid.cluster.client import Kube
from raibid.cluster.render import render
from raibid.cluster.secrets import generate_secrets
from raibid.config import Config
from raibid.gitops import Target
from raibid.gitops.flux import FLUX_NAMESPACE, flux_objects, flux_status, in_cluster_url
from raibid.queue import JobSpec, Queue
from raibid.top import Dashboard, GiteaCollector, KubeCollector, RedisCollector
from raibid.top.live import KeyReader, run_live
from raibid.top.model import Header
from raibid.top.render import dashboard
from tests.cli.test_top import NS, add_agent_pod, add_pool
from tests.harness.kubefake import K3sController, crd

POOLS = {"generic": (1, 8)}


class CountingConnection(redis.Connection):
    """Counts what goes over the wire: one send per command, one per pipeline."""

    sends = 0

    def send_packed_command(self, command, check_health=True):
        type(self).sends += 1
        return super().send_packed_command(command, check_health)


def counting_client(url: str) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(url, decode_responses=True, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool)


def make_dashboard(client: redis.Redis, url: str, kube: Kube | None = None, *, gitops: Target | None = None,
                   head=None, clock=None) -> Dashboard:
    import time

    clock = clock or time.time
    manifests = lambda: render(Config(), (), namespace=NS, secrets=generate_secrets())  # noqa: E731

    def no_kube() -> Kube:
        from raibid.errors import Unreachable

        raise Unreachable("no cluster in this test")

    return Dashboard(
        redis=RedisCollector(lambda: Queue(client, url=url), lambda: POOLS, clock=clock),
        kube=KubeCollector((lambda: kube) if kube else no_kube, NS, manifests, gitops=gitops is not None,
                           clock=clock),
        gitea=GiteaCollector(lambda: "1.22.0", clock=clock, head=head),
        header=Header(cluster="fake", namespace=NS, redis=url, gitea="http://gitea"),
        clock=clock, gitops=gitops, flux_url=gitops and in_cluster_url(NS, gitops.repo.owner, gitops.repo.name))


@pytest.fixture
def cluster(kube):
    K3sController(kube)
    kube.add_object(crd("keda.sh", "scaledjobs", "ScaledJob", "v1alpha1"))
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    add_pool(kube)
    return kube


@pytest.fixture
def kube_client(cluster) -> Kube:
    return Kube.from_kubeconfig(str(cluster.kubeconfig))


def test_live_loop_shows_jobs_changing_state_and_ctrl_c_exits_0(redis_url, cluster, kube_client):
    q = Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)
    job = q.submit(JobSpec(repo="mirrors/app", ref="main"))
    add_agent_pod(cluster, "raibid-agent-generic-a1-x")
    dash = make_dashboard(redis.Redis.from_url(redis_url, decode_responses=True), redis_url, kube_client)
    console_out = io.StringIO()
    from rich.console import Console

    console = Console(file=console_out, record=True, width=120, height=40, force_terminal=True, color_system=None)
    frames: list[str] = []
    claim = None

    def draw(snap, con):
        frames.append(next(j.status for j in snap.jobs if j.id == job.id))
        return dashboard(snap, con)

    def tick(interval: float) -> bool:
        nonlocal claim
        assert interval == 2.0
        if len(frames) == 1:
            claim = q.claim("generic", "raibid-agent-generic-a1-x")
            q.append_log(job.id, ["step 1: cargo build"])
        elif len(frames) == 2:
            q.finish(claim, "succeeded", exit_code=0)
        else:
            raise KeyboardInterrupt  # Ctrl-C
        return False

    assert run_live(console, dash.refresh, draw, interval=2.0, tick=tick) == 0
    assert frames == ["queued", "running", "succeeded"]
    text = console.export_text()
    short = job.id
    states = [m.group(1) for m in re.finditer(rf"(queued|running|succeeded)\s+{short}", text)]
    assert states[:1] == ["queued"] and "running" in states and states[-1] == "succeeded"
    assert "step 1: cargo build" in text and "raibid-agent-generic-a1-x" in text
    assert "\x1b[?1049h" in console_out.getvalue() and "\x1b[?1049l" in console_out.getvalue()  # screen restored


def test_q_enter_quits_and_other_lines_do_not():
    keys = KeyReader(io.StringIO("x\n\nq\n")).start()
    assert keys.tick(5.0) is True
    idle = KeyReader(io.StringIO("")).start()
    assert idle.tick(0.01) is False


def test_quit_key_stops_live_loop(redis_url):
    from rich.console import Console

    dash = make_dashboard(redis.Redis.from_url(redis_url, decode_responses=True), redis_url)
    keys = KeyReader(io.StringIO("q\n")).start()
    console = Console(file=io.StringIO(), width=80, height=24, force_terminal=True)
    assert run_live(console, dash.refresh, dashboard, interval=5.0, tick=keys.tick) == 0


@pytest.mark.parametrize("jobs", [10, 400])
def test_redis_round_trips_do_not_grow_with_jobs(redis_url, jobs):
    q = Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)
    q.submit_many([JobSpec(repo="mirrors/app", ref=f"b{i}") for i in range(jobs)])
    for i in range(3):
        claim = q.claim("generic", f"pod-{i}")
        q.append_log(claim.job.id, ["line"])
    client = counting_client(redis_url)
    dash = make_dashboard(client, redis_url)
    dash.refresh()  # connects (HELLO/CLIENT SETINFO) and warms up
    CountingConnection.sends = 0
    snap = dash.refresh()
    assert snap.backends["redis"].ok
    # Queue.stats: SMEMBERS, INFO, XLEN, EXISTS-or-not, XINFO GROUPS, the lag truth check (one script),
    # XINFO CONSUMERS, XRANGE, XLEN dead; then the index head, the job records and the running jobs'
    # last lines: one pipeline each.
    assert CountingConnection.sends == snap.backends["redis"].round_trips == 11
    assert len(snap.jobs) == min(jobs, 20) and snap.queue.pools[0].running == 3


def test_redis_drop_shows_stale_data_then_reconnects(durable_redis, kube_client):
    url = durable_redis.url
    q = Queue(redis.Redis.from_url(url, decode_responses=True), url=url)
    q.submit(JobSpec(repo="mirrors/app", ref="main"))
    dash = make_dashboard(redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=1), url,
                          kube_client)
    first = dash.refresh()
    assert first.backends["redis"].ok and first.queue.pools[0].queued == 1
    durable_redis.stop()
    down = dash.refresh()
    b = down.backends["redis"]
    assert not b.ok and b.stale and b.exit_code == 5 and "cannot reach Redis" in b.error
    assert down.queue.pools[0].queued == 1 and len(down.jobs) == 1  # the last data, marked stale
    assert down.backends["kubernetes"].ok and down.agents.pools  # the other panels keep refreshing
    from rich.console import Console

    console = Console(file=io.StringIO(), record=True, width=120, height=40, color_system=None)
    console.print(dashboard(down, console))
    text = console.export_text()
    assert "Queue (stale)" in text and "Jobs (stale)" in text and "cannot reach Redis" in text
    durable_redis.restart()
    q.r.connection_pool.disconnect()
    q.submit(JobSpec(repo="mirrors/app", ref="second"))
    back = dash.refresh()
    assert back.backends["redis"].ok and not back.backends["redis"].stale and back.queue.pools[0].queued == 2


def _draw(snap, width: int, height: int) -> list[str]:
    from rich.console import Console

    console = Console(file=io.StringIO(), record=True, width=width, height=height, color_system=None)
    console.print(dashboard(snap, console))
    return console.export_text().rstrip("\n").split("\n")


def test_fits_80x24_and_uses_a_wide_terminal(redis_url, cluster, kube_client):
    q = Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)
    q.submit_many([JobSpec(repo=f"mirrors/app{i}", ref="main") for i in range(60)])
    for i in range(8):
        add_agent_pod(cluster, f"raibid-agent-generic-p{i}-x")
        q.claim("generic", f"raibid-agent-generic-p{i}-x")
    snap = make_dashboard(redis.Redis.from_url(redis_url, decode_responses=True), redis_url, kube_client).refresh()
    small = _draw(snap, 80, 24)
    assert len(small) <= 24 and max(len(line) for line in small) <= 80
    assert any(line.startswith("generic") and "queued  52" in line for line in small)
    assert any("running 8" in line for line in small)
    wide = _draw(snap, 160, 50)
    assert len(wide) <= 50 and max(len(line) for line in wide) <= 160
    assert any("Queue" in line and "Cluster" in line for line in wide)  # side by side
    assert sum("raibid-agent-generic-p" in line for line in wide) == 8  # every running pod listed
    assert sum(1 for line in wide if re.search(r"\b(queued|running)\b", line)) > sum(
        1 for line in small if re.search(r"\b(queued|running)\b", line))


def test_kubernetes_requests_are_bounded(redis_url, cluster, kube_client):
    dash = make_dashboard(redis.Redis.from_url(redis_url, decode_responses=True), redis_url, kube_client)
    dash.refresh()  # discovery (cached afterwards)
    cluster.clear_log()
    one = dash.refresh()
    few = len(cluster.requests())
    for i in range(8):
        add_agent_pod(cluster, f"raibid-agent-generic-p{i}-x")
    cluster.clear_log()
    many = dash.refresh()
    assert len(cluster.requests()) == few == one.backends["kubernetes"].round_trips == many.backends[
        "kubernetes"].round_trips
    # ScaledJob, Job, Pod; StatefulSet, Deployment (all namespaces), PVC; HelmChart; no chart installed: no GETs.
    assert few == 7 and not cluster.requests("GET", r"/pods/")
    assert many.agents.pools[0].running == 8


def test_missing_keda_is_not_rediscovered_every_refresh(redis_url, kube):
    K3sController(kube)
    client = Kube.from_kubeconfig(str(kube.kubeconfig))
    dash = make_dashboard(redis.Redis.from_url(redis_url, decode_responses=True), redis_url, client)
    first = dash.refresh()
    assert not first.agents.keda_installed and first.backends["kubernetes"].ok
    kube.clear_log()
    again = dash.refresh()
    assert not again.agents.keda_installed
    assert not kube.requests(path=r"^/apis?$") and len(kube.requests()) == again.backends["kubernetes"].round_trips


TARGET = Target.checked(repo="raibid-admin/raibid-ci-config", branch="main", path="clusters/dgx-spark",
                        interval="1m", author_name="raibid", author_email="raibid@localhost")


def test_gitops_verdict_is_gitops_status_verdict_for_every_flux_state(redis_url, cluster, kube_client):
    """The Cluster panel's verdict is `gitops status`'s, from the same objects and head, by the same rule."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    head: list = [sha]
    dash = make_dashboard(redis.Redis.from_url(redis_url, decode_responses=True), redis_url, kube_client,
                          gitops=TARGET, head=lambda: head[0])
    url = in_cluster_url(NS, "raibid-admin", "raibid-ci-config")

    def agree() -> str:
        g = dash.refresh().cluster.gitops
        st = flux_status(kube_client, repo=TARGET.repo.full_name, branch="main", path=TARGET.path, head=head[0],
                         url=url)
        assert (g.verdict, g.message, g.head) == (st.verdict, st.message, st.head)
        return g.verdict

    assert agree() == "not-bootstrapped"  # no Flux CRDs: what `gitops status` says, not a verdict of its own
    cluster.add_object(crd("source.toolkit.fluxcd.io", "gitrepositories", "GitRepository"))
    cluster.add_object(crd("kustomize.toolkit.fluxcd.io", "kustomizations", "Kustomization"))
    cluster.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FLUX_NAMESPACE}})
    dash.kube._absent.clear()
    assert agree() == "not-bootstrapped"
    for obj in flux_objects(url=url, branch="main", path=TARGET.path, interval="1m", username="u", token="t")[1:]:
        cluster.add_object(obj)
    assert agree() == "pending"

    def flux_says(kind: str, status: dict) -> None:
        api = "source.toolkit.fluxcd.io/v1" if kind == "GitRepository" else "kustomize.toolkit.fluxcd.io/v1"
        cluster.set_status(api, kind, "raibid", FLUX_NAMESPACE, status)

    flux_says("GitRepository", {"artifact": {"revision": f"main@sha1:{sha}"},
                                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded"}]})
    flux_says("Kustomization", {"lastAttemptedRevision": f"main@sha1:{sha}", "conditions": [
        {"type": "Ready", "status": "False", "reason": "BuildFailed", "message": "kustomize build failed"}]})
    assert agree() == "failed" and "kustomize build failed" in dash.refresh().cluster.gitops.message
    flux_says("Kustomization", {"lastAppliedRevision": f"main@sha1:{sha}",
                                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded"}]})
    assert agree() == "in-sync"
    head[0] = "f" * 40  # a new commit Flux has not applied yet
    assert agree() == "pending"
    head[0] = None  # the branch is gone
    assert agree() == "not-bootstrapped"
    cluster.clear_log()
    snap = dash.refresh()
    # One GET per Flux object instead of the old LIST of Kustomizations (7 without charts, see above); the
    # head is one Gitea request next to the version.
    assert snap.backends["kubernetes"].round_trips == len(cluster.requests()) == 9
    assert len(cluster.requests("GET", r"/gitrepositories/raibid$")) == 1
    assert snap.backends["gitea"].round_trips == 2
    off = make_dashboard(redis.Redis.from_url(redis_url, decode_responses=True), redis_url, kube_client)
    assert off.refresh().cluster.gitops is None


def test_gitops_verdict_is_unknown_when_kubernetes_or_gitea_does_not_answer(redis_url, cluster, kube_client):
    from raibid.errors import Unreachable

    def gitea_down():
        raise Unreachable("cannot reach Gitea at http://gitea")

    dash = make_dashboard(redis.Redis.from_url(redis_url, decode_responses=True), redis_url, kube_client,
                          gitops=TARGET, head=gitea_down)
    snap = dash.refresh()
    g = snap.cluster.gitops
    assert g.verdict == "unknown" and "cannot reach Gitea" in g.message
    assert snap.backends["gitea"].round_trips == 2  # the version, then the head that failed

    def version_down():
        raise Unreachable("cannot reach Gitea at http://gitea")

    dash.gitea._version = version_down
    assert dash.refresh().backends["gitea"].round_trips == 1  # no head request after a failed version
    no_kube = make_dashboard(redis.Redis.from_url(redis_url, decode_responses=True), redis_url, None,
                             gitops=TARGET, head=lambda: "a" * 40)
    g = no_kube.refresh().cluster.gitops
    assert g.verdict == "unknown" and "no cluster in this test" in g.message


def test_finished_windows_and_success_rate(redis_url):
    import time

    q = Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)
    q.submit_many([JobSpec(repo="mirrors/app", ref=f"b{i}") for i in range(5)])
    for status in ("succeeded", "succeeded", "failed", "cancelled"):
        q.finish(q.claim("generic", "pod"), status)
    now = [time.time()]
    dash = make_dashboard(redis.Redis.from_url(redis_url, decode_responses=True), redis_url, clock=lambda: now[0])
    p = dash.refresh().queue.pools[0]
    assert (p.finished_5m, p.succeeded_5m, p.success_rate_5m, p.finished_60m) == (4, 2, round(2 / 3, 4), 4)
    now[0] += 10 * 60  # ten minutes later: out of the 5-minute window, still in the hour
    p = dash.refresh().queue.pools[0]
    assert (p.finished_5m, p.success_rate_5m, p.finished_60m, p.success_rate_60m) == (0, None, 4, round(2 / 3, 4))


# A build controls its log lines (and, through its repo, step names and refs): every view shows them as text.
HOSTILE_LINES = [
    "[/x]", "[bold", "[link=https://evil.example]click[/link]", "[/]",
    "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",  # OSC 8 hyperlink
    "\x1b]52;c;ZWNobyBwd25lZA==\x07",  # OSC 52: write the operator's clipboard
    "\x1b[2J\x1b[H",  # CSI: clear the screen, cursor home
    "nul\x00byte", "bad utf-8 \ufffd\ufffd", "\x9b31mC1 CSI", "ok\rFAKE", "back\x08\x08\x08",
    "\u202egnp.exe",  # bidi override
]


def _hostile_snapshot(redis_url, line: str):
    q = Queue(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)
    q.r.flushdb()
    job = q.submit(JobSpec(repo="mirrors/app", ref="main"))
    claim = q.claim("generic", "raibid-agent-generic-a1-x")
    q.append_log(claim.job.id, [line])
    q.r.hset(q.keys.job(job.id), "step", "[/x]\x1b]52;c;eA==\x07")  # what a runtime records from .raibid.yml
    return make_dashboard(redis.Redis.from_url(redis_url, decode_responses=True), redis_url).refresh()


@pytest.mark.parametrize("line", HOSTILE_LINES + ["x" * (1 << 20)], ids=lambda s: repr(s[:24]))
@pytest.mark.parametrize("size", [(160, 50), (80, 24)], ids=["full", "compact"])
def test_top_survives_any_log_line_in_rich_views(redis_url, line, size):
    from rich.console import Console

    snap = _hostile_snapshot(redis_url, line)
    assert snap.jobs[0].last_log_line == line  # the data stays exact (top --json)
    out = io.StringIO()
    console = Console(file=out, width=size[0], height=size[1], force_terminal=True, color_system="truecolor")
    console.print(dashboard(snap, console))
    drawn = out.getvalue()
    for raw in ("\x1b]", "\x1b[2J", "\x00", "\x9b", "\r", "\x08", "\u202e", "\x07"):
        assert raw not in drawn, f"{raw!r} reached the terminal"
    assert "mirrors/app" in drawn


@pytest.mark.parametrize("line", HOSTILE_LINES + ["x" * (1 << 20)], ids=lambda s: repr(s[:24]))
def test_top_plain_view_shows_control_sequences_escaped(redis_url, line):
    from raibid.top.render import plain

    text = plain(_hostile_snapshot(redis_url, line))
    for raw in ("\x1b", "\x00", "\x9b", "\r", "\x08", "\u202e", "\x07"):
        assert raw not in text
    if line.startswith("\x1b]52"):
        assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in text  # visible as text
    if line == "[/x]":
        assert "[/x]" in text  # plain text is not markup: shown as it is

