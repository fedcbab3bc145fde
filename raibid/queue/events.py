"""The event stream (``Keys.events``): every change a forge should hear about, in order.

Two kinds of entry, each a flat mapping of strings:

- ``kind=job``: a job changed state; ``job`` is its id and ``status`` its new queue status (the
  reader loads the job record for the rest). The queue's Lua transitions add these.
- ``kind=status``: a commit status with no job behind it, e.g. ``error`` for a malformed
  ``.raibid.yml`` found at enqueue: ``repo``, ``commit``, ``context``, ``state``,
  ``description`` and, for a mirror, ``origin`` (``github:OWNER/NAME``).

Entries are trimmed approximately to ``EVENTS_MAXLEN``; a reader that falls further behind
than that loses the oldest, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

FORGE_STATES = ("pending", "success", "failure", "error")  # what Gitea 1.22 and GitHub accept
EVENTS_MAXLEN = 100_000
DESCRIPTION_MAX = 140  # GitHub refuses longer status descriptions


@dataclass(frozen=True)
class StatusEvent:
    """A commit status to post, as the ``kind=status`` entry carries it."""

    repo: str
    commit: str
    context: str
    state: str
    description: str
    origin: str | None = None

    def fields(self) -> dict[str, str]:
        out = {"kind": "status", "repo": self.repo, "commit": self.commit, "context": self.context,
               "state": self.state, "description": self.description[:DESCRIPTION_MAX]}
        if self.origin:
            out["origin"] = self.origin
        return out
