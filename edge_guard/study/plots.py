"""The Likert distribution of several models side by side: grouped bars (matplotlib) and text.

`likert_chart_text(counts_by_model)` is dependency-free text the CLI and TUI print;
`likert_svg(counts_by_model)` returns an SVG document (what the report embeds);
`write_likert_plot(counts_by_model, path)` writes .svg or .png atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from edge_guard.errors import EdgeGuardError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FILLS = ("█", "▒", "░", "▓", "#", "=")
Counts = Mapping[str, Mapping[str | int, int]]


def _scale(counts_by_model: Mapping[str, Mapping[str, int]]) -> list[str]:
    keys = {str(k) for counts in counts_by_model.values() for k in counts}
    try:
        return [str(k) for k in sorted(int(k) for k in keys)]
    except ValueError:
        return sorted(keys)


def _norm(counts_by_model: Counts) -> dict[str, dict[str, int]]:
    return {m: {str(k): int(v) for k, v in c.items()} for m, c in counts_by_model.items()}


def likert_chart_text(counts_by_model: Counts, width: int = 40) -> str:
    """Grouped horizontal bars, one row per (rating, model); bar length = share of that model."""
    data = _norm(counts_by_model)
    if not data:
        return "(no ratings)"
    scale = _scale(data)
    models = list(data)
    fills = {m: FILLS[i % len(FILLS)] for i, m in enumerate(models)}
    totals = {m: sum(data[m].values()) for m in models}
    name_w = max(len(m) for m in models)
    lines = ["  ".join(f"{fills[m] * 2} {m}" for m in models)]
    for k in scale:
        for j, m in enumerate(models):
            n = data[m].get(k, 0)
            share = n / totals[m] if totals[m] else 0.0
            bar = fills[m] * round(share * width)
            head = k.rjust(len(max(scale, key=len))) if j == 0 else " " * len(max(scale, key=len))
            lines.append(f"{head} {m.ljust(name_w)} {bar.ljust(width)} {n:>4} {share:6.1%}")
    lines.append(
        " " * (len(max(scale, key=len)) + 1) + "  ".join(f"{m}: n={totals[m]}" for m in models)
    )
    return "\n".join(lines)


def _figure(counts_by_model: Counts, title: str) -> Figure:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    data = _norm(counts_by_model)
    scale = _scale(data)
    models = list(data)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    width = 0.8 / max(1, len(models))
    x = np.arange(len(scale))
    for i, m in enumerate(models):
        total = sum(data[m].values()) or 1
        shares = [100 * data[m].get(k, 0) / total for k in scale]
        bars = ax.bar(
            x + (i - (len(models) - 1) / 2) * width,
            shares,
            width,
            label=f"{m} (n={sum(data[m].values())})",
        )
        ax.bar_label(bars, labels=[str(data[m].get(k, 0)) for k in scale], fontsize=8, padding=2)
    ax.set_xticks(x, scale)
    ax.set_xlabel("rating")
    ax.set_ylabel("share of ratings (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def likert_svg(counts_by_model: Counts, title: str = "Likert distribution by model") -> str:
    """An SVG document of the grouped bar chart (bar labels are counts; heights are shares)."""
    import matplotlib.pyplot as plt

    if not counts_by_model:
        raise EdgeGuardError("no ratings to plot")
    import matplotlib

    fig = _figure(counts_by_model, title)
    buf = io.StringIO()
    try:  # a salt per chart keeps element ids unique when several charts share one page
        with matplotlib.rc_context({"svg.hashsalt": title}):
            fig.savefig(buf, format="svg", metadata={"Date": None})
    finally:
        plt.close(fig)
    return buf.getvalue()


def write_likert_plot(
    counts_by_model: Counts, path: str | Path, title: str = "Likert distribution by model"
) -> Path:
    """Write the chart as .svg or .png (via a temporary file)."""
    import matplotlib.pyplot as plt

    out = Path(path)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("svg", "png"):
        raise EdgeGuardError(
            f"plot format {out.suffix or '(none)'} is not supported: use .svg or .png"
        )
    if not counts_by_model:
        raise EdgeGuardError("no ratings to plot")
    fig = _figure(counts_by_model, title)
    tmp = out.with_name(out.name + ".partial")
    try:
        fig.savefig(tmp, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    finally:
        plt.close(fig)
    os.replace(tmp, out)
    return out
