"""The Results browser: search every stored result by policy, model, verdict and text."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Select, TextArea

from edge_guard.conversation import shown_text
from edge_guard.tui.format import cell, meta_of, score_short, score_text, verdict_cell, when
from edge_guard.tui.screens.base import EdgeScreen
from edge_guard.tui.widgets.verdict import VerdictPanel

LIMIT = 500
ALL = "__all__"


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere (with %, _ and \\ escaped)."""
    esc = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{esc}%"


def search_results(
    store: Any,
    *,
    policy: str | None = None,
    model: str | None = None,
    verdict: str | None = None,
    text: str = "",
    limit: int = LIMIT,
) -> tuple[list[dict[str, Any]], int]:
    """Matching results (newest first, at most `limit`) and the total number matching."""
    where, params = [], []
    for col, val in (("policy_name", policy), ("model_ref", model), ("verdict", verdict)):
        if val:
            where.append(f"{col} = ?")
            params.append(val)
    if text.strip():
        where.append("text LIKE ? ESCAPE '\\'")
        params.append(like_pattern(text.strip()))
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    total = store.query(f"SELECT COUNT(*) AS n FROM results{cond}", params)[0]["n"]
    rows = store.query(
        "SELECT key, created_at, policy_name, model_ref, verdict, metadata, float_label, final, "
        f"text, style, effort FROM results{cond} ORDER BY created_at DESC, key LIMIT ?",
        [*params, limit],
    )
    return rows, total


class ResultsScreen(EdgeScreen):
    MODE = "results"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_search", "Search"),
        Binding("ctrl+o", "copy", "Copy", priority=True),
        Binding("ctrl+w", "open_in_workbench", "Open in Workbench", priority=True),
    ]
    PALETTE: ClassVar[list[tuple[str, str, str]]] = [
        ("Search results", "focus the text filter", "focus_search"),
        ("Copy selected result", "text, verdict, answer and reasoning", "copy"),
        (
            "Open result in Workbench",
            "load its policy and text into the Workbench",
            "open_in_workbench",
        ),
        ("Refresh results", "reload from the store", "refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.selected: dict[str, Any] | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="rs-filters", classes="form-row"):
            yield Select([], prompt="any policy", id="rs-policy", compact=True)
            yield Select([], prompt="any model", id="rs-model", compact=True)
            yield Select(
                [
                    ("violation", "violation"),
                    ("no violation", "no_violation"),
                    ("undetermined", "undetermined"),
                ],
                prompt="any verdict",
                id="rs-verdict",
                compact=True,
            )
            yield Input(placeholder="text contains… (/ to focus)", id="rs-search", compact=True)
        yield DataTable(id="rs-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="rs-detail"):
            with Vertical(id="rs-detail-left"):
                yield VerdictPanel(id="rs-verdict-panel", show_timings=False)
                yield TextArea("", id="rs-text", read_only=True, soft_wrap=True)
            yield TextArea("", id="rs-reasoning", read_only=True, soft_wrap=True)

    def on_mount(self) -> None:
        table = self.query_one("#rs-table", DataTable)
        table.add_columns("when", "policy", "model", "verdict", "score", "answer", "text")
        self.query_one("#rs-text").border_title = "Text"
        self.query_one("#rs-reasoning").border_title = "Reasoning"
        self.query_one(VerdictPanel).update("Select a result to see it here.")
        table.focus()

    def refresh_data(self) -> None:
        store = self.eg.store
        for sel_id, col in (("#rs-policy", "policy_name"), ("#rs-model", "model_ref")):
            sel = self.query_one(sel_id, Select)
            values = [
                r["v"]
                for r in store.query(
                    f"SELECT DISTINCT {col} AS v FROM results WHERE {col} IS NOT NULL ORDER BY v"
                )
            ]
            current = sel.value
            sel.set_options([(cell(v, 40), v) for v in values])
            if current in values:
                sel.value = current
        self._search()

    def _value(self, sel_id: str) -> str | None:
        v = self.query_one(sel_id, Select).value
        return v if isinstance(v, str) else None

    def _search(self) -> None:
        rows, total = search_results(
            self.eg.store,
            policy=self._value("#rs-policy"),
            model=self._value("#rs-model"),
            verdict=self._value("#rs-verdict"),
            text=self.query_one("#rs-search", Input).value,
        )
        table = self.query_one("#rs-table", DataTable)
        table.clear()
        for r in rows:
            table.add_row(
                cell(when(r["created_at"])),
                cell(r["policy_name"], 20),
                cell(r["model_ref"], 26),
                verdict_cell(r["verdict"]),
                cell(score_short(meta_of(r), r["float_label"])),
                cell(r["final"], 10),
                cell(r["text"], 70),
                key=r["key"],
            )
        shown = f"{len(rows)} of {total}" if total > len(rows) else str(total)
        table.border_title = f"Results · {shown} matching"

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id and event.select.id.startswith("rs-"):
            self._search()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "rs-search":
            self._search()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "rs-search":
            self.query_one("#rs-table", DataTable).focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "rs-table" and event.row_key.value is not None:
            self._show(str(event.row_key.value))

    def _show(self, key: str) -> None:
        row = self.eg.store.get(key)
        if row is None:
            return
        self.selected = row
        self.query_one(VerdictPanel).show_row(row)
        text_area = self.query_one("#rs-text", TextArea)
        text_area.border_title = "Conversation (>>> judged)" if row.get("conversation") else "Text"
        text_area.load_text(shown_text(row.get("text"), row.get("conversation")) or "")
        self.query_one("#rs-reasoning", TextArea).load_text(row.get("reasoning") or "")

    def action_focus_search(self) -> None:
        self.query_one("#rs-search", Input).focus()

    def action_copy(self) -> None:
        r = self.selected
        if r is None:
            self.notify("select a result first", severity="warning")
            return
        self.app.copy_to_clipboard(
            f"verdict: {r['verdict']}  {score_text(meta_of(r), r.get('float_label'))}\n"
            f"policy: {r['policy_name']}  model: {r['model_ref']}\ntext: {r['text']}\n"
            f"answer: {r['final']}\nreasoning:\n{r['reasoning'] or ''}\n"
        )
        self.notify("result copied to the clipboard", timeout=2)

    def action_open_in_workbench(self) -> None:
        r = self.selected
        if r is None:
            self.notify("select a result first", severity="warning")
            return
        self.eg.open_in_workbench(r.get("policy_name"), r.get("text") or "")
