"""The webhook receiver in-process with a real Redis: signatures, routing, payloads, one job per commit."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import time

import pytest

from raibid.agents.trust import TrustPolicy
from raibid.queue import JobSpec, Queue, connect, dedupe_key
from raibid.webhook.events import Push
from raibid.webhook.mirrors import MirrorSet
from raibid.webhook.server import build
from raibid.webhook.signature import verify_gitea, verify_github
from raibid.webhook.worker import SyncWorker

SECRET = "whsec-sentinel-4b1d"
# The repos these tests push to are trusted, so their jobs keep the type's pool (`generic`); the
# routing tests below push to repos of other owners too.
TRUSTED = TrustPolicy.of(owners=["mirrors"])
SHA1 = "1" * 40
SHA2 = "2" * 40
ZERO = "0" * 40


def gitea_payload(repo: str = "mirrors/app", ref: str = "refs/heads/main", before: str = SHA1,
                  after: str = SHA2, **extra) -> dict:
    return {"ref": ref, "before": before, "after": after, "repository": {"full_name": repo}, **extra}


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def call(app, method: str, path: str, body: bytes = b"", headers: dict | None = None,
         length: bool = True, extra: dict | None = None) -> tuple[int, dict]:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO(body),
               "CONTENT_TYPE": "application/json", "SERVER_NAME": "test", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http", **(extra or {})}
    if length:
        environ["CONTENT_LENGTH"] = str(len(body))
    for k, v in (headers or {}).items():
        environ["HTTP_" + k.upper().replace("-", "_")] = v
    got = {}

    def start_response(status, hdrs):
        got["status"] = int(status.split()[0])

    data = b"".join(app(environ, start_response))
    return got["status"], json.loads(data)


def gitea_post(app, payload: dict | bytes, *, event: str = "push", signature: str | None = "auto",
               delivery: str = "d-1") -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"X-Gitea-Event": event, "X-Gitea-Delivery": delivery}
    if signature == "auto":
        headers["X-Gitea-Signature"] = sign(body)
    elif signature is not None:
        headers["X-Gitea-Signature"] = signature
    return call(app, "POST", "/hooks/gitea", body, headers)


def github_post(app, payload: dict, *, event: str = "push") -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    return call(app, "POST", "/hooks/github", body,
                {"X-GitHub-Event": event, "X-GitHub-Delivery": "g-1", "X-Hub-Signature-256": "sha256=" + sign(body)})


@pytest.fixture
def queue(redis_url):
    return Queue(connect(redis_url, None))


@pytest.fixture
def receiver(queue):
    service = build(secret=SECRET, submit=queue.submit_deduped, mirrors=MirrorSet.of("mirrors"),
                    branches="^(main|master)$", agent="generic", policy=TRUSTED, max_body=4096)
    yield service.receiver
    service.stop()


# ----------------------------------------------------------------------------- signatures


def test_signatures_accept_only_the_right_hmac():
    body = b'{"a": 1}'
    good = sign(body)
    assert verify_gitea(SECRET.encode(), body, good)
    assert verify_gitea(SECRET.encode(), body, good.upper())  # hex case does not matter
    assert not verify_gitea(SECRET.encode(), body, sign(body, "other"))
    assert not verify_gitea(SECRET.encode(), body + b" ", good)
    assert not verify_gitea(SECRET.encode(), body, None)
    assert not verify_gitea(b"", body, sign(body, ""))  # an empty secret accepts nothing
    assert verify_github(SECRET.encode(), body, "sha256=" + good)
    assert not verify_github(SECRET.encode(), body, good)  # the scheme is required
    assert not verify_github(SECRET.encode(), body, "sha1=" + hmac.new(SECRET.encode(), body, "sha1").hexdigest())
    assert not verify_github(SECRET.encode(), body, "sha256=" + "é" * 64)  # non-ASCII never raises


# ----------------------------------------------------------------------------- Gitea pushes


def test_gitea_push_to_main_queues_one_job_with_repo_ref_and_commit(receiver, queue):
    status, reply = gitea_post(receiver, gitea_payload())
    assert status == 202 and reply["result"] == "queued"
    jobs = queue.list()
    assert len(jobs) == 1
    job = jobs[0]
    assert (job.id, job.repo, job.ref, job.commit, job.agent, job.source) == (
        reply["job"], "mirrors/app", "main", SHA2, "generic", "webhook")


def test_the_same_delivery_repeated_is_still_one_job(receiver, queue):
    first = gitea_post(receiver, gitea_payload(), delivery="d-1")
    again = [gitea_post(receiver, gitea_payload(), delivery="d-1") for _ in range(3)]
    assert first[1]["result"] == "queued"
    assert {r[1]["result"] for r in again} == {"duplicate"}
    assert {r[1]["job"] for r in again} == {first[1]["job"]}
    assert len(queue.list()) == 1


@pytest.mark.parametrize(("case", "want"), [
    ("wrong signature", 401), ("no signature", 401), ("signed with another secret", 401),
    ("oversized body", 413), ("malformed JSON", 400), ("not a push payload", 400),
    ("branch deletion", 202), ("non-matching branch", 202), ("tag push", 202),
])
def test_bad_or_unwanted_gitea_requests_queue_nothing(receiver, queue, case, want):
    payload = gitea_payload()
    kw: dict = {}
    if case == "wrong signature":
        kw["signature"] = "0" * 64
    elif case == "no signature":
        kw["signature"] = None
    elif case == "signed with another secret":
        kw["signature"] = sign(json.dumps(payload).encode(), "not-the-secret")
    elif case == "oversized body":
        payload = gitea_payload(padding="x" * 5000)
    elif case == "malformed JSON":
        payload = b'{"ref": "refs/heads/main", '
    elif case == "not a push payload":
        payload = {"ref": "refs/heads/main"}
    elif case == "branch deletion":
        payload = gitea_payload(after=ZERO, deleted=True)
    elif case == "non-matching branch":
        payload = gitea_payload(ref="refs/heads/feature/x")
    elif case == "tag push":
        payload = gitea_payload(ref="refs/tags/v1")
    status, reply = gitea_post(receiver, payload, **kw)
    assert status == want, reply
    if want == 202:
        assert reply["result"] == "ignored"
    assert queue.list() == []


def test_oversized_body_without_content_length_is_413(receiver, queue):
    body = json.dumps(gitea_payload(padding="x" * 5000)).encode()
    status, _ = call(receiver, "POST", "/hooks/gitea", body,
                     {"X-Gitea-Event": "push", "X-Gitea-Signature": sign(body)}, length=False)
    assert status == 413 and queue.list() == []


def test_ping_other_events_health_and_unknown_paths(receiver, queue):
    assert gitea_post(receiver, {"zen": "hi"}, event="ping")[0] == 200
    assert github_post(receiver, {"zen": "hi"}, event="ping") == (200, {"result": "pong"})
    status, reply = gitea_post(receiver, {"action": "opened"}, event="issues")
    assert status == 202 and reply["result"] == "ignored"
    assert gitea_post(receiver, {"zen": "hi"}, event="ping", signature=None)[0] == 401  # pings are signed too
    assert call(receiver, "GET", "/healthz")[0] == 200
    assert call(receiver, "GET", "/hooks/gitea")[0] == 405
    assert call(receiver, "POST", "/nope")[0] == 404
    assert queue.list() == []


def test_per_repo_branch_override(queue):
    service = build(secret=SECRET, submit=queue.submit_deduped, mirrors=MirrorSet.of("mirrors"),
                    branches="^main$", agent="generic", policy=TRUSTED, overrides={"mirrors/lib": "^release/"})
    r = service.receiver
    assert gitea_post(r, gitea_payload(repo="mirrors/lib", ref="refs/heads/main"))[1]["result"] == "ignored"
    assert gitea_post(r, gitea_payload(repo="mirrors/lib", ref="refs/heads/release/1"))[1]["result"] == "queued"
    assert gitea_post(r, gitea_payload(repo="mirrors/app", ref="refs/heads/main"))[1]["result"] == "queued"
    assert len(queue.list()) == 2


def test_logs_never_contain_the_secret_or_a_signature(receiver, caplog):
    caplog.set_level("DEBUG", logger="raibid.webhook")
    body = json.dumps(gitea_payload()).encode()
    gitea_post(receiver, body)
    gitea_post(receiver, body, signature="f" * 64)
    text = caplog.text
    assert "hooks/gitea" in text and "signature" in text  # the rejection is logged...
    assert SECRET not in text and sign(body) not in text and "f" * 64 not in text  # ...without values


def test_redis_down_answers_503_so_the_sender_retries(redis_server):
    q = Queue(connect("redis://127.0.0.1:1/0", None))
    service = build(secret=SECRET, submit=q.submit_deduped, mirrors=MirrorSet.of("mirrors"), branches="^main$",
                    agent="generic")
    status, reply = gitea_post(service.receiver, gitea_payload())
    assert status == 503 and reply["result"] == "error"


# ----------------------------------------------------------------------------- dedupe across paths


def test_webhook_then_a_later_dedupe_submit_of_the_same_commit_is_one_job(receiver, queue, run, monkeypatch):
    """The mirror's cron trigger uses the same key; `queue submit --dedupe` stands in for it here."""
    monkeypatch.setenv("RAIBID_AGENTS_TRUSTED_OWNERS", "[mirrors]")  # the CLI's config trusts what the receiver does
    status, reply = gitea_post(receiver, gitea_payload())
    assert reply["result"] == "queued"
    r = run("queue", "submit", "--repo", "mirrors/app", "--ref", "main", "--commit", SHA2,
            "--dedupe", dedupe_key("mirrors/app", SHA2, "generic"), "--json")
    assert r.code == 0, r.err
    assert r.json()["id"] == reply["job"]
    assert len(queue.list()) == 1


