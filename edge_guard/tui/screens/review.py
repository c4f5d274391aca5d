"""Review: go through a run's results by queue, record decisions, promote them to cases.

Keyboard-first: ↑/↓ move through the queue; `1` violation, `0` no violation, `s` skip (each
committed at once, then the next item); `n` a note and `t` tags (kept with the decision, or
held for the next label); `p` promotes the item to the policy's cases.jsonl; Ctrl+T runs the
policy's tests. The item (its conversation with the judged message marked), the verdict,
P(violation), answer, reasoning, gold and decision are data: shown as Text, never markup.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, Select, Static, TextArea

from edge_guard.tui.format import cell, clip, num, options, plain, verdict_cell
from edge_guard.tui.screens.base import EdgeScreen
from edge_guard.tui.screens.dialogs import TextPrompt
from edge_guard.tui.widgets.review_item import review_item, side

QUEUES = ("triage", "disagree", "uncertain", "undetermined", "flips", "sample", "all")
KEY_LABELS = {"violation": "1", "no_violation": "0", "skip": "s"}


class ReviewScreen(EdgeScreen):
    MODE = "review"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "decide('violation')", "Violation"),
        Binding("0", "decide('no_violation')", "No violation"),
        Binding("s", "decide('skip')", "Skip"),
        Binding("n", "note", "Note"),
        Binding("t", "tags", "Tags"),
        Binding("p", "promote", "Promote to cases"),
        Binding("ctrl+t", "run_tests", "Test policy", priority=True),
    ]
    PALETTE: ClassVar[list[tuple[str, str, str]]] = [
        ("Promote item to cases", "append the item and its decision to cases.jsonl", "promote"),
        (
            "Promote all reviewed items",
            "every decided item of the run, to cases.jsonl",
            "promote_all",
        ),
        ("Test the policy", "run the policy's golden cases (Tests screen)", "run_tests"),
        ("Refresh review", "reload the run and its decisions", "refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.source: Any = None
        self.queue: Any = None
        self.pending: dict[int, dict[str, Any]] = {}  # idx -> note/tags held for a label
        self.current: int | None = None  # idx of the highlighted item

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="rv-form", classes="form-row"):
            yield Label("run", classes="field-label")
            yield Select([], prompt="choose a run", id="rv-run", compact=True)
            yield Label("queue", classes="field-label")
            yield Select(
                [(q, q) for q in QUEUES],
                value="triage",
                allow_blank=False,
                id="rv-queue",
                compact=True,
            )
            yield Label("cases of", classes="field-label")
            yield Input("", placeholder="policy (name or folder)", id="rv-policy", compact=True)
            yield Button("Test ^T", id="rv-test", compact=True)
        yield Static("", id="rv-counter")
        with Horizontal(id="rv-main"):
            yield DataTable(id="rv-items", cursor_type="row", zebra_stripes=True)
            with Vertical(id="rv-right"):
                yield Static(Text("Choose a run to review.", style="dim"), id="rv-detail")
                yield TextArea("", id="rv-text", read_only=True, soft_wrap=True)
                yield TextArea("", id="rv-reasoning", read_only=True, soft_wrap=True)

    def on_mount(self) -> None:
        table = self.query_one("#rv-items", DataTable)
        table.add_columns("item", "why", "verdict", "P(viol)", "gold", "decision", "text")
        self.query_one("#rv-text").border_title = "Text"
        self.query_one("#rv-reasoning").border_title = "Reasoning"
        table.focus()

    # -- loading ------------------------------------------------------------------------------
    def refresh_data(self) -> None:
        sel = self.query_one("#rv-run", Select)
        names = [
            r["name"]
            for r in self.eg.store.query("SELECT name FROM runs ORDER BY updated_at DESC LIMIT 200")
        ]
        current = sel.value
        if names != getattr(self, "_names", None):  # (set_options clears the choice)
            self._names = names
            sel.set_options(options([(n, n) for n in names], 60))
        pending, self.eg.pending_review = getattr(self.eg, "pending_review", None), None
        wanted = pending or (current if isinstance(current, str) else None)
        if wanted in names:
            if sel.value != wanted:
                sel.value = wanted  # loads through on_select_changed
                return
        elif names and self.source is None:
            sel.value = names[0]
            return
        self.load()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id in ("rv-run", "rv-queue"):
            self.load()

    def load(self, keep: int | None = None) -> None:
        """(Re)load the chosen run and queue; the cursor goes back to item `keep`."""
        from edge_guard.review.items import load_source
        from edge_guard.review.queues import build_queue

        run = self.query_one("#rv-run", Select).value
        if not isinstance(run, str):
            return
        queue = str(self.query_one("#rv-queue", Select).value)
        if (
            keep is None
            and self.source is not None
            and self.queue is not None
            and (self.source.run, self.queue.name) == (run, queue)
        ):
            keep = self.current  # a reload of the same queue stays on the same item
        try:
            self.source = load_source(self.eg.store, run)
            self.queue = build_queue(self.source, queue)
        except Exception as exc:
            from edge_guard.tui.jobs import error_text

            self.source = self.queue = None
            self.query_one("#rv-items", DataTable).clear()
            self.query_one("#rv-counter", Static).update(plain(error_text(exc), style="red"))
            return
        from edge_guard.review.items import policy_path

        policy = self.query_one("#rv-policy", Input)
        if not policy.value.strip() or getattr(self, "_policy_of", None) == policy.value:
            s = self.source  # the tested version's folder if the store knows it, else the name
            found = policy_path(self.eg.store, s.policy_name, s.policy_hash) or s.policy_name
            policy.value = self._policy_of = found
        self._fill(keep)

    def _fill(self, keep: int | None) -> None:
        table = self.query_one("#rv-items", DataTable)
        table.clear()
        for it in self.queue.items:
            dec = it.decision.label if it.decision else "—"
            table.add_row(
                cell(it.idx),
                cell(",".join(self.queue.why.get(it.idx, [])) or "—", 22),
                verdict_cell(it.verdict),
                cell(num(it.score)),
                cell(side(it.gold)),
                cell(dec),
                cell(it.text, 60),
                key=str(it.idx),
            )
        table.border_title = clip(f"{self.source.run} · queue {self.queue.name}", 80)
        self._counter()
        if self.queue.note:
            self.notify(self.queue.note, severity="warning")
        if not self.queue.items:
            self.current = None
            self.query_one("#rv-detail", Static).update(Text("This queue is empty.", style="dim"))
            return
        rows = [it.idx for it in self.queue.items]
        row = rows.index(keep) if keep in rows else 0
        table.move_cursor(row=row)
        self._show(rows[row])

    def _counter(self) -> None:
        q = self.queue
        self.query_one("#rv-counter", Static).update(
            Text.assemble(
                (f"reviewed {q.reviewed}", "bold green"),
                " / ",
                (f"remaining {q.remaining}", "bold"),
                f" · {len(q.items)} items in queue {q.name} · threshold {self.source.threshold:g}",
            )
        )

    # -- showing ------------------------------------------------------------------------------
    def _item(self, idx: int | None) -> Any:
        if self.queue is None or idx is None:
            return None
        return next((it for it in self.queue.items if it.idx == idx), None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "rv-items" and event.row_key.value is not None:
            self._show(int(event.row_key.value))

    def _show(self, idx: int) -> None:
        from edge_guard.conversation import shown_text

        it = self._item(idx)
        if it is None:
            return
        self.current = idx
        why = self.queue.why.get(idx, [])
        self.query_one("#rv-detail", Static).update(review_item(it, why, self.pending.get(idx, {})))
        area = self.query_one("#rv-text", TextArea)
        area.border_title = (
            f"Item {idx} · conversation (>>> judged)" if it.conversation else f"Item {idx} · text"
        )
        area.load_text(shown_text(it.text, it.conversation, clip=4000) or "")
        self.query_one("#rv-reasoning", TextArea).load_text(it.reasoning or "")

    # -- deciding -----------------------------------------------------------------------------
    def action_decide(self, label: str) -> None:
        from edge_guard.review.decisions import record

        it = self._item(self.current)
        if it is None:
            self.notify("choose a run with items first", severity="warning")
            return
        held = self.pending.pop(it.idx, {})
        note = held.get("note", it.decision.note if it.decision and "note" not in held else "")
        tags = held.get("tags", list(it.decision.tags) if it.decision else [])
        self._record(record, it, label, note or "", tags)
        self._advance()

    def _record(self, record: Any, it: Any, label: str, note: str, tags: list[str]) -> None:
        try:
            it.decision = record(
                self.eg.store,
                it.target(),
                label,
                note=note,
                tags=tags,
                queue=self.queue.name,
                source="tui",
            )
        except Exception as exc:
            from edge_guard.tui.jobs import error_text

            self.notify(error_text(exc), severity="error", title="review")
            return
        table = self.query_one("#rv-items", DataTable)
        table.update_cell(str(it.idx), table.ordered_columns[5].key, cell(it.decision.label))
        self._counter()
        self._show(it.idx)

    def _advance(self) -> None:
        table = self.query_one("#rv-items", DataTable)
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)

    def action_note(self) -> None:
        it = self._item(self.current)
        if it is None:
            return
        held = self.pending.get(it.idx, {})
        now = held.get("note", it.decision.note if it.decision else "")
        self.app.push_screen(
            TextPrompt(f"Note on item {it.idx}", now, "why (Enter keeps it)"),
            lambda v, idx=it.idx: self._set(idx, "note", v),
        )

    def action_tags(self) -> None:
        it = self._item(self.current)
        if it is None:
            return
        held = self.pending.get(it.idx, {})
        now = held.get("tags", list(it.decision.tags) if it.decision else [])
        self.app.push_screen(
            TextPrompt(f"Tags of item {it.idx}", ", ".join(now), "comma-separated"),
            lambda v, idx=it.idx: self._set(idx, "tags", v),
        )

    def _set(self, idx: int, what: str, value: str | None) -> None:
        """A note or tags: a new decision (history kept) when decided, else held."""
        from edge_guard.review.decisions import clean_tags, record

        it = self._item(idx)
        if value is None or it is None:
            return
        given: Any = list(clean_tags([value])) if what == "tags" else value
        if it.decision is None:
            self.pending.setdefault(idx, {})[what] = given
            self._show(idx)
            return
        d = it.decision
        note, tags = (given, list(d.tags)) if what == "note" else (d.note, given)
        self._record(record, it, d.label, note, tags)

    # -- cases and tests ----------------------------------------------------------------------
    def _policy(self) -> Any:
        from edge_guard.policy.core import load_policy

        ref = self.query_one("#rv-policy", Input).value.strip()
        if not ref:
            raise ValueError("name the policy whose cases to grow")
        return load_policy(ref)

    def action_promote(self) -> None:
        it = self._item(self.current)
        if it is None:
            return
        self._promote([it.idx])

    def action_promote_all(self) -> None:
        if self.source is not None:
            self._promote(None)

    def _promote(self, items: list[int] | None) -> None:
        from edge_guard.review.promote import cases_from_review
        from edge_guard.tui.jobs import error_text

        try:
            done = cases_from_review(self.source, self._policy(), items=items)
        except Exception as exc:
            self.notify(error_text(exc), severity="error", title="promote")
            return
        why = []
        if done.unreviewed:
            why.append("not reviewed yet: decide first")
        if done.skipped:
            why.append("decided skip")
        if done.duplicates:
            why.append("already a case (same text)")
        why += [w for _, w in done.unmappable]
        msg = f"added {len(done.added)} case(s) to {done.path}"
        self.notify(
            msg + (f" — left out: {'; '.join(why)}" if why else ""),
            severity="information" if done.added else "warning",
        )

    def action_run_tests(self) -> None:
        from edge_guard.tui.jobs import error_text

        try:
            policy = self._policy()
        except Exception as exc:
            self.notify(error_text(exc), severity="error", title="tests")
            return
        self.eg.open_tests(str(policy.path) if policy.path else policy)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "rv-test":
            self.action_run_tests()
