"""The queue against a real redis-server: delivery semantics, DLQ, durability, stats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from raibid.errors import NotFound, UsageError
from raibid.queue import GROUP, JobSpec, LostJob, Queue, dedupe_key, keda_desired
from tests.harness.redis_server import SERVER_KINDS

ROOT = Path(__file__).parents[1]


def make_queue(url: str, **kw) -> Queue:
    return Queue(redis.Redis.from_url(url, decode_responses=True), url=url, **kw)


@pytest.fixture(params=SERVER_KINDS)
def redis_kind(request) -> str:
    """Every test here runs on Debian's redis-server 7.0 and on Valkey (tests/harness/redis_server.py)."""
    return request.param


@pytest.fixture
def q(redis_url) -> Queue:
    return make_queue(redis_url)


def spec(n: int = 0, **kw) -> JobSpec:
    return JobSpec(repo="mirrors/app", ref="main", commit=f"{n:040x}", **kw)


def test_full_lifecycle_of_a_job(q):
    job = q.submit(spec(env={"CI": "1"}, command="make test"))
    assert job.status == "queued" and job.stream_id and job.agent == "generic"
    assert q.get(job.id).env == {"CI": "1"}
    claim = q.claim("generic", "pod-a")
    assert claim.job.id == job.id and claim.job.status == "running" and claim.job.agent_pod == "pod-a"
    assert claim.job.deliveries == 1
    assert q.heartbeat(claim) is False
    q.append_log(job.id, ["step 1", "step 2"])
    assert q.finish(claim, "succeeded", exit_code=0)
    done = q.get(job.id)
    assert done.status == "succeeded" and done.exit_code == 0 and done.finished_at
    assert [line for _, line in q.logs(job.id)] == ["step 1", "step 2"]
    assert 0 < q.r.ttl(q.keys.log(job.id)) <= q.log_ttl
    info = q.r.xinfo_groups(q.keys.stream("generic"))[0]
    assert info["pending"] == 0 and info["lag"] == 0
    assert q.claim("generic", "pod-a") is None


def test_a_log_wait_woken_by_events_ends_when_the_job_finishes(q):
    """`raibid run`'s follower: a wait for more log lines ends when the job's result is recorded, not when
    its block times out; without wake_on_event it waits out the block."""
    import threading

    job = q.submit(spec())
    claim = q.claim("generic", "pod-a")
    q.append_log(job.id, ["only line"])
    last = q.wait_logs(job.id, "0", block_ms=100)[-1][0]
    assert q.wait_logs(job.id, last, block_ms=50) == []  # nothing new: the block runs out
    out: list[tuple[list, float]] = []
    started = threading.Event()

    def follow(**kw) -> None:
        started.set()
        t0 = time.monotonic()
        out.append((q.wait_logs(job.id, last, block_ms=30_000, **kw), time.monotonic() - t0))

    waiter = threading.Thread(target=follow, kwargs={"wake_on_event": True})
    waiter.start()
    started.wait(5)
    deadline = time.monotonic() + 10
    while not any(c.get("cmd") == "xread" for c in q.r.client_list()):
        assert time.monotonic() < deadline, "the wait never blocked"
        time.sleep(0.01)  # polling the server until the waiter's XREAD is blocked on it, bounded
    assert q.finish(claim, "succeeded", exit_code=0)
    waiter.join(20)
    assert not waiter.is_alive()
    lines, waited = out[0]
    assert lines == [] and waited < 15  # woken by the finish event, far before the 30 s block
    assert q.get(job.id).status == "succeeded"


def test_job_ids_sort_by_time_and_are_url_safe(q):
    ids = [q.submit(spec(i)).id for i in range(5)]
    assert ids == sorted(ids)
    assert all(i.isalnum() for i in ids)
    assert [j.id for j in q.list(limit=5)] == list(reversed(ids))


def test_group_created_at_zero_keeps_jobs_queued_before_it(q):
    stream = q.keys.stream("generic")
    q.r.xadd(stream, {"job": "early"})
    q.r.hset(q.keys.job("early"), mapping={"id": "early", "repo": "a/b", "ref": "main", "agent": "generic",
                                           "status": "queued", "stream_id": q.r.xrange(stream)[0][0]})
    assert q.init(["generic"]) == ["generic"]
    assert q.init(["generic"]) == []  # idempotent
    claim = q.claim("generic", "pod")
    assert claim and claim.job.id == "early"