def test_a_cron_style_submit_first_then_the_webhook_is_one_job(receiver, queue):
    job, created = queue.submit_deduped(JobSpec(repo="mirrors/app", ref="main", commit=SHA2, agent="generic",
                                                source="mirror", dedupe=dedupe_key("mirrors/app", SHA2, "generic")))
    assert created
    status, reply = gitea_post(receiver, gitea_payload())
    assert (status, reply["result"], reply["job"]) == (202, "duplicate", job.id)
    assert len(queue.list()) == 1


# ----------------------------------------------------------------------------- routing by agents.trusted


def test_a_push_to_an_untrusted_repo_queues_on_the_untrusted_pool(queue):
    service = build(secret=SECRET, submit=queue.submit_deduped, mirrors=MirrorSet.of("mirrors"),
                    branches="^main$", agent="rust", policy=TrustPolicy.of(owners=["me"]))
    status, reply = gitea_post(service.receiver, gitea_payload(repo="mirrors/app"))
    assert status == 202 and reply["result"] == "queued" and reply["agent"] == "rust-untrusted"
    job = queue.get(reply["job"])
    assert job.agent == "rust-untrusted" and job.dedupe == dedupe_key("mirrors/app", SHA2, "rust-untrusted")
    assert [f["job"] for _, f in queue.r.xrange(queue.keys.stream("rust-untrusted"))] == [job.id]
    assert queue.r.xlen(queue.keys.stream("rust")) == 0
    # A trusted owner's push goes to the type's pool.
    status, reply = gitea_post(service.receiver, gitea_payload(repo="Me/tool"), delivery="d-2")
    assert reply["agent"] == "rust" and queue.get(reply["job"]).agent == "rust"
    assert queue.r.xlen(queue.keys.stream("rust")) == 1


