"""The job page: a read-only view of one job and its log, the ``target_url`` of its commit status.

Routes (served by the receiver, see docs/webhooks.md, *Job pages*):

- ``GET /jobs/{id}?k=CAP``: an HTML page with the job's record, the steps as its log shows
  them and the log's tail (at most ``tail_lines`` lines and ``tail_bytes`` bytes);
- ``GET /jobs/{id}/log?k=CAP``: the whole log as ``text/plain``, read from Redis a page at a
  time; with ``&follow=1`` it stays open and sends new lines until the job is finished or
  ``follow_max`` seconds have passed. At most ``max_followers`` follow at once (503 beyond),
  so followers never hold every server thread and the webhooks keep being answered.

``CAP`` is the job's capability: HMAC-SHA256 of the job id under the page key, base64url
without padding. A missing or wrong capability and a job that does not exist get the same
404, and the job is looked up only after the capability checks out, so the answer tells
nothing about which jobs exist.

Everything a build printed or a repo controls (log lines, step names, refs, errors) is
shown with its control and bidi characters escaped (``raibid.safetext.printable``), then
HTML-escaped. The page has no JavaScript; a running job's page reloads itself with a
``<meta http-equiv="refresh">``. Every answer carries ``no-store``, ``nosniff``, a CSP that
allows nothing but inline style, and ``no-referrer`` (the capability is in the URL).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from html import escape
from typing import Any, Protocol
from urllib.parse import parse_qs, quote

from raibid.errors import NotFound, RaibidError, UsageError
from raibid.queue.model import TERMINAL, Job
from raibid.safetext import printable
from raibid.timeutil import parse_time

log = logging.getLogger("raibid.webhook")

_CONTEXT = b"raibid job page v1\x00"  # the page key signs job ids for this use only
JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what a job id in a page path may be (ULIDs and test ids)
LOG_PAGE = 2000  # log entries per Redis read when streaming the log
SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy",
     "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
]
_STEP_START = re.compile(r"raibid: step (?P<name>.+?) \((?P<index>\d+)/(?P<total>\d+)\): (?P<command>.*)")
_STEP_END = re.compile(r"raibid: step (?P<name>.+) exited (?P<code>-?\d+) after (?P<seconds>\d+(?:\.\d+)?)s")
_STATUS_COLOURS = {"queued": "#6e7781", "running": "#0969da", "succeeded": "#1a7f37", "failed": "#cf222e",
                   "cancelled": "#6e7781", "dead": "#8250df"}


def capability(key: bytes, job_id: str) -> str:
    """The capability of one job: HMAC-SHA256 of its id under ``key``, base64url without padding (43 chars)."""
    mac = hmac.new(key, _CONTEXT + job_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


class JobLinks:
    """Links to job pages, each carrying its job's capability; and the check of one.

    ``base_url`` is where the receiver is reached (``webhook.page_url``); ``key`` the page
    key (Secret ``raibid-webhook``, key ``page-key``, in the env var ``webhook.page_key_env``).
    """

    def __init__(self, base_url: str, key: str) -> None:
        if not key:
            raise UsageError("the job page key is empty", hint="`raibid cluster up -c webhook` generates it")
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise UsageError(f"invalid job page base URL {base_url!r}: expected http(s)://HOST[/PATH]",
                             hint="set webhook.page_url (or webhook.public_url)")
        self.base_url = base_url.rstrip("/")
        self._key = key.encode()

    def __repr__(self) -> str:  # never the key
        return f"JobLinks({self.base_url!r})"

    def capability(self, job_id: str) -> str:
        return capability(self._key, job_id)

    def check(self, job_id: str, cap: str | None) -> bool:
        """Whether ``cap`` is the capability of ``job_id``, compared in constant time."""
        if not cap or not JOB_ID_RE.fullmatch(job_id):
            return False
        return hmac.compare_digest(cap.encode("utf-8", "replace"), self.capability(job_id).encode())

    def url(self, job_id: str) -> str:
        """The job page: ``<base>/jobs/<id>?k=<capability>``."""
        return f"{self.base_url}/jobs/{quote(job_id, safe='')}?k={self.capability(job_id)}"

    def log_url(self, job_id: str, *, follow: bool = False) -> str:
        """The plain text log (``follow``: streamed while the job runs)."""
        return (f"{self.base_url}/jobs/{quote(job_id, safe='')}/log?k={self.capability(job_id)}"
                + ("&follow=1" if follow else ""))


class JobSource(Protocol):
    """What the pages read: the queue's admin side (``raibid.queue.Queue``)."""

    def get(self, job_id: str) -> Job: ...

    def logs(self, job_id: str, after: str = "-", count: int | None = None) -> list[tuple[str, str]]: ...

    def wait_logs(self, job_id: str, after: str, block_ms: int) -> list[tuple[str, str]]: ...