def test_invalid_specs_are_rejected_before_writing(q):
    with pytest.raises(UsageError):
        q.submit(JobSpec(repo="no-slash", ref="main"))
    with pytest.raises(UsageError):
        q.submit(JobSpec(repo="a/b", ref="main", agent="Bad Agent"))
    with pytest.raises(UsageError):
        q.submit_many([spec(1), JobSpec(repo="a/b", ref="")])
    assert q.r.dbsize() == 0


def test_cancel_queued_job_is_skipped_and_acked(q):
    job = q.submit(spec())
    assert q.cancel(job.id) == "cancelled"
    assert q.claim("generic", "pod") is None
    assert q.get(job.id).status == "cancelled"
    assert q.r.xinfo_groups(q.keys.stream("generic"))[0]["pending"] == 0


def test_cancel_of_running_job_is_observed_by_heartbeat(q):
    job = q.submit(spec())
    claim = q.claim("generic", "pod")
    assert q.cancel(job.id) == "requested"
    assert q.heartbeat(claim) is True
    assert q.finish(claim, "cancelled", error="cancelled by user")
    assert q.get(job.id).status == "cancelled"
    with pytest.raises(UsageError):
        q.cancel(job.id)


def test_unknown_job_is_not_found(q):
    with pytest.raises(NotFound):
        q.get("01NOPE")
    with pytest.raises(NotFound):
        q.cancel("01NOPE")


def test_retry_links_attempts(q):
    job = q.submit(spec())
    claim = q.claim("generic", "pod")
    q.finish(claim, "failed", exit_code=2)
    new = q.retry(job.id)
    assert new.attempt == 2 and new.retry_of == job.id and new.status == "queued"
    assert q.get(job.id).retried_by == new.id
    with pytest.raises(UsageError):
        q.retry(new.id)  # still queued


def test_retry_with_a_policy_routes_the_new_attempt_again(q):
    from raibid.agents.trust import TrustPolicy

    job = q.submit(spec(agent="rust"))
    q.finish(q.claim("rust", "pod"), "failed", exit_code=1)
    new = q.retry(job.id, trust=TrustPolicy())  # today's config trusts nothing
    assert new.agent == "rust-untrusted" and new.retry_of == job.id and new.attempt == 2
    assert q.get(new.id).agent == "rust-untrusted"
    assert [f["job"] for _, f in q.r.xrange(q.keys.stream("rust-untrusted"))] == [new.id]
    assert "rust-untrusted" in q.agent_types()
    # The group existed before the entry, so the untrusted pool's agent (and KEDA's lag) sees it.
    assert q.group_info(q.keys.stream("rust-untrusted"))["lag"] == 1
    assert q.claim("rust", "pod-t") is None and q.claim("rust-untrusted", "pod-u").job.id == new.id


def test_retry_without_a_policy_keeps_the_pool(q):
    job = q.submit(spec(agent="go-untrusted"))
    q.cancel(job.id)
    assert q.retry(job.id).agent == "go-untrusted"


def test_dlq_retry_with_a_policy_routes_a_trusted_repo_to_the_types_pool(redis_url):
    from raibid.agents.trust import TrustPolicy

    q = make_queue(redis_url, max_deliveries=1, min_idle_ms=0)
    job = q.submit(spec(agent="python-untrusted"))
    q.claim("python-untrusted", "pod-1")
    assert q.claim("python-untrusted", "pod-2") is None  # dead
    new = q.dlq_retry(job.id, trust=TrustPolicy.of(owners=["mirrors"]))
    assert new.agent == "python" and q.dlq_list() == [] and q.r.xlen(q.keys.stream("python")) == 1


def test_poison_job_goes_to_dead_letter_after_max_deliveries(redis_url):
    q = make_queue(redis_url, max_deliveries=3, min_idle_ms=0)
    job = q.submit(spec())
    for n in range(3):  # three workers take it and vanish without finishing
        claim = q.claim("generic", f"pod-{n}")
        assert claim and claim.job.id == job.id and claim.job.deliveries == n + 1
    assert q.claim("generic", "pod-3") is None
    dead = q.get(job.id)
    assert dead.status == "dead" and "max_deliveries 3" in dead.error
    dlq = q.dlq_list()
    assert [d.job_id for d in dlq] == [job.id] and "3 times" in dlq[0].reason
    assert q.r.xinfo_groups(q.keys.stream("generic"))[0]["pending"] == 0
    retried = q.dlq_retry(job.id)
    assert retried.attempt == 2 and q.dlq_list() == []