def test_a_receiver_built_without_a_policy_trusts_nothing(queue):
    service = build(secret=SECRET, submit=queue.submit_deduped, mirrors=MirrorSet.of("mirrors"),
                    branches="^main$", agent="generic")
    status, reply = gitea_post(service.receiver, gitea_payload(repo="me/app"))
    assert status == 202 and queue.get(reply["job"]).agent == "generic-untrusted"


def test_cron_and_webhook_dedupe_on_the_untrusted_pool_too(queue):
    """Both enqueue through BuildTrigger with the same policy: the same pool, so the same key."""
    from raibid.webhook.trigger import BuildTrigger

    policy = TrustPolicy()
    cron = BuildTrigger(queue.submit_deduped, branches="^main$", agent="generic", policy=policy, source="mirror")
    from raibid.mirror.sync import Build

    (job_id,) = cron.submit_for_engine(Build("mirrors/app", "main", SHA2))
    assert queue.get(job_id).agent == "generic-untrusted"
    service = build(secret=SECRET, submit=queue.submit_deduped, mirrors=MirrorSet.of("mirrors"),
                    branches="^main$", agent="generic", policy=policy)
    status, reply = gitea_post(service.receiver, gitea_payload())
    assert (status, reply["result"], reply["job"], reply["agent"]) == (202, "duplicate", job_id, "generic-untrusted")
    assert len(queue.list()) == 1