@dataclass
class Step:
    """One step as the log shows it. The build can print look-alike lines: this is a view, not a record."""

    name: str
    index: int
    total: int
    command: str
    started_ms: int  # the time of its start line (the log entry id)
    exit_code: int | None = None
    seconds: float | None = None  # as the agent measured it


def _entry_ms(entry_id: str) -> int:
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else 0


class LogView:
    """One pass over a log: its tail (bounded in lines and bytes), the step lines, the line count."""

    def __init__(self, tail_lines: int, tail_bytes: int) -> None:
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.tail_bytes = tail_bytes
        self.steps: list[Step] = []
        self.lines = 0

    def feed(self, entries: Iterable[tuple[str, str]]) -> None:
        for entry_id, line in entries:
            self.lines += 1
            self.tail.append(line)
            if line.startswith("raibid: step "):
                self._step(entry_id, line)

    def _step(self, entry_id: str, line: str) -> None:
        start = _STEP_START.fullmatch(line)
        if start:
            self.steps.append(Step(start["name"], int(start["index"]), int(start["total"]), start["command"],
                                   _entry_ms(entry_id)))
            return
        end = _STEP_END.fullmatch(line)
        if end and self.steps and self.steps[-1].name == end["name"] and self.steps[-1].exit_code is None:
            self.steps[-1].exit_code = int(end["code"])
            self.steps[-1].seconds = float(end["seconds"])

    def tail_lines(self) -> list[str]:
        """The tail, first lines dropped until it fits ``tail_bytes``."""
        lines = list(self.tail)
        size = sum(len(s.encode("utf-8", "replace")) + 1 for s in lines)
        start = 0
        while size > self.tail_bytes and start < len(lines):
            size -= len(lines[start].encode("utf-8", "replace")) + 1
            start += 1
        return lines[start:]


def format_seconds(seconds: float | None) -> str:
    """``42.0s``, ``3m 05s``, ``1h 02m`` (empty for None)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def _between(start: str | None, end: str | None) -> float | None:
    a, b = parse_time(start), parse_time(end)
    return (b - a).total_seconds() if a and b else None


def _h(value: Any) -> str:
    """Repo- or build-controlled text for HTML: controls shown escaped, then HTML-escaped."""
    return escape(printable(value), quote=True)


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1f2328;background:#fff}
header{padding:14px 20px;color:#fff}
header h1{margin:0;font-size:20px}
main{padding:12px 20px}
table{border-collapse:collapse;margin:8px 0 16px}
th,td{text-align:left;padding:3px 12px 3px 0;vertical-align:top}
th{color:#59636e;font-weight:600}
pre{background:#f6f8fa;border:1px solid #d1d9e0;padding:10px;overflow:auto;white-space:pre-wrap;
word-break:break-all;font:12px/1.4 ui-monospace,monospace}
.bad{color:#cf222e}.ok{color:#1a7f37}
"""


