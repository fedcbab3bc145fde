"""The job page and its log: the real receiver on waitress, real Redis, and a real headless Chromium.

Chromium is Debian's ``chromium`` (``scripts/test`` installs it); a machine without it fails
these tests, it never skips them.
"""

from __future__ import annotations

import http.client
import shutil
import struct
import subprocess
import threading
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from raibid.cluster.secrets import generated_secrets_from
from raibid.queue import JobSpec, Queue
from raibid.webhook.jobpage import JobLinks, JobPages, LogView, capability
from raibid.webhook.mirrors import MirrorSet
from raibid.webhook.server import build, start_server

KEY = "page-key-sentinel-9f3c"
SECRET = "whsec-sentinel-jobpage"
HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(2)">',
    "\x1b[31mred\x1b[0m and \x1b[2J cleared",
    "\x1b]8;;https://evil.example/\x07click me\x1b]8;;\x07",
    "\x1b]52;c;ZWNobyBwd25lZA==\x07",
    "quote \" apostrophe ' amp & lt < gt >",
]


def make_queue(url: str) -> Queue:
    return Queue(redis.Redis.from_url(url, decode_responses=True), url=url)


class Served:
    """The receiver as `webhook serve` builds it (``build``, waitress), on 127.0.0.1."""

    def __init__(self, q: Queue, *, threads: int = 4, max_followers: int = 2, follow_max: float = 30.0) -> None:
        self.q = q
        # The pages check capabilities with the key alone, and link to their log relatively.
        self.pages = JobPages(q, JobLinks("http://placeholder", KEY), max_followers=max_followers,
                              follow_max=follow_max)
        service = build(secret=SECRET, submit=q.submit_deduped, mirrors=MirrorSet(target_org="mirrors"), branches="^main$",
                        agent="generic", pages=self.pages)
        self.service = service
        self.server, self.thread = start_server(service.receiver, threads=threads)
        self.base = f"http://127.0.0.1:{self.server.effective_port}"
        self.links = JobLinks(self.base, KEY)

    def get(self, path: str, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.effective_port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def path(self, url: str) -> str:
        parts = urlsplit(url)
        return parts.path + ("?" + parts.query if parts.query else "")

    def close(self) -> None:
        self.server.close()
        self.thread.join(5)
        self.service.stop()


@pytest.fixture
def q(redis_url) -> Queue:
    return make_queue(redis_url)


@pytest.fixture
def served(q):
    s = Served(q)
    yield s
    s.close()


def run_job(q: Queue, lines: list[str], *, status: str | None = "succeeded", exit_code: int | None = 0,
            error: str | None = None, **spec):
    """A job claimed by a worker, with its log; finished as ``status`` (None: left running)."""
    job = q.submit(JobSpec(**{"repo": "mirrors/app", "ref": "main", "commit": "a" * 40, "context": "raibid/test",
                              "pipeline": "test", **spec}))
    claim = q.claim("generic", "agent-pod-1")
    assert claim is not None and claim.job.id == job.id
    q.append_log(job.id, lines)
    if status is not None:
        assert q.finish(claim, status, exit_code=exit_code, error=error)
    return job, claim


# ----------------------------------------------------------------------------- the capability


def test_a_link_carries_the_jobs_capability_and_only_that_one_checks():
    links = JobLinks("https://ci.example.org/", KEY)
    url = links.url("01JOBAAAAAAAAAAAAAAAAAAAAA")
    cap = capability(KEY.encode(), "01JOBAAAAAAAAAAAAAAAAAAAAA")
    assert url == f"https://ci.example.org/jobs/01JOBAAAAAAAAAAAAAAAAAAAAA?k={cap}"
    assert len(cap) == 43 and set(cap) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert links.check("01JOBAAAAAAAAAAAAAAAAAAAAA", cap)
    assert not links.check("01JOBAAAAAAAAAAAAAAAAAAAAB", cap)  # another job's
    assert not links.check("01JOBAAAAAAAAAAAAAAAAAAAAA", JobLinks("https://x", "other-key").capability(
        "01JOBAAAAAAAAAAAAAAAAAAAAA"))
    assert not links.check("01JOBAAAAAAAAAAAAAAAAAAAAA", cap[:-1]) and not links.check("01JOB", "")
    assert links.log_url("J1", follow=True).endswith(f"/jobs/J1/log?k={links.capability('J1')}&follow=1")
    assert KEY not in repr(links)


def test_an_empty_key_or_a_base_that_is_not_http_is_refused():
    from raibid.errors import UsageError

    with pytest.raises(UsageError, match="key is empty"):
        JobLinks("https://ci.example.org", "")
    with pytest.raises(UsageError, match="base URL"):
        JobLinks("ci.example.org", KEY)


def test_the_same_404_without_a_capability_with_a_wrong_one_and_for_a_missing_job(served, q):
    job, _ = run_job(q, ["hello"])
    good = served.path(served.links.url(job.id))
    assert served.get(good)[0] == 200
    missing = "01NOSUCHJOBAAAAAAAAAAAAAAA"
    answers = [served.get(p) for p in (
        f"/jobs/{job.id}", f"/jobs/{job.id}?k=", f"/jobs/{job.id}?k=AAAA",
        f"/jobs/{job.id}?k={served.links.capability(missing)}",  # another job's capability
        served.path(served.links.url(missing)),  # a right capability, no such job
        f"/jobs/{job.id}/log", served.path(served.links.log_url(missing)),
        good + "&k=" + served.links.capability(job.id),  # two capabilities
        f"/jobs/{job.id}/other?k={served.links.capability(job.id)}", "/jobs/../healthz?k=x")]
    for status, headers, body in answers:
        headers.pop("date", None)
        assert (status, body) == (404, b"not found\n")
        assert headers == answers[0][1]
    assert answers[0][1]["cache-control"] == "no-store"


def test_the_job_is_looked_up_only_after_the_capability_checks_out():
    """With Redis away, a wrong capability is still 404 (nothing was asked) and a right one is 503."""
    import socket

    from raibid.queue.connection import no_retry

    with socket.socket() as sock:  # a port with nothing behind it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gone = Queue(redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True),
                 retry=no_retry())
    s = Served(gone)
    try:
        job_id = "01JOBAAAAAAAAAAAAAAAAAAAAA"
        assert s.get(f"/jobs/{job_id}?k=wrong")[:3:2] == (404, b"not found\n")
        status, headers, body = s.get(s.path(s.links.url(job_id)))
        assert (status, headers["retry-after"]) == (503, "10") and b"unavailable" in body
    finally:
        s.close()


