"""The Redis connection: client construction and redis-py exceptions mapped to typed errors."""

from __future__ import annotations

import contextlib
import functools
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
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise Unreachable(f"cannot reach Redis at {shown}: {e}",
                          hint="is Redis running? check redis.url (or RAIBID_REDIS_URL)") from None


def connect(url: str, password: str | None = None, *, timeout: float = 5.0) -> redis.Redis:
    """A redis.Redis for ``url``; the password comes from the env, never from argv."""
    import redis

    try:
        return redis.Redis.from_url(url, password=password, decode_responses=True,
                                    socket_connect_timeout=timeout, socket_timeout=timeout + 60,
                                    health_check_interval=0)
    except ValueError as e:
        raise ConfigError(f"invalid redis.url {redact_url(url)}: {e}") from None


F = TypeVar("F", bound=Callable[..., Any])


def mapped(fn: F) -> F:
    """Method decorator: redis-py errors raised inside become typed errors naming ``self.url``."""
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with redis_errors(self.url):
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
