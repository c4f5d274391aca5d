"""Helpers for the batch-run, metrics and report tests: small datasets and per-item steering.

A dataset row may carry a `want` field: "1" / "0" steer the synthetic model to that final
answer, anything else (e.g. "?") to an unparsable answer (undetermined).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_guard.classifier import Classifier
from edge_guard.datasets.files import Row
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script
from edge_guard.harmony.vocab import Vocab
from edge_guard.store import Store

SHORT = SamplingConfig(max_tokens=64)


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def labelled_rows(n: int, *, hostile_every: int = 0) -> list[dict[str, Any]]:
    """n rows: gold label, and a `want` making the verdict right, wrong or undetermined."""
    rows = []
    for i in range(n):
        label = int(i % 3 == 0)
        want = str(label) if i % 5 else str(1 - label)  # every 5th item is misclassified
        if i % 7 == 6:
            want = "?"  # undetermined
        text = f"message number {i}"
        if hostile_every and i % hostile_every == 0:
            text = f"<script>alert({i})</script> & <b>bold</b> | pipe"
        rows.append({"id": f"item-{i}", "text": text, "label": label, "want": want})
    return rows


class SlowForced(ForcedTokens):
    """ForcedTokens that sleeps per token: a run slow enough to be killed half-way."""

    def __init__(self, script: Sequence[int], delay: float) -> None:
        super().__init__(script)
        self.delay = delay

    def __call__(self, output_ids, logits):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        return super().__call__(output_ids, logits)


def steer_by_want(vocab: Vocab, wants: dict[str, str], delay: float = 0.0
                  ) -> Callable[[int, Row], ForcedTokens]:  # fmt: skip
    """A `run_dataset(steer=...)` function reading each row's `want` (by row text)."""

    def steer(_idx: int, row: Row) -> ForcedTokens:
        want = wants.get(row.text, "?")
        final = want if want in ("0", "1") else "maybe"
        script = harmony_script(vocab, final, "thinking about it")
        return SlowForced(script, delay) if delay else ForcedTokens(script)

    return steer


def wants_of(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {r["text"]: r["want"] for r in rows}


def make_classifier(model: Path, db: Path | None = None, **kw: Any) -> Classifier:
    return Classifier("toxic_simple", model, sampling=SHORT, store=Store(db), **kw)


def run_item_rows(store: Store, run: str) -> list[dict[str, Any]]:
    return store.query("SELECT idx, key FROM run_items WHERE run = ? ORDER BY idx", [run])
