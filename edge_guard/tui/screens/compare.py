"""Compare runs on the same items: the agreement matrix and every label flip.

Two ways in: pick any two runs (A and B, aligned by item id or text), or pick a saved
comparison (`edge-guard compare`, runs of kind "compare"): its summary table, the pairwise
agreement of all configs, and each config's flips against the reference
(`edge_guard.compare.load_comparison`)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Label, Select, Static, TextArea

from edge_guard.tui.format import cell, line, num, pct, plain, verdict_cell
from edge_guard.tui.jobs import error_text
from edge_guard.tui.screens.base import EdgeScreen
from edge_guard.tui.widgets.charts import agreement_matrix


def align_runs(
    rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs of (A's row, B's row) for the same item: by item id when both runs have ids,
    else by text (the n-th occurrence of a text in A with the n-th in B)."""
    use_ids = all(r.get("item_id") for r in rows_a) and all(r.get("item_id") for r in rows_b)

    def keyed(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
        seen: dict[str, int] = {}
        out = {}
        for r in rows:
            k = str(r["item_id"]) if use_ids else str(r.get("text"))
            n = seen.get(k, 0)
            seen[k] = n + 1
            out[(k, n)] = r
        return out

    a, b = keyed(rows_a), keyed(rows_b)
    return [(a[k], b[k]) for k in a if k in b]


def gold_of(row: dict[str, Any]) -> str:
    if "gold_label" in row:
        return row["gold_label"]
    extra = json.loads(row.get("extra") or "{}")
    g = extra.get("gold_violation") if isinstance(extra, dict) else None
    if g is None:
        return row.get("gold") or ""
    return "violation" if g else "no_violation"


def pairwise_table(c: dict[str, Any]) -> Table:
    """Agreement (3-way verdicts) between every pair of a saved comparison's configs."""
    pw = c["pairwise"]
    labels = [cell(lab, 24) for lab in pw["labels"]]
    table = Table(title="pairwise agreement", padding=(0, 1))
    table.add_column("", style="bold")
    for lab in labels:
        table.add_column(lab, justify="right")  # a Text header: shown literally
    for lab, row in zip(labels, pw["agreement"], strict=True):
        table.add_row(lab, *[pct(v) for v in row])
    return table


class Compared(Message):
    def __init__(
        self,
        token: int,
        summary: Any,
        flips: list[tuple[dict[str, Any], dict[str, Any]]],
        error: str | None = None,
    ) -> None:
        super().__init__()
        self.token, self.summary, self.flips, self.error = token, summary, flips, error


class CompareScreen(EdgeScreen):
    MODE = "compare"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+x", "swap", "Swap A/B", priority=True),
    ]
    PALETTE: ClassVar[list[tuple[str, str, str]]] = [
        ("Swap runs A and B", "exchange the two runs", "swap"),
        ("Refresh runs", "reload the run lists", "refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.flips: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._token = 0
        self._auto: dict[str, Any] = {}

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="form-row", id="cp-form0"):
            yield Label("saved comparison", classes="field-label")
            yield Select([], prompt="(none: pick two runs below)", id="cp-saved", compact=True)
        with Horizontal(classes="form-row", id="cp-form"):
            yield Label("run A", classes="field-label")
            yield Select([], prompt="choose run A", id="cp-a", compact=True)
            yield Label("run B", classes="field-label")
            yield Select([], prompt="choose run B", id="cp-b", compact=True)
        with Horizontal(id="cp-top"), VerticalScroll(id="cp-matrix-box"):
            yield Static(
                Text(
                    "Choose two runs over the same dataset (e.g. two policies "
                    "or two models) to see where they agree.",
                    style="dim",
                ),
                id="cp-matrix",
            )
        with Horizontal(id="cp-bottom"):
            yield DataTable(id="cp-flips", cursor_type="row", zebra_stripes=True)
            with Vertical(id="cp-reasons"):
                yield TextArea("", id="cp-reason-a", read_only=True, soft_wrap=True)
                yield TextArea("", id="cp-reason-b", read_only=True, soft_wrap=True)

    def on_mount(self) -> None:
        table = self.query_one("#cp-flips", DataTable)
        table.add_columns("gold", "A", "B", "text")
        table.border_title = "Label flips"
        self.query_one("#cp-matrix-box").border_title = "Agreement"
        self.query_one("#cp-reason-a").border_title = "Run A"
        self.query_one("#cp-reason-b").border_title = "Run B"

    def refresh_data(self) -> None:
        store = self.eg.store
        saved = self.query_one("#cp-saved", Select)
        names_saved = []
        for r in store.query(
            "SELECT config FROM runs WHERE kind = 'compare' ORDER BY updated_at DESC"
        ):
            name = (json.loads(r["config"] or "{}").get("compare") or {}).get("name")
            if name and name not in names_saved:
                names_saved.append(name)
        current_saved = saved.value
        with self.prevent(Select.Changed):
            saved.set_options([(cell(n, 60), n) for n in names_saved])
            if current_saved in names_saved:
                saved.value = current_saved
        self._auto["cp-saved"] = saved.value
        rows = store.query(
            "SELECT name, kind, policy, model FROM runs WHERE kind IN ('run', 'test', 'compare') "
            "ORDER BY updated_at DESC LIMIT 300"
        )
        options = [(cell(r["name"], 60), r["name"]) for r in rows]
        names = [r["name"] for r in rows]
        for sel_id, default in (("#cp-a", 1), ("#cp-b", 0)):
            sel = self.query_one(sel_id, Select)
            current = sel.value
            with self.prevent(Select.Changed):
                sel.set_options(options)
                if current in names:
                    sel.value = current
                elif len(names) >= 2:
                    sel.value = names[default]
            # a Changed event for a value set here is not the user choosing it
            self._auto[sel_id[1:]] = sel.value
        if isinstance(saved.value, str):
            self._token += 1
            self._load_saved(saved.value, self._token)
        else:
            self._maybe_compare()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id in ("cp-a", "cp-b"):
            if self._auto.pop(event.select.id, None) == event.value:
                return
            self._auto.pop("cp-saved", None)
            self.query_one("#cp-saved", Select).clear()
            self._maybe_compare()
        elif event.select.id == "cp-saved" and isinstance(event.value, str):
            if self._auto.pop("cp-saved", None) == event.value:
                return
            self._token += 1
            self._load_saved(event.value, self._token)

    @work(thread=True, exclusive=True, group="compare")
    def _load_saved(self, name: str, token: int) -> None:
        try:
            from edge_guard.compare import comparison_runs, format_summary, load_comparison

            c = load_comparison(
                self.eg.store, comparison_runs(self.eg.store, name), n_resamples=200
            )
            flips = []
            ref_label = c["reference"]
            for cfg in c["configs"][1:]:
                for f in cfg["vs_reference"]["flips"]:
                    gold = f.get("gold")
                    g = "" if gold is None else "violation" if gold else "no_violation"
                    side = [
                        {
                            "verdict": f[k]["verdict"],
                            "final": f[k]["final"],
                            "reasoning": f[k]["reasoning"],
                            "text": f.get("text"),
                            "gold_label": g,
                            "label": lab,
                        }
                        for k, lab in (("ref", ref_label), ("cand", cfg["label"]))
                    ]
                    flips.append((side[0], side[1]))
            summary = Group(plain(format_summary(c)), Text(""), pairwise_table(c))
            self.post_message(Compared(token, summary, flips))
        except Exception as exc:
            self.post_message(Compared(token, None, [], error_text(exc)))

    def action_swap(self) -> None:
        a, b = self.query_one("#cp-a", Select), self.query_one("#cp-b", Select)
        va, vb = a.value, b.value
        self._auto.update({"cp-a": vb, "cp-b": va, "cp-saved": Select.NULL})
        a.value, b.value = vb, va
        self.query_one("#cp-saved", Select).clear()
        self._maybe_compare()

    def _maybe_compare(self) -> None:
        a, b = self.query_one("#cp-a", Select).value, self.query_one("#cp-b", Select).value
        if isinstance(a, str) and isinstance(b, str):
            self._token += 1
            self._compare(a, b, self._token)

    @work(thread=True, exclusive=True, group="compare")
    def _compare(self, a: str, b: str, token: int) -> None:
        try:
            from edge_guard.runs.metrics import agreement

            store = self.eg.store
            pairs = align_runs(store.run_results(a), store.run_results(b))
            if not pairs:
                self.post_message(
                    Compared(
                        token,
                        line(
                            f"{a} and {b} share no items (compare runs over the same dataset)",
                            style="yellow",
                        ),
                        [],
                    )
                )
                return
            va = [ra["verdict"] for ra, _ in pairs]
            vb = [rb["verdict"] for _, rb in pairs]
            ag = agreement(va, vb)
            flips = [(ra, rb) for ra, rb in pairs if ra["verdict"] != rb["verdict"]]
            head = Text.assemble(
                ("A ", "bold"),
                line(a),
                "\n",
                ("B ", "bold"),
                line(b),
                "\n",
                f"{ag['n']} shared items · agreement {pct(ag['agreement'])} · Cohen's kappa "
                f"{num(ag['kappa'])} · {len(flips)} flips",
            )
            summary = Group(head, Text(""), agreement_matrix(va, vb, "A", "B"))
            self.post_message(Compared(token, summary, flips))
        except Exception as exc:
            self.post_message(Compared(token, None, [], error_text(exc)))

    def on_compared(self, message: Compared) -> None:
        if message.token != self._token:  # a newer request is on its way
            return
        if message.error is not None:
            self.notify(message.error, severity="error", title="compare")
            return
        self.query_one("#cp-matrix", Static).update(message.summary)
        table = self.query_one("#cp-flips", DataTable)
        table.clear()
        self.flips = {}
        for i, (ra, rb) in enumerate(message.flips):
            key = str(i)
            self.flips[key] = (ra, rb)
            table.add_row(
                cell(gold_of(ra)),
                verdict_cell(ra["verdict"]),
                verdict_cell(rb["verdict"]),
                cell(ra.get("text"), 70),
                key=key,
            )
        table.border_title = f"Label flips · {len(message.flips)}"

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "cp-flips":
            return
        pair = self.flips.get(str(event.row_key.value))
        if pair is None:
            return
        for sel, row in zip(("#cp-reason-a", "#cp-reason-b"), pair, strict=True):
            if row.get("label"):
                self.query_one(sel).border_title = cell(row["label"], 60)
            self.query_one(sel, TextArea).load_text(
                f"verdict: {row['verdict']}  answer: {row.get('final')}\n"
                f"text: {row.get('text')}\n\n{row.get('reasoning') or ''}"
            )
