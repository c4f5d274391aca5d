"""An item that never ran stores nothing heavy (issue 16, item 11).

A text rejected as too long for the context (or otherwise never run) keeps its error row,
so a run counts it and a rerun retries it, but not its prompt ids (a 50 MB text made 224 MB
of them) nor the whole text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_guard.backends.local import EngineSettings
from edge_guard.classification.classifier import Classifier
from edge_guard.response import ModelResponse
from edge_guard.store import Store
from edge_guard.store.rows import UNRUN_TEXT_CHARS, response_fields, storable_text
from tests.runs_helpers import SHORT

BIG = "word " * 800_000  # 4 MB: about 800k prompt tokens


def _row_bytes(row: dict[str, Any]) -> int:
    return sum(len(str(v).encode("utf-8")) for v in row.values() if v is not None)


def test_a_text_too_long_for_the_context_stores_a_small_error_row(
    tiny_model: Path, tmp_path: Path
) -> None:
    store = Store(tmp_path / "db.sqlite")
    clf = Classifier(
        "toxic_simple",
        tiny_model,
        sampling=SHORT,
        store=store,
        engine_settings=EngineSettings(n_ctx=512, n_threads=1),
    )
    [result] = clf.classify([BIG])
    assert result.error is not None and str(result.verdict) == "undetermined"
    row = store.get(result.key)
    assert row is not None and row["error"] == result.error
    assert row["prompt_token_ids"] == "[]"
    assert row["output_token_ids"] == "[]"
    marker = f"… [{len(BIG) - UNRUN_TEXT_CHARS} more characters not stored]"
    assert row["text"] == BIG[:UNRUN_TEXT_CHARS] + marker
    assert _row_bytes(row) < 3 * UNRUN_TEXT_CHARS
    # The database file holds no copy of the prompt either.
    size = sum(p.stat().st_size for p in tmp_path.glob("db.sqlite*"))
    assert size < 1_000_000, size


def test_rows_of_responses_that_ran_keep_their_prompt_ids() -> None:
    ran = ModelResponse("0", "thinking", "eos", prompt_token_ids=[1, 2, 3], output_token_ids=[4])
    assert response_fields(ran)["prompt_token_ids"] == [1, 2, 3]
    failed = ModelResponse.failed("prompt of 800012 tokens does not fit", list(range(10)))
    assert response_fields(failed)["prompt_token_ids"] == []
    # A failure after some output (the model ran) keeps them.
    partial = ModelResponse(
        None, "half", "error", prompt_token_ids=[1, 2], output_token_ids=[7], error="decode failed"
    )
    assert response_fields(partial)["prompt_token_ids"] == [1, 2]
    assert storable_text("short", failed) == "short"
    assert storable_text(BIG, ran) == BIG