def test_heartbeat_keeps_a_long_job_from_being_stolen(redis_url):
    q = make_queue(redis_url, min_idle_ms=150)
    job = q.submit(spec())
    claim = q.claim("generic", "slow")
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # a long build that heartbeats
        q.heartbeat(claim)
        assert q.claim("generic", "thief") is None
        time.sleep(0.05)
    assert q.finish(claim, "succeeded", exit_code=0)
    assert q.get(job.id).deliveries == 1


def test_lost_job_heartbeat_and_stale_finish(redis_url):
    q = make_queue(redis_url, min_idle_ms=0)
    job = q.submit(spec())
    first = q.claim("generic", "a")
    second = q.claim("generic", "b")  # reclaimed at once: min idle 0
    assert second.job.id == job.id
    with pytest.raises(LostJob):
        q.heartbeat(first)
    assert q.finish(first, "failed", exit_code=1) is False
    assert q.finish(second, "succeeded", exit_code=0) is True
    assert q.get(job.id).status == "succeeded"


def test_release_requeues_then_dead_letters(redis_url):
    q = make_queue(redis_url, max_deliveries=2)
    job = q.submit(spec())
    c1 = q.claim("generic", "a")
    assert q.release(c1, "clone failed: 503") == "requeued"
    requeued = q.get(job.id)
    assert requeued.status == "queued" and requeued.stream_id != c1.stream_id
    c2 = q.claim("generic", "b")
    assert c2.job.deliveries == 2
    assert q.release(c2, "clone failed: 503") == "dead"
    assert q.get(job.id).status == "dead"


def test_reap_requeues_stale_entries_so_lag_sees_them(redis_url):
    q = make_queue(redis_url, min_idle_ms=60_000)
    job = q.submit(spec())
    q.claim("generic", "crashed-pod")
    group = q.r.xinfo_groups(q.keys.stream("generic"))[0]
    assert group["lag"] == 0 and group["pending"] == 1  # invisible to KEDA's lag
    assert q.reap(min_idle_ms=60_000).requeued == []  # not idle long enough
    res = q.reap(min_idle_ms=0)
    assert res.requeued == [job.id]
    group = q.r.xinfo_groups(q.keys.stream("generic"))[0]
    assert group["lag"] == 1 and group["pending"] == 0
    claim = q.claim("generic", "new-pod")
    assert claim.job.id == job.id and claim.job.deliveries == 2


def test_stats_lag_matches_xinfo_and_undelivered_count(redis_url):
    q = make_queue(redis_url)
    jobs = [q.submit(spec(i)) for i in range(7)]
    claims = [q.claim("generic", f"pod-{n}") for n in range(3)]
    q.finish(claims[0], "succeeded", exit_code=0)
    q.submit(spec(99, agent="gpu"))
    s = q.stats({"generic": (2, 3), "gpu": (1, 8)})
    by = {st.agent: st for st in s.streams}
    g = by["generic"]
    raw = q.r.xinfo_groups(q.keys.stream("generic"))[0]
    undelivered = sum(1 for j in jobs if q.get(j.id).status == "queued")
    assert g.lag == raw["lag"] == undelivered == 4
    assert g.pending == raw["pending"] == 2
    assert g.keda_desired == 2  # min(3, ceil(4 / 2))
    assert {c.name: c.pending for c in g.consumers} == {"pod-0": 0, "pod-1": 1, "pod-2": 1}
    assert g.true_lag == 4 and not s.warnings
    assert g.oldest_queued_age_s is not None and g.oldest_queued_age_s >= 0
    assert by["gpu"].lag == 1 and by["gpu"].keda_desired == 1
    assert s.dead_letter == 0 and s.lag_supported


def test_trimming_acked_entries_never_changes_lag(redis_url):
    q = make_queue(redis_url)
    for i in range(10):
        q.submit(spec(i))
    for _ in range(6):
        q.finish(q.claim("generic", "pod"), "succeeded", exit_code=0)
    stream = q.keys.stream("generic")
    assert q.r.xlen(stream) == 4  # acked history trimmed
    assert q.r.xinfo_groups(stream)[0]["lag"] == 4