def test_page_and_log_answers_carry_the_security_headers(served, q):
    job, _ = run_job(q, ["one", "two"])
    status, page_headers, _ = served.get(served.path(served.links.url(job.id)))
    assert status == 200 and page_headers["content-type"] == "text/html; charset=utf-8"
    status, log_headers, body = served.get(served.path(served.links.log_url(job.id)))
    assert status == 200 and log_headers["content-type"] == "text/plain; charset=utf-8"
    assert body == b"one\ntwo\n"
    for headers in (page_headers, log_headers):
        assert headers["cache-control"] == "no-store"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["content-security-policy"].startswith("default-src 'none'; style-src 'unsafe-inline'")
        assert "script-src" not in headers["content-security-policy"]


def test_the_plain_log_is_every_line_exactly_in_order_across_pages(served, q):
    lines = [f"line {i} " + "x" * (i % 50) for i in range(4500)] + HOSTILE  # more than two Redis pages
    job, _ = run_job(q, lines)
    status, _, body = served.get(served.path(served.links.log_url(job.id)))
    assert status == 200 and body.decode() == "".join(line + "\n" for line in lines)


def test_the_page_shows_the_tail_bounded_in_lines_and_bytes(q):
    view = LogView(tail_lines=3, tail_bytes=10)
    view.feed([(f"{i}-0", line) for i, line in enumerate(["aaaa", "bbbb", "cccc", "dddd", "eeee"], 1)])
    assert view.lines == 5 and view.tail_lines() == ["dddd", "eeee"]  # 3 lines, cut to 10 bytes