def render_page(job: Job, view: LogView, links: JobLinks, *, now: float, refresh: int = 5) -> str:
    """The HTML of one job page. Every value from the job or its log goes through ``_h``."""
    rel = quote(job.id, safe="")
    cap = links.capability(job.id)
    running = job.status not in TERMINAL
    colour = _STATUS_COLOURS.get(job.status, "#6e7781")
    queued_s = _between(job.submitted_at, job.started_at)
    run_s = _between(job.started_at, job.finished_at)
    if run_s is None and job.status == "running" and job.started_at:
        started = parse_time(job.started_at)
        run_s = now - started.timestamp() if started else None
    rows = [
        ("Status", job.status + (f" (exit {job.exit_code})" if job.exit_code is not None else "")),
        ("Repository", job.repo), ("Ref", job.ref), ("Commit", job.commit or ""),
        ("Pipeline", job.pipeline or ""), ("Context", job.context or f"raibid/{job.agent}"),
        ("Event", job.event or ""), ("Pull request", job.pr or ""), ("Agent type", job.agent),
        ("Agent pod", job.agent_pod or ""), ("Attempt", str(job.attempt)),
        ("Queued at", job.submitted_at or ""), ("Started at", job.started_at or ""),
        ("Finished at", job.finished_at or ""), ("Waited", format_seconds(queued_s)),
        ("Ran", format_seconds(run_s) + (" so far" if running and run_s is not None else "")),
        ("Error", job.error or ""), ("Images", job.image or ""),
    ]
    table = "".join(f"<tr><th>{escape(k)}</th><td>{_h(v)}</td></tr>" for k, v in rows if v)
    steps = "".join(_step_row(s, i == len(view.steps) - 1, job, now) for i, s in enumerate(view.steps))
    tail = view.tail_lines()
    shown = (f"the last {len(tail)} of {view.lines} lines" if len(tail) < view.lines
             else f"all {view.lines} lines")
    log_text = "\n".join(printable(line, keep="\t") for line in tail)
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if running else ""
    title = f"{job.status} · {job.repo} · job {job.id}"
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width\">{meta}<title>{_h(title)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header style=\"background:{colour}\"><h1 id=\"status\">{_h(job.status)}</h1>"
        f"<div>{_h(job.repo)} @ {_h(job.ref)} · job {_h(job.id)}</div></header><main>"
        f"<table id=\"job\">{table}</table>"
        + (f"<h2>Steps</h2><p>As the log shows them (a build can print lines like these).</p><table id=\"steps\"><tr><th>#</th><th>Step</th>"
           f"<th>Command</th><th>Result</th><th>Took</th></tr>{steps}</table>" if view.steps else "")
        + f"<h2>Log</h2><p>{escape(shown)} · <a href=\"{rel}/log?k={cap}\">full log</a>"
        + (f" · <a href=\"{rel}/log?k={cap}&amp;follow=1\">follow</a>" if running else "")
        + f"</p><pre id=\"log\">{escape(log_text, quote=True)}</pre></main></body></html>\n"
    )


def _step_row(step: Step, last: bool, job: Job, now: float) -> str:
    if step.exit_code is not None:
        result = f"exit {step.exit_code}"
        css = "ok" if step.exit_code == 0 else "bad"
        took = format_seconds(step.seconds)
    elif last and job.status == "running":
        result, css = "running", ""
        took = format_seconds(max(0.0, now - step.started_ms / 1000)) + " so far"
    else:
        result, css = "did not finish", "bad"
        took = ""
    return (f"<tr><td>{step.index}/{step.total}</td><td>{_h(step.name)}</td><td>{_h(step.command)}</td>"
            f"<td class=\"{css}\">{escape(result)}</td><td>{escape(took)}</td></tr>")


