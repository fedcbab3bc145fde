"""The one escaping function for text a repository controls, and the terminal that uses it everywhere."""

from __future__ import annotations

import io

import pytest

from raibid.safetext import markup_escaped, printable, rich_text
from raibid.terminal import Terminal


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b]52;c;ZWNobyBwd25lZA==\x07", "\\x1b]52;c;ZWNobyBwd25lZA==\\x07"),  # OSC 52 clipboard
    ("\x1b]8;;https://x\x1b\\a\x1b]8;;\x1b\\", "\\x1b]8;;https://x\\x1b\\a\\x1b]8;;\\x1b\\"),  # OSC 8 link
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # CSI clear screen
    ("\x1b", "\\x1b"),  # a lone ESC
    ("\x9b2J", "\\x9b2J"),  # C1 CSI
    ("\x85next", "\\x85next"),  # C1 NEL
    ("ok\rFAKE", "ok\\rFAKE"), ("abc\x08\x08\x08xyz", "abc\\x08\\x08\\x08xyz"),
    ("a\x00b\x7f", "a\\x00b\\x7f"), ("t\tn\n", "t\\tn\\n"),
    ("\u202egnp.exe", "\\u202egnp.exe"), ("\u2066x\u2069", "\\u2066x\\u2069"), ("a\u200bb", "a\\u200bb"),
    ("\u2028", "\\u2028"), ("bad \udcff", "bad \\udcff"), ("\U000e0041", "\\U000e0041"),
    ("plain [/x] ünïcode ✓ \ufffd", "plain [/x] ünïcode ✓ \ufffd"),  # printable text is left alone
])
def test_printable_shows_every_control_and_bidi_character_escaped(raw, shown):
    assert printable(raw) == shown


def test_printable_keeps_what_it_is_asked_to_and_cuts_long_text():
    assert printable("a\tb\nc\x1b", keep="\n\t") == "a\tb\nc\\x1b"
    assert printable(None) == "" and printable(3) == "3"
    cut = printable("x" * (1 << 20), limit=100)
    assert len(cut) == 100 and cut.endswith("…")


def test_rich_never_parses_repo_text_as_markup():
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=200)
    console.print(rich_text("[/x] [bold] [link=https://evil]x[/link]"))
    console.print(f"[red]{markup_escaped('[/x] [bold]')}[/red]")
    assert out.getvalue().splitlines() == ["[/x] [bold] [link=https://evil]x[/link]", "[/x] [bold]"]


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_terminal_tables_records_lines_and_messages_escape_controls(tty):
    out, err = (TTY(), TTY()) if tty else (io.StringIO(), io.StringIO())
    term = Terminal(stdout=out, stderr=err, color=True)
    hostile = "[/x]\x1b]52;c;eA==\x07\ttab"
    term.table(["id", "ref"], [("j1", hostile)])
    term.record({"error": hostile, "env": {"X": "\x1b"}})
    term.line("log\tline \x1b[2J")
    term.warn(f"repo {hostile}")
    term.info(f"info {hostile}")
    term.error(f"error {hostile}", hint="[/x]")
    for text in (out.getvalue(), err.getvalue()):
        assert "\x1b]" not in text and "\x07" not in text and "\x1b[2J" not in text
        assert "[/x]" in text
    if not tty:
        assert out.getvalue().splitlines()[1] == "j1\t[/x]\\x1b]52;c;eA==\\x07\\ttab"  # one TSV row
        assert "log\tline \\x1b[2J" in out.getvalue()  # a line keeps its tabs
        assert 'env:   {"X": "\\u001b"}' in out.getvalue()


def test_raw_and_json_pass_the_exact_text():
    import json

    out = io.StringIO()
    term = Terminal(stdout=out)
    term.raw("\x1b]52;c;eA==\x07")
    term.json({"line": "\x1b[2J\u202e"})
    raw, rest = out.getvalue().split("\n", 1)
    assert raw == "\x1b]52;c;eA==\x07"
    assert "\x1b" not in rest and json.loads(rest) == {"line": "\x1b[2J\u202e"}
