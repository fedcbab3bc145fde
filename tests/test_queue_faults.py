"""The queue under faults (issue 9), on Redis and Valkey: restarts, lost replies, races, retention, bad records.

Lost replies go through tests/harness/tcp_proxy.py; reap/heartbeat races are forced
by running the other side inside reap's requeue step (no sleeps).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import redis
from redis.backoff import AbstractBackoff, NoBackoff
from redis.retry import Retry

from raibid.errors import NotFound, Unreachable, UsageError
from raibid.queue import GROUP, JobSpec, LostJob, PartialSubmit, Queue, connect, new_job_ids, retry_policy
from tests.harness.redis_server import SERVER_KINDS, RedisServer
from tests.harness.tcp_proxy import TcpProxy


@pytest.fixture(params=SERVER_KINDS)
def redis_kind(request) -> str:
    return request.param


def make_queue(url: str, **kw) -> Queue:
    return Queue(redis.Redis.from_url(url, decode_responses=True), url=url, **kw)


def spec(n: int = 0, **kw) -> JobSpec:
    return JobSpec(repo="mirrors/app", ref="main", commit=f"{n:040x}", **kw)


def fast_retry(n: int = 3) -> Retry:
    return Retry(NoBackoff(), n)


def warm(q: Queue) -> None:
    """Load every script, so the reply a test drops is the script's own, not a NOSCRIPT error."""
    from importlib import resources

    from raibid.queue.scripts import source

    for f in (resources.files("raibid.queue") / "lua").iterdir():
        q.r.script_load(source(f.name.removesuffix(".lua")))


@pytest.fixture
def proxy(redis_server, redis_url):
    p = TcpProxy(redis_server.port).start()
    yield p
    p.close()


def undelivered(q: Queue, agent: str = "generic") -> int:
    stream = q.keys.stream(agent)
    last = q.group_info(stream)["last-delivered-id"]
    return len(q.r.xrange(stream, f"({last}", "+"))


# ----------------------------------------------------------------------------- 1. lag truth


@pytest.mark.parametrize("kill", [False, True], ids=["clean", "sigkill"])
def test_lag_is_true_after_every_restart_and_returns_to_zero(durable_redis, kill):
    url = durable_redis.url
    stream = make_queue(url).keys.stream("generic")
    for round_ in range(3):
        q = make_queue(url)
        q.submit_many([spec(round_ * 10 + i) for i in range(6)])
        held = [q.claim("generic", f"pod-{round_}-{n}") for n in range(3)]
        q.finish(held[0], "succeeded", exit_code=0)
        durable_redis.restart(kill=kill)
        q = make_queue(url)
        q.reap(min_idle_ms=10**9)
        group = q.r.xinfo_groups(stream)[0]
        added = q.r.xinfo_stream(stream)["entries-added"]
        assert group["lag"] == undelivered(q) == added - group["entries-read"]
    q = make_queue(url, min_idle_ms=0)
    while (c := q.claim("generic", "drain")) is not None:
        q.finish(c, "succeeded", exit_code=0)
    durable_redis.restart(kill=kill)
    q = make_queue(url)
    q.reap(min_idle_ms=10**9)
    assert q.r.xinfo_groups(stream)[0]["lag"] == 0


def test_stale_entries_read_is_seen_by_stats_and_repaired_by_reap(redis_url, run):
    q = make_queue(redis_url)
    q.submit_many([spec(i) for i in range(5)])
    q.claim("generic", "pod")
    stream = q.keys.stream("generic")
    last = q.group_info(stream)["last-delivered-id"]
    q.r.execute_command("XGROUP", "SETID", stream, GROUP, last, "ENTRIESREAD", 0)  # what a stale AOF brings back
    assert q.r.xinfo_groups(stream)[0]["lag"] == 5  # wrong: 4 are undelivered
    s = q.stats({"generic": (1, 8)})
    assert s.streams[0].lag == 5 and s.streams[0].true_lag == 4
    assert any("4 entries are undelivered" in w for w in s.warnings)
    cli = run("queue", "stats")
    assert cli.code == 0 and "repairs it" in cli.err
    assert q.reap(min_idle_ms=10**9).lag_repaired == ["generic"]
    assert q.r.xinfo_groups(stream)[0]["lag"] == 4
    assert q.reap(min_idle_ms=10**9).lag_repaired == []  # true now: nothing written
    assert not q.stats({"generic": (1, 8)}).warnings


