"""Evaluation reports over stored runs: one self-contained HTML or Markdown file.

`build_report(names, store)` evaluates each run and gathers the tables' data, the plots
(inline SVG), the reference figures for a known benchmark and the misclassified examples;
`write_report(names, out)` renders it (by `out`'s suffix) and writes it atomically.
Everything taken from the data (texts, answers, reasoning, names) is escaped when rendered.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_guard.conversation import shown_text
from edge_guard.errors import EdgeGuardError
from edge_guard.store import Store

EXAMPLE_KINDS = (
    ("fn", "missed violations (gold violation, verdict no violation)"),
    ("fp", "false alarms (gold safe, verdict violation)"),
    ("undetermined", "undetermined answers on labelled items"),
)


@dataclass
class RunReport:
    name: str
    label: str  # short label for tables and plots: policy · model
    eval: dict[str, Any]
    config: dict[str, Any]
    gold: list[bool | None]
    scores: list[float | None]
    examples: dict[str, list[dict[str, Any]]]


@dataclass
class Report:
    title: str
    generated_at: str
    version: str
    runs: list[RunReport]
    benchmark: str | None
    plots: dict[str, str] = field(default_factory=dict)  # title -> svg

    def pivot(
        self,
    ) -> tuple[list[str], list[tuple[str, str]], dict[tuple[str, str, str], RunReport]]:
        """The seed's table layout: rows (dataset, policy) × model columns."""
        models: list[str] = []
        rows: list[tuple[str, str]] = []
        cells: dict[tuple[str, str, str], RunReport] = {}
        for r in self.runs:
            model, row = str(r.eval["model"]), (_dataset_label(r.eval), str(r.eval["policy"]))
            if model not in models:
                models.append(model)
            if row not in rows:
                rows.append(row)
            cells.setdefault((*row, model), r)
        return models, rows, cells


def short_model(ref: str) -> str:
    """A model reference for labels: the file name's stem for paths."""
    return Path(ref).stem if ref.endswith(".gguf") or "/" in ref or "\\" in ref else ref


def _dataset_label(ev: dict[str, Any]) -> str:
    return Path(str(ev.get("dataset") or "?")).stem


def _examples(
    rows: list[dict[str, Any]], gold: list[bool | None], scores: list[float | None], limit: int
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {k: [] for k, _ in EXAMPLE_KINDS}
    for row, g, s in zip(rows, gold, scores, strict=True):
        v = row["verdict"]
        if g is None:
            continue
        kind = (
            "fn"
            if g and v == "no_violation"
            else "fp"
            if not g and v == "violation"
            else "undetermined"
            if v not in ("violation", "no_violation")
            else None
        )
        if kind is None or len(out[kind]) >= limit:
            continue
        out[kind].append(
            {
                "idx": row["idx"],
                "item_id": row.get("item_id"),
                "gold": g,
                "verdict": v,
                "score": s,
                "text": _clip(shown_text(row.get("text"), row.get("conversation"), 300), 1600),
                "final": _clip(row.get("final"), 300),
                "reasoning": _clip(row.get("reasoning"), 1500),
                "finish": row.get("finish_reason"),
                "error": row.get("error"),
            }
        )
    return out


def _clip(s: str | None, n: int) -> str | None:
    if s is None:
        return None
    return s if len(s) <= n else s[:n] + f"… [{len(s) - n} more characters]"


def build_report(
    names: list[str],
    store: Store,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    benchmark: str | None = "auto",
    max_examples: int = 10,
    title: str | None = None,
    plots: bool = True,
    gold: str = "dataset",
) -> Report:
    """Evaluate runs and gather everything a report shows (`benchmark`: auto | name | None;
    `gold`: dataset | review | dataset+review, see `review.gold`)."""
    from edge_guard import __version__
    from edge_guard.report import reference
    from edge_guard.runs.outcomes import evaluate_outcomes, run_outcomes
    from edge_guard.runs.paths import path_summary

    if not names:
        raise EdgeGuardError("a report needs at least one run name")
    runs = []
    from edge_guard.review.gold import agreement_section, with_gold

    for name in dict.fromkeys(names):
        raw = run_outcomes(store, name)
        out = with_gold(store, raw, gold)  # the dataset's labels or review decisions
        ev = evaluate_outcomes(out, n_resamples=n_resamples, seed=seed)
        ev["paths"] = path_summary(store, name)  # one-pass / cascade runs (runs/paths.py)
        review = agreement_section(store, raw, n_resamples=n_resamples, seed=seed)
        ev["gold_source"], ev["review"] = gold, review if review["n_reviewed"] else None
        label = f"{ev['policy']} · {short_model(str(ev['model']))}"
        runs.append(
            RunReport(
                name,
                label,
                ev,
                out.config,
                out.gold,
                out.scores,
                _examples(out.rows, out.gold, out.scores, max_examples),
            )
        )
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):  # same policy·model on several datasets/configs
        for r in runs:
            r.label = f"{r.label} ({r.name})"
    if benchmark == "auto":
        found = {reference.detect_benchmark(r.eval.get("dataset")) for r in runs}
        benchmark = found.pop() if len(found) == 1 else None
    report = Report(
        title or "edge_guard evaluation report",
        _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        __version__,
        runs,
        benchmark,
    )
    if plots:
        report.plots = make_plots(runs)
    return report


def make_plots(runs: list[RunReport]) -> dict[str, str]:
    from edge_guard.report import plots as P

    labels = [r.label for r in runs]
    evals = [r.eval for r in runs]
    golds = [r.gold for r in runs]
    scores = [r.scores for r in runs]
    made = {
        "F1 per run (headline, 95% CI) and the other treatments": P.f1_bars(labels, evals),
        "Precision-recall curves": P.pr_curves(labels, golds, scores),
        "Confusion matrices (gold × verdict, undetermined shown)": P.confusion_grid(labels, evals),
        "Label score by gold class": P.score_histograms(labels, golds, scores),
    }
    return {k: v for k, v in made.items() if v is not None}


def render(report: Report, fmt: str) -> str:
    if fmt == "html":
        from edge_guard.report.html import render_html

        return render_html(report)
    from edge_guard.report.markdown import render_markdown

    return render_markdown(report)


def write_report(
    names: list[str], out: str | os.PathLike[str], *, store: Store | None = None, **kw: Any
) -> Path:
    """Build and write a report; `.html`/`.htm` → HTML, `.md` → Markdown (atomic write)."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".md", ".markdown"):
        raise EdgeGuardError(f"unknown report format {suffix or '(none)'}: use .html or .md")
    report = build_report(names, store or Store(), **kw)
    text = render(report, "html" if suffix in (".html", ".htm") else "md")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
