"""The terminal: data to stdout, messages to stderr, tables only on a TTY.

Rich is imported only when a table or a styled message is actually drawn, so
`raibid --help` and completion stay fast.

Every text view goes through :func:`raibid.safetext.printable`: a line, a table cell,
a ``show`` record and a message cannot move the cursor, clear the screen, set a
hyperlink or the clipboard, or open Rich markup, whatever a repository put in it.
Lines and messages keep their tabs and newlines; table cells and records show those
escaped too (one row, one line). JSON is exact data (``json.dumps`` escapes controls),
and :meth:`Terminal.raw` is the one way to write text unchanged (``queue logs --raw``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from raibid.safetext import markup_escaped, printable, rich_text

LINE_KEEPS = "\n\t"  # what a line or a message keeps as it is; a table cell shows these escaped too


def to_plain(obj: Any) -> Any:
    """Dataclasses, enums, datetimes and paths to JSON-ready data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, _dt.datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=_dt.UTC)
        return obj.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def format_age(seconds: float | None) -> str:
    """kubectl-style age: 42s, 5m, 3h, 2d."""
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def age_of(timestamp: str | None) -> str:
    """Age of an RFC 3339 timestamp, for tables (JSON keeps the timestamp)."""
    from raibid.timeutil import seconds_since

    return format_age(seconds_since(timestamp))


class Terminal:
    """Where output goes and how it looks."""

    def __init__(
        self,
        *,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        color: bool | None = None,
        verbosity: int = 0,
    ) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        if color is None:
            color = not os.environ.get("NO_COLOR")  # no-color.org: set and not empty
        self.color = color
        self.verbosity = verbosity
        self._err_console: Any = None

    @property
    def stdin(self) -> TextIO:
        return self._stdin or sys.stdin

    @property
    def stdin_is_tty(self) -> bool:
        try:
            return self.stdin.isatty()
        except (AttributeError, ValueError):
            return False

    @property
    def stdout(self) -> TextIO:
        return self._stdout or sys.stdout

    @property
    def stderr(self) -> TextIO:
        return self._stderr or sys.stderr

    @property
    def stdout_is_tty(self) -> bool:
        try:
            return self.stdout.isatty()
        except (AttributeError, ValueError):
            return False

    @property
    def stderr_is_tty(self) -> bool:
        try:
            return self.stderr.isatty()
        except (AttributeError, ValueError):
            return False

    # ---------------------------------------------------------------- data (stdout)
    def json(self, data: Any) -> None:
        self.stdout.write(json.dumps(to_plain(data), indent=2, sort_keys=False) + "\n")
        self.stdout.flush()

    def line(self, text: str = "") -> None:
        """One line of data; control sequences in it are shown escaped (tabs and newlines pass)."""
        self.stdout.write(printable(text, keep=LINE_KEEPS) + "\n")

    def raw(self, text: str) -> None:
        """One line exactly as given, control sequences and all: only for an explicit ``--raw``."""
        self.stdout.write(text + "\n")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
        """A Rich table on a TTY; tab-separated plain text (with a header) when piped."""
        cells = [[printable(c) for c in row] for row in rows]  # one cell, one line, no control sequence
        if self.stdout_is_tty:
            from rich.console import Console
            from rich.table import Table

            t = Table(title=title, show_edge=False, header_style="bold" if self.color else "")
            for i, c in enumerate(columns):
                # Never ellipsize: the first column (ids, names) stays whole for copy-paste; the rest wrap.
                t.add_column(c, no_wrap=i == 0, overflow="fold")
            for row in cells:
                t.add_row(*(rich_text(c) for c in row))  # Text: a cell is never parsed as Rich markup
            Console(file=self.stdout, no_color=not self.color, highlight=False).print(t)
            return
        self.stdout.write("\t".join(c.upper() for c in columns) + "\n")
        for row in cells:
            self.stdout.write("\t".join(row) + "\n")
        self.stdout.flush()

    def record(self, obj: Any) -> None:
        """One object as aligned ``key: value`` lines, skipping empty values (for `show` commands)."""
        plain = to_plain(obj)
        width = max((len(k) for k in plain), default=0) + 2
        for k, v in plain.items():
            if v not in (None, "", {}, [], False):
                # json.dumps escapes controls itself; a string (a commit message, an error) shows them escaped.
                shown = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else printable(v)
                self.line(f"{k + ':':{width}}{shown}")

    def emit(self, data: Any, as_json: bool, render: Callable[[], None]) -> None:
        """The JSON branch runs first; a table is only a view of the same data."""
        if as_json:
            self.json(data)
        else:
            render()

    # ---------------------------------------------------------------- input (stdin)
    def read_line(self) -> str:
        """One line from stdin without its newline (for `--password-stdin`)."""
        return self.stdin.readline().rstrip("\n")

    def read_all(self) -> str:
        return self.stdin.read()

    def confirm(self, question: str) -> bool:
        """Ask on stderr, answer from stdin; only meaningful when stdin is a terminal."""
        import click

        return click.confirm(question, default=False, err=True)

    # ---------------------------------------------------------------- messages (stderr)
    def _console(self) -> Any:
        if self._err_console is None:
            from rich.console import Console

            self._err_console = Console(file=self.stderr, no_color=not self.color, highlight=False,
                                        force_terminal=None if self.stderr_is_tty else False)
        return self._err_console

    def _msg(self, prefix: str, style: str, text: str) -> None:
        # A message may quote a repo name, a ref or git's output: shown escaped, never as markup.
        if self.stderr_is_tty and self.color:
            self._console().print(f"[{style}]{prefix}[/{style}]{markup_escaped(text, keep=LINE_KEEPS)}")
        else:
            self.stderr.write(f"{prefix}{printable(text, keep=LINE_KEEPS)}\n")
            self.stderr.flush()

    def info(self, text: str) -> None:
        if self.verbosity >= 0:
            self._msg("", "", text) if not (self.stderr_is_tty and self.color) else self._console().print(
                printable(text, keep=LINE_KEEPS), markup=False)

    def debug(self, text: str) -> None:
        if self.verbosity > 0:
            self._msg("debug: ", "dim", text)

    def warn(self, text: str) -> None:
        self._msg("warning: ", "yellow", text)

    def error(self, text: str, hint: str | None = None) -> None:
        self._msg("error: ", "bold red", text)
        if hint:
            self._msg("hint: ", "cyan", hint)

    def success(self, text: str) -> None:
        if self.verbosity >= 0:
            self._msg("", "green", text)