def test_fresh_group_reports_no_repair(q_fresh):
    q = q_fresh
    q.submit_many([spec(i) for i in range(3)])
    assert q.reap(min_idle_ms=10**9).lag_repaired == []
    assert q.check_lag(q.keys.stream("generic")).state == "ok"


@pytest.fixture
def q_fresh(redis_url) -> Queue:
    return make_queue(redis_url)


def test_worker_start_makes_the_lag_true(redis_url):
    q = make_queue(redis_url)
    q.submit_many([spec(i) for i in range(3)])
    stream = q.keys.stream("generic")
    q.r.execute_command("XGROUP", "SETID", stream, GROUP, "0-0", "ENTRIESREAD", 2)
    assert q.r.xinfo_groups(stream)[0]["lag"] == 1
    worker = make_queue(redis_url)
    claim = worker.claim("generic", "pod")
    assert claim is not None
    assert q.r.xinfo_groups(stream)[0]["lag"] == 2 == undelivered(q)


def test_doctor_repairs_a_wrong_lag(redis_url, run):
    q = make_queue(redis_url)
    q.submit_many([spec(i) for i in range(3)])
    stream = q.keys.stream("generic")
    q.r.execute_command("XGROUP", "SETID", stream, GROUP, "0-0", "ENTRIESREAD", 3)
    r = run("doctor", "--json")
    checks = {c["name"]: c for c in r.json()["checks"]}
    assert checks["queue generic"]["status"] == "warn" and "repaired" in checks["queue generic"]["detail"]
    assert q.r.xinfo_groups(stream)[0]["lag"] == 3


# ----------------------------------------------------------------------------- 2. reap re-checks atomically


class Interleaved(Queue):
    """Runs ``between`` after reap listed an entry and before its requeue step."""

    between = staticmethod(lambda: None)

    def _requeue(self, *args, **kwargs):
        self.between()
        return super()._requeue(*args, **kwargs)


def _age(q: Queue, claim) -> None:
    """Make the entry look idle for 1,000 s (XCLAIM ... IDLE), deterministically."""
    q.r.execute_command("XCLAIM", claim.stream, GROUP, claim.consumer, 0, claim.stream_id, "IDLE", 1_000_000,
                        "JUSTID")


def test_reap_leaves_a_job_whose_worker_heartbeated_in_between(redis_url):
    worker = make_queue(redis_url)
    job = worker.submit(spec())
    claim = worker.claim("generic", "live")
    _age(worker, claim)
    reaper = Interleaved(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)
    reaper.between = lambda: worker.heartbeat(claim)
    res = reaper.reap(min_idle_ms=60_000)
    assert res.requeued == [] and res.skipped == [job.id]
    assert worker.heartbeat(claim) is False  # still ours: no LostJob
    assert worker.finish(claim, "succeeded", exit_code=0)
    assert worker.get(job.id).deliveries == 1


def test_reap_leaves_a_job_another_worker_reclaimed_in_between(redis_url):
    a = make_queue(redis_url)
    job = a.submit(spec())
    stale = a.claim("generic", "dead-pod")
    _age(a, stale)
    b = make_queue(redis_url, min_idle_ms=1000)
    taken = {}
    reaper = Interleaved(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)
    reaper.between = lambda: taken.setdefault("claim", b.claim("generic", "rescuer"))
    res = reaper.reap(min_idle_ms=60_000)
    assert res.skipped == [job.id] and res.requeued == []
    assert taken["claim"].job.id == job.id
    assert b.finish(taken["claim"], "succeeded", exit_code=0)


def test_release_by_a_worker_that_lost_the_job_changes_nothing(redis_url):
    q = make_queue(redis_url, min_idle_ms=0)
    job = q.submit(spec())
    first = q.claim("generic", "a")
    second = make_queue(redis_url, min_idle_ms=0).claim("generic", "b")
    with pytest.raises(LostJob):
        q.release(first, "flaky")
    assert q.get(job.id).stream_id == second.stream_id and q.get(job.id).status == "running"


# ----------------------------------------------------------------------------- 3. lost replies