# ----------------------------------------------------------------------------- the sync worker


def test_a_burst_to_one_repo_costs_at_most_two_syncs_and_keeps_the_last_push():
    started, release = threading.Event(), threading.Event()
    syncs: list[str] = []
    built: list[list[Push]] = []

    def sync(repo: str) -> None:
        syncs.append(repo)
        started.set()
        release.wait(10)

    worker = SyncWorker(sync, lambda repo, pushes: built.append(pushes), threads=2).start()
    try:
        pushes = [Push("o/app", "refs/heads/main", f"{i:040x}", f"{i + 1:040x}", False) for i in range(10)]
        assert worker.submit("o/app", pushes[0])
        assert started.wait(10)  # the first sync is running; the other nine arrive meanwhile
        for p in pushes[1:]:
            assert worker.submit("o/app", p)
        release.set()
        assert worker.wait_idle(10)
    finally:
        worker.stop()
    assert len(syncs) == 2
    assert [p.after for p in built[-1]] == [pushes[-1].after]  # the follow-up sync carries the last push only
    assert worker.stats.coalesced == 8 and worker.stats.failures == 0


def test_the_backlog_is_bounded_and_a_failed_sync_keeps_the_worker_alive():
    gate = threading.Event()
    calls = []

    def sync(repo: str) -> None:
        calls.append(repo)
        if repo == "o/bad":
            raise RuntimeError("boom")
        gate.wait(10)

    worker = SyncWorker(sync, threads=1, max_pending=2).start()
    try:
        push = Push("o/x", "refs/heads/main", SHA1, SHA2, False)
        assert worker.submit("o/bad", push)
        deadline = time.monotonic() + 10
        while worker.stats.failures < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.submit("o/a", push)  # now syncing, blocked on the gate
        while "o/a" not in calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.submit("o/b", push) and worker.submit("o/c", push)
        assert not worker.submit("o/d", push)  # two repos already waiting
        gate.set()
        assert worker.wait_idle(10)
    finally:
        worker.stop()
    assert worker.stats.failures == 1 and worker.stats.dropped == 1 and worker.stats.syncs == 3


# ----------------------------------------------------------------------------- mirrors


