"""The Workbench's history: the stored results of the chosen policy (newest first)."""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable

from edge_guard.tui.format import cell, line, meta_of, score_short, score_text, verdict_cell, when


class PolicyHistory(DataTable):
    """One row per stored result of a policy; the current version's rows marked •."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)

    def on_mount(self) -> None:
        self.border_title = "History of this policy"
        self.add_columns("when", "verdict", "score", "answer", "text", "model", "version")

    def show(self, store: Any, name: str | None, current_hash: str | None) -> None:
        """The stored results of policy `name` (`current_hash` marks this version's)."""
        self.clear()
        if name is None:
            return
        rows = store.query(
            "SELECT key, created_at, verdict, metadata, float_label, final, text, model_ref, "
            "policy_hash FROM results WHERE policy_name = ? ORDER BY created_at DESC LIMIT 200",
            [name],
        )
        for r in rows:
            version = (r["policy_hash"] or "")[:7] + (
                " •" if r["policy_hash"] == current_hash else ""
            )
            self.add_row(
                cell(when(r["created_at"])),
                verdict_cell(r["verdict"]),
                cell(score_short(meta_of(r), r["float_label"])),
                cell(r["final"], 12),
                cell(r["text"], 50),
                cell(r["model_ref"], 28),
                cell(version),
                key=r["key"],
            )
        self.border_title = line(f"History of {name} · {len(rows)} stored (• = this version)")


def row_summary(row: dict[str, Any]) -> dict[str, Any]:
    """What Copy copies for a stored row."""
    return {
        "verdict": row["verdict"],
        "score": score_text(meta_of(row), row.get("float_label")),
        "policy": row["policy_name"],
        "model": row["model_ref"],
        "text": row["text"],
        "answer": row["final"],
        "reasoning": row["reasoning"] or "",
    }