def test_keda_formula():
    assert keda_desired(0, 1, 8) == 0
    assert keda_desired(1, 1, 8) == 1
    assert keda_desired(5, 2, 8) == 3
    assert keda_desired(100, 1, 8) == 8


def test_bulk_submit_is_pipelined_and_complete(q):
    jobs = q.submit_many([spec(i) for i in range(250)], batch=100)
    assert len({j.id for j in jobs}) == 250 and all(j.stream_id for j in jobs)
    assert q.r.xinfo_groups(q.keys.stream("generic"))[0]["lag"] == 250
    assert q.r.zcard(q.keys.index) == 250


def _spawn(url: str, consumer: str, mode: str, min_idle: int = 300_000) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.helpers.queue_worker", url, "raibid", "generic", consumer,
                             mode, str(min_idle)], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_four_worker_processes_drain_1000_jobs_exactly_once(redis_url):
    q = make_queue(redis_url)
    jobs = q.submit_many([spec(i) for i in range(1000)])
    workers = [_spawn(redis_url, f"pod-{n}", "drain") for n in range(4)]
    outs = [w.communicate(timeout=120)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outs
    done = [int(o.split()[1]) for o in outs]
    assert sum(done) == 1000
    pipe = q.r.pipeline()
    for j in jobs:
        pipe.get(f"test:runs:{j.id}")
        pipe.hget(q.keys.job(j.id), "status")
    res = pipe.execute()
    assert res[0::2] == ["1"] * 1000
    assert set(res[1::2]) == {"succeeded"}
    group = q.r.xinfo_groups(q.keys.stream("generic"))[0]
    assert group["lag"] == 0 and group["pending"] == 0


def test_sigkilled_worker_job_is_reclaimed_and_completed(redis_url):
    q = make_queue(redis_url, min_idle_ms=200)
    job = q.submit(spec())
    holder = _spawn(redis_url, "doomed", "hold", 200)
    line = holder.stdout.readline()
    assert line.strip() == f"claimed {job.id}"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert q.get(job.id).status == "running"
    claim = None
    deadline = time.monotonic() + 10
    while claim is None and time.monotonic() < deadline:  # reclaim becomes possible after min-idle
        claim = q.claim("generic", "rescuer", block_ms=50)
    assert claim is not None and claim.job.id == job.id and claim.job.deliveries == 2
    assert q.finish(claim, "succeeded", exit_code=0)
    assert q.get(job.id).status == "succeeded"


def test_no_job_lost_across_redis_sigkill_with_aof(durable_redis):
    url = durable_redis.url
    q = make_queue(url)
    jobs = [q.submit(spec(i)) for i in range(20)]
    held = [q.claim("generic", f"pod-{n}") for n in range(5)]
    q.finish(held[0], "succeeded", exit_code=0)
    durable_redis.restart(kill=True)
    q2 = make_queue(url, min_idle_ms=0)
    stream = q2.keys.stream("generic")
    group = q2.r.xinfo_groups(stream)[0]
    assert group["pending"] == 4
    # Redis 7.0 forgets entries-read on an AOF reload (lag nil, which KEDA reads as 0); Valkey keeps
    # it. Either way the truth check agrees with the server only when the server's lag is true.
    check = q2.check_lag(stream, repair=False)
    assert check.true == 15 and check.state == ("ok" if group["lag"] == 15 else "wrong")
    warned = any("reap" in w for w in q2.stats({"generic": (1, 8)}).warnings)
    assert warned == (check.state == "wrong")
    assert q2.reap(min_idle_ms=10**9).lag_repaired == (["generic"] if warned else [])
    group = q2.r.xinfo_groups(stream)[0]
    assert group["lag"] == 15 and group["pending"] == 4
    statuses = {j.id: q2.get(j.id).status for j in jobs}
    assert list(statuses.values()).count("queued") == 15
    assert list(statuses.values()).count("running") == 4
    # Everything still runs to completion after the crash.
    seen = set()
    while (c := q2.claim("generic", "after")) is not None:
        seen.add(c.job.id)
        q2.finish(c, "succeeded", exit_code=0)
    assert seen == {j.id for j in jobs} - {held[0].job.id}


def test_plain_restart_with_aof_keeps_everything(tmp_path, redis_kind):
    from tests.harness.redis_server import RedisServer

    server = RedisServer(tmp_path / "r", appendonly=True, kind=redis_kind).start()
    try:
        q = make_queue(server.url)
        job = q.submit(spec())
        server.restart()
        assert make_queue(server.url).get(job.id).status == "queued"
        assert make_queue(server.url).r.xinfo_groups(q.keys.stream("generic"))[0]["name"] == GROUP
    finally:
        server.kill()


# ----------------------------------------------------------------------------- dedupe


def test_dedupe_key_format():
    assert dedupe_key("mirrors/app", "ab" * 20, "rust") == f"mirrors/app@{'ab' * 20}:rust"


def test_same_dedupe_key_twice_submits_one_job_with_an_expiry(redis_url):
    q = make_queue(redis_url, dedupe_ttl=600)
    key = dedupe_key("mirrors/app", "1" * 40, "generic")
    first, created = q.submit_deduped(spec(1, dedupe=key))
    assert created and first.dedupe == key
    before = q.r.dbsize()
    second, created2 = q.submit_deduped(spec(1, dedupe=key, command="other"))
    assert created2 is False and second.id == first.id and second.command is None
    assert q.r.dbsize() == before and q.r.xlen(q.keys.stream("generic")) == 1
    assert q.submit(spec(1, dedupe=key)).id == first.id  # submit honours it too
    assert q.r.get(q.keys.dedupe(key)) == first.id
    assert 0 < q.r.ttl(q.keys.dedupe(key)) <= 600
    assert q.get(first.id).dedupe == key
    other, created3 = q.submit_deduped(spec(2, dedupe=dedupe_key("mirrors/app", "2" * 40, "generic")))
    assert created3 and other.id != first.id


def test_dedupe_in_bulk_and_within_one_batch(q):
    key = dedupe_key("mirrors/app", "3" * 40, "generic")
    res = q.submit_many_deduped([spec(1, dedupe=key), spec(2), spec(3, dedupe=key)])
    assert [c for _, c in res] == [True, True, False]
    assert res[2][0].id == res[0][0].id
    assert q.r.zcard(q.keys.index) == 2
    again = q.submit_many([spec(4, dedupe=key)])
    assert again[0].id == res[0][0].id


def test_dedupe_key_of_a_vanished_job_is_taken_over(q):
    key = "x/y@1:generic"
    first = q.submit(spec(1, dedupe=key))
    q.r.delete(q.keys.job(first.id))
    job, created = q.submit_deduped(spec(1, dedupe=key))
    assert created and job.id != first.id and q.r.get(q.keys.dedupe(key)) == job.id


def test_retry_ignores_dedupe(q):
    key = "mirrors/app@4:generic"
    job = q.submit(spec(4, dedupe=key))
    q.cancel(job.id)
    again = q.retry(job.id)
    assert again.id != job.id and again.status == "queued" and again.dedupe is None
    assert q.r.get(q.keys.dedupe(key)) == job.id


@pytest.mark.parametrize("bad", ["", "a\nb", "tab\there", "x" * 513, "del\x7f"])
def test_dedupe_key_is_validated(q, bad):
    with pytest.raises(UsageError):
        q.submit(spec(dedupe=bad))
    assert q.r.dbsize() == 0


def test_concurrent_submits_of_one_dedupe_key_make_one_job(redis_url):
    import threading

    key = "mirrors/app@5:generic"
    barrier = threading.Barrier(8)
    results: list[tuple] = []

    def submit() -> None:
        qq = make_queue(redis_url)
        barrier.wait()
        results.append(qq.submit_deduped(spec(5, dedupe=key)))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    q = make_queue(redis_url)
    assert q.r.xlen(q.keys.stream("generic")) == 1 and q.r.zcard(q.keys.index) == 1


def test_concurrent_processes_submitting_one_dedupe_key_make_one_job(redis_url):
    code = ("import sys, redis; from raibid.queue import Queue, JobSpec; u = sys.argv[1]; "
            "q = Queue(redis.Redis.from_url(u, decode_responses=True), url=u); "
            "j, c = q.submit_deduped(JobSpec(repo='a/b', ref='main', dedupe='a/b@6:generic')); print(j.id, c)")
    procs = [subprocess.Popen([sys.executable, "-c", code, redis_url], stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(4)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({o[0] for o in outs}) == 1 and sorted(o[1] for o in outs) == ["False", "False", "False", "True"]


def test_append_log_stores_every_line_in_order_across_batches(q):
    from raibid.queue.worker import LOG_BATCH_LINES

    lines = [f"line {i}" for i in range(LOG_BATCH_LINES * 2 + 17)] + ["", "x" * (2 << 20), "ünïcode ✓", ""]
    assert q.append_log("j1", iter(lines)) == len(lines)
    assert [line for _, line in q.logs("j1")] == lines
    multi = ["a", "two\nlines", "", "b"]  # a line holding a newline is still one entry
    assert q.append_log("j3", multi) == 4 and [line for _, line in q.logs("j3")] == multi
    assert q.append_log("j4", [""]) == 1 and [line for _, line in q.logs("j4")] == [""]
    assert q.append_log("j1", []) == 0


def test_append_log_trims_to_about_log_maxlen(redis_url):
    q = make_queue(redis_url)
    q.log_maxlen = 500
    q.append_log("j2", [str(i) for i in range(5000)])
    kept = [line for _, line in q.logs("j2")]
    assert 500 <= len(kept) < 1500 and kept[-1] == "4999"


def test_trigger_fields_are_stored_and_a_retry_copies_them(q):
    trigger = {"event": "pull_request", "pipeline": "test", "context": "raibid/test", "pr": "7",
               "base_ref": "main", "head_ref": "feature/x", "origin": "github:acme/app"}
    job = q.submit(JobSpec(repo="a/b", ref="refs/pull/7/head", commit="c" * 40, **trigger))
    stored = q.get(job.id)
    assert stored.trigger() == trigger and stored.malformed is None
    claim = q.claim(stored.agent, "w1")
    q.finish(claim, "failed", exit_code=1)
    again = q.retry(job.id)
    assert again.trigger() == trigger and again.commit == "c" * 40 and again.attempt == 2


def test_a_job_without_trigger_fields_reads_them_as_unknown(q):
    job = q.get(q.submit(JobSpec(repo="a/b", ref="main")).id)
    assert job.trigger() == {} and job.event is None and job.context is None


@pytest.mark.parametrize("field, value, needle", [
    ("event", "deploy", "invalid event"),
    ("context", "raibid/x\x1b]52;c;bad\x07", "control character"),
    ("pr", "", "non-empty"),
    ("head_ref", "x" * 1025, "longer than"),
])
def test_bad_trigger_fields_are_refused_before_anything_is_written(q, field, value, needle):
    with pytest.raises(UsageError) as e:
        q.submit(JobSpec(repo="a/b", ref="main", **{field: value}))
    assert needle in e.value.message and q.r.dbsize() == 0


def test_reading_a_whole_log_pages_through_it(q, monkeypatch):
    import raibid.queue.admin as admin

    monkeypatch.setattr(admin, "LOG_PAGE", 1000)
    job = q.submit(spec())
    lines = [f"line {i}" for i in range(2500)]
    q.append_log(job.id, lines)
    q.r.config_resetstat()
    got = q.logs(job.id)
    assert [line for _, line in got] == lines
    calls = int(q.r.info("commandstats")["cmdstat_xrange"]["calls"])
    assert calls == 3  # 1000 + 1000 + 500: no reply holds the whole log
    assert [line for _, line in q.logs(job.id, after=got[1499][0], count=1200)] == lines[1500:2500]


def test_post_status_adds_one_status_event_in_order(q):
    first = q.post_status("a/b", "c" * 40, "raibid/test", "error", ".raibid.yml:3: bad", origin="github:a/b")
    second = q.post_status("a/b", "d" * 40, "raibid/test", "pending", "x" * 500)
    entries = q.r.xrange(q.keys.events)
    assert [eid for eid, _ in entries] == [first, second]
    assert entries[0][1] == {"kind": "status", "repo": "a/b", "commit": "c" * 40, "context": "raibid/test",
                             "state": "error", "description": ".raibid.yml:3: bad", "origin": "github:a/b"}
    assert len(entries[1][1]["description"]) == 140 and "origin" not in entries[1][1]
    with pytest.raises(UsageError):
        q.post_status("a/b", "c" * 40, "raibid/test", "queued", "not a forge state")
