"""The WSGI application behind `raibid webhook serve`.

Every POST is checked in this order: body size (413), signature (401, and nothing else
happens), event type (``ping`` 200, neither ``push`` nor ``pull_request`` 202), JSON (400), then
the push or pull request handler.

A ``pull_request`` event (header ``X-GitHub-Event`` / ``X-Gitea-Event``) builds the PR head
for the actions ``opened``, ``synchronize`` (GitHub) or ``synchronized`` (Gitea) and
``reopened``; other actions are answered 202 ``ignored``. A Gitea PR is enqueued at once (Gitea
has ``refs/pull/<n>/head`` already); a GitHub PR goes to the sync worker like a push, since the
mirror must have the head commit before an agent can clone it.

What a signature covers depends on the sender. GitHub signs the body as sent, for JSON
and for form (``application/x-www-form-urlencoded``) hooks alike. Gitea signs the JSON
payload itself, even for a form hook, whose body is ``payload=<the JSON, form-encoded>``
(``services/webhook/deliver.go``: the HMAC is taken over ``t.PayloadContent``, the body is
``url.Values{"payload": ...}.Encode()``). So a Gitea form hook is verified over the
decoded ``payload`` field, byte for byte, and that same field is what is parsed.

A GitHub push whose ``X-GitHub-Delivery`` id was handled already (a redelivery) is
answered 200 ``duplicate delivery`` and does nothing (`raibid.webhook.deliveries`); a
push without a usable id is handled as new.

``GET /jobs/...`` (the job pages, `raibid.webhook.jobpage`) goes to ``pages`` when this
receiver serves them; they answer HTML or text, with their own headers.

A request never waits for a sync: GitHub pushes go to the background worker and are
answered with 202 at once. Log lines name the host, event, delivery id and outcome;
never a secret, a signature or a token.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from raibid.errors import RaibidError
from raibid.webhook.deliveries import Deliveries, usable_id
from raibid.webhook.events import BadPayload, PullRequest, Push, parse_pull_request, parse_push
from raibid.webhook.mirrors import MirrorSet
from raibid.webhook.signature import verify_gitea, verify_github
from raibid.webhook.trigger import BuildTrigger, Triggered
from raibid.webhook.worker import SyncWorker

log = logging.getLogger("raibid.webhook")

DEFAULT_MAX_BODY = 1 << 20
Reply = tuple[int, dict[str, Any]]

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


class GiteaPushes:
    """A Gitea push to a matching branch, or of a tag, becomes one deduplicated job per pipeline that
    `.raibid.yml` at ``after`` plans for it (read through Gitea's contents API)."""

    def __init__(self, trigger: BuildTrigger) -> None:
        self.trigger = trigger

    def __call__(self, push: Push) -> Reply:
        if push.deleted:
            return 202, {"result": "ignored", "reason": "branch deletion"}
        tag = push.tag
        if tag is None and not self.trigger.wants(push.repo, push.branch):
            return 202, {"result": "ignored", "reason": f"{push.ref} does not match the trigger branches"}
        try:
            t = self.trigger.enqueue(push.repo, tag or push.branch or "", push.after,
                                     event="tag" if tag is not None else "push", before=push.before,
                                     changed=push.changed)
        except RaibidError as err:
            log.warning("gitea push %s@%s: enqueue failed: %s", push.repo, push.after[:12], err.message)
            return 503, {"result": "error", "reason": "the job queue is unavailable"}
        return triggered_reply(t)


def triggered_reply(t: Triggered) -> Reply:
    """The answer to a push that was planned: its jobs, or why there are none."""
    if t.error is not None:
        return 202, {"result": "invalid pipeline file", "reason": t.error, "repo": t.repo, "commit": t.commit}
    if not t.jobs:
        return 202, {"result": "ignored", "reason": "no pipeline of .raibid.yml matches", "repo": t.repo,
                     "ref": t.ref, "commit": t.commit}
    first = t.jobs[0]
    held = any(j.waiting and j.created for j in t.jobs)
    result = "waiting for approval" if held else ("queued" if t.created else "duplicate")
    return 202, {"result": result, "job": first.job_id, "repo": t.repo,
                 "ref": t.ref, "commit": t.commit, "agent": first.agent,
                 "jobs": [{"job": j.job_id, "pipeline": j.pipeline, "agent": j.agent, "created": j.created,
                           "waiting": j.waiting} for j in t.jobs]}


class GitHubPushes:
    """A push to a mirrored GitHub repo schedules a sync of that one repo; the sync leads to the build.

    ``worker`` is None when this receiver cannot sync (``unavailable`` says why): pushes are
    then answered 202 and ignored with a log line, and the cron mirror sync stays the path.
    """

    def __init__(self, mirrors: MirrorSet, worker: SyncWorker | None, *, unavailable: str = "") -> None:
        self.mirrors = mirrors
        self.worker = worker
        self.unavailable = unavailable

    def __call__(self, push: Push) -> Reply:
        target = self.mirrors.target(push.repo, fork=push.fork, archived=push.archived)
        if target is None:
            log.info("github push to %s ignored: raibid does not mirror it", push.repo)
            return 202, {"result": "ignored", "reason": f"{push.repo} is not mirrored"}
        if self.worker is None:
            log.warning("github push to %s ignored: %s", push.repo, self.unavailable)
            return 202, {"result": "ignored", "reason": self.unavailable}
        if not self.worker.submit(push.repo, push):
            log.warning("github push to %s dropped: sync backlog full; the cron sync will pick it up", push.repo)
            return 503, {"result": "dropped", "reason": "sync backlog full"}
        return 202, {"result": "sync scheduled", "repo": push.repo, "mirror": target}


class GiteaPulls:
    """A Gitea pull request (opened, synchronized, reopened) into a matching base branch: one job for its
    head sha, ref ``refs/pull/<n>/head`` of the base repository, routed by fork and author."""

    def __init__(self, trigger: BuildTrigger) -> None:
        self.trigger = trigger

    def __call__(self, pr: PullRequest) -> Reply:
        if not pr.builds:
            return 202, {"result": "ignored", "reason": f"pull request action {pr.action!r} builds nothing"}
        if not self.trigger.wants(pr.repo, pr.base_ref):
            return 202, {"result": "ignored", "reason": "the base branch does not match the trigger branches"}
        try:
            t = self.trigger.enqueue(pr.repo, pr.ref, pr.head_sha, event="pull_request", pr=str(pr.number),
                                     base_ref=pr.base_ref, head_ref=pr.head_ref, fork=pr.fork, author=pr.author)
        except RaibidError as err:
            log.warning("gitea pull request %s#%d: enqueue failed: %s", pr.repo, pr.number, err.message)
            return 503, {"result": "error", "reason": "the job queue is unavailable"}
        return triggered_reply(t)


class GitHubPulls:
    """A pull request on a mirrored GitHub repo schedules a sync of that repo, as a push does: the sync
    brings ``refs/pull/<n>/head`` to Gitea and builds it (push mode: the mirror's PR discovery; pull
    mode: `raibid.webhook.sync.BuildAfterSync` once Gitea's pull mirror has it)."""

    def __init__(self, mirrors: MirrorSet, worker: SyncWorker | None, *, unavailable: str = "",
                 enabled: bool = True) -> None:
        self.mirrors = mirrors
        self.worker = worker
        self.unavailable = unavailable
        self.enabled = enabled

    def __call__(self, pr: PullRequest) -> Reply:
        if not pr.builds:
            return 202, {"result": "ignored", "reason": f"pull request action {pr.action!r} builds nothing"}
        if not self.enabled:
            return 202, {"result": "ignored", "reason": "mirror.pull_requests is off"}
        target = self.mirrors.target(pr.repo, fork=pr.repo_fork, archived=pr.repo_archived)
        if target is None:
            return 202, {"result": "ignored", "reason": f"{pr.repo} is not mirrored"}
        if self.worker is None:
            log.warning("github pull request %s#%d ignored: %s", pr.repo, pr.number, self.unavailable)
            return 202, {"result": "ignored", "reason": self.unavailable}
        if not self.worker.submit(pr.repo, pr):
            log.warning("github pull request %s#%d dropped: sync backlog full; the cron sync will pick it up",
                        pr.repo, pr.number)
            return 503, {"result": "dropped", "reason": "sync backlog full"}
        return 202, {"result": "sync scheduled", "repo": pr.repo, "mirror": target, "ref": pr.ref}


@dataclass
class Route:
    name: str  # "gitea" or "github"
    event_header: str  # WSGI key of the event header
    delivery_header: str
    signature_header: str
    verify: Callable[[bytes, bytes, str | None], bool]
    handle: Callable[[Push], Reply] | None
    handle_pr: Callable[[PullRequest], Reply] | None = None
    signs_form_payload: bool = False  # Gitea: a form hook's signature covers the payload field, not the body
    dedupe_deliveries: bool = False  # GitHub: a redelivery keeps its delivery id


@dataclass
class Receiver:
    """The WSGI application: ``waitress.serve(Receiver(...))`` or called directly by a test."""

    secret: str = field(repr=False)
    gitea: Callable[[Push], Reply] | None = None
    github: Callable[[Push], Reply] | None = None
    gitea_pulls: Callable[[PullRequest], Reply] | None = None
    github_pulls: Callable[[PullRequest], Reply] | None = None
    max_body: int = DEFAULT_MAX_BODY
    health: Callable[[], dict[str, Any]] | None = None
    deliveries: Deliveries | None = None  # None: no delivery dedupe (a test without Redis)
    pages: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]] | None = None  # GET /jobs/...

    def __post_init__(self) -> None:
        self._key = self.secret.encode()
        self.routes = {
            "/hooks/gitea": Route("gitea", "HTTP_X_GITEA_EVENT", "HTTP_X_GITEA_DELIVERY", "HTTP_X_GITEA_SIGNATURE",
                                  verify_gitea, self.gitea, self.gitea_pulls, signs_form_payload=True),
            "/hooks/github": Route("github", "HTTP_X_GITHUB_EVENT", "HTTP_X_GITHUB_DELIVERY",
                                   "HTTP_X_HUB_SIGNATURE_256", verify_github, self.github, self.github_pulls,
                                   dedupe_deliveries=True),
        }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if self.pages is not None and path.startswith("/jobs/"):
            return self._page(environ, start_response, path, method, started)
        try:
            status, body = self._dispatch(environ, path, method)
        except Exception:  # a bug: answer 500, keep serving, log the traceback (it holds no secret)
            log.exception("unexpected error handling %s %s", method, path)
            status, body = 500, {"result": "error", "reason": "internal error"}
        if path != "/healthz":
            log.info("%s %s -> %d %s (%.1f ms)", method, path, status, body.get("result", ""),
                     (time.perf_counter() - started) * 1000)
        data = json.dumps(body).encode()
        start_response(f"{status} {_REASONS.get(status, '')}".strip(),
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def _page(self, environ: dict[str, Any], start_response: Callable[..., Any], path: str, method: str,
              started: float) -> Iterable[bytes]:
        """A job page; logged without its query string (the capability)."""
        assert self.pages is not None

        def record(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            log.info("%s %s -> %s (%.1f ms)", method, path, status.split()[0],
                     (time.perf_counter() - started) * 1000)
            return start_response(status, headers, *exc)

        try:
            return self.pages(environ, record)
        except Exception:  # a bug: answer 500, keep serving
            log.exception("unexpected error handling %s %s", method, path)
            data = b"internal error\n"
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8"),
                                                         ("Content-Length", str(len(data)))])
            return [data]

    def _dispatch(self, environ: dict[str, Any], path: str, method: str) -> Reply:
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                return 405, {"result": "error", "reason": "use GET"}
            return 200, {"status": "ok", **(self.health() if self.health else {})}
        route = self.routes.get(path)
        if route is None:
            return 404, {"result": "error", "reason": "not found"}
        if method != "POST":
            return 405, {"result": "error", "reason": "use POST"}
        body = self._read(environ)
        if isinstance(body, int):
            return body, {"result": "error", "reason": "body too large" if body == 413 else "bad length"}
        event = environ.get(route.event_header) or ""
        delivery = environ.get(route.delivery_header) or "-"
        form = _is_form(environ.get("CONTENT_TYPE") or "")
        payload = form_payload(body) if form else body  # None: not one payload field
        signed = payload if form and route.signs_form_payload else body
        if signed is None or not route.verify(self._key, signed, environ.get(route.signature_header)):
            log.warning("%s delivery %s (%s): missing or wrong signature, rejected", route.name, delivery,
                        event or "no event")
            return 401, {"result": "error", "reason": "missing or wrong signature"}
        if event == "ping":
            return 200, {"result": "pong"}
        if event not in ("push", "pull_request"):
            return 202, {"result": "ignored", "reason": f"event {event or '(none)'} is not handled"}
        parse: Callable[[Any], Push | PullRequest] = parse_push if event == "push" else parse_pull_request
        try:
            if payload is None:
                raise BadPayload("form body without exactly one payload field")
            push = parse(_decode(payload))
        except BadPayload as e:
            return 400, {"result": "error", "reason": str(e)}
        handle: Callable[[Any], Reply] | None = route.handle if event == "push" else route.handle_pr
        if handle is None:
            what = "pushes" if event == "push" else "pull requests"
            return 202, {"result": "ignored", "reason": f"{route.name} {what} are not handled by this receiver"}
        claimed = self._claim(route, environ.get(route.delivery_header))
        if claimed is False:
            log.info("%s delivery %s: handled already (a redelivery), nothing to do", route.name, delivery)
            return 200, {"result": "duplicate delivery", "delivery": delivery}
        status, reply = handle(push)
        if claimed and status >= 500:  # not handled: let its redelivery through
            self._release(route, delivery)
        log.info("%s delivery %s: %s %s %s -> %s", route.name, delivery, event, push.repo, push.ref,
                 reply.get("result"))
        return status, reply

    def _claim(self, route: Route, delivery: str | None) -> bool | None:
        """True: first delivery of this id (claimed); False: seen before; None: not deduplicated."""
        if not route.dedupe_deliveries or self.deliveries is None:
            return None
        usable = usable_id(delivery)
        if usable is None:
            log.warning("%s delivery without a usable delivery id: handled, not deduplicated", route.name)
            return None
        try:
            return self.deliveries.claim(route.name, usable)
        except RaibidError as e:  # a sync is idempotent: handling a delivery twice beats dropping it
            log.warning("%s delivery %s: cannot check for a redelivery (%s); handled anyway", route.name,
                        usable, e.message)
            return None

    def _release(self, route: Route, delivery: str) -> None:
        assert self.deliveries is not None
        try:
            self.deliveries.release(route.name, delivery)
        except RaibidError as e:
            log.warning("%s delivery %s failed and its claim stays (%s): a redelivery is ignored until it "
                        "expires; the cron sync picks the push up", route.name, delivery, e.message)

    def _read(self, environ: dict[str, Any]) -> bytes | int:
        """The raw body, or 413 when it is over ``max_body`` (checked before reading when the length is known)."""
        raw = environ.get("CONTENT_LENGTH") or ""
        stream = environ["wsgi.input"]
        if raw:
            try:
                length = int(raw)
            except ValueError:
                return 400
            if length < 0:
                return 400
            if length > self.max_body:
                return 413
            return stream.read(length)
        data = stream.read(self.max_body + 1)  # no length (a server that decoded chunks): read at most one extra byte
        return 413 if len(data) > self.max_body else data


def _is_form(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


def form_payload(body: bytes) -> bytes | None:
    """The exact bytes of the one ``payload`` field of a form body, or None (none, or more than one).

    Decoded as Go's ``url.ParseQuery`` does (``+`` is a space, ``%XX`` a byte), without
    going through text, so the bytes are the ones the sender signed.
    """
    found = [unquote_to_bytes(value.replace(b"+", b" "))
             for name, _, value in (part.partition(b"=") for part in body.split(b"&"))
             if unquote_to_bytes(name.replace(b"+", b" ")) == b"payload"]
    return found[0] if len(found) == 1 else None


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadPayload(f"malformed JSON: {e}") from None