def test_claim_whose_start_reply_is_lost_resumes_without_a_second_delivery(redis_url, proxy):
    q = make_queue(redis_url)
    warm(q)
    job = q.submit(spec())
    worker = make_queue(proxy.url, retry=fast_retry())
    proxy.drop_reply_to(worker.claim_token.encode())  # only the start script carries the token
    claim = worker.claim("generic", "pod")
    assert proxy.dropped.is_set()
    assert claim.job.id == job.id and claim.resumed and claim.job.deliveries == 1
    assert worker.finish(claim, "succeeded", exit_code=0)


def test_claim_whose_xreadgroup_reply_is_lost_takes_the_entry_it_was_given(redis_url, proxy):
    q = make_queue(redis_url)
    warm(q)
    job = q.submit(spec())
    worker = make_queue(proxy.url, retry=fast_retry())
    proxy.drop_reply_to(b"XREADGROUP")
    claim = worker.claim("generic", "pod")
    assert proxy.dropped.is_set()
    assert claim.job.id == job.id and claim.job.deliveries == 1
    assert q.group_info(q.keys.stream("generic"))["pending"] == 1


def test_without_retries_a_lost_claim_reply_is_resumed_by_calling_claim_again(redis_url, proxy):
    q = make_queue(redis_url)
    warm(q)
    job = q.submit(spec())
    worker = make_queue(proxy.url, retry=fast_retry(0))
    proxy.drop_reply_to(worker.claim_token.encode())
    with pytest.raises(Unreachable):
        worker.claim("generic", "pod")
    assert q.get(job.id).status == "running"
    claim = worker.claim("generic", "pod")
    assert claim.resumed and claim.job.id == job.id and claim.job.deliveries == 1
    # Another process that reuses the consumer name is a new delivery, not a resume.
    other = make_queue(redis_url).claim("generic", "pod")
    assert other.job.id == job.id and not other.resumed and other.job.deliveries == 2


def _lost_delivery(q: Queue, consumer: str) -> str:
    """An entry delivered to ``consumer`` long ago whose XREADGROUP reply never arrived (a Redis
    paused past the client's timeout replays it later): pending for ``consumer``, idle 1,000 s."""
    stream = q.keys.stream("generic")
    q.init(["generic"])
    sid = q.r.xreadgroup(GROUP, consumer, {stream: ">"}, count=1)[0][1][0][0]
    q.r.execute_command("XCLAIM", stream, GROUP, consumer, 0, sid, "IDLE", 1_000_000, "JUSTID")
    return sid


def test_a_job_resumed_from_a_lost_delivery_is_not_stolen_right_after_its_start(redis_url):
    q = make_queue(redis_url)
    job = q.submit(spec())
    _lost_delivery(q, "pod")
    claim = make_queue(redis_url, min_idle_ms=60_000).claim("generic", "pod")
    assert claim.job.id == job.id
    # Its start made the entry fresh: another worker's XAUTOCLAIM must not take it.
    assert make_queue(redis_url, min_idle_ms=60_000).claim("generic", "other") is None
    assert make_queue(redis_url).heartbeat(claim) is False  # still held: no LostJob
    assert q.get(job.id).deliveries == 1 and q.get(job.id).agent_pod == "pod"


class StartInterleaved(Queue):
    """Runs ``between`` after a claim found an entry and before its start step."""

    between = staticmethod(lambda: None)

    def _start(self, *args, **kwargs):
        self.between()
        return super()._start(*args, **kwargs)


def test_a_start_by_a_consumer_that_no_longer_holds_the_entry_writes_nothing(redis_url):
    q = make_queue(redis_url)
    job = q.submit(spec())
    _lost_delivery(q, "pod")
    slow = StartInterleaved(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url,
                            min_idle_ms=60_000)
    rescuer = make_queue(redis_url, min_idle_ms=1000)
    taken = {}
    slow.between = lambda: taken.setdefault("claim", rescuer.claim("generic", "rescuer"))
    assert slow.claim("generic", "pod") is None  # the rescuer took it between listing and start
    assert taken["claim"].job.id == job.id
    assert rescuer.heartbeat(taken["claim"]) is False  # the rescuer still holds it
    record = q.get(job.id)
    assert record.agent_pod == "rescuer" and record.deliveries == 1
    assert rescuer.finish(taken["claim"], "succeeded", exit_code=0)