def test_steps_are_read_from_the_log_with_their_durations_and_results():
    view = LogView(2000, 1 << 20)
    view.feed([("1000-0", "raibid: step build (1/3): make all"), ("1500-0", "compiling"),
               ("4000-0", "raibid: step build exited 0 after 3.0s"),
               ("4100-0", "raibid: step test (2/3): make test"),
               ("9000-0", "raibid: step test exited 2 after 4.9s")])
    [build_, test_] = view.steps
    assert (build_.name, build_.index, build_.total, build_.command, build_.exit_code, build_.seconds) == (
        "build", 1, 3, "make all", 0, 3.0)
    assert (test_.name, test_.exit_code, test_.seconds, test_.started_ms) == ("test", 2, 4.9, 4100)


# ----------------------------------------------------------------------------- following


class Follower(threading.Thread):
    """Reads a followed log to its end in the background; ``chunks`` arrive as the server sends them."""

    def __init__(self, served: Served, path: str) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", served.server.effective_port, timeout=20)
        self.conn.request("GET", path)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.chunks: list[bytes] = []
        self.ended = threading.Event()

    def run(self) -> None:
        try:
            while True:
                data = self.resp.read1(65536)
                if not data:
                    break
                self.chunks.append(data)
        finally:
            self.ended.set()
            self.conn.close()

    def text(self) -> str:
        return b"".join(self.chunks).decode()


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_follow_streams_new_lines_and_ends_when_the_job_finishes(served, q):
    job, claim = run_job(q, ["before"], status=None)
    f = Follower(served, served.path(served.links.log_url(job.id, follow=True)))
    assert f.status == 200 and f.resp.getheader("Content-Type") == "text/plain; charset=utf-8"
    assert f.resp.getheader("Cache-Control") == "no-store"
    f.start()
    wait_for(lambda: "before\n" in f.text())
    q.append_log(job.id, ["during 1", "during 2"])
    wait_for(lambda: "during 2\n" in f.text())
    assert not f.ended.is_set()
    q.append_log(job.id, ["last words"])
    assert q.finish(claim, "succeeded", exit_code=0)
    assert f.ended.wait(10), "the follow stream did not end with the job"
    assert f.text() == "before\nduring 1\nduring 2\nlast words\n"


def test_followers_are_capped_and_the_webhook_is_still_answered(q):
    s = Served(q, threads=2, max_followers=1)
    try:
        job, claim = run_job(q, ["x"], status=None)
        path = s.path(s.links.log_url(job.id, follow=True))
        first = Follower(s, path)
        first.start()
        status, headers, body = s.get(path)
        assert status == 503 and headers["retry-after"] == "30" and b"followed already" in body
        assert s.get("/healthz")[0] == 200  # one thread is always left for hooks and probes
        assert s.get(s.path(s.links.log_url(job.id)))[0] == 200  # and the log without follow
        assert q.finish(claim, "succeeded", exit_code=0)
        assert first.ended.wait(10)
        again = Follower(s, path)  # the slot is free again (the job is over: the log, then the end)
        assert again.status == 200
        again.start()
        assert again.ended.wait(10) and again.text() == "x\n"
    finally:
        s.close()


def test_a_follow_ends_after_follow_max_while_the_job_still_runs(q):
    s = Served(q, follow_max=0.5)
    try:
        job, _ = run_job(q, ["slow"], status=None)
        f = Follower(s, s.path(s.links.log_url(job.id, follow=True)))
        f.start()
        assert f.ended.wait(10)
        assert f.text().startswith("slow\nraibid-webhook: stopped following after 0.5s")
    finally:
        s.close()


# ----------------------------------------------------------------------------- the key in the cluster


def test_the_page_key_is_read_back_from_the_live_secret_and_an_older_secret_gets_one_generated():
    import base64

    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    meta = {"name": "raibid-webhook", "namespace": "ns"}
    both = {"kind": "Secret", "metadata": meta, "data": {"secret": b64("hooks"), "page-key": b64("pages")}}
    assert generated_secrets_from([both], "ns") == {"webhook_secret": "hooks", "webhook_page_key": "pages"}
    older = {"kind": "Secret", "metadata": meta, "data": {"secret": b64("hooks")}}
    assert generated_secrets_from([older], "ns") == {"webhook_secret": "hooks"}  # `up` generates the page key