class _Stream:
    """A response body that frees its follower slot when the server closes it, even if never iterated."""

    def __init__(self, body: Iterator[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        return self._body

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close:
            close()
        if self._done:
            self._done()
            self._done = None


class JobPages:
    """The WSGI handler of ``/jobs/...``; the receiver hands it those paths."""

    def __init__(self, queue: JobSource, links: JobLinks, *, max_followers: int = 2, follow_max: float = 600.0,
                 tail_lines: int = 2000, tail_bytes: int = 1 << 20, refresh: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.queue = queue
        self.links = links
        self.follow_max = follow_max
        self.tail_lines = tail_lines
        self.tail_bytes = tail_bytes
        self.refresh = refresh
        self.max_followers = max_followers
        self._followers = threading.BoundedSemaphore(max_followers) if max_followers > 0 else None
        self._clock = clock

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO") or "/"
        if method not in ("GET", "HEAD"):
            return self._text(start_response, 405, "use GET\n", [("Allow", "GET, HEAD")])
        parts = path.split("/")  # "", "jobs", id[, "log"]
        if len(parts) not in (3, 4) or parts[1] != "jobs" or (len(parts) == 4 and parts[3] != "log"):
            return self._not_found(start_response)
        job_id = parts[2]
        query = parse_qs(environ.get("QUERY_STRING") or "", keep_blank_values=True)
        caps = query.get("k") or []
        if len(caps) != 1 or not self.links.check(job_id, caps[0]):
            return self._not_found(start_response)
        try:
            job = self.queue.get(job_id)
        except NotFound:
            return self._not_found(start_response)
        except RaibidError as e:
            log.warning("job page %s: the queue is unavailable: %s", job_id, e.message)
            return self._text(start_response, 503, "the job queue is unavailable; try again shortly\n",
                              [("Retry-After", "10")])
        head = method == "HEAD"
        if len(parts) == 3:
            return self._page(start_response, job, head)
        follow = (query.get("follow") or [""])[0] in ("1", "true", "yes")
        return self._log(environ, start_response, job, follow=follow and job.status not in TERMINAL, head=head)

    # ----------------------------------------------------------------------------- answers

    def _text(self, start_response: Callable[..., Any], status: int, text: str,
              extra: list[tuple[str, str]] | None = None) -> list[bytes]:
        data = text.encode()
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
        start_response(f"{status} {reason}", [("Content-Type", "text/plain; charset=utf-8"),
                                              ("Content-Length", str(len(data))), *SECURITY_HEADERS, *(extra or [])])
        return [data]

    def _not_found(self, start_response: Callable[..., Any]) -> list[bytes]:
        """The one 404: no capability, a wrong one, a job that does not exist, a path that is not a page."""
        return self._text(start_response, 404, "not found\n")

    def _page(self, start_response: Callable[..., Any], job: Job, head: bool) -> list[bytes]:
        view = LogView(self.tail_lines, self.tail_bytes)
        try:
            for page in self._pages(job.id, "-"):
                view.feed(page)
        except RaibidError as e:
            log.warning("job page %s: the queue is unavailable: %s", job.id, e.message)
            return self._text(start_response, 503, "the job queue is unavailable; try again shortly\n",
                              [("Retry-After", "10")])
        data = render_page(job, view, self.links, now=time.time(), refresh=self.refresh).encode("utf-8", "replace")
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data))),
                                  *SECURITY_HEADERS])
        return [] if head else [data]

    def _log(self, environ: dict[str, Any], start_response: Callable[..., Any], job: Job, *, follow: bool,
             head: bool) -> Iterable[bytes]:
        headers = [("Content-Type", "text/plain; charset=utf-8"), *SECURITY_HEADERS]
        if head:
            start_response("200 OK", headers)
            return []
        if not follow:
            start_response("200 OK", headers)
            return self._plain(job.id)
        if self._followers is None or not self._followers.acquire(blocking=False):
            return self._text(start_response, 503,
                              f"{self.max_followers} logs are being followed already; try again later, "
                              "or fetch the log without follow=1\n", [("Retry-After", "30")])
        start_response("200 OK", headers)
        gone = environ.get("waitress.client_disconnected")  # only with channel_request_lookahead > 0
        return _Stream(self._follow(job.id, gone), self._followers.release)

    # ----------------------------------------------------------------------------- log bodies

    def _pages(self, job_id: str, after: str) -> Iterator[list[tuple[str, str]]]:
        """The log after ``after``, ``LOG_PAGE`` entries at a time (never the whole log in memory)."""
        while True:
            page = self.queue.logs(job_id, after=after, count=LOG_PAGE)
            if page:
                yield page
                after = page[-1][0]
            if len(page) < LOG_PAGE:
                return

    @staticmethod
    def _encode(page: list[tuple[str, str]]) -> bytes:
        return "".join(line + "\n" for _, line in page).encode("utf-8", "replace")

    def _plain(self, job_id: str) -> Iterator[bytes]:
        try:
            for page in self._pages(job_id, "-"):
                yield self._encode(page)
        except RaibidError as e:  # the answer has started: all that is left is to end it
            log.warning("job log %s: cut short, the queue is unavailable: %s", job_id, e.message)

    def _follow(self, job_id: str, gone: Callable[[], bool] | None) -> Iterator[bytes]:
        """The log so far, then new lines as they come, until the job is finished or ``follow_max`` is up."""
        deadline = self._clock() + self.follow_max
        last = "0-0"
        try:
            for page in self._pages(job_id, "-"):
                last = page[-1][0]
                yield self._encode(page)
            while True:
                left = deadline - self._clock()
                if left <= 0:
                    yield (f"raibid-webhook: stopped following after {self.follow_max:g}s; the job is still "
                           "running, load the log again to see more\n").encode()
                    return
                if gone is not None and gone():
                    return
                entries = self.queue.wait_logs(job_id, last, block_ms=max(1, int(min(left, 1.0) * 1000)))
                if entries:
                    last = entries[-1][0]
                    yield self._encode(entries)
                    continue
                if self.queue.get(job_id).status in TERMINAL:
                    for page in self._pages(job_id, last):  # what came between the read and the check
                        yield self._encode(page)
                    return
        except RaibidError as e:
            log.warning("job log %s: following stopped, the queue is unavailable: %s", job_id, e.message)
