"""The job queue on Redis Streams (see docs/queue.md).

Every key name raibid uses in Redis is defined in this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from raibid.errors import AuthError, QueueError, Unreachable, redact_url


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
        if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise AuthError(f"Redis at {shown}: {text}",
                            hint="set the password in the env var named by redis.password_env") from None
        raise QueueError(f"Redis at {shown}: {text}") from None
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise Unreachable(f"cannot reach Redis at {shown}: {e}",
                          hint="is Redis running? check redis.url (or RAIBID_REDIS_URL)") from None


def connect(url: str, password: str | None = None, *, timeout: float = 5.0) -> Any:
    """A redis.Redis for ``url``; the password comes from the env, never from argv."""
    import redis

    with redis_errors(url):
        try:
            client = redis.Redis.from_url(url, password=password, decode_responses=True,
                                          socket_connect_timeout=timeout, socket_timeout=timeout + 25,
                                          health_check_interval=0)
        except ValueError as e:
            from raibid.errors import ConfigError

            raise ConfigError(f"invalid redis.url {redact_url(url)}: {e}") from None
    return _Guarded(client, url)


class _Guarded:
    """Proxy that maps redis errors on every call, so callers see typed errors."""

    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self.url = url

    @property
    def raw(self) -> Any:
        return self._client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        url = self.url

        def call(*args: Any, **kwargs: Any) -> Any:
            with redis_errors(url):
                return attr(*args, **kwargs)

        return call
