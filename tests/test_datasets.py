"""Datasets: JSONL/CSV/Parquet loading, malformed rows with line numbers, gold mapping,
sampling, and the ToxicChat pull (offline message; conversion with a stubbed hub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_guard.cli import main
from edge_guard.datasets.files import load_dataset
from edge_guard.datasets.gold import Gold, map_golds, select_rows
from edge_guard.datasets.hub import KNOWN, pull_dataset, resolve_dataset
from edge_guard.errors import EdgeGuardError
from edge_guard.policy.core import OutputSpec

ROWS = [
    {"id": "a", "text": "hello", "label": 0},
    {"id": "b", "text": "you idiot", "label": 1},
    {"id": "c", "text": "line one\nline two, with comma", "label": 1},
]


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_jsonl_csv_parquet_load_the_same_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    _write_csv(tmp_path / "d.csv", ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    loaded = [load_dataset(tmp_path / f"d.{ext}") for ext in ("jsonl", "csv", "parquet")]
    for ds in loaded:
        assert [r.text for r in ds.rows] == [r["text"] for r in ROWS]
        assert [r.item_id for r in ds.rows] == ["a", "b", "c"]
        assert (ds.text_field, ds.label_field, ds.id_field) == ("text", "label", "id")
        assert ds.malformed == []
        assert len(ds.sha256) == 64
    # CSV labels are strings, JSONL/Parquet keep their types; all map the same way
    golds = [map_golds(ds.rows, OutputSpec())[0] for ds in loaded]
    assert golds[0] == golds[1] == golds[2] == [Gold("0", False), Gold("1", True), Gold("1", True)]
    # the CSV row with an embedded newline starts on line 4 (header = line 1)
    assert [r.line for r in loaded[1].rows] == [2, 3, 4]


def test_toxicchat_fields_are_detected(tmp_path: Path) -> None:
    p = tmp_path / "tc.jsonl"
    p.write_text(json.dumps({"conv_id": "x1", "user_input": "hi", "toxicity": 0}) + "\n")
    ds = load_dataset(p)
    assert (ds.text_field, ds.label_field, ds.id_field) == ("user_input", "toxicity", "conv_id")


def test_explicit_fields_and_missing_field_errors(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"body": "hi", "y": "1"}) + "\n")
    with pytest.raises(EdgeGuardError, match=r"no text field found.*body.*--text-field"):
        load_dataset(p)
    ds = load_dataset(p, text_field="body", label_field="y")
    assert ds.rows[0].text == "hi" and ds.rows[0].label == "1"
    with pytest.raises(EdgeGuardError, match="no label field 'nope'"):
        load_dataset(p, text_field="body", label_field="nope")
    with pytest.raises(EdgeGuardError, match=r"unknown dataset format \.txt"):
        (tmp_path / "d.txt").write_text("x")
        load_dataset(tmp_path / "d.txt")


def test_malformed_jsonl_rows_are_reported_with_line_numbers(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"text": "fine one", "label": 0}).encode(),  # 1
        b'{"text": "unterminated',  # 2: invalid JSON
        json.dumps({"label": 1}).encode(),  # 3: no text
        b"",  # 4: blank, ignored
        json.dumps({"text": 42}).encode(),  # 5: non-string
        b'{"text": "caf\xe9"}',  # 6: invalid UTF-8
        b"[1, 2]",  # 7: not an object
        json.dumps({"text": "   "}).encode(),  # 8: empty
        json.dumps({"text": "\ud800 lone"}).encode(),  # 9: unpaired surrogate escape
        json.dumps({"text": "fine two", "label": 1}).encode(),  # 10
    ]
    p.write_bytes(b"\n".join(lines) + b"\n")
    ds = load_dataset(p)
    assert [r.line for r in ds.rows] == [1, 10]
    bad = {m.line: m.reason for m in ds.malformed}
    assert sorted(bad) == [2, 3, 5, 6, 7, 8, 9]
    assert "invalid JSON" in bad[2]
    assert "missing text field 'text'" in bad[3]
    assert "int, not a string" in bad[5]
    assert "invalid UTF-8" in bad[6]
    assert "not a JSON object" in bad[7]
    assert "empty" in bad[8]
    assert "surrogate" in bad[9]
    summary = ds.malformed_summary()
    assert summary is not None and summary.startswith(
        "7 malformed rows skipped (line 2: invalid JSON"
    )
    assert "and 2 more" in summary


def test_malformed_csv_rows_are_reported(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_bytes(b'text,label\nok,0\n\xff\xfe broken,1\n,1\n"multi\nline",1\nlast,0\n')
    ds = load_dataset(p)
    assert [(r.line, r.text) for r in ds.rows] == [(2, "ok"), (5, "multi\nline"), (7, "last")]
    assert [(m.line, m.reason) for m in ds.malformed] == [(3, "invalid UTF-8"), (4, "empty text")]


def test_an_unclosed_csv_quote_loses_only_its_row(tmp_path: Path) -> None:
    """A quote that never closes is one malformed row; the rows after it are still read."""
    p = tmp_path / "open.csv"
    p.write_bytes(b'text,label\nok,0\n"never closed,1\nmore,0\nlast,1\n')
    ds = load_dataset(p)
    assert [(r.line, r.text, r.label) for r in ds.rows] == [
        (2, "ok", "0"),
        (4, "more", "0"),
        (5, "last", "1"),
    ]
    assert [(m.line, m.reason) for m in ds.malformed] == [
        (3, "unclosed quote (its field would run to the end of the file)")
    ]


def test_parquet_non_string_and_binary_text(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": pa.array([b"ok", b"\xff bad", b"fine"], pa.binary())})
    pq.write_table(table, tmp_path / "b.parquet")
    ds = load_dataset(tmp_path / "b.parquet")
    assert [r.text for r in ds.rows] == ["ok", "fine"]
    assert [(m.line, m.reason) for m in ds.malformed] == [(2, "invalid UTF-8 in text")]
    assert ds.unit == "row"


def test_gold_mapping_and_unmapped_labels(tmp_path: Path) -> None:
    p = tmp_path / "g.jsonl"
    labels = [0, 1, True, False, "toxic", "non-toxic", "TRUE", "safe", 1.0, "maybe", None, "?"]
    p.write_text(
        "".join(json.dumps({"text": f"t{i}", "label": v}) + "\n" for i, v in enumerate(labels))
    )
    ds = load_dataset(p)
    golds, unmapped = map_golds(ds.rows, OutputSpec())
    sides = [None if g is None else g.violation for g in golds]
    assert sides == [False, True, True, False, True, False, True, False, True, None, None, None]
    assert unmapped == {"maybe": 1, "?": 1}  # None is "unlabelled", not unmapped
    # a labels policy: its own label names map directly, 0/1 to its single safe/violation label
    spec = OutputSpec("labels", ("benign", "spam", "scam"), ("spam", "scam"))
    golds, _ = map_golds(ds.rows[:2], spec)
    assert golds == [Gold("benign", False), Gold(None, True)]


def test_selection_first_natural_balanced() -> None:
    golds = [Gold("1", True) if i % 4 == 0 else Gold("0", False) for i in range(40)]
    assert select_rows(golds, limit=5)[0] == [0, 1, 2, 3, 4]
    nat = select_rows(golds, limit=8, sample="natural", seed=3)[0]
    assert nat == select_rows(golds, limit=8, sample="natural", seed=3)[0]
    assert nat != select_rows(golds, limit=8, sample="natural", seed=4)[0]
    assert len(nat) == 8 and nat == sorted(nat)
    bal, note = select_rows(golds, limit=12, sample="balanced", seed=1)
    assert len(bal) == 12 and sum(golds[i].violation for i in bal) == 6 and note is None
    bal, note = select_rows(golds, limit=30, sample="balanced", seed=1)
    assert len(bal) == 20 and note is not None and "reduced to 10 per class" in note
    with pytest.raises(EdgeGuardError, match="both classes"):
        select_rows([Gold("0", False)] * 3, sample="balanced")


def test_pull_offline_is_one_clear_line() -> None:
    res = CliRunner().invoke(main, ["datasets", "pull", "toxic-chat"])
    assert res.exit_code == 1
    err = res.output.strip().splitlines()
    assert "CC-BY-NC-4.0" in err[0]
    assert err[-1].startswith("error: offline")
    assert "any local .jsonl/.csv/.parquet file works" in err[-1]


def test_datasets_list_names_license_and_local_files() -> None:
    res = CliRunner().invoke(main, ["datasets", "list", "--json"])
    out = json.loads(res.output)
    assert out["known"][0]["repo"] == "lmsys/toxic-chat"
    assert "CC-BY-NC-4.0" in out["known"][0]["license"]
    assert out["local"] == []
    assert "CC-BY-NC-4.0" in CliRunner().invoke(main, ["datasets", "list"]).output


def test_pull_converts_toxicchat_csv_to_jsonl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    src = _write_csv(
        tmp_path / "annot.csv",
        [
            {
                "conv_id": "c1",
                "user_input": "hello there",
                "model_output": "hi",
                "toxicity": "0",
                "jailbreaking": "0",
            },
            {
                "conv_id": "c2",
                "user_input": "you are <b>awful</b>",
                "model_output": "no",
                "toxicity": "1",
                "jailbreaking": "0",
            },
        ],
    )
    calls = []

    def fake_download(repo_id: str, filename: str, repo_type: str) -> str:
        calls.append((repo_id, filename, repo_type))
        return str(src)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    path, n = pull_dataset("toxic-chat", "toxicchat0124", "test")
    assert calls == [("lmsys/toxic-chat", "data/0124/toxic-chat_annotation_test.csv", "dataset")]
    assert n == 2 and path == KNOWN["toxic-chat"].local_path("toxicchat0124", "test")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows[1] == {
        "conv_id": "c2",
        "user_input": "you are <b>awful</b>",
        "model_output": "no",
        "toxicity": 1,
    }
    assert resolve_dataset("toxic-chat") == path
    ds = load_dataset("toxic-chat")
    assert [g.violation for g in map_golds(ds.rows, OutputSpec())[0] if g] == [False, True]


def test_unpulled_known_dataset_names_the_pull_command() -> None:
    with pytest.raises(EdgeGuardError, match="edge-guard datasets pull toxic-chat --split train"):
        resolve_dataset("toxic-chat::train")
    with pytest.raises(EdgeGuardError, match="no such dataset file"):
        resolve_dataset("nope.jsonl")