def test_mirror_set_from_the_mirror_config(tmp_path):
    from raibid.config import load_config

    listing = tmp_path / "repos.txt"
    listing.write_text("# comment\nAcme/Tool\n\nacme/other  # trailing\n")
    (tmp_path / "raibid.yaml").write_text(json.dumps({"mirror": {
        "repos": ["someone/Lib", {"source": "x/renamed", "target": "elsewhere/new-name"}],
        "lists": ["repos.txt"],
        "orgs": [{"name": "bigorg"}, {"name": "team", "include": ["^svc-"], "exclude": ["legacy"],
                                      "target_org": "team-mirrors", "forks": True}]}}))
    m = MirrorSet.from_config(load_config(tmp_path / "raibid.yaml").mirror, base_dir=tmp_path)
    assert m.target("someone/lib") == "mirrors/Lib"
    assert m.target("x/renamed") == "elsewhere/new-name"
    assert m.target("acme/tool") == "mirrors/Tool"
    assert m.target("BigOrg/anything") == "mirrors/anything"
    assert m.target("bigorg/fork", fork=True) is None and m.target("bigorg/old", archived=True) is None
    assert m.target("team/svc-api") == "team-mirrors/svc-api"
    assert m.target("team/svc-fork", fork=True) == "team-mirrors/svc-fork"
    assert m.target("team/svc-legacy") is None and m.target("team/web") is None
    assert m.target("stranger/repo") is None
    without_lists = MirrorSet.from_config(load_config(tmp_path / "raibid.yaml").mirror, lists=False)
    assert without_lists.target("acme/tool") is None


def test_github_push_for_an_unmirrored_repo_is_ignored(receiver):
    payload = {"ref": "refs/heads/main", "before": SHA1, "after": SHA2, "repository": {"full_name": "x/y"}}
    assert github_post(receiver, payload) == (202, {"result": "ignored", "reason": "x/y is not mirrored"})


def test_create_server_turns_an_unusable_address_into_a_typed_error():
    import socket

    from raibid.errors import ExitCode, RaibidError
    from raibid.webhook.server import create_server

    def app(environ, start_response):  # pragma: no cover - never called
        return []

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(RaibidError) as e:
            create_server(app, "127.0.0.1", port, max_body=1024)
    assert e.value.exit_code == ExitCode.FAILURE and "already in use" in e.value.message and e.value.hint
    with pytest.raises(RaibidError) as e:
        create_server(app, "no-such-host.invalid", 8080, max_body=1024)
    assert e.value.exit_code == ExitCode.USAGE and "does not resolve" in e.value.message


@pytest.mark.parametrize("field", ["repo", "before", "after"])
def test_a_trailing_newline_is_not_a_repository_or_a_commit(field):
    """events.py matched with "$", which lets "mirrors/app\\n" through; names and shas match in full."""
    from raibid.webhook.events import BadPayload, parse_push

    payload = gitea_payload()
    if field == "repo":
        payload["repository"]["full_name"] += "\n"
    else:
        payload[field] += "\n"
    with pytest.raises(BadPayload):
        parse_push(payload)
    assert parse_push(gitea_payload()).repo == "mirrors/app"


def test_github_hook_calls_refuse_a_name_with_a_trailing_newline():
    from raibid.errors import UsageError
    from raibid.github.client import GitHub

    with pytest.raises(UsageError, match="invalid GitHub repository name"):
        GitHub("http://127.0.0.1:1", "token").hooks("acme/app\n")


