"""Study: two models' Likert ratings side by side, their agreement, and the most divergent
items (select one to read both reasonings). Runs new studies with progress and cancel."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static, TextArea

from edge_guard.tui.format import cell, clip, line
from edge_guard.tui.jobs import CancelFlag, Cancelled, RunOptions, error_text
from edge_guard.tui.screens.base import EdgeScreen
from edge_guard.tui.widgets.charts import LikertChart


class Loaded(Message):
    def __init__(
        self,
        name: str,
        analysis: dict[str, Any] | None,
        reasons: dict[str, dict[str, dict[str, Any]]],
        error: str | None = None,
    ) -> None:
        super().__init__()
        self.name, self.analysis, self.reasons, self.error = name, analysis, reasons, error


class StudyProgress(Message):
    def __init__(self, done: int, total: int, model: str) -> None:
        super().__init__()
        self.done, self.total, self.model = done, total, model


class StudyEnded(Message):
    def __init__(self, name: str | None, error: str | None, cancelled: bool = False) -> None:
        super().__init__()
        self.name, self.error, self.cancelled = name, error, cancelled


def divergence_key(item: dict[str, Any]) -> tuple[float, float, str]:
    """Largest rating spread first, then the largest spread of expected ratings (to 0.1, so
    float noise never reorders near-ties), then item id."""
    ex = [v for v in (item.get("expected") or {}).values() if v is not None]
    ex_spread = round(max(ex) - min(ex), 1) if len(ex) > 1 else 0.0
    return (-item["spread"], -ex_spread, str(item["id"]))


def stats_text(a: dict[str, Any]) -> Text:
    """The first model pair's agreement statistics and each model's summary."""
    from edge_guard.study.summary import num, pct, pval

    st = a["study"]
    out = Text()
    out.append(
        clip(
            f"{st['n_items']} items · policy {st.get('policy')} · scale "
            f"{st['scale'][0]}–{st['scale'][1]}",
            200,
        )
        + "\n",
        style="dim",
    )
    for lab, m in a["models"].items():
        out.append(clip(lab, 60), style="bold")
        out.append(f": mean {num(m['mean'], '.2f')} · sd {num(m['sd'], '.2f')}")
        if m.get("middle_share") is not None:
            out.append(f" · {st['middle']}s {pct(m['middle_share'])}")
        if m["n_unparsed"]:
            out.append(f" · {m['n_unparsed']} unparsed", style="yellow")
        out.append("\n")
    for p in a["pairs"][:1]:
        sp, icc = p["spearman"], p["icc"]
        out.append(
            "\n" + clip(f"{p['a']} vs {p['b']} · {p['n_paired']} items rated by both", 200) + "\n",
            style="bold",
        )
        rows = [
            ("exact agreement", f"{pct(p['exact_agreement'])} (differ {pct(p['differ_share'])})"),
            ("within ±1", pct(p["within_one"])),
            ("kappa (quadratic)", num(p["kappa_quadratic"])),
            ("Spearman rho", f"{num(sp['rho'])} (p {pval(sp['p'])})"),
            ("ICC(2,1)", num(icc["icc2_1"])),
        ]
        if "middle" in p:
            m = p["middle"]
            rows.append(
                (
                    f"share of {st['middle']}s",
                    f"{pct(m['share_a'])} vs {pct(m['share_b'])} "
                    f"(McNemar p {pval(m['mcnemar']['p'])})",
                )
            )
        r = p["ratings"]
        rows.append(
            (
                "mean rating",
                f"{num(r['mean_a'], '.2f')} vs {num(r['mean_b'], '.2f')} "
                f"(Wilcoxon p {pval(r['wilcoxon']['p'])})",
            )
        )
        for k, v in rows:
            out.append(f"  {k:<18}", style="cyan")
            out.append(f"{v}\n")
    return out


class StudyScreen(EdgeScreen):
    MODE = "study"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "start", "Start study", priority=True),
        Binding("escape", "cancel", "Cancel", show=False),
    ]
    PALETTE: ClassVar[list[tuple[str, str, str]]] = [
        ("Start study", "rate the opinions with both models (resumes a matching study)", "start"),
        ("Cancel study", "stop; ratings so far stay stored", "cancel"),
        ("Refresh studies", "reload the list of studies", "refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.flag: CancelFlag | None = None
        self.reasons: dict[str, dict[str, dict[str, Any]]] = {}
        self.analysis: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.flag is not None

    def compose_body(self) -> ComposeResult:
        from edge_guard.study.runner import DEFAULT_MODELS

        with Horizontal(classes="form-row", id="st-form"):
            yield Label("study", classes="field-label")
            yield Select([], prompt="choose a study run", id="st-run", compact=True)
            yield Label("models", classes="field-label")
            yield Input(
                ", ".join(DEFAULT_MODELS),
                id="st-models",
                compact=True,
                tooltip="two (or more) model references, comma-separated",
            )
            yield Label("limit", classes="field-label")
            yield Input(placeholder="all", id="st-limit", type="integer", compact=True)
            yield Button("Start ^R", variant="primary", id="st-start", compact=True)
            yield Button("Cancel Esc", variant="error", id="st-cancel", disabled=True, compact=True)
        with Horizontal(id="st-progress-row"):
            yield ProgressBar(total=1, id="st-progress", show_eta=False)
            yield Static("", id="st-status")
        with Horizontal(id="st-top"):
            yield LikertChart(id="st-chart")
            with VerticalScroll(id="st-stats-box"):
                yield Static(
                    Text(
                        "Choose a study run above, or start one with Ctrl+R "
                        "(the packaged controversial-opinion set).",
                        style="dim",
                    ),
                    id="st-stats",
                )
        with Horizontal(id="st-bottom"):
            yield DataTable(id="st-divergent", cursor_type="row", zebra_stripes=True)
            with Vertical(id="st-reasons"):
                yield TextArea("", id="st-reason-a", read_only=True, soft_wrap=True)
                yield TextArea("", id="st-reason-b", read_only=True, soft_wrap=True)

    def on_mount(self) -> None:
        table = self.query_one("#st-divergent", DataTable)
        table.add_columns("spread", "ratings", "topic", "text")
        table.border_title = "Most divergent items"
        self.query_one("#st-chart").border_title = "Likert distributions"
        self.query_one("#st-stats-box").border_title = "Agreement"
        self.query_one("#st-reason-a").border_title = "Reasoning · model A"
        self.query_one("#st-reason-b").border_title = "Reasoning · model B"

    def refresh_data(self) -> None:
        rows = self.eg.store.query(
            "SELECT name, status, n_items FROM runs WHERE kind = 'study' ORDER BY updated_at DESC"
        )
        sel = self.query_one("#st-run", Select)
        current = sel.value
        sel.set_options(
            [(cell(f"{clip(r['name'], 40)} [{r['status']}]", 60), r["name"]) for r in rows]
        )
        names = [r["name"] for r in rows]
        if current in names:
            sel.value = current
        elif names and not self.running:
            sel.value = names[0]

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "st-run" and isinstance(event.value, str):
            self._load(event.value)

    # -- loading a study --------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="study-load")
    def _load(self, name: str) -> None:
        try:
            from edge_guard.study import analyze, from_run

            store = self.eg.store
            analysis = analyze(from_run(store, name), top=50)
            reasons: dict[str, dict[str, dict[str, Any]]] = {}
            for row in store.run_results(name):
                extra = json.loads(row.get("extra") or "{}")
                iid, model = extra.get("item") or row.get("item_id"), extra.get("model")
                if int(extra.get("repeat", 0)) == 0:
                    reasons.setdefault(str(iid), {})[str(model)] = {
                        "final": row.get("final"),
                        "reasoning": row.get("reasoning") or "",
                    }
            self.post_message(Loaded(name, analysis, reasons))
        except Exception as exc:
            self.post_message(Loaded(name, None, {}, error_text(exc)))

    def on_loaded(self, message: Loaded) -> None:
        if message.error is not None or message.analysis is None:
            self.notify(message.error or "cannot load the study", severity="error", title="study")
            return
        a = self.analysis = message.analysis
        self.reasons = message.reasons
        dists = {lab: m["counts"] for lab, m in a["models"].items()}
        self.query_one(LikertChart).show(dists, middle=a["study"].get("middle"))
        self.query_one("#st-stats", Static).update(stats_text(a))
        table = self.query_one("#st-divergent", DataTable)
        table.clear()
        for item in sorted(a["divergent"], key=divergence_key):
            ratings = " vs ".join("?" if v is None else str(v) for v in item["ratings"].values())
            table.add_row(
                cell(item["spread"]),
                cell(ratings),
                cell(item.get("topic"), 30),
                cell(item["text"], 60),
                key=str(item["id"]),
            )
        n = len(a["divergent"])
        table.border_title = f"Most divergent items · {n}" if n else "No items where they differ"
        labels = list(a["models"])
        if not self.running:
            refs = [a["models"][lab]["ref"] for lab in labels]
            self.query_one("#st-models", Input).value = ", ".join(refs)
        for i, sel in enumerate(("#st-reason-a", "#st-reason-b")):
            title = labels[i] if i < len(labels) else "—"
            self.query_one(sel).border_title = line(f"Reasoning · {title}")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "st-divergent" or self.analysis is None:
            return
        iid = str(event.row_key.value)
        per = self.reasons.get(iid, {})
        models = self.analysis["models"]
        for sel, lab in zip(("#st-reason-a", "#st-reason-b"), list(models)[:2], strict=False):
            got = per.get(models[lab]["ref"])
            text = (
                "no reasoning stored (a results file, or not rated yet)"
                if got is None
                else f"answer: {got['final']}\n\n{got['reasoning']}"
            )
            self.query_one(sel, TextArea).load_text(text)

    # -- running a study ----------------------------------------------------------------------------
    def action_start(self) -> None:
        if self.running:
            self.notify("a study is running — Esc cancels it", severity="warning")
            return
        models = [m.strip() for m in self.query_one("#st-models", Input).value.split(",")]
        models = [m for m in models if m]
        if len(models) < 2:
            self.notify("give two model references, comma-separated", severity="warning")
            return
        raw = self.query_one("#st-limit", Input).value.strip()
        limit = int(raw) if raw.isdigit() and int(raw) > 0 else None
        self.flag = self.eg.models.new_flag()
        self._set_running(True)
        self.query_one("#st-status", Static).update("starting…")
        self._run(models, limit, self.flag)

    def action_cancel(self) -> None:
        if self.flag is not None:
            self.flag.set()
            self.query_one("#st-status", Static).update("cancelling…")

    def _set_running(self, running: bool) -> None:
        self.query_one("#st-start", Button).disabled = running
        self.query_one("#st-cancel", Button).disabled = not running

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "st-start":
            self.action_start()
        elif event.button.id == "st-cancel":
            self.action_cancel()

    @work(thread=True, group="study-run")
    def _run(self, models: list[str], limit: int | None, flag: CancelFlag) -> None:
        from edge_guard.study import StudyConfig, run_study

        access, store = self.eg.models, self.eg.store
        config = StudyConfig(models=models, limit=limit)
        clfs: dict[str, Any] = {}

        def factory(model: str) -> Any:
            clfs[model] = access.classifier(
                config.policy, RunOptions(model=model), store=store, flag=flag
            )
            return clfs[model]

        def steer(model: str, item: Any, _repeat: int) -> Any:
            return access.processors(clfs[model], [item.text])[0]

        def progress(done: int, total: int, model: str) -> None:
            self.post_message(StudyProgress(done, total, model))
            flag.check()

        try:
            access.acquire(flag)
        except Cancelled:
            self.post_message(StudyEnded(None, None, cancelled=True))
            return
        name = None
        try:
            result = run_study(
                config,
                store=store,
                classifier_factory=factory,
                steer=steer if access.steering else None,
                on_progress=progress,
            )
            name = result.name
            self.post_message(StudyEnded(name, None))
        except Cancelled:
            rows = store.query(
                "SELECT name FROM runs WHERE kind = 'study' AND status = 'running' AND model = ?",
                [",".join(models)],
            )
            for r in rows:
                store.set_run_status(r["name"], "interrupted")
            self.post_message(StudyEnded(None, None, cancelled=True))
        except Exception as exc:
            self.post_message(StudyEnded(None, error_text(exc)))
        finally:
            access.release()

    def on_study_progress(self, message: StudyProgress) -> None:
        self.query_one("#st-progress", ProgressBar).update(
            total=message.total, progress=message.done
        )
        self.query_one("#st-status", Static).update(
            line(
                f"{message.done}/{message.total} ratings · {clip(message.model, 40)} · Esc cancels"
            )
        )

    def on_study_ended(self, message: StudyEnded) -> None:
        self.flag = None
        self._set_running(False)
        status = self.query_one("#st-status", Static)
        if message.cancelled:
            status.update("cancelled — ratings so far are stored; Start again resumes")
        elif message.error is not None:
            status.update("failed")
            self.notify(message.error, severity="error", title="study failed")
        else:
            status.update(line(f"done · {message.name}"))
            self.notify(f"study {message.name} finished", title="study done")
        self.refresh_data()
        if message.name:
            sel = self.query_one("#st-run", Select)
            if sel.value == message.name:
                self._load(message.name)
            else:
                sel.value = message.name
