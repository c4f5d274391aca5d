"""Metric displays: running counts during a batch run, and a stored run's evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from edge_guard.tui.format import line, num, pct


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


@dataclass
class LiveMetrics:
    """Counts updated per result; metrics over labelled, determined items (undetermined apart)."""

    verdicts: dict[str, int] = field(
        default_factory=lambda: {"violation": 0, "no_violation": 0, "undetermined": 0}
    )
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    und_labelled: int = 0

    def add(self, verdict: str, gold: bool | None) -> None:
        v = verdict if verdict in self.verdicts else "undetermined"
        self.verdicts[v] += 1
        if gold is None:
            return
        if v == "undetermined":
            self.und_labelled += 1
        elif v == "violation":
            self.tp, self.fp = self.tp + bool(gold), self.fp + (not gold)
        else:
            self.fn, self.tn = self.fn + bool(gold), self.tn + (not gold)

    @property
    def n(self) -> int:
        return sum(self.verdicts.values())

    @property
    def labelled(self) -> int:
        return self.tp + self.fp + self.fn + self.tn + self.und_labelled

    def values(self) -> dict[str, float | None]:
        det = self.tp + self.fp + self.fn + self.tn
        p, r = _ratio(self.tp, self.tp + self.fp), _ratio(self.tp, self.tp + self.fn)
        f1 = 2 * p * r / (p + r) if p is not None and r is not None and (p + r) else None
        return {
            "accuracy": _ratio(self.tp + self.tn, det),
            "precision": p,
            "recall": r,
            "f1": f1,
            "undetermined": _ratio(self.verdicts["undetermined"], self.n),
        }

    def render(self) -> RenderableType:
        v = self.verdicts
        counts = Text.assemble(
            ("violation ", "red"),
            str(v["violation"]),
            ("  no violation ", "green"),
            str(v["no_violation"]),
            ("  undetermined ", "yellow"),
            str(v["undetermined"]),
        )
        if not self.labelled:
            return Group(counts, Text("no gold labels: metrics need a label column", style="dim"))
        m = self.values()
        line = Text.assemble(
            ("accuracy ", "bold"),
            num(m["accuracy"]),
            ("  precision ", "bold"),
            num(m["precision"]),
            ("  recall ", "bold"),
            num(m["recall"]),
            ("  F1 ", "bold"),
            num(m["f1"]),
            ("  undetermined ", "bold"),
            pct(m["undetermined"]),
        )
        note = Text(
            f"live, over {self.labelled - self.und_labelled} labelled determined items "
            f"({self.und_labelled} labelled undetermined excluded)",
            style="dim",
        )
        return Group(counts, line, note)


def render_evaluation(ev: dict[str, Any]) -> RenderableType:
    """A stored run's `evaluate_run` dict: headline with CIs, treatments, confusion, scores."""
    from edge_guard.runs.metrics import TREATMENT_TITLES, fmt_ci

    parts: list[RenderableType] = []
    head = Text.assemble(
        line(ev.get("run"), "bold"),
        line(f"  [{ev.get('status')}]  "),
        line(
            f"{ev.get('n_done')}/{ev.get('n_items')} items · policy {ev.get('policy')}"
            f" · model {ev.get('model')}"
        ),
    )
    parts.append(head)
    v = ev.get("verdicts") or {}
    parts.append(
        Text.assemble(
            ("violation ", "red"),
            str(v.get("violation", 0)),
            ("  no violation ", "green"),
            str(v.get("no_violation", 0)),
            ("  undetermined ", "yellow"),
            f"{v.get('undetermined', 0)} ({pct(ev.get('undetermined_rate'))})",
        )
    )
    if not ev.get("n_labelled"):
        parts.append(Text("no gold labels in this run: only verdict counts", style="dim"))
        return Group(*parts)
    treatments = ev.get("treatments") or {}
    table = Table(box=None, padding=(0, 1), show_edge=False)
    table.add_column("metric", style="bold")
    table.add_column("undetermined excluded [95% CI]")
    table.add_column("und. = violation")
    table.add_column("und. = safe")
    for m in ("accuracy", "precision", "recall", "f1"):
        cells = []
        for t in TREATMENT_TITLES:
            val = (treatments.get(t) or {}).get(m)
            if not isinstance(val, dict):
                cells.append(num(val))
            elif t == "excluded":
                cells.append(fmt_ci(val))
            else:
                cells.append(num(val.get("value")))
        table.add_row(m, *cells)
    parts.append(table)
    conf = ev.get("confusion") or {}
    ct = Table(title="gold × verdict", box=None, padding=(0, 1), show_edge=False)
    ct.add_column("gold \\ verdict", style="bold")
    for col in ("violation", "no_violation", "undetermined"):
        ct.add_column(col)
    for g in ("violation", "no_violation"):
        row = conf.get(g) or {}
        ct.add_row(g, *[str(row.get(c, 0)) for c in ("violation", "no_violation", "undetermined")])
    parts.append(ct)
    sc = ev.get("scores") or {}
    if sc.get("roc_auc") is not None or sc.get("auprc") is not None:
        parts.append(
            Text(
                f"scores: ROC-AUC {num(sc.get('roc_auc'))} · AUPRC {num(sc.get('auprc'))}",
                style="dim",
            )
        )
    return Group(*parts)
