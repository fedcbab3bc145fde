"""Text a repository controls, made safe to show in a terminal: the one escaping function.

A build writes its log lines, and a repository names its steps, refs and commits; any
of them may carry terminal control sequences (CSI to clear the screen or move the
cursor, OSC 8 hyperlinks, OSC 52 to write the operator's clipboard, C1 controls that
some terminals read as CSI), a carriage return or backspaces that overwrite what came
before, or bidi overrides that reorder what the eye reads. :func:`printable` shows every
such character as an escape (``\\x1b``, ``\\u202e``), so the sequence is visible text and
never reaches the terminal as a control. Rich markup (``[/x]``, ``[link=...]``) is the
second hazard: :func:`rich_text` returns a ``rich.text.Text``, which Rich never parses as
markup, and :func:`markup_escaped` is for a markup string built around such text.

A leaf: it imports nothing of raibid, and Rich only inside the functions that use it.
JSON output needs none of this (``json.dumps`` escapes every control character itself);
``raibid queue logs --raw`` is the one view that passes a log through unchanged.
"""

from __future__ import annotations

import re
from typing import Any

# What is shown escaped: every C0 control and DEL, every C1 control (U+0080-U+009F, among
# them U+009B, the one-character CSI), the soft hyphen, the Arabic letter mark, the Mongolian
# vowel separator, zero-width spaces and joiners, left-to-right/right-to-left marks, the
# line and paragraph separators, the bidi embeddings, overrides and isolates
# (U+202A-U+202E, U+2066-U+2069), the invisible operators (U+2060-U+206F), the byte-order
# mark, the interlinear annotation controls, lone surrogates (undecodable bytes read with
# ``surrogateescape``) and the tag characters (U+E0000-U+E007F).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
    "\ud800-\udfff\U000e0000-\U000e007f]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named:
        return named
    n = ord(ch)
    return f"\\x{n:02x}" if n <= 0xFF else (f"\\u{n:04x}" if n <= 0xFFFF else f"\\U{n:08x}")


def printable(text: Any, *, keep: str = "", limit: int | None = None) -> str:
    """``text`` with every control, format and bidi character shown as an escape (``\\x1b``, ``\\u202e``).

    ``keep`` names characters that pass through (``"\\n\\t"`` for a line of output that may
    hold tabs, or a message of several lines). ``limit`` cuts the text to that many
    characters first, marked with ``…`` (a table cell never shows a megabyte). ``None`` is
    shown as the empty string; anything else as ``str(text)``.
    """
    if text is None:
        return ""
    s = text if isinstance(text, str) else str(text)
    if limit is not None and len(s) > limit:
        s = s[:max(limit - 1, 0)] + "…"
    if not _UNSAFE.search(s):
        return s
    if keep:
        return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _escape(m.group()), s)
    return _UNSAFE.sub(lambda m: _escape(m.group()), s)


def rich_text(text: Any, style: str = "", *, limit: int | None = None, **kw: Any) -> Any:
    """A ``rich.text.Text`` of ``printable(text)``: Rich draws it as it is and never parses it as markup."""
    from rich.text import Text

    return Text(printable(text, limit=limit), style=style, **kw)


def markup_escaped(text: Any, *, keep: str = "") -> str:
    """``printable(text)`` with Rich markup escaped, for a markup string built around repo-controlled text."""
    from rich.markup import escape

    return escape(printable(text, keep=keep))