def test_finish_whose_reply_is_lost_is_idempotent(redis_url, proxy):
    q = make_queue(redis_url)
    warm(q)
    job = q.submit(spec())
    worker = make_queue(proxy.url, retry=fast_retry())
    claim = worker.claim("generic", "pod")
    proxy.drop_reply_to(b"succeeded")
    assert worker.finish(claim, "succeeded", exit_code=0) is True
    assert proxy.dropped.is_set()
    assert q.get(job.id).status == "succeeded"
    assert worker.finish(claim, "succeeded", exit_code=0) is True  # same status again: still True
    assert worker.finish(claim, "failed", exit_code=1) is False  # another status: not ours any more


def test_bulk_submit_whose_reply_is_lost_writes_nothing_twice(redis_url, proxy):
    q = make_queue(redis_url)
    submitter = make_queue(proxy.url, retry=fast_retry())
    proxy.drop_reply_to(b"EVALSHA")
    jobs = submitter.submit_many([spec(i) for i in range(50)], batch=20)
    assert proxy.dropped.is_set()
    assert len({j.id for j in jobs}) == 50 and all(j.stream_id for j in jobs)
    assert q.r.zcard(q.keys.index) == 50 and q.r.xlen(q.keys.stream("generic")) == 50


def test_bulk_submit_that_gives_up_says_which_jobs_are_in(redis_url, proxy):
    q = make_queue(redis_url)
    submitter = make_queue(proxy.url, retry=fast_retry(0))
    specs = [spec(i) for i in range(10)]
    proxy.drop_reply_to(b"EVALSHA")
    with pytest.raises(PartialSubmit) as e:
        submitter.submit_many(specs, batch=5)
    assert e.value.exit_code == 5 and len(e.value.jobs) == 10
    assert set(e.value.done) <= {j.id for j in e.value.jobs}
    again = submitter.submit_many(specs, batch=5, ids=[j.id for j in e.value.jobs])
    assert [j.id for j in again] == [j.id for j in e.value.jobs]
    assert q.r.zcard(q.keys.index) == 10 and q.r.xlen(q.keys.stream("generic")) == 10


def test_single_submit_retried_after_a_lost_reply_makes_one_job(redis_url, proxy):
    q = make_queue(redis_url)
    submitter = make_queue(proxy.url, retry=fast_retry())
    proxy.drop_reply_to(b"EVALSHA")
    job, created = submitter.submit_deduped(spec(dedupe="mirrors/app@1:generic"))
    assert created and proxy.dropped.is_set()
    assert q.r.zcard(q.keys.index) == 1 and q.r.get(q.keys.dedupe("mirrors/app@1:generic")) == job.id


# ----------------------------------------------------------------------------- 4. reconnects


