"""BuildKit's ``--progress=plain`` output, read line by line (moby/buildkit util/progress/progressui).

A vertex line is ``#<n> <name>``; ``#<n> DONE <t>s``, ``#<n> CACHED`` and
``#<n> ERROR: <message>`` finish it. A Dockerfile step is named ``[<stage> i/n] <instruction>``.
The text is the build's (hostile when a repo controls the Dockerfile): callers escape it before display.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_VERTEX = re.compile(r"^#(\d+) (.*)$")
_STEP = re.compile(r"^\[(?:[^\]]*? )?(\d+)/(\d+)\] ")
_DONE = re.compile(r"^DONE(?: ([0-9.]+)s)?$")


@dataclass
class Progress:
    """What the log said so far: the steps seen, finished, cached, and the failing one."""

    names: dict[int, str] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    cached: set[int] = field(default_factory=set)
    failed_step: str | None = None
    error: str | None = None
    total_steps: int = 0

    def feed(self, line: str) -> str | None:
        """Take one line; return the name of a step that just started, finished or failed (for display)."""
        line = line.rstrip("\r\n")
        if line.startswith("error: ") and self.error is None:
            self.error = line.removeprefix("error: ")
            return None
        m = _VERTEX.match(line)
        if not m:
            return None
        index, rest = int(m.group(1)), m.group(2)
        if index not in self.names:
            if rest.startswith(("DONE", "CACHED", "ERROR", "...", "sha256:", "CANCELED")):
                return None
            self.names[index] = rest
            step = _STEP.match(rest)
            if step:
                self.total_steps = max(self.total_steps, int(step.group(2)))
            return rest
        if _DONE.match(rest):
            self.done.add(index)
            return self.names[index]
        if rest == "CACHED":
            self.cached.add(index)
            self.done.add(index)
            return self.names[index]
        if rest.startswith("ERROR: "):
            self.failed_step = self.failed_step or self.names[index]
            self.error = self.error or rest.removeprefix("ERROR: ")
            return self.names[index]
        return None

    @property
    def steps(self) -> list[str]:
        """The Dockerfile steps (``[i/n] ...``) in the order they started."""
        return [n for _, n in sorted(self.names.items()) if _STEP.match(n)]

    @property
    def steps_done(self) -> int:
        return sum(1 for i in self.done if _STEP.match(self.names.get(i, "")))

    @property
    def steps_cached(self) -> int:
        return sum(1 for i in self.cached if _STEP.match(self.names.get(i, "")))
