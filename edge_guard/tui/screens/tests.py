"""Tests: run a policy's golden cases, see which pass, fail or stay undetermined, and what
changed since the version tested before."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static, TextArea

from edge_guard.tui.format import cell, clip, line, num, options, pct
from edge_guard.tui.jobs import CancelFlag, Cancelled, RunOptions, error_text
from edge_guard.tui.policy_io import policy_choices
from edge_guard.tui.screens.base import EdgeScreen

OUTCOME_STYLE = {"pass": "green", "fail": "bold red", "undetermined": "yellow"}


class CaseDone(Message):
    def __init__(self, index: int, outcome: Any, total: int) -> None:
        super().__init__()
        self.index, self.outcome, self.total = index, outcome, total


class SuiteEnded(Message):
    def __init__(self, report: Any, error: str | None, cancelled: bool = False) -> None:
        super().__init__()
        self.report, self.error, self.cancelled = report, error, cancelled


def report_text(report: Any) -> Text:
    """Pass/fail counts, case metrics and the changes since the previous tested version."""
    out = Text()
    style = "bold green" if report.ok else "bold red"
    out.append(f"{report.passed}/{report.total} passed", style=style)
    out.append(
        f" · {report.failed} failed · {report.undetermined} undetermined · "
        f"{report.cached} from cache\n"
    )
    out.append(
        clip(
            f"policy {report.policy.name} version {report.version.label} · {report.model_ref}", 200
        )
        + "\n",
        style="dim",
    )
    m = report.metrics or {}
    if m.get("kind") == "binary":
        out.append(
            f"precision {num(m.get('precision'))} · recall {num(m.get('recall'))} · "
            f"F1 {num(m.get('f1'))} over {m.get('determined')} determined cases\n"
        )
    elif m.get("kind") == "likert":
        out.append(
            f"mean abs. error {num(m.get('mae'), 2)} · within ±1 {pct(m.get('within_one'))}\n"
        )
    prev = report.previous
    if prev is not None:
        out.append(f"\nsince version {prev.old.label}: ", style="bold")
        out.append(f"{len(prev.fixed)} fixed", style="green")
        out.append(" · ")
        out.append(f"{len(prev.broke)} broke", style="red")
        out.append(f" · {len(prev.still_failing)} still failing\n")
        for f in prev.broke[:5]:
            out.append(
                clip(f"  broke: {f.name} (expected {f.expected}, now {f.new_got})", 200) + "\n",
                style="red",
            )
        for f in prev.fixed[:5]:
            out.append(clip(f"  fixed: {f.name}", 200) + "\n", style="green")
    return out


class TestsScreen(EdgeScreen):
    MODE = "tests"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "start", "Run tests", priority=True),
        Binding("escape", "cancel", "Cancel", show=False),
    ]
    PALETTE: ClassVar[list[tuple[str, str, str]]] = [
        ("Run policy tests", "classify every golden case and judge the answers", "start"),
        ("Cancel tests", "stop the running suite", "cancel"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.flag: CancelFlag | None = None
        self.outcomes: dict[str, Any] = {}
        self.override: Any = None  # a policy handed over from the Workbench (edited text)

    @property
    def running(self) -> bool:
        return self.flag is not None

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="form-row", id="ts-form"):
            yield Label("policy", classes="field-label")
            yield Select([], prompt="policy with cases", id="ts-policy", compact=True)
            yield Label("model", classes="field-label")
            yield Input(self.eg.model_ref, id="ts-model", compact=True)
            yield Button("Run tests ^R", variant="primary", id="ts-start", compact=True)
            yield Button("Cancel Esc", variant="error", id="ts-cancel", disabled=True, compact=True)
        with Horizontal(id="ts-progress-row"):
            yield ProgressBar(total=1, id="ts-progress", show_eta=False)
            yield Static("", id="ts-status")
        with Horizontal(id="ts-main"):
            with Vertical(id="ts-left"):
                with VerticalScroll(id="ts-summary-box"):
                    yield Static(
                        Text(
                            "Choose a policy that has golden cases (cases.jsonl) and press Ctrl+R.",
                            style="dim",
                        ),
                        id="ts-summary",
                    )
                yield DataTable(id="ts-cases", cursor_type="row", zebra_stripes=True)
            yield TextArea("", id="ts-detail", read_only=True, soft_wrap=True)

    def on_mount(self) -> None:
        table = self.query_one("#ts-cases", DataTable)
        table.add_columns("outcome", "case", "expected", "got", "why")
        table.border_title = "Cases"
        self.query_one("#ts-summary-box").border_title = "Summary"
        self.query_one("#ts-detail").border_title = "Case"
        sel = self.query_one("#ts-policy", Select)
        choices = [(n, v) for n, v in policy_choices() if _has_cases(v)]
        sel.set_options(options(choices))
        wanted = self.eg.initial_policy or "toxic_simple"
        match = next((v for n, v in choices if wanted in (n, v)), None)
        if match is not None or choices:
            sel.value = match or choices[0][1]
        table.focus()

    def on_screen_resume(self) -> None:
        self.sync_model_input("#ts-model")
        pending, self.eg.pending_tests = self.eg.pending_tests, None
        if pending is not None and not self.running:
            self.override = pending
            self.action_start()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "ts-policy":
            self.override = None

    def action_start(self) -> None:
        if self.running:
            self.notify("tests are running — Esc cancels", severity="warning")
            return
        policy = self.override
        if policy is None:
            value = self.query_one("#ts-policy", Select).value
            if not isinstance(value, str):
                self.notify("choose a policy with golden cases", severity="warning")
                return
            policy = value
        model = self.query_one("#ts-model", Input).value.strip() or self.eg.model_ref
        self.eg.set_model(model)
        self.flag = self.eg.models.new_flag()
        self.outcomes = {}
        self.query_one("#ts-cases", DataTable).clear()
        self.query_one("#ts-progress", ProgressBar).update(total=None, progress=0)
        name = getattr(policy, "name", None) or clip(str(policy), 40)
        self.query_one("#ts-status", Static).update(line(f"testing {name}…"))
        self._set_running(True)
        self._run(policy, RunOptions(model=model), self.flag)

    def action_cancel(self) -> None:
        if self.flag is not None:
            self.flag.set()
            self.query_one("#ts-status", Static).update("cancelling…")

    def _set_running(self, running: bool) -> None:
        self.query_one("#ts-start", Button).disabled = running
        self.query_one("#ts-cancel", Button).disabled = not running

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ts-start":
            self.action_start()
        elif event.button.id == "ts-cancel":
            self.action_cancel()

    @work(thread=True, group="policy-tests")
    def _run(self, policy: Any, options: RunOptions, flag: CancelFlag) -> None:
        from edge_guard.policy.cases import policy_cases
        from edge_guard.policy_tests.runner import run_policy_tests

        access, store = self.eg.models, self.eg.store
        try:
            access.acquire(flag)
        except Cancelled:
            self.post_message(SuiteEnded(None, None, cancelled=True))
            return
        try:
            clf = access.classifier(policy, options, store=store, flag=flag, warm=True)
            total = len(policy_cases(clf.policy))
            steer = None
            if access.steering is not None:

                def steer(case: Any) -> Any:
                    return access.processors(clf, [case.text])[0]

            def on_outcome(i: int, outcome: Any) -> None:
                self.post_message(CaseDone(i, outcome, total))
                flag.check()

            report = run_policy_tests(
                classifier=clf, logits_processors=steer, on_outcome=on_outcome
            )
            self.post_message(SuiteEnded(report, None))
        except Cancelled:
            self.post_message(SuiteEnded(None, None, cancelled=True))
        except Exception as exc:
            self.post_message(SuiteEnded(None, error_text(exc)))
        finally:
            access.release()

    def on_case_done(self, message: CaseDone) -> None:
        o = message.outcome
        key = str(message.index)
        self.outcomes[key] = o
        table = self.query_one("#ts-cases", DataTable)
        table.add_row(
            Text(o.outcome, style=OUTCOME_STYLE.get(o.outcome, "")),
            cell(o.case.name, 30),
            cell(o.case.expected, 12),
            cell(o.got or "—", 12),
            cell(o.why(), 60),
            key=key,
        )
        done = len(self.outcomes)
        self.query_one("#ts-progress", ProgressBar).update(total=message.total, progress=done)
        fails = sum(x.outcome != "pass" for x in self.outcomes.values())
        self.query_one("#ts-status", Static).update(
            f"{done}/{message.total} cases · {fails} not passing · Esc cancels"
        )

    def on_suite_ended(self, message: SuiteEnded) -> None:
        self.flag = None
        self._set_running(False)
        status = self.query_one("#ts-status", Static)
        if message.cancelled:
            status.update("cancelled")
        elif message.error is not None:
            status.update("failed")
            self.notify(message.error, severity="error", title="policy tests")
        else:
            r = message.report
            status.update(f"done · {r.passed}/{r.total} passed")
            self.query_one("#ts-summary", Static).update(report_text(r))
            self._sort_failures_first(r)

    def _sort_failures_first(self, report: Any) -> None:
        table = self.query_one("#ts-cases", DataTable)
        table.clear()
        order = sorted(
            range(len(report.outcomes)), key=lambda i: (report.outcomes[i].outcome == "pass", i)
        )
        self.outcomes = {}
        for i in order:
            o = report.outcomes[i]
            self.outcomes[str(i)] = o
            table.add_row(
                Text(o.outcome, style=OUTCOME_STYLE.get(o.outcome, "")),
                cell(o.case.name, 30),
                cell(o.case.expected, 12),
                cell(o.got or "—", 12),
                cell(o.why(), 60),
                key=str(i),
            )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "ts-cases":
            return
        o = self.outcomes.get(str(event.row_key.value))
        if o is None:
            return
        resp = o.result.model_response if o.result else None
        self.query_one("#ts-detail", TextArea).load_text(
            f"{o.outcome.upper()} · expected {o.case.expected}, got {o.got}\n"
            f"{o.why()}\n\ntext: {o.case.text}\nnote: {o.case.note}\n"
            f"tags: {', '.join(o.case.tags)}\n\nanswer: {o.final}\n\nreasoning:\n"
            f"{resp.reasoning if resp else ''}"
        )


def _has_cases(path: str) -> bool:
    from pathlib import Path

    p = Path(path)
    return p.is_dir() and any((p / n).is_file() for n in ("cases.jsonl", "cases.csv"))
