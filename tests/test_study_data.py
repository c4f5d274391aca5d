"""Study datasets (ours, the seed's) and results files (the seed's format, our long rows)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from edge_guard.errors import EdgeGuardError
from edge_guard.study.analysis import analyze
from edge_guard.study.data import from_results_file
from edge_guard.study.dataset import default_dataset_path, load_dataset

# The seed's dataset lives in the shared folder beside the repository (`../shared/data`).
SEED_MICRO = Path(__file__).resolve().parents[2] / "shared" / "data" / "controversial-micro.jsonl"
NO_SEED = f"the seed's dataset is not beside the repository ({SEED_MICRO} is absent)"
TOPICS = {
    "politics",
    "parenting",
    "food",
    "technology",
    "work",
    "religion",
    "science",
    "culture",
    "economics",
    "lifestyle",
}


def test_packaged_dataset_is_balanced_short_and_unique() -> None:
    items = load_dataset()
    assert default_dataset_path().is_file()
    assert len(items) >= 150
    per_topic = Counter(it.topic for it in items)
    assert set(per_topic) == TOPICS
    assert min(per_topic.values()) >= 15
    assert len({it.id for it in items}) == len(items)
    assert len({it.text.casefold() for it in items}) == len(items)
    for it in items:  # one sentence each: a single terminator, at the end
        assert len(re.findall(r"[.!?](\s|$)", it.text)) == 1, it.text
        assert len(it.text) < 140, it.text


def test_packaged_dataset_is_not_the_seed_file() -> None:
    if not SEED_MICRO.is_file():
        pytest.skip(NO_SEED)
    seed = {it.text.casefold() for it in load_dataset(SEED_MICRO)}
    assert not seed & {it.text.casefold() for it in load_dataset()}


def test_seed_micro_file_loads_with_line_ids() -> None:
    if not SEED_MICRO.is_file():
        pytest.skip(NO_SEED)
    items = load_dataset(SEED_MICRO)
    assert len(items) == 102
    assert [it.id for it in items[:3]] == ["1", "2", "3"]
    assert all(it.topic is None for it in items)
    assert items[0].canary  # the optional canary field is kept


def test_dataset_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(EdgeGuardError, match=r"bad.jsonl:2: not valid JSON"):
        load_dataset(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(EdgeGuardError, match="duplicate id 'a'"):
        load_dataset(dup)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "  "}\n', encoding="utf-8")
    with pytest.raises(EdgeGuardError, match="non-empty string"):
        load_dataset(empty)
    assert [it.id for it in load_dataset(default_dataset_path(), limit=3)] == [
        "pol-01",
        "pol-02",
        "pol-03",
    ]


def _seed_results(path: Path) -> Path:
    rows = [
        {"text": "A", "model_GPT_OSS_20B": 0.5, "model_GPT_OSS_SAFEGUARD_20B": 0.5},
        {"text": "B", "model_GPT_OSS_20B": 0.25, "model_GPT_OSS_SAFEGUARD_20B": 0.5},
        {"text": "C", "model_GPT_OSS_20B": 1.0, "model_GPT_OSS_SAFEGUARD_20B": 0.5},
        {"text": "D", "model_GPT_OSS_20B": None, "model_GPT_OSS_SAFEGUARD_20B": 0.0},
        {"text": "E", "model_GPT_OSS_20B": 0.75, "model_GPT_OSS_SAFEGUARD_20B": 0.5},
    ]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_seed_results_format(tmp_path: Path) -> None:
    data = from_results_file(_seed_results(tmp_path / "results.json"))
    assert data.models == ["GPT_OSS_20B", "GPT_OSS_SAFEGUARD_20B"]
    assert [o[0].rating for o in data.obs["GPT_OSS_20B"].values()] == [3, 2, 5, None, 4]
    assert [o[0].rating for o in data.obs["GPT_OSS_SAFEGUARD_20B"].values()] == [3, 3, 3, 1, 3]
    a = analyze(data)
    base = a["models"]["GPT_OSS_20B"]
    assert base["n"] == 4 and base["n_unparsed"] == 1
    assert a["unparsed"]["GPT_OSS_20B"][0]["text"] == "D"
    (pair,) = a["pairs"]
    assert pair["n_paired"] == 4 and pair["n_excluded"] == 1
    assert pair["exact_agreement"] == pytest.approx(1 / 4)  # only "A" agrees (3, 3)
    assert pair["within_one"] == pytest.approx(3 / 4)  # A, B (2,3), E (4,3); not C (5,3)
    assert a["divergent"][0]["text"] == "C"


def test_seed_results_reject_values_off_the_scale(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps([{"text": "x", "model_a": 0.3}]), encoding="utf-8")
    with pytest.raises(EdgeGuardError, match="not a 1-5 rating"):
        from_results_file(p)
    p.write_text(json.dumps({"text": "x"}), encoding="utf-8")
    with pytest.raises(EdgeGuardError, match="JSON list"):
        from_results_file(p)


def test_long_rows_round_trip(tmp_path: Path) -> None:
    data = from_results_file(_seed_results(tmp_path / "results.json"))
    out = tmp_path / "rows.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in data.rows()), encoding="utf-8")
    again = from_results_file(out)
    assert again.models == data.models
    a, b = analyze(data), analyze(again)
    assert a["models"] == b["models"] and a["pairs"] == b["pairs"]
