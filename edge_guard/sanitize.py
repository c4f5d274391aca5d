"""The one output sanitizer: makes hostile data safe to print, to put in Markdown, or in a CSV cell.

Text under test is hostile: it may carry terminal escape sequences (`ESC ]0;title BEL` retitles
a terminal, `ESC [2J` clears it, a C1 `CSI` does the same on some terminals), bidi overrides
that reorder what a reader sees, lone surrogates that cannot even be encoded, Markdown/HTML that
breaks a report, or spreadsheet formulas. Every printer and writer passes data through here:

- `term(x)`: terminal text. Control characters (C0 except tab and newline, DEL, C1), bidi
  controls and lone surrogates become visible escapes (`\\x1b`, `\\u202e`, `\\udc80`), so an
  escape sequence is shown, never obeyed. `\\r\\n` becomes `\\n`.
- `term_line(x)`: the same on one line (newline and tab escaped too): names, one-line fields.
- `term_json(obj)`: `json.dumps` for a terminal: still valid JSON with the same meaning, with
  every character `term` would escape written as a `\\uXXXX` escape.
- `md_cell(x)` / `md_block(x)`: Markdown table cell / quoted block: terminal-escaped,
  HTML-escaped and Markdown-escaped.
- `csv_cell(x)`: a CSV cell: a string starting with `=`, `+`, `-`, `@`, tab or CR (a
  spreadsheet formula) gets a leading `'`.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

# C0 controls except tab and newline, DEL, C1 controls, bidi embeddings/overrides/isolates,
# and lone surrogates (U+D800-U+DFFF cannot be encoded as UTF-8).
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_TERM = re.compile(f"[{_UNSAFE}]")
_TERM_LINE = re.compile(f"[{_UNSAFE}\t\n]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~>!])")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    if c == 0x09:
        return "\\t"
    if c == 0x0A:
        return "\\n"
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def _text(x: Any) -> str:
    return "" if x is None else str(x)


def term(x: Any) -> str:
    """Text safe for a terminal: control characters and escape sequences shown, not obeyed."""
    return _TERM.sub(_escape, _text(x).replace("\r\n", "\n"))


def term_line(x: Any) -> str:
    """`term` on one line: newlines and tabs escaped too (for names and one-line fields)."""
    return _TERM_LINE.sub(_escape, _text(x).replace("\r\n", "\n"))


def term_json(obj: Any, **kw: Any) -> str:
    """`json.dumps(obj, ensure_ascii=False)` safe for a terminal (same JSON value)."""
    kw.setdefault("ensure_ascii", False)
    return _TERM.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, **kw))


def md_cell(x: Any) -> str:
    """One line of text safe inside a Markdown table cell (newlines shown as ⏎)."""
    s = _MD_SPECIAL.sub(r"\\\1", html.escape(term(x), quote=False))
    return re.sub(r"\s*\n\s*", " ⏎ ", s)


def md_block(x: Any) -> str:
    """A multi-line quoted Markdown block of escaped text."""
    lines = [html.escape(line, quote=False) for line in term(x).splitlines() or [""]]
    return "\n".join("> " + _MD_SPECIAL.sub(r"\\\1", line) for line in lines)


def csv_cell(x: Any) -> Any:
    """A value safe as a CSV cell: a string that a spreadsheet would run as a formula gets a
    leading `'`; other values are returned unchanged."""
    if isinstance(x, str) and x.startswith(_FORMULA_START):
        return "'" + x
    return x


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """`csv_cell` over every value of a row."""
    return {k: csv_cell(v) for k, v in row.items()}
