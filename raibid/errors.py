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
    PENDING = 8  # `raibid status`: a check is still pending (as `gh pr checks`)


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


_SECRET_QUERY_KEYS = ("token", "access_token", "private_token", "password", "sig", "signature")


def redact_url(url: str) -> str:
    """The URL with its credentials masked, for messages: every URL shown to a user goes through here.

    Masks the password of ``user:password@`` (a lone ``user@`` too: it is often a token), with or
    without a scheme, and the values of token-like query parameters. It never parses the port, so a
    typo such as ``http://h:80a`` or a missing scheme cannot make the masking itself fail.
    """
    import re

    m = re.match(r"(?s)((?:[A-Za-z][A-Za-z0-9+.\-]*:)?//)?([^/?#]*)(.*)", url)
    assert m is not None  # the pattern matches every string
    prefix, authority, rest = m.group(1) or "", m.group(2), m.group(3)
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        authority = (f"{user}:***" if colon and user else ":***" if colon else "***") + "@" + hostport
    keys = "|".join(_SECRET_QUERY_KEYS)
    rest = re.sub(rf"(?i)([?&](?:{keys})=)[^&#]*", r"\1***", rest)
    return prefix + authority + rest


def redact_urls_in(text: str) -> str:
    """Mask the ``user:password@`` of every URL inside a free-form message (a library's or git's own text)."""
    import re

    return re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@", r"\1***@", text)
