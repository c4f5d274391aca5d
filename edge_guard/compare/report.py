"""Comparison reports: the summary table (text, Markdown, HTML) and the report file.

`build_report(store, run_names)` computes the statistics (`compare.stats`) and the plots;
`write_report(comparison, out)` renders HTML (`.html`) or Markdown (`.md`) and writes it
atomically. `summary_table` (`compare.summary`) is the one table every format shows first.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_guard.compare import render
from edge_guard.compare.summary import SUMMARY_HEAD, format_summary, summary_table
from edge_guard.errors import EdgeGuardError
from edge_guard.store import Store

__all__ = [
    "SUMMARY_HEAD",
    "build_report",
    "format_summary",
    "make_plots",
    "summary_table",
    "write_report",
]


def build_report(
    store: Store,
    run_names: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    max_flips: int = 50,
    plots: bool = True,
) -> dict[str, Any]:
    """The comparison dict plus title, generation time, version and plots (SVG strings)."""
    from edge_guard import __version__
    from edge_guard.compare.stats import load_comparison

    c = load_comparison(
        store, run_names, labels, n_resamples=n_resamples, seed=seed, max_flips=max_flips
    )
    c["title"] = title or f"edge_guard comparison: {c['name']}"
    c["generated_at"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    c["version"] = __version__
    c["plots"] = make_plots(c) if plots else {}
    return c


def make_plots(c: dict[str, Any]) -> dict[str, str]:
    from edge_guard.compare import plots as P

    made = {
        "Agreement matrix: verdict agreement and Cohen's kappa between every pair of configs": P.agreement_heatmap(
            c
        ),
        "Label score P(violation): reference against each candidate (red × = verdict flipped)": P.score_scatter(
            c, c["items"]["scores"], c["items"]["verdicts"]
        ),
    }
    return {k: v for k, v in made.items() if v is not None}


def write_report(c: dict[str, Any], out: str | os.PathLike[str]) -> Path:
    """Render `c` (from `build_report`) by `out`'s suffix (.html/.htm or .md) and write it."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".md", ".markdown"):
        raise EdgeGuardError(f"unknown report format {suffix or '(none)'}: use .html or .md")
    text = render.render_html(c) if suffix in (".html", ".htm") else render.render_markdown(c)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise EdgeGuardError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def jsonable(c: dict[str, Any]) -> dict[str, Any]:
    """The comparison without plots (for --json)."""
    return {k: v for k, v in c.items() if k != "plots"}
