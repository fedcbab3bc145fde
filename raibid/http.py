"""HTTP for raibid's REST clients (Gitea; GitHub can use the same): one session, bounded retries, typed errors.

- Retries are urllib3's ``Retry`` mounted on the ``requests`` session: connection errors
  (the request never reached the server) for every method; read errors and 502/503/504
  only for idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS), so a POST that timed
  out after the server acted on it is never sent twice. ``Retry-After`` is honoured.
- Every request has a per-try timeout and a total budget: no retry starts that could
  end after the budget, back-off and ``Retry-After`` waits included.
- Transport failures become ``Unreachable`` (exit 5), malformed URLs ``ConfigError``
  (exit 2), a body that is not JSON ``Unreachable`` (the URL is not the service), and
  JSON of the wrong shape the caller's error type. URLs in messages go through
  ``redact_url``.

Nothing here knows a particular service: callers pass its name and a hint.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from raibid.errors import ConfigError, RaibidError, Unreachable, redact_url

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})

# (deadline on the monotonic clock, longest single try) of the request being sent on this thread.
_BUDGET: ContextVar[tuple[float, float] | None] = ContextVar("raibid_http_budget", default=None)


def url_problem(url: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """What is wrong with ``url`` as a base URL (scheme, host, port), or None. Never echoes credentials."""
    if any(c.isspace() for c in url):
        return "it contains a space"
    try:
        parts = urlsplit(url)
    except ValueError as e:
        return f"it cannot be parsed ({e})"
    if parts.scheme not in schemes:
        want = " or ".join(f"{s}://" for s in schemes)
        return f"it must start with {want}"
    if parts.scheme == "unix":
        return None if parts.path else "it has no socket path"
    if not parts.hostname:
        return "it has no host"
    try:
        parts.port  # noqa: B018 - parsing is the check
    except ValueError:
        port = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        return f"the port {port!r} is not a number from 0 to 65535"
    return None


def make_session(*, retries: int, backoff: float, total_timeout: float | None = None,
                 methods: frozenset[str] = IDEMPOTENT_METHODS, statuses: frozenset[int] = RETRY_STATUSES,
                 user_agent: str = "raibid", headers: dict[str, str] | None = None) -> Any:
    """A ``requests.Session`` with urllib3 ``Retry`` and a total time budget on http:// and https://.

    ``backoff`` is urllib3's ``backoff_factor``: the waits between retries are 0, then
    2×, 4×, … ``backoff`` seconds. ``total_timeout`` bounds one call, every try and wait
    included (None: only ``retries`` bounds it).
    """
    import requests

    retry_cls, adapter_cls = _classes()
    retry = retry_cls(total=retries, connect=retries, read=retries, status=retries, other=0, redirect=False,
                      allowed_methods=methods, status_forcelist=statuses, backoff_factor=backoff,
                      respect_retry_after_header=True, raise_on_status=False, raise_on_redirect=False)
    session = requests.Session()
    adapter = adapter_cls(max_retries=retry, budget=total_timeout)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    session.headers.update(headers or {})
    return session


@lru_cache(maxsize=1)
def _classes() -> tuple[type, type]:
    """The Retry and adapter subclasses, built on first use so importing this module imports no urllib3."""
    from requests.adapters import HTTPAdapter
    from urllib3.exceptions import MaxRetryError, ResponseError
    from urllib3.util.retry import Retry

    class BudgetRetry(Retry):
        """urllib3 Retry that also gives up when the next try could not finish within the budget."""

        def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                      error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> BudgetRetry:
            new = super().increment(method, url, response, error, _pool, _stacktrace)
            budget = _BUDGET.get()
            if budget is not None:
                deadline, per_try = budget
                wait = self.get_retry_after(response) if response is not None else None
                if wait is None:
                    wait = new.get_backoff_time()
                if time.monotonic() + wait + per_try > deadline:
                    raise MaxRetryError(_pool, url, error or ResponseError("time budget spent"))
            return new

    class BudgetAdapter(HTTPAdapter):
        """Sets the budget of the request it sends (per thread, so one session can serve many threads)."""

        def __init__(self, *, budget: float | None = None, **kwargs: Any) -> None:
            self.budget = budget
            super().__init__(**kwargs)

        def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True,
                 cert: Any = None, proxies: Any = None) -> Any:
            token = None
            if self.budget is not None:
                token = _BUDGET.set((time.monotonic() + self.budget, _longest_try(timeout)))
            try:
                return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                                    proxies=proxies)
            finally:
                if token is not None:
                    _BUDGET.reset(token)

    return BudgetRetry, BudgetAdapter


def _longest_try(timeout: Any) -> float:
    if isinstance(timeout, tuple):
        return float(sum(t for t in timeout if t is not None))
    return float(timeout or 0.0)


def send(session: Any, method: str, url: str, *, what: str, service: str, base: str,
         timeout: float | tuple[float, float], hint: str | None = None, **kwargs: Any) -> Any:
    """``session.request`` with transport failures as typed errors naming ``service``, ``what`` and ``base``.

    ``base`` is the service's base URL (shown masked); ``what`` is e.g. ``GET /api/v1/orgs``.
    """
    import requests

    shown = redact_url(base)
    start = time.monotonic()
    try:
        return session.request(method, url, timeout=timeout, **kwargs)
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
            requests.exceptions.URLRequired):
        # The exception text repeats the URL, credentials and all: name the problem instead.
        raise ConfigError(f"invalid {service} URL {shown}: {url_problem(url) or 'it cannot be used'}") from None
    except requests.RequestException as e:
        spent = time.monotonic() - start
        raise Unreachable(f"cannot reach {service} at {shown} ({what}: {describe(e)} after {spent:.1f} s)",
                          hint=hint) from None


def was_retried(resp: Any) -> bool:
    """Whether urllib3 had to try again before this answer (an earlier try may have done the work)."""
    retries = getattr(getattr(resp, "raw", None), "retries", None)
    return bool(getattr(retries, "history", ()))


def describe(e: BaseException) -> str:
    """``timed out``, ``connection refused`` or ``connection failed``, from the whole exception chain."""
    import socket

    import requests
    from urllib3.exceptions import ReadTimeoutError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    seen: list[BaseException] = []
    todo: list[Any] = [e]
    while todo:
        x = todo.pop()
        if not isinstance(x, BaseException) or any(x is s for s in seen):
            continue
        seen.append(x)
        todo += [x.__cause__, x.__context__, getattr(x, "reason", None), *x.args]
    if any(isinstance(x, ConnectionRefusedError) for x in seen):
        return "connection refused"
    if any(isinstance(x, (requests.Timeout, Urllib3Timeout, ReadTimeoutError, socket.timeout)) for x in seen):
        return "timed out"
    return "connection failed"


def json_body(resp: Any, *, what: str, service: str, base: str, expect: type | tuple[type, ...],
              error: type[RaibidError] = RaibidError) -> Any:
    """The JSON of a successful answer, checked to be ``expect`` (dict or list).

    A body that is not JSON at all means the URL does not lead to ``service`` (a web
    page, a proxy's login form): Unreachable, exit 5. JSON of the wrong shape is the
    caller's ``error`` (exit 1 for a domain error).
    """
    try:
        data = resp.json()
    except ValueError:
        ctype = (resp.headers.get("Content-Type") or "no content type").split(";")[0].strip()
        raise Unreachable(f"{redact_url(base)} does not answer like {service}: {what} returned {resp.status_code} "
                          f"{ctype}, not JSON",
                          hint=f"check that the URL is {service}'s own address (no proxy login page in front)"
                          ) from None
    if not isinstance(data, expect):
        want = " or ".join(_kind(t) for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise error(f"unexpected answer from {service}: {what} returned {_kind(type(data))}, expected {want}")
    return data


def _kind(t: type) -> str:
    return {dict: "a JSON object", list: "a JSON list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(t, t.__name__)