class RestartOnFirstFailure(AbstractBackoff):
    """A backoff that brings Redis back when the first retry is due: Redis 'goes away' exactly
    for the first try, deterministically."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.failures: list[int] = []

    def reset(self) -> None:
        pass

    def compute(self, failures: int) -> float:
        self.failures.append(failures)
        if failures == 1:
            self.server.restart()
        return 0


def test_worker_calls_survive_redis_going_away(durable_redis):
    url = durable_redis.url
    backoff = RestartOnFirstFailure(durable_redis)
    q = make_queue(url, retry=Retry(backoff, 3))
    job = q.submit(spec())
    durable_redis.stop()
    claim = q.claim("generic", "pod")  # fails once, Redis comes back, the retry succeeds
    assert claim.job.id == job.id and backoff.failures == [1]
    durable_redis.stop()
    backoff.failures.clear()
    assert q.heartbeat(claim) is False and backoff.failures == [1]
    durable_redis.stop()
    backoff.failures.clear()
    assert q.finish(claim, "succeeded", exit_code=0) and backoff.failures == [1]
    assert q.get(job.id).status == "succeeded"


def test_non_idempotent_calls_are_not_retried(durable_redis):
    backoff = RestartOnFirstFailure(durable_redis)
    q = make_queue(durable_redis.url, retry=Retry(backoff, 3))
    job = q.submit(spec())
    durable_redis.stop()
    with pytest.raises(Unreachable):
        q.append_log(job.id, ["line"])
    with pytest.raises(Unreachable):
        q.cancel(job.id)
    assert backoff.failures == []


def test_default_retry_policy_backs_off_exponentially_with_jitter():
    policy = retry_policy()
    backoff = policy._backoff  # noqa: SLF001 - the policy's own backoff, read only
    for n in range(1, 10):
        values = {backoff.compute(n) for _ in range(50)}
        assert all(0 <= v <= min(2.0, 0.1 * 2**n) for v in values), (n, values)
        if n <= 4:  # below the cap the wait is random; above it, mostly the cap itself
            assert len(values) > 1, (n, values)
    assert policy._retries == 8  # noqa: SLF001


def test_client_never_retries_a_command_by_itself(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    make_queue(redis_url)  # its own client
    q = Queue(client, url=redis_url)
    assert q.r.get_retry()._retries == 0  # noqa: SLF001 - redis-py would resend a write after a lost reply
    assert connect(redis_url).get_retry()._retries == 0  # noqa: SLF001


# ----------------------------------------------------------------------------- 5. timeouts


def test_a_hung_redis_fails_within_the_timeout(tmp_path, redis_kind):
    server = RedisServer(tmp_path / "hung", kind=redis_kind).start()
    try:
        q = Queue(connect(server.url, timeout=0.5), url=server.url, retry=fast_retry(0))
        job = q.submit(spec())
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(Unreachable):
                q.get(job.id)
            assert time.monotonic() - started < 3  # redis.timeout 0.5 s; the old client took 65 s
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
    finally:
        server.kill()


def test_a_hung_redis_fails_a_retried_call_within_the_retry_budget(tmp_path, redis_kind):
    """Retrying after timeouts must not multiply the timeout by the number of retries (the CLI's
    `queue stats` took 54 s against a hung Redis with the default 8 retries and 5 s timeout)."""
    server = RedisServer(tmp_path / "hung", kind=redis_kind).start()
    try:
        policy = retry_policy(retries=40, base=0.01, cap=0.05)
        assert 1.5 < policy.budget < 2.1  # the most the backoff may sleep in all: 0.02 + 0.04 + 38 * 0.05
        q = Queue(connect(server.url, timeout=0.3), url=server.url, retry=policy)
        job = q.submit(spec())
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(Unreachable):
                q.get(job.id)  # a retried read
            # Within the budget plus one backoff and one timeout; 41 tries of 0.3 s would be 12 s.
            assert time.monotonic() - started < policy.budget + 0.05 + 0.3 + 2.5  # slack for a loaded machine
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
    finally:
        server.kill()


def test_blocking_claim_waits_its_block_time_without_timing_out(redis_url):
    q = Queue(connect(redis_url, timeout=0.3), url=redis_url, retry=fast_retry(0))
    q.init(["generic"])
    started = time.monotonic()
    assert q.claim("generic", "pod", block_ms=1000) is None
    assert 0.9 < time.monotonic() - started < 4


def test_blocking_claim_returns_work_that_arrives_while_waiting(redis_url):
    q = Queue(connect(redis_url, timeout=0.3), url=redis_url, retry=fast_retry(0))
    q.init(["generic"])
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("c", q.claim("generic", "pod", block_ms=5000)))
    t.start()
    deadline = time.monotonic() + 5
    while not any(c.get("cmd") == "xreadgroup" for c in q.r.client_list()):
        assert time.monotonic() < deadline
        time.sleep(0.01)  # polling a condition with a deadline
    job = make_queue(redis_url).submit(spec())
    t.join(10)
    assert got["c"].job.id == job.id


# ----------------------------------------------------------------------------- 6. atomic retry


def test_retry_twice_makes_one_new_attempt(redis_url):
    q = make_queue(redis_url)
    job = q.submit(spec())
    q.finish(q.claim("generic", "pod"), "failed", exit_code=1)
    new = q.retry(job.id)
    with pytest.raises(UsageError, match=f"already retried as {new.id}"):
        q.retry(job.id)
    assert q.get(job.id).retried_by == new.id
    assert q.r.zcard(q.keys.index) == 2


def test_concurrent_retries_make_one_new_attempt(redis_url):
    q = make_queue(redis_url)
    job = q.submit(spec())
    q.finish(q.claim("generic", "pod"), "failed", exit_code=1)
    barrier = threading.Barrier(6)
    outcomes: list = []

    def go() -> None:
        qq = make_queue(redis_url)
        barrier.wait()
        try:
            outcomes.append(qq.retry(job.id).id)
        except UsageError:
            outcomes.append(None)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([o for o in outcomes if o]) == 1
    assert q.r.zcard(q.keys.index) == 2


def test_dlq_retry_removes_exactly_its_entry_and_only_once(redis_url):
    q = make_queue(redis_url, max_deliveries=1)
    dead = [q.submit(spec(i)) for i in range(3)]
    for n in range(3):
        assert q.release(q.claim("generic", f"w-{n}"), "flaky") == "dead"
    assert len(q.dlq_list()) == 3
    new = q.dlq_retry(dead[1].id)
    assert new.retry_of == dead[1].id and new.attempt == 2
    assert {d.job_id for d in q.dlq_list()} == {dead[0].id, dead[2].id}
    with pytest.raises(UsageError, match="already retried"):
        q.dlq_retry(dead[1].id)
    q.dlq_purge()
    with pytest.raises(NotFound):
        q.dlq_retry(dead[0].id)


# ----------------------------------------------------------------------------- 7. retention


def _backdate(q: Queue, job_id: str, days: float) -> None:
    q.r.zadd(q.keys.index, {job_id: int((time.time() - days * 86400) * 1000)}, xx=True)


def test_finish_and_reap_drop_finished_jobs_past_retention(redis_url):
    q = make_queue(redis_url, retention=30 * 86400)
    old_done, old_running, fresh = q.submit(spec(1)), q.submit(spec(2)), q.submit(spec(3))
    q.append_log(old_done.id, ["x"])
    q.finish(q.claim("generic", "a"), "succeeded", exit_code=0)  # old_done
    held = q.claim("generic", "b")  # old_running stays running
    for j in (old_done, old_running):
        _backdate(q, j.id, 31)
    trigger = q.submit(spec(4))
    q.finish(q.claim("generic", "c"), "succeeded", exit_code=0)  # fresh: its finish trims
    assert not q.r.exists(q.keys.job(old_done.id), q.keys.log(old_done.id))
    assert q.r.zscore(q.keys.index, old_done.id) is None
    assert q.get(old_running.id).status == "running"
    q.finish(held, "failed", exit_code=1)  # finished past retention: its own finish drops it
    assert not q.r.exists(q.keys.job(old_running.id))
    assert {j.id for j in q.list()} == {fresh.id, trigger.id}
    _backdate(q, fresh.id, 31)  # reap trims too
    assert q.reap(min_idle_ms=10**9).expired == 1
    assert [j.id for j in q.list()] == [trigger.id]


def test_retention_zero_keeps_everything(redis_url):
    q = make_queue(redis_url, retention=0)
    job = q.submit(spec())
    q.finish(q.claim("generic", "a"), "succeeded", exit_code=0)
    _backdate(q, job.id, 10_000)
    assert q.reap(min_idle_ms=10**9).expired == 0 and q.get(job.id).status == "succeeded"


def test_every_terminal_jobs_log_expires(redis_url):
    q = make_queue(redis_url, max_deliveries=1, min_idle_ms=0)
    cancelled = q.submit(spec(1))
    q.append_log(cancelled.id, ["queued"])
    q.cancel(cancelled.id)
    dead = q.submit(spec(2))
    q.claim("generic", "gone")
    q.append_log(dead.id, ["ran once"])
    q.claim("generic", "next")  # out of deliveries: dead-lettered by start
    assert q.get(dead.id).status == "dead"
    released = q.submit(spec(3))
    c = q.claim("generic", "r")
    q.append_log(released.id, ["x"])
    assert q.release(c, "flaky") == "dead"
    for j in (cancelled, dead, released):
        assert 0 < q.r.ttl(q.keys.log(j.id)) <= q.log_ttl


# ----------------------------------------------------------------------------- 8. types and tolerant reading


@pytest.mark.parametrize("bad", [dict(timeout=True), dict(command=["make", "test"]), dict(ref=["main"]),
                                 dict(commit=123), dict(timeout=1.5), dict(agent=["generic"])])
def test_exact_types_are_required(redis_url, bad):
    q = make_queue(redis_url)
    with pytest.raises(UsageError):
        q.submit(JobSpec(**{"repo": "a/b", "ref": "main", **bad}))
    assert q.r.dbsize() == 0


def test_one_malformed_record_never_breaks_list_or_show(redis_url, run):
    q = make_queue(redis_url)
    good = q.submit(spec(1))
    bad = q.submit(spec(2))
    q.r.hset(q.keys.job(bad.id), mapping={"timeout": "True", "env": "[1]", "submitted_at": "yesterday"})
    jobs = {j.id: j for j in q.list()}
    assert jobs[good.id].malformed is None
    assert "timeout 'True'" in jobs[bad.id].malformed and "env" in jobs[bad.id].malformed
    listed = run("queue", "list")
    assert listed.code == 0 and "malformed" in listed.out and "Traceback" not in listed.err
    shown = run("queue", "show", bad.id, "--json")
    assert shown.code == 0 and shown.json()["malformed"] and "malformed record" in shown.err


def test_from_file_with_a_bool_timeout_is_refused(run, redis_url, isolated_env):
    f = isolated_env / "jobs.jsonl"
    f.write_text('{"repo": "a/b", "ref": "main", "timeout": true}\n')
    r = run("queue", "submit", "--from-file", str(f))
    assert r.code == 2 and "timeout" in r.err and "nothing was submitted" in r.err


# ----------------------------------------------------------------------------- 9. names


@pytest.mark.parametrize("name", ["generic\n", "dead", "Bad Type", ""])
def test_agent_names_must_match_exactly(redis_url, name):
    with pytest.raises(UsageError):
        make_queue(redis_url).submit(spec(agent=name))


def test_repo_with_a_trailing_newline_is_refused(redis_url):
    with pytest.raises(UsageError):
        make_queue(redis_url).submit(JobSpec(repo="a/b\n", ref="main"))


@pytest.mark.parametrize("value", ["dead", "Bad Type"])
def test_config_refuses_a_bad_default_agent_type(run, redis_url, isolated_env, value):
    cfg = isolated_env / "raibid.yaml"
    cfg.write_text(f"agents:\n  default_type: {value!r}\n")
    r = run("--config", str(cfg), "queue", "stats")
    assert r.code == 2 and "agents.default_type" in r.err


# ----------------------------------------------------------------------------- 10. ids under threads


def test_ids_stay_unique_and_ordered_when_two_threads_race(monkeypatch):
    """Two threads start a new millisecond at once (both inside os.urandom, held by a barrier), then
    each makes one more id: every thread's ids must still count up and never repeat."""
    clock = [1_800_000_000_000]
    monkeypatch.setattr(time, "time_ns", lambda: clock[0] * 1_000_000)
    at_random, lock, arrivals = threading.Barrier(2), threading.Lock(), [0]

    def urandom(n: int) -> bytes:
        at_random.wait(timeout=10)
        with lock:
            arrivals[0] += 1
            high = arrivals[0] % 2 == 1
        return (b"\x7f" if high else b"\x00") + b"\x00" * (n - 1)

    monkeypatch.setattr(os, "urandom", urandom)
    for _ in range(20):
        clock[0] += 1
        seqs: dict[str, list[str]] = {}
        between = threading.Barrier(2)

        def work(name: str, seqs: dict = seqs, between: threading.Barrier = between) -> None:
            first = new_job_ids(1)
            between.wait(timeout=10)
            seqs[name] = first + new_job_ids(1)

        threads = [threading.Thread(target=work, args=(n,)) for n in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(s[0] < s[1] for s in seqs.values()), seqs
        assert len(set(seqs["a"] + seqs["b"])) == 4


# ----------------------------------------------------------------------------- 11. reap result and consumers


def test_reap_result_keeps_entry_ids_and_job_ids_apart_and_drops_idle_consumers(redis_url):
    q = make_queue(redis_url)
    job = q.submit(spec())
    stream = q.keys.stream("generic")
    orphan = q.r.xadd(stream, {"job": ""})
    held = q.claim("generic", "crashed")
    assert held.job.id == job.id
    orphan_claim = q.r.xreadgroup(GROUP, "crashed-too", {stream: ">"}, count=1)
    assert orphan_claim[0][1][0][0] == orphan
    done = make_queue(redis_url)
    j2 = done.submit(spec(2))
    done.finish(done.claim("generic", "finished-pod"), "succeeded", exit_code=0)
    res = q.reap(min_idle_ms=0)
    assert res.requeued == [job.id] and res.acked_entries == [orphan]
    assert orphan not in res.requeued and j2.id not in res.acked_jobs
    names = {c["name"] for c in q.r.xinfo_consumers(stream, GROUP)}
    assert "finished-pod" not in names and "crashed" not in names
    assert set(res.consumers_deleted) >= {"generic/finished-pod"}


def test_reap_keeps_consumers_with_pending_entries(redis_url):
    q = make_queue(redis_url)
    job = q.submit(spec())
    q.claim("generic", "crashed")
    rescuer = make_queue(redis_url, min_idle_ms=0)
    reaper = Interleaved(redis.Redis.from_url(redis_url, decode_responses=True), url=redis_url)
    reaper.between = lambda: rescuer.claim("generic", "rescuer")  # takes the entry over: reap skips it
    res = reaper.reap(min_idle_ms=0)  # every consumer counts as idle: only a pending entry protects one
    assert res.skipped == [job.id]
    assert res.consumers_deleted == ["generic/crashed"]
    assert {c["name"] for c in q.r.xinfo_consumers(q.keys.stream("generic"), GROUP)} == {"rescuer"}


# ----------------------------------------------------------------------------- 12. decimals


def test_min_idle_and_heartbeat_accept_decimals(run, redis_url, isolated_env):
    cfg = isolated_env / "raibid.yaml"
    cfg.write_text("queue:\n  min_idle: 0.5\n  heartbeat: 0.25\n")
    shown = run("--config", str(cfg), "config", "show", "--json")
    assert shown.code == 0, shown.err
    data = shown.json()
    assert data["queue"]["min_idle"] == 0.5 and data["queue"]["heartbeat"] == 0.25
    r = run("--config", str(cfg), "queue", "reap", "--min-idle", "0.5", "--json")
    assert r.code == 0, r.err
    assert r.json()["requeued"] == []


@pytest.mark.parametrize("yaml", ["redis:\n  timeout: 0\n", "queue:\n  min_idle: 0\n", "queue:\n  retention: -1\n",
                                  "redis:\n  retries: -1\n", "agents:\n  types:\n    Bad_Type: {}\n"])
def test_config_refuses_bad_queue_values(run, redis_url, isolated_env, yaml):
    cfg = isolated_env / "raibid.yaml"
    cfg.write_text(yaml)
    r = run("--config", str(cfg), "queue", "stats")
    assert r.code == 2, r.err


def test_logs_are_trimmed_before_redis_is_full_so_results_are_always_recorded(tmp_path, redis_kind):
    """A flood of logs near maxmemory: finished jobs' logs go first (oldest first), then the running job's
    further lines are refused with one marker; no record is lost and the running job still finishes."""
    from tests.harness.redis_server import RedisServer

    server = RedisServer(tmp_path / "r", kind=redis_kind).start()
    try:
        r = server.client()
        q = Queue(r, url=server.url, log_high_water=0.75)
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", str(used + 16 * 2**20))  # 16 MiB of headroom
        piece = "y" * 16 * 1024
        old = []
        for i in range(6):  # six finished jobs of ~1.5 MiB of log each, oldest first
            job = q.submit(JobSpec(repo="acme/app", ref=f"b{i}"))
            claim = q.claim("generic", f"w{i}")
            q.append_log(job.id, [piece] * 96)
            q.finish(claim, "succeeded", exit_code=0)
            old.append(job.id)
        running = q.submit(JobSpec(repo="acme/flood", ref="main"))
        claim = q.claim("generic", "flooder")
        for _ in range(120):  # ~23 MiB: more than all of maxmemory
            q.append_log(running.id, [piece] * 12)
        assert q.finish(claim, "failed", exit_code=1)  # a result is always recorded
        info = r.info("memory")
        assert int(info["used_memory"]) < int(info["maxmemory"])
        jobs = [q.get(i) for i in old]
        assert all(j.status == "succeeded" and j.repo == "acme/app" for j in jobs)  # no record lost
        trimmed = [j.log_trimmed for j in jobs]
        assert trimmed[0] and trimmed == sorted(trimmed, reverse=True)  # oldest first
        assert all(not r.exists(q.keys.log(i)) for i, t in zip(old, trimmed, strict=True) if t)
        lines = [line for _, line in q.logs(running.id)]
        assert lines[-1].startswith("[log truncated: Redis is near its maxmemory")
        assert sum(1 for line in lines if line.startswith("[log truncated")) == 1
        assert q.get(running.id).status == "failed" and server.proc.poll() is None
    finally:
        server.stop()
