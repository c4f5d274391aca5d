"""Comparison reports: the summary table (text, Markdown, HTML) and the report file.

`build_report(store, run_names)` computes the statistics (`compare.stats`) and the plots;
`write_report(comparison, out)` renders HTML (`.html`) or Markdown (`.md`) and writes it
atomically. `summary_table` is the one table every format shows first.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.runs.metrics import fmt_ci
from edge_guard.store import Store

SUMMARY_HEAD = ["#", "config", "agree vs ref (95% CI)", "kappa (95% CI)", "flips", "mean |ΔP|",
                "F1 (95% CI)", "P", "R", "parse", "undet.", "prompt tok/s", "output tok/s",
                "s/label", "peak RSS Δ", "GPU mem", "file"]  # fmt: skip


def size(n: int | None) -> str:
    from edge_guard.registry.store import fmt_size

    return "n/a" if n is None else fmt_size(n)


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def num(x: float | None, d: int = 3) -> str:
    return "—" if x is None else f"{x:.{d}f}"


def rate(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def pct_ci(m: dict[str, Any]) -> str:
    if m.get("value") is None:
        return "—"
    s = pct(m["value"])
    return s + (f" [{pct(m['ci'][0])}, {pct(m['ci'][1])}]" if m.get("ci") else "")


def gpu(res: dict[str, Any] | None) -> str:
    if not res or res.get("gpu_bytes") is None:
        return "n/a"
    return size(res["gpu_bytes"])


def summary_table(c: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The summary: one row per config (plain strings; renderers escape them)."""
    rows = []
    for cfg in c["configs"]:
        vs, ev, sp = cfg["vs_reference"], cfg["eval"], cfg["speed"]
        res = cfg["resources"] or {}
        gold = ev["n_labelled"] > 0
        rows.append([
            str(cfg["index"] + 1), cfg["label"] + (" (reference)" if vs is None else ""),
            "—" if vs is None else pct_ci(vs["agreement"]),
            "—" if vs is None else fmt_ci(vs["kappa"], 2),
            "—" if vs is None else f"{vs['n_flips']}/{vs['n']}",
            "—" if vs is None else num(vs["delta_p"]["mean_abs"]),
            fmt_ci(ev["f1"]) if gold else "no gold",
            num(ev["precision"]["value"]) if gold else "—",
            num(ev["recall"]["value"]) if gold else "—",
            pct(ev["parse_rate"]), pct(ev["undetermined_rate"]),
            rate(sp["prompt_tokens_per_s"]), rate(sp["output_tokens_per_s"]),
            num(sp["s_per_label"], 2), size(res.get("model_rss_bytes")), gpu(res),
            size(cfg["file_bytes"]),
        ])  # fmt: skip
    return SUMMARY_HEAD, rows


def format_summary(c: dict[str, Any]) -> str:
    """The summary table as aligned text for the terminal, with one line of context."""
    head, rows = summary_table(c)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"comparison {c['name']}: {c['n_items']} items, policy {c['policy']}, "
             f"reference {c['reference']}"]  # fmt: skip
    for r in [head, *rows]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    lines.append("verdicts compared 3-way (undetermined = its own class); speed from the stored "
                 "per-item timings; peak RSS Δ = process peak while the config ran − RSS before "
                 "its model loaded; GPU from nvidia-smi")  # fmt: skip
    return "\n".join(lines)


def build_report(store: Store, run_names: Sequence[str], *, labels: Sequence[str] | None = None,
                 title: str | None = None, n_resamples: int = 1000, seed: int = 0,
                 max_flips: int = 50, plots: bool = True) -> dict[str, Any]:  # fmt: skip
    """The comparison dict plus title, generation time, version and plots (SVG strings)."""
    from edge_guard import __version__
    from edge_guard.compare.stats import load_comparison

    c = load_comparison(store, run_names, labels, n_resamples=n_resamples, seed=seed,
                        max_flips=max_flips)  # fmt: skip
    c["title"] = title or f"edge_guard comparison: {c['name']}"
    c["generated_at"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    c["version"] = __version__
    c["plots"] = make_plots(c) if plots else {}
    return c


def make_plots(c: dict[str, Any]) -> dict[str, str]:
    from edge_guard.compare import plots as P

    made = {
        "Agreement matrix: verdict agreement and Cohen's kappa between every pair of configs":
            P.agreement_heatmap(c),
        "Label score P(violation): reference against each candidate (red × = verdict flipped)":
            P.score_scatter(c, c["items"]["scores"], c["items"]["verdicts"]),
    }  # fmt: skip
    return {k: v for k, v in made.items() if v is not None}


def write_report(c: dict[str, Any], out: str | os.PathLike[str]) -> Path:
    """Render `c` (from `build_report`) by `out`'s suffix (.html/.htm or .md) and write it."""
    from edge_guard.compare import render

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
