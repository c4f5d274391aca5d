"""edge_guard.sanitize: terminal, JSON, Markdown and CSV escaping of hostile text (exact outputs)."""

from __future__ import annotations

import json

from edge_guard.sanitize import csv_cell, csv_row, md_block, md_cell, term, term_json, term_line

OSC_TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"


def test_term_shows_escape_sequences_instead_of_obeying_them() -> None:
    assert term(f"a{OSC_TITLE}b{CLEAR}c") == "a\\x1b]0;pwned\\x07b\\x1b[2Jc"
    assert term("C1 csi \x9b2J, del \x7f, nul \x00") == "C1 csi \\x9b2J, del \\x7f, nul \\x00"
    assert (
        term("bidi \u202eevil\u202c, isolate \u2066") == "bidi \\u202eevil\\u202c, isolate \\u2066"
    )
    assert term("lone \udc80 surrogate") == "lone \\udc80 surrogate"
    assert term("keeps\ttabs\nand newlines\r\nCRLF, bare \r CR") == (
        "keeps\ttabs\nand newlines\nCRLF, bare \\x0d CR"
    )
    assert term("plain [/] text é 漢") == "plain [/] text é 漢"
    assert term(None) == "" and term(3) == "3"


def test_term_line_escapes_newlines_and_tabs_too() -> None:
    assert term_line("run [/] x\nfake line\tx\x1b[2J") == "run [/] x\\nfake line\\tx\\x1b[2J"


def test_term_json_is_the_same_json_without_raw_controls() -> None:
    obj = {"text": f"{OSC_TITLE}\x9b\u202e\udc80 é", "n": 1}
    out = term_json(obj)
    assert out == '{"text": "\\u001b]0;pwned\\u0007\\u009b\\u202e\\udc80 é", "n": 1}'
    assert json.loads(out) == obj
    assert term_json({"x": 1}, indent=1) == '{\n "x": 1\n}'


def test_md_cell_and_block_escape_terminal_html_and_markdown() -> None:
    assert md_cell(f"a|b <i>*x*</i> [l](u) {CLEAR}\nnext") == (
        "a\\|b &lt;i&gt;\\*x\\*&lt;/i&gt; \\[l\\](u) \\\\x1b\\[2J ⏎ next"
    )
    assert md_block("# h\n> q\x07") == "> \\# h\n> &gt; q\\\\x07"
    assert md_block("") == "> "


def test_csv_cell_neutralises_formulas_only() -> None:
    for formula in ("=1+1", "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"):
        assert csv_cell(formula) == "'" + formula
    assert csv_cell("ok =1") == "ok =1"
    assert csv_cell(-1.5) == -1.5 and csv_cell(None) is None and csv_cell("") == ""
    assert csv_row({"a": '=HYPERLINK("x")', "b": 2}) == {"a": '\'=HYPERLINK("x")', "b": 2}
