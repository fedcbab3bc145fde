"""Typed errors and the exit codes they map to.

Domain code raises these; exactly one place at the CLI edge (``raibid.cli``)
turns them into a message on stderr and an exit code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes. Documented in docs/exit-codes.md; keep them in sync."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_FOUND = 3
    AUTH = 4
    UNREACHABLE = 5
    LOCKED = 6


class RaibidError(Exception):
    """Base class: a failure we expected and can explain to the user."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def restated(self, message: str, *, hint: str | None = None) -> RaibidError:
        """The same failure (same exit code) told with more context, e.g. how far an apply got."""
        new = RaibidError(message, hint=hint or self.hint)
        new.exit_code = self.exit_code
        return new


class Exit(RaibidError):
    """The command has already reported its result; only the exit code is left to set.

    ``cluster diff`` (1: differences), ``doctor`` and ``status --check`` (1: not healthy)
    use it, so every non-zero exit goes through the one mapping at the CLI edge.
    """

    def __init__(self, exit_code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__("")
        self.exit_code = exit_code


class ConfigError(RaibidError):
    """Bad config file, bad env override, bad option value."""

    exit_code = ExitCode.USAGE


class UsageError(RaibidError):
    exit_code = ExitCode.USAGE


class NotFound(RaibidError):
    exit_code = ExitCode.NOT_FOUND


class AlreadyExists(RaibidError):
    exit_code = ExitCode.FAILURE


class AuthError(RaibidError):
    exit_code = ExitCode.AUTH


class Unreachable(RaibidError):
    exit_code = ExitCode.UNREACHABLE


class Locked(RaibidError):
    exit_code = ExitCode.LOCKED


class TemplateError(RaibidError):
    """A template failed to render (for example a missing value)."""

    exit_code = ExitCode.USAGE


class ClusterError(RaibidError):
    """The API server answered with an error we have no narrower type for."""


class ConflictError(ClusterError):
    """Server-side apply conflict, or a stale resourceVersion."""


class InvalidError(ClusterError):
    """The API server rejected an object (422)."""


class TimeoutError_(RaibidError):  # noqa: N801 - avoid shadowing the builtin
    """Waiting for readiness ran out of time."""


class QueueError(RaibidError):
    pass


class GiteaError(RaibidError):
    pass


def redact_url(url: str) -> str:
    """Drop any userinfo (user:password@) from a URL, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username and not parts.password:
        # redis://:pw@host has an empty username; a lone username may itself be a token
        host = f"***@{host}"
    elif parts.password is not None:
        host = f"{parts.username or ''}:***@{host}" if parts.username else f":***@{host}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
