"""Hostile dataset files (issue 16 item 9): a CSV row with more fields than the header and a
quote that never closes are malformed rows with their line numbers, never silently cut or
swallowed text."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from edge_guard.datasets.files import load_dataset


def _csv(tmp_path: Path, content: str, name: str = "d.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(content.encode("utf-8"))
    return p


def test_extra_fields_are_a_malformed_row_not_a_cut_text(tmp_path: Path) -> None:
    ds = load_dataset(_csv(tmp_path, "id,text\n1,I will hurt you, said the man\n2,fine\n"))
    assert [(r.line, r.text) for r in ds.rows] == [(3, "fine")]
    assert [(m.line, m.reason) for m in ds.malformed] == [
        (2, "3 fields but the header has 2 (quote a text that contains ',')")
    ]


def test_an_unclosed_quote_is_reported_and_later_rows_still_load(tmp_path: Path) -> None:
    ds = load_dataset(_csv(tmp_path, 'id,text\n1,"I will hurt you\n2,ok\n3,"multi\nline"\n4,end\n'))
    assert [(r.line, r.text) for r in ds.rows] == [(3, "ok"), (4, "multi\nline"), (6, "end")]
    assert [(m.line, m.reason) for m in ds.malformed] == [
        (2, "invalid CSV (',' expected after '\"')")
    ]  # the row is closed by line 4's quote
    ds = load_dataset(_csv(tmp_path, 'id,text\n1,"I will hurt you\n2,ok\n3,fine\n'))
    assert [(r.line, r.text) for r in ds.rows] == [(3, "ok"), (4, "fine")]
    assert [(m.line, m.reason) for m in ds.malformed] == [
        (2, "unclosed quote (its field would run to the end of the file)")
    ]


def test_an_unclosed_quote_on_the_last_line_and_crlf(tmp_path: Path) -> None:
    ds = load_dataset(_csv(tmp_path, 'text,label\r\n"a\r\nb",1\r\nok,0\r\n"never closed,1'))
    assert [(r.line, r.text) for r in ds.rows] == [(2, "a\r\nb"), (4, "ok")]
    assert [(m.line, m.reason) for m in ds.malformed] == [
        (5, "unclosed quote (its field would run to the end of the file)")
    ]


def test_text_after_a_closing_quote_and_tsv_extra_fields(tmp_path: Path) -> None:
    ds = load_dataset(_csv(tmp_path, 'text,label\n"quoted"tail,1\nok,0\n'))
    assert [(r.line, r.text) for r in ds.rows] == [(3, "ok")]
    assert [(m.line, m.reason) for m in ds.malformed] == [
        (2, "invalid CSV (',' expected after '\"')")
    ]
    ds = load_dataset(_csv(tmp_path, "text\tlabel\na\tb\t1\nok\t0\n", "d.tsv"))
    assert [(m.line, m.reason) for m in ds.malformed] == [
        (2, "3 fields but the header has 2 (quote a text that contains '\\t')")
    ]


def test_run_reports_the_malformed_csv_rows(tmp_path: Path, tiny_model: Path) -> None:
    from edge_guard.cli import main

    data = _csv(tmp_path, 'text,label\nI will hurt you, said the man,1\nfine,0\n"open,1\n')
    r = CliRunner().invoke(
        main,
        [
            "run",
            str(data),
            "-p",
            "toxic_simple",
            "-m",
            str(tiny_model),
            "--max-tokens",
            "2",
            "--db",
            str(tmp_path / "s.db"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (
        "warning: 2 malformed rows skipped (line 2: 3 fields but the header has 2 (quote a "
        "text that contains ','), line 4: unclosed quote"
    ) in r.stderr
    assert "1 items" in r.stderr
