"""Review decisions out of the store: JSONL (one object per decision) or CSV (formula-safe).

By default the decision in force per item; `history=True` writes every decision, oldest
first. A run narrows the export to the decisions on that run's items (made in any run of
its policy), each with the run's item index.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.review.decisions import Decision, all_decisions
from edge_guard.sanitize import csv_row
from edge_guard.store import Store

FORMATS = ("jsonl", "csv")
COLUMNS = (
    "id",
    "policy_name",
    "label",
    "note",
    "tags",
    "reviewer",
    "created_at",
    "run",
    "idx",
    "item_id",
    "text",
    "conversation",
    "model_verdict",
    "model_score",
    "result_key",
    "policy_hash",
    "content_key",
    "queue",
    "source",
    "in_force",
)


def export_rows(
    store: Store, *, run: str | None = None, policy: str | None = None, history: bool = False
) -> list[dict[str, Any]]:
    """Decisions as flat dicts (COLUMNS); `in_force` marks the latest decision per item."""
    current = {d.id for d in all_decisions(store, policy_name=policy)}
    found: list[Decision] = all_decisions(store, policy_name=policy, include_history=history)
    positions: dict[str, list[int]] | None = None
    if run is not None:
        from edge_guard.review.items import load_source

        source = load_source(store, run)
        policy_of = source.policy_name
        positions = {}
        for it in source.items:
            positions.setdefault(it.content_key, []).append(it.idx)
        found = [d for d in found if d.policy_name == policy_of and d.content_key in positions]
    rows = []
    for d in found:
        row = {c: getattr(d, c, None) for c in COLUMNS if c not in ("tags", "in_force")}
        row["tags"] = list(d.tags)
        row["in_force"] = d.id in current
        if positions is not None:  # the item in the exported run (the decision may be older)
            row["run"], row["idx"] = run, positions[d.content_key][0]
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    """The rows as JSONL or CSV text (CSV: tags `;`-joined, every cell `csv_cell`-safe)."""
    if fmt not in FORMATS:
        raise EdgeGuardError(f"unknown export format {fmt!r} (choose jsonl or csv)")
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(csv_row({**r, "tags": ";".join(r["tags"])}))
    return buf.getvalue()


def format_of(path: str | Path | None, given: str | None) -> str:
    """`given`, else from the file's suffix (.csv → csv), else jsonl."""
    if given:
        return given
    return "csv" if path is not None and Path(path).suffix.lower() == ".csv" else "jsonl"


def write(text: str, path: str | Path) -> Path:
    """Write atomically (a temp file renamed over `path`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8", errors="backslashreplace", newline="")
    os.replace(tmp, path)
    return path