def test_links_point_at_page_url_else_public_else_internal_else_the_service(monkeypatch):
    from raibid.app import Application
    from raibid.cli.webhook import job_links

    assert job_links(Application()) is None  # no key in the env: no pages, no links
    monkeypatch.setenv("RAIBID_WEBHOOK_PAGE_KEY", KEY)
    assert job_links(Application()).url("J1").startswith("http://raibid-webhook.raibid-ci.svc:8080/jobs/J1?k=")
    monkeypatch.setenv("RAIBID_WEBHOOK_INTERNAL_URL", "http://hooks.internal:9000/")
    assert job_links(Application()).base_url == "http://hooks.internal:9000"
    monkeypatch.setenv("RAIBID_WEBHOOK_PUBLIC_URL", "https://ci.example.org")
    assert job_links(Application()).base_url == "https://ci.example.org"
    monkeypatch.setenv("RAIBID_WEBHOOK_PAGE_URL", "https://logs.example.org/ci")
    links = job_links(Application())
    assert links.url("J1") == f"https://logs.example.org/ci/jobs/J1?k={capability(KEY.encode(), 'J1')}"


def test_serve_refuses_as_many_followers_as_threads(run, monkeypatch):
    monkeypatch.setenv("RAIBID_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("RAIBID_WEBHOOK_MAX_FOLLOWERS", "2")
    r = run("webhook", "serve", "--threads", "2", "--listen", "127.0.0.1:18080")
    assert r.code == 2 and "max_followers (2) must be below --threads (2)" in r.err


# ----------------------------------------------------------------------------- in a real browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
WINDOW = (800, 600)


def chromium(tmp_path: Path, url: str, *, screenshot: Path | None = None) -> str:
    """One headless Chromium run against ``url``: ``--dump-dom`` (returned) or ``--screenshot``."""
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: `scripts/test` installs it (apt-get install chromium)"
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    what = [f"--screenshot={screenshot}", f"--window-size={WINDOW[0]},{WINDOW[1]}"] if screenshot else ["--dump-dom"]
    proc = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *what, url],
                          capture_output=True, timeout=45, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout.decode()


