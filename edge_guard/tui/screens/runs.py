"""Runs: batch-classify a dataset (progress, labels/s, live metrics, cancel); past runs."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static

from edge_guard.defaults import DEFAULT_MAX_TOKENS
from edge_guard.tui.format import cell, line, options, plain, when
from edge_guard.tui.jobs import CancelFlag, Cancelled, RunOptions, error_text
from edge_guard.tui.policy_io import policy_choices
from edge_guard.tui.screens.base import EdgeScreen
from edge_guard.tui.widgets.metrics import LiveMetrics, render_evaluation
from edge_guard.tui.widgets.set_results import render_multi_evaluation, runs_of_policy_sql


class Planned(Message):
    def __init__(
        self, name: str, total: int, verdicts: list[str], gold: list[bool | None], notes: list[str]
    ) -> None:
        super().__init__()
        self.name, self.total, self.verdicts, self.gold, self.notes = (
            name,
            total,
            verdicts,
            gold,
            notes,
        )


class Progressed(Message):
    def __init__(self, done: int, total: int, rate: float, verdict: str, gold: bool | None) -> None:
        super().__init__()
        self.done, self.total, self.rate, self.verdict, self.gold = done, total, rate, verdict, gold


class Ended(Message):
    def __init__(self, name: str | None, error: str | None, cancelled: bool = False) -> None:
        super().__init__()
        self.name, self.error, self.cancelled = name, error, cancelled


class Evaluated(Message):
    def __init__(self, name: str, renderable: Any) -> None:
        super().__init__()
        self.name, self.renderable = name, renderable


def _datasets() -> list[str]:
    try:
        from edge_guard.datasets.hub import local_datasets

        return [str(p) for p in local_datasets()]
    except Exception:
        return []


class RunsScreen(EdgeScreen):
    MODE = "runs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "start", "Start run", priority=True),
        Binding("escape", "cancel", "Cancel", show=False),
    ]
    PALETTE: ClassVar[list[tuple[str, str, str]]] = [
        ("Start batch run", "classify the dataset (resumes a run with the same name)", "start"),
        ("Cancel run", "stop after the item in flight; finished items stay stored", "cancel"),
        ("Refresh runs", "reload past runs from the store", "refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.flag: CancelFlag | None = None
        self.live = LiveMetrics()
        self.run_name: str | None = None

    @property
    def running(self) -> bool:
        return self.flag is not None

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="form-row", id="rn-form1"):
            yield Label("dataset", classes="field-label")
            yield Input(
                placeholder="dataset file (.jsonl / .csv / .parquet with a text column)",
                id="rn-dataset",
                suggester=SuggestFromList(_datasets()),
                compact=True,
            )
            yield Label("policy", classes="field-label")
            yield Select([], prompt="policy", id="rn-policy", compact=True)
            yield Label("model", classes="field-label")
            yield Input(self.eg.model_ref, placeholder="model", id="rn-model", compact=True)
        with Horizontal(classes="form-row", id="rn-form2"):
            yield Label("name", classes="field-label")
            yield Input(placeholder="default: dataset__policy__model", id="rn-name", compact=True)
            yield Label("limit", classes="field-label")
            yield Input(placeholder="all", id="rn-limit", type="integer", compact=True)
            yield Label("max tokens", classes="field-label")
            yield Input(
                str(DEFAULT_MAX_TOKENS),
                placeholder="max tokens",
                id="rn-max-tokens",
                type="integer",
                compact=True,
                tooltip="most tokens per item",
            )
            yield Select([], prompt="runs of any policy", id="rn-filter", compact=True)
            yield Button("Start ^R", variant="primary", id="rn-start", compact=True)
            yield Button("Cancel Esc", variant="error", id="rn-cancel", disabled=True, compact=True)
        with Horizontal(id="rn-progress-row"):
            yield ProgressBar(total=1, id="rn-progress", show_eta=False)
            yield Static("", id="rn-rate")
        with Horizontal(id="rn-main"):
            yield DataTable(id="rn-runs", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="rn-detail"):
                yield Static(
                    Text(
                        "Give a dataset file and press Ctrl+R. Select a past run to "
                        "see its metrics.",
                        style="dim",
                    ),
                    id="rn-metrics",
                )

    def on_mount(self) -> None:
        table = self.query_one("#rn-runs", DataTable)
        table.add_columns("name", "kind", "status", "policy", "model", "done", "updated")
        table.border_title = "Past runs"
        self.query_one("#rn-detail").border_title = "Metrics"
        choices = policy_choices()
        sel = self.query_one("#rn-policy", Select)
        sel.set_options(options(choices))
        wanted = self.eg.initial_policy or "toxic_simple"
        match = next((v for n, v in choices if n == wanted or v == wanted), None)
        if match is not None or choices:
            sel.value = match or choices[0][1]
        names = sorted({n for n, _v in choices})
        self.query_one("#rn-filter", Select).set_options([(n, n) for n in names])
        self.query_one("#rn-dataset", Input).focus()

    # -- starting / cancelling ------------------------------------------------------------------
    def _int(self, sel: str, what: str, default: int | None) -> tuple[bool, int | None]:
        """(ok, the box's positive integer or `default` when empty); a bad value is a
        notification naming the box, and ok is False."""
        raw = self.query_one(sel, Input).value.strip()
        if not raw:
            return True, default
        try:
            value = int(raw)
            if value < 1:
                raise ValueError
        except ValueError:
            self.notify(f"{what} must be a positive integer, not {raw!r}", severity="error")
            return False, None
        return True, value

    def action_start(self) -> None:
        if self.running:
            self.notify("a run is in progress — Esc cancels it", severity="warning")
            return
        dataset = self.query_one("#rn-dataset", Input).value.strip()
        if not dataset:
            self.notify("give a dataset file first", severity="warning")
            self.query_one("#rn-dataset", Input).focus()
            return
        policy = self.query_one("#rn-policy", Select).value
        if not isinstance(policy, str):
            self.notify("choose a policy", severity="warning")
            return
        limit_ok, limit = self._int("#rn-limit", "limit", None)
        tokens_ok, max_tokens = self._int("#rn-max-tokens", "max tokens", DEFAULT_MAX_TOKENS)
        if not (limit_ok and tokens_ok):
            return
        model = self.query_one("#rn-model", Input).value.strip() or self.eg.model_ref
        self.eg.set_model(model)
        options = RunOptions(model=model, max_tokens=max_tokens)
        name = self.query_one("#rn-name", Input).value.strip() or None
        self.flag = self.eg.models.new_flag()
        self.live = LiveMetrics()
        self._set_running(True)
        self.query_one("#rn-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#rn-rate", Static).update("preparing…")
        self._run(dataset, policy, options, name, limit, self.flag)

    def action_cancel(self) -> None:
        if self.flag is not None:
            self.flag.set()
            self.query_one("#rn-rate", Static).update("cancelling…")

    def _set_running(self, running: bool) -> None:
        self.query_one("#rn-start", Button).disabled = running
        self.query_one("#rn-cancel", Button).disabled = not running

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "rn-start":
            self.action_start()
        elif event.button.id == "rn-cancel":
            self.action_cancel()

    @work(thread=True, group="batch-run")
    def _run(
        self,
        dataset: str,
        policy: str,
        options: RunOptions,
        name: str | None,
        limit: int | None,
        flag: CancelFlag,
    ) -> None:
        from edge_guard.datasets.hub import resolve_dataset
        from edge_guard.runs.batch import execute_run, plan_run
        from edge_guard.runs.outcomes import run_outcomes

        access, store = self.eg.models, self.eg.store
        plan = None
        try:
            access.acquire(flag)
        except Cancelled:
            self.post_message(Ended(None, None, cancelled=True))
            return
        try:
            clf = access.classifier(policy, options, store=store, flag=flag, warm=True)
            plan = plan_run(resolve_dataset(dataset), clf, name=name, limit=limit)
            done = run_outcomes(store, plan.name)
            self.post_message(
                Planned(plan.name, plan.n_items, done.verdicts, done.gold, plan.messages())
            )
            steer = None
            if access.steering is not None:

                def steer(_i: int, row: Any) -> Any:
                    return access.processors(clf, [row.text])[0]

            def on_result(progress: Any, idx: int, result: Any) -> None:
                gold = plan.golds[idx]
                self.post_message(
                    Progressed(
                        progress.done,
                        progress.total,
                        progress.labels_per_s,
                        str(result.verdict),
                        None if gold is None else gold.violation,
                    )
                )
                flag.check()

            execute_run(plan, clf, steer=steer, on_result=on_result)
            self.post_message(Ended(plan.name, None))
        except Cancelled:
            if plan is not None:
                store.set_run_status(plan.name, "interrupted", notes=plan.notes)
            self.post_message(Ended(plan.name if plan else None, None, cancelled=True))
        except Exception as exc:
            self.post_message(Ended(plan.name if plan else None, error_text(exc)))
        finally:
            access.release()

    def on_planned(self, message: Planned) -> None:
        self.run_name = message.name
        for v, g in zip(message.verdicts, message.gold, strict=False):
            self.live.add(v, g)
        bar = self.query_one("#rn-progress", ProgressBar)
        bar.update(total=message.total, progress=len(message.verdicts))
        resumed = f" (resuming: {len(message.verdicts)} done)" if message.verdicts else ""
        self.query_one("#rn-rate", Static).update(line(f"{message.name}{resumed}"))
        for note in message.notes:
            self.notify(note, severity="warning", title="dataset")
        self._show_live()
        self.refresh_data()

    def on_progressed(self, message: Progressed) -> None:
        self.live.add(message.verdict, message.gold)
        self.query_one("#rn-progress", ProgressBar).update(
            total=message.total, progress=message.done
        )
        self.query_one("#rn-rate", Static).update(
            f"{message.done}/{message.total} · {message.rate:.2f} labels/s · Esc cancels"
        )
        self._show_live()

    def _show_live(self) -> None:
        self.query_one("#rn-detail").border_title = line(f"Live metrics · {self.run_name}")
        self.query_one("#rn-metrics", Static).update(self.live.render())

    def on_ended(self, message: Ended) -> None:
        self.flag = None
        self._set_running(False)
        rate = self.query_one("#rn-rate", Static)
        if message.cancelled:
            rate.update("cancelled — finished items are stored; Start again resumes")
            self.notify("run cancelled; Start again to resume it", timeout=3)
        elif message.error is not None:
            rate.update("failed")
            self.notify(message.error, severity="error", title="run failed")
        else:
            rate.update(line(f"done · {message.name}"))
            self.notify(f"run {message.name} finished", title="run done")
        self.refresh_data()
        if message.name and message.error is None:
            self._evaluate(message.name)

    # -- past runs --------------------------------------------------------------------------------
    def refresh_data(self) -> None:
        self.sync_model_input("#rn-model")
        store = self.eg.store
        wanted = self.query_one("#rn-filter", Select).value
        where, params = runs_of_policy_sql(wanted if isinstance(wanted, str) else None)
        rows = store.query(
            "SELECT r.name, r.kind, r.status, r.policy, r.model, r.n_items, r.updated_at, "
            "(SELECT COUNT(*) FROM run_items ri WHERE ri.run = r.name) AS done "
            f"FROM runs r{where} ORDER BY r.updated_at DESC LIMIT 300",
            params,
        )
        table = self.query_one("#rn-runs", DataTable)
        table.clear()
        for r in rows:
            table.add_row(
                cell(r["name"], 44),
                cell(r["kind"]),
                cell(r["status"]),
                cell(r["policy"], 16),
                cell(r["model"], 24),
                cell(f"{r['done']}/{r['n_items'] or '?'}"),
                cell(when(r["updated_at"])),
                key=r["name"],
            )
        table.border_title = f"Past runs · {len(rows)}"

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "rn-filter":  # past runs of one policy (sets included)
            self.refresh_data()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "rn-runs" and event.row_key.value is not None:
            self._evaluate(str(event.row_key.value))

    @work(thread=True, exclusive=True, group="evaluate")
    def _evaluate(self, name: str) -> None:
        store = self.eg.store
        run = store.run(name)
        if run is None:
            return
        from edge_guard.runs.multi_plan import is_multi_run

        if is_multi_run(run):  # several policies: a row per policy, macro, any violation
            try:
                from edge_guard.runs.multi_eval import evaluate_multi_run

                mev = evaluate_multi_run(store, name, n_resamples=200)
                self.post_message(Evaluated(name, render_multi_evaluation(mev)))
            except Exception as exc:
                self.post_message(Evaluated(name, plain(error_text(exc), style="red")))
            return
        if run.get("kind") != "run":
            hint = {
                "study": "open the Study screen (F5) to see it",
                "test": "open the Tests screen (F8) to see it",
            }.get(run.get("kind") or "", "")
            body = Text.assemble(
                line(name, "bold"),
                line(f"  [{run.get('status')}]"),
                "\n",
                line(f"a {run.get('kind')} run · {hint}"),
            )
            self.post_message(Evaluated(name, body))
            return
        try:
            from edge_guard.runs.outcomes import evaluate_run

            ev = evaluate_run(store, name, n_resamples=200)
            self.post_message(Evaluated(name, render_evaluation(ev)))
        except Exception as exc:
            self.post_message(Evaluated(name, plain(error_text(exc), style="red")))

    def on_evaluated(self, message: Evaluated) -> None:
        self.query_one("#rn-detail").border_title = line(f"Metrics · {message.name}")
        self.query_one("#rn-metrics", Static).update(message.renderable)
