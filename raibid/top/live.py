"""The live loop: refresh, draw, wait for the interval or a key, until q+Enter or Ctrl-C.

The wait is a function (``tick``) so tests drive refreshes deterministically:
the default one waits on an Event that a daemon thread reading stdin lines sets
when it reads ``q``; a test passes one that changes jobs and returns at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from raibid.top.model import Snapshot

# tick(interval) -> True to quit. It may raise KeyboardInterrupt (Ctrl-C), which also quits.
Tick = Callable[[float], bool]


class KeyReader:
    """Reads stdin lines on a daemon thread, so waiting for `q` never blocks a refresh."""

    QUIT = frozenset({"q", "quit", "exit"})

    def __init__(self, stdin: IO[str]) -> None:
        self.quit = threading.Event()
        self._stdin = stdin
        self._thread = threading.Thread(target=self._read, name="raibid-top-keys", daemon=True)

    def start(self) -> KeyReader:
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            for line in self._stdin:
                if line.strip().lower() in self.QUIT:
                    self.quit.set()
                    return
        except (OSError, ValueError):
            return  # stdin closed under us: keep refreshing until Ctrl-C

    def tick(self, interval: float) -> bool:
        return self.quit.wait(interval)


def run_live(console: Console, refresh: Callable[[], Snapshot], draw: Callable[[Snapshot, Console], RenderableType],
             *, interval: float, tick: Tick, screen: bool = True) -> int:
    """Draw ``refresh()`` every ``interval`` until ``tick`` says quit or Ctrl-C; always exits 0.

    Rich's Live restores the terminal (leaves the alternate screen, shows the
    cursor) on the way out, whichever way that is.
    """
    from rich.live import Live

    try:
        snap = refresh()
        with Live(draw(snap, console), console=console, screen=screen, auto_refresh=False,
                  redirect_stdout=False, redirect_stderr=False, transient=False) as live:
            while not tick(interval):
                snap = refresh()
                live.update(draw(snap, console), refresh=True)
    except KeyboardInterrupt:
        pass
    return 0