class Elements(HTMLParser):
    """Every element of a DOM and the text of each element with an id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag not in ("meta", "br", "img", "link", "input"):
            self._open.append(a.get("id"))
            if a.get("id"):
                self.text.setdefault(a["id"], "")

    def handle_endtag(self, tag):
        if self._open and tag not in ("meta", "br", "img", "link", "input"):
            self._open.pop()

    def handle_data(self, data):
        for ident in self._open:
            if ident:
                self.text[ident] += data


def parse_dom(dom: str) -> Elements:
    e = Elements()
    e.feed(dom)
    return e


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB or RGBA, non-interlaced PNG, with the stdlib."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 255
            elif ftype == 2:
                line[x] = (line[x] + b) & 255
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
        prev = line
    return width, height, rows


def test_chromium_screenshot_shows_a_failed_jobs_page_in_its_status_colour(served, q, tmp_path):
    lines = ["raibid: step build (1/2): make all", "compiling things", "raibid: step build exited 0 after 1.5s",
             "raibid: step test (2/2): make test", "3 tests failed", "raibid: step test exited 1 after 0.2s"]
    job, _ = run_job(q, lines, status="failed", exit_code=1, error="step test exited 1")
    shot = tmp_path / "page.png"
    started = time.monotonic()
    chromium(tmp_path, served.links.url(job.id), screenshot=shot)
    took = time.monotonic() - started
    width, height, rows = read_png(shot)
    assert (width, height) == WINDOW
    colours = {row[i:i + 3] for row in rows[::7] for i in range(0, len(row), 21)}
    assert len(colours) > 20, "the screenshot is (nearly) blank"
    red = bytes.fromhex("cf222e")  # the header of a failed job, across the top
    pixel = lambda x, y: rows[y][3 * x:3 * x + 3]  # noqa: E731
    assert [pixel(x, 5) for x in (5, 400, 795)] == [red] * 3, "no failed-red header in the screenshot"
    assert pixel(795, height - 5) == b"\xff\xff\xff"  # the page below it is white
    assert took < 30


def test_chromium_reads_the_jobs_record_and_steps_on_the_page(served, q, tmp_path):
    lines = ["raibid: step build (1/2): make all", "compiling things", "raibid: step build exited 0 after 1.5s",
             "raibid: step test (2/2): make test", "3 tests failed", "raibid: step test exited 1 after 0.2s"]
    job, _ = run_job(q, lines, status="failed", exit_code=1, error="step test exited 1")
    dom = parse_dom(chromium(tmp_path, served.links.url(job.id)))
    assert dom.text["status"] == "failed"
    steps = dom.text["steps"]
    assert "build" in steps and "exit 0" in steps and "1.5s" in steps and "exit 1" in steps and "0.2s" in steps
    job_text = dom.text["job"]
    for want in ("mirrors/app", "main", "a" * 40, "raibid/test", "agent-pod-1", "step test exited 1"):
        assert want in job_text
    links = [a["href"] for tag, a in dom.tags if tag == "a"]
    assert links == [f"{job.id}/log?k={served.links.capability(job.id)}"]  # finished: no follow link


def test_chromium_shows_a_hostile_log_as_text_and_creates_no_element_from_it(served, q, tmp_path):
    hostile_ref = 'main"><script>alert(3)</script>'
    job, _ = run_job(q, ["raibid: step <b>x</b> (1/1): <i>y</i>", *HOSTILE], status="failed", exit_code=1,
                     error='<img src=x onerror="alert(4)">', ref=hostile_ref)
    dom = parse_dom(chromium(tmp_path, served.links.url(job.id)))
    tags = {tag for tag, _ in dom.tags}
    assert tags <= {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "div", "main", "table",
                    "tbody", "tr", "th", "td", "p", "a", "pre"}, tags  # only the page's own elements
    assert [a for tag, a in dom.tags if tag == "a"] == [{"href": f"{job.id}/log?k={served.links.capability(job.id)}"}]
    assert not any(k.startswith("on") for _, attrs in dom.tags for k in attrs)
    shown = dom.text["log"]
    assert "<script>alert(1)</script>" in shown and '<img src=x onerror="alert(2)">' in shown
    assert "\\x1b[31mred\\x1b[0m and \\x1b[2J cleared" in shown  # ANSI shown escaped, as text
    assert "\\x1b]8;;https://evil.example/\\x07click me\\x1b]8;;\\x07" in shown  # OSC 8
    assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in shown  # OSC 52
    assert "\x1b" not in dom.text["log"] and "\x07" not in dom.text["log"]
    assert "quote \" apostrophe ' amp & lt < gt >" in shown
    assert hostile_ref in dom.text["job"] and '<img src=x onerror="alert(4)">' in dom.text["job"]
    assert "<b>x</b>" in dom.text["steps"]


def test_chromium_gets_the_404_without_the_capability(served, q, tmp_path):
    """One browser start; the HTTP test above shows every other 404 is the same bytes and headers."""
    job, _ = run_job(q, ["secret build output"])
    dom = chromium(tmp_path, f"{served.base}/jobs/{job.id}")
    assert "not found" in dom and "secret build output" not in dom and job.id not in dom


def test_a_running_jobs_page_reloads_itself_and_offers_follow(served, q, tmp_path):
    job, _ = run_job(q, ["raibid: step build (1/1): make", "working"], status=None)
    dom = parse_dom(chromium(tmp_path, served.links.url(job.id)))
    assert dom.text["status"] == "running" and "running" in dom.text["steps"] and "so far" in dom.text["steps"]
    assert ("meta", {"http-equiv": "refresh", "content": "5"}) in dom.tags
    cap = served.links.capability(job.id)
    assert [a["href"] for tag, a in dom.tags if tag == "a"] == [f"{job.id}/log?k={cap}",
                                                                 f"{job.id}/log?k={cap}&follow=1"]


def test_the_page_shows_the_images_the_job_built_escaped(q):
    from raibid.webhook.jobpage import render_page

    ref = "gitea.local:30080/mirrors/app:" + "a" * 40 + "@sha256:" + "ab" * 32
    job, claim = run_job(q, ["built"], status=None)
    assert q.finish(claim, "succeeded", exit_code=0, image=f"{ref} <b>x</b>")
    page = render_page(q.get(job.id), LogView(10, 1 << 20), JobLinks("http://h", "k" * 32), now=0.0)
    assert f"<tr><th>Images</th><td>{ref} &lt;b&gt;x&lt;/b&gt;</td></tr>" in page
    plain, _ = run_job(q, ["no image"])
    assert "<th>Images</th>" not in render_page(q.get(plain.id), LogView(10, 1 << 20), JobLinks("http://h", "k" * 32),
                                                now=0.0)
