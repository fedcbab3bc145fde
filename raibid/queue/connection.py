"""The Redis connection: client construction and redis-py exceptions mapped to typed errors."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from raibid.errors import AuthError, ConfigError, QueueError, Unreachable, redact_url

if TYPE_CHECKING:
    import redis


@contextlib.contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Map redis-py exceptions to typed errors; the URL is shown without its password."""
    import redis

    shown = redact_url(url)
    try:
        yield
    except redis.AuthenticationError as e:
        raise AuthError(f"Redis at {shown} rejected the credentials: {e}",
                        hint="check the env var named by redis.password_env") from None
    except redis.ResponseError as e:
        text = str(e)
        if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM", "invalid password", "invalid username")):
            raise AuthError(f"Redis at {shown}: {text}",
                            hint="set the password in the env var named by redis.password_env") from None
        raise QueueError(f"Redis at {shown}: {text}") from None
    except redis.InvalidResponse as e:  # a web server or proxy on that port, not Redis
        raise Unreachable(f"{shown} does not answer like Redis: {str(e)[:200]}",
                          hint="check redis.url (or RAIBID_REDIS_URL): is another service listening on that "
                               "host and port?") from None
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise Unreachable(f"cannot reach Redis at {shown}: {e}",
                          hint="is Redis running? check redis.url (or RAIBID_REDIS_URL)") from None


def connect(url: str, password: str | None = None, *, timeout: float = 5.0) -> redis.Redis:
    """A redis.Redis for ``url``; the password comes from the env, never from argv.

    A one-shot command fails within ``timeout`` seconds (connect and reply); blocking
    reads go through ``QueueBase._blocking`` and add only their block time. The client
    itself never retries a command: redis-py's default would resend non-idempotent
    writes after a lost reply. The queue retries whole retry-safe calls instead
    (``retried``). Bytes that are not UTF-8 (a log entry someone wrote raw) read as U+FFFD
    instead of raising ``UnicodeDecodeError`` in ``queue logs`` or a list.
    """
    import redis

    try:
        return redis.Redis.from_url(url, password=password, decode_responses=True, encoding_errors="replace",
                                    socket_connect_timeout=timeout, socket_timeout=timeout,
                                    health_check_interval=0, retry=no_retry())
    except ValueError as e:
        raise ConfigError(f"invalid redis.url {redact_url(url)}: {e}") from None


def no_retry() -> Any:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def retry_policy(retries: int = 8, base: float = 0.1, cap: float = 2.0) -> Any:
    """redis-py's Retry with exponential backoff and full jitter: waits up to base * 2**n, capped.

    With the defaults a call is retried for up to about 11 s (half that on average) of
    Redis being unreachable. ``budget`` is that most the backoff may sleep in all: a retried
    call starts no new try once it has been failing that long (``call_retried``), so against
    a hung Redis it fails within the budget plus one wait and one timeout, not after every
    retry has waited out its own timeout.
    """
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry

    policy = Retry(ExponentialWithJitterBackoff(base=base, cap=cap), retries)
    policy.budget = sum(min(cap, base * 2 ** n) for n in range(1, retries + 1))  # type: ignore[attr-defined]
    return policy


F = TypeVar("F", bound=Callable[..., Any])


_depth = threading.local()  # nesting of mapped/retried calls in this thread


@contextlib.contextmanager
def _outermost(kind: str) -> Iterator[bool]:
    """True for the outermost ``kind`` call in this thread: only it maps errors or retries."""
    n = getattr(_depth, kind, 0)
    setattr(_depth, kind, n + 1)
    try:
        yield n == 0
    finally:
        setattr(_depth, kind, n)


def mapped(fn: F) -> F:
    """Method decorator: redis-py errors raised inside become typed errors naming ``self.url``.

    Only the outermost call maps, so an inner call's raw error still reaches a retry around it.
    """
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _outermost("mapped") as outer:
            if not outer:
                return fn(self, *args, **kwargs)
            with redis_errors(self.url):
                return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def call_retried(retry: Any, do: Callable[[], Any]) -> Any:
    """``do()`` under ``retry`` on connection errors and timeouts (never on rejected credentials).

    With a ``budget`` on the policy (``retry_policy``), no try starts after the call has been
    failing for that many seconds: a hung Redis costs each try a whole timeout.
    """
    import redis

    budget = getattr(retry, "budget", None)
    deadline = None if budget is None else time.monotonic() + budget

    def retryable(e: Exception) -> bool:
        if isinstance(e, redis.AuthenticationError):
            return False
        return deadline is None or time.monotonic() < deadline

    return retry.call_with_retry(do, lambda _error: None, is_retryable=retryable)


def retried(fn: F) -> F:
    """Method decorator for retry-safe calls: on a connection error or timeout the whole call runs
    again under ``self.retrying`` (see ``retry_policy``). Only for calls whose repetition after a
    lost reply changes nothing (reads, and writes made idempotent: docs/queue.md lists them).
    """
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _outermost("retried") as outer:
            if not outer:
                return fn(self, *args, **kwargs)
            return call_retried(self.retrying, lambda: fn(self, *args, **kwargs))

    return wrapper  # type: ignore[return-value]