def test_waitress_is_pinned_past_its_known_cves():
    """waitress 3.0.0 and older: CVE-2024-49768 (pipelined request after an invalid one) and CVE-2024-49769 (DoS)."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    [waitress] = [Requirement(d) for d in deps if Requirement(d).name == "waitress"]
    assert not waitress.specifier.contains("3.0.0") and waitress.specifier.contains("3.0.1")


def gitea_form_delivery(payload: dict, secret: str = SECRET) -> tuple[bytes, dict]:
    """A form hook as Gitea sends it (services/webhook/deliver.go): the body is url.Values{"payload":
    {PayloadContent}}.Encode() (Go's QueryEscape: space is "+"), and X-Gitea-Signature and
    X-Hub-Signature-256 are the HMAC-SHA256 of PayloadContent, the indented JSON itself."""
    from urllib.parse import quote_plus

    content = json.dumps(payload, indent=2, ensure_ascii=False).encode()  # json.MarshalIndent(p, "", "  ")
    body = b"payload=" + quote_plus(content, safe="").encode()
    digest = sign(content, secret)
    return body, {"X-Gitea-Event": "push", "X-Gitea-Delivery": "f-1", "X-Gitea-Signature": digest,
                  "X-Hub-Signature-256": "sha256=" + digest, "X-Hub-Signature": "sha1=unused"}


def _form_call(app, body: bytes, headers: dict) -> tuple[int, dict]:
    environ_ct = {"CONTENT_TYPE": "application/x-www-form-urlencoded"}
    return call(app, "POST", "/hooks/gitea", body, headers, extra=environ_ct)


def test_a_gitea_form_hook_verifies_over_the_json_payload_gitea_signs(receiver, queue):
    payload = gitea_payload(commits=[{"message": "fix: a+b & c=d 100% ünïcode\n\nbody"}])
    body, headers = gitea_form_delivery(payload)
    status, reply = _form_call(receiver, body, headers)
    assert (status, reply["result"]) == (202, "queued")
    assert [(j.repo, j.commit) for j in queue.list()] == [("mirrors/app", SHA2)]


@pytest.mark.parametrize("case", ["signed raw body", "tampered payload", "two payload fields", "no payload field",
                                  "other secret"])
def test_a_gitea_form_hook_with_a_wrong_signature_is_refused(receiver, queue, case):
    body, headers = gitea_form_delivery(gitea_payload())
    if case == "signed raw body":  # what Gitea never signs
        headers["X-Gitea-Signature"] = sign(body)
    elif case == "tampered payload":
        body = body.replace(SHA2.encode(), ("3" * 40).encode())
    elif case == "two payload fields":
        body += b"&payload=%7B%7D"
    elif case == "no payload field":
        body = body.replace(b"payload=", b"data=")
    else:
        body, headers = gitea_form_delivery(gitea_payload(), secret="other")
    status, _ = _form_call(receiver, body, headers)
    assert status == 401 and queue.list() == []


def test_a_github_form_hook_verifies_over_the_body_github_signs(receiver):
    from urllib.parse import quote_plus

    payload = {"ref": "refs/heads/main", "before": SHA1, "after": SHA2, "repository": {"full_name": "x/y"}}
    body = b"payload=" + quote_plus(json.dumps(payload)).encode()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "g-f", "X-Hub-Signature-256": "sha256=" + sign(body)}
    status, reply = call(receiver, "POST", "/hooks/github", body, headers,
                         extra={"CONTENT_TYPE": "application/x-www-form-urlencoded"})
    assert (status, reply["result"]) == (202, "ignored") and reply["reason"] == "x/y is not mirrored"


# ----------------------------------------------------------------------------- real GitHub payloads, redeliveries


def octokit(event: str) -> list[dict]:
    """The `event` payloads of @octokit/webhooks-examples (tests/fixtures/octokit-webhooks-examples)."""
    from pathlib import Path

    path = Path(__file__).parent / "fixtures" / "octokit-webhooks-examples" / "push-and-ping.json"
    return json.loads(path.read_text(encoding="utf-8"))[event]


def github_send(app, body: bytes, *, event: str = "push", delivery: str | None = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
                ) -> tuple[int, dict]:
    headers = {"X-GitHub-Event": event, "X-Hub-Signature-256": "sha256=" + sign(body)}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return call(app, "POST", "/hooks/github", body, headers)


def test_every_octokit_push_and_ping_example_is_understood():
    from raibid.webhook.receiver import Receiver

    pushes = octokit("push")
    assert len(pushes) >= 5
    handler = Handler()
    r = Receiver(SECRET, github=handler)
    for i, p in enumerate(pushes):
        assert github_send(r, json.dumps(p).encode(), delivery=f"d-{i}")[0] == 202
    assert [(h.repo, h.ref, h.before, h.after, h.deleted, h.fork) for h in handler.pushes] == [
        (p["repository"]["full_name"], p["ref"], p["before"], p["after"], p["deleted"], p["repository"]["fork"])
        for p in pushes]
    for p in octokit("ping"):
        assert github_send(r, json.dumps(p).encode(), event="ping") == (200, {"result": "pong"})


class Handler:
    """The GitHub push handler seam of the Receiver: records pushes, answers what it is told."""

    def __init__(self, *answers: int) -> None:
        self.pushes: list[Push] = []
        self.answers = list(answers)

    def __call__(self, push: Push) -> tuple[int, dict]:
        self.pushes.append(push)
        status = self.answers.pop(0) if self.answers else 202
        return status, {"result": "sync scheduled" if status < 300 else "dropped"}


def _receiver(handler, client) -> object:
    from raibid.queue import Keys
    from raibid.webhook.deliveries import Deliveries
    from raibid.webhook.receiver import Receiver

    return Receiver(SECRET, github=handler, deliveries=Deliveries(client, Keys("raibid"), url="redis://test"))


def test_a_github_redelivery_is_acknowledged_and_does_nothing_even_after_a_restart(redis_url):
    from raibid.webhook.deliveries import DELIVERY_TTL

    client = connect(redis_url, None)
    body = json.dumps(octokit("push")[4]).encode()  # a real push: refs/heads/master of Codertocat/Hello-World
    handler = Handler()
    first = _receiver(handler, client)
    assert github_send(first, body)[0] == 202
    assert github_send(first, body) == (200, {"result": "duplicate delivery",
                                              "delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
    restarted = _receiver(handler, connect(redis_url, None))  # a new receiver process, the same Redis
    assert github_send(restarted, body)[1]["result"] == "duplicate delivery"
    assert [p.ref for p in handler.pushes] == ["refs/heads/master"]  # one push handled, once
    assert github_send(restarted, body, delivery="another-guid")[0] == 202  # a new delivery is handled
    assert len(handler.pushes) == 2
    ttl = client.ttl("raibid:webhook:delivery:github:72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert DELIVERY_TTL - 60 < ttl <= DELIVERY_TTL


def test_a_delivery_that_failed_is_handled_when_redelivered(redis_url):
    handler = Handler(503)
    r = _receiver(handler, connect(redis_url, None))
    body = json.dumps(octokit("push")[4]).encode()
    assert github_send(r, body)[0] == 503  # e.g. the sync backlog was full
    assert github_send(r, body)[0] == 202  # its redelivery is handled
    assert github_send(r, body)[1]["result"] == "duplicate delivery"
    assert len(handler.pushes) == 2


@pytest.mark.parametrize("delivery", [None, "", "guid\n", "a:b", "x" * 200])
def test_a_delivery_without_a_usable_id_is_handled_every_time(redis_url, delivery):
    client = connect(redis_url, None)
    handler = Handler()
    r = _receiver(handler, client)
    body = json.dumps(octokit("push")[4]).encode()
    assert [github_send(r, body, delivery=delivery)[0] for _ in range(2)] == [202, 202]
    assert len(handler.pushes) == 2 and client.keys("raibid:webhook:*") == []


def test_redis_down_the_delivery_is_handled_not_dropped(caplog):
    from tests.harness.redis_server import free_port

    handler = Handler()
    r = _receiver(handler, connect(f"redis://127.0.0.1:{free_port()}", None, timeout=0.5))
    assert github_send(r, json.dumps(octokit("push")[4]).encode())[0] == 202
    assert len(handler.pushes) == 1 and "cannot check for a redelivery" in caplog.text
