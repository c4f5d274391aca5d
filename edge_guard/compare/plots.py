"""Comparison plots as inline SVG: the agreement matrix across configs, score scatters.

Built on `report.plots` (matplotlib without pyplot, deterministic SVG ids).
"""

from __future__ import annotations

from typing import Any

from edge_guard.report.plots import COLORS, to_svg


def _text(s: str) -> str:
    return s.replace("$", r"\$")


def _short(s: str, n: int = 28) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def agreement_heatmap(comparison: dict[str, Any]) -> str | None:
    """Pairwise verdict agreement (%) with Cohen's kappa, every config against every other."""
    pw = comparison["pairwise"]
    labels, m = pw["labels"], pw["agreement"]
    n = len(labels)
    if n < 2:
        return None
    import numpy as np
    from matplotlib.figure import Figure

    data = np.array([[np.nan if v is None else 100 * v for v in row] for row in m], dtype=float)
    size = 1.6 + 1.1 * n
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(data, cmap="viridis", vmin=min(50.0, float(np.nanmin(data))), vmax=100.0)
    for i in range(n):
        for j in range(n):
            if np.isnan(data[i, j]):
                continue
            k = pw["kappa"][i][j]
            txt = f"{data[i, j]:.1f}%" + (
                "" if i == j else f"\nκ {k:.2f}" if k is not None else "\nκ —"
            )
            ax.text(
                j,
                i,
                txt,
                ha="center",
                va="center",
                fontsize="small",
                color="black" if data[i, j] > 80 else "white",
            )
    ticks = [_text(_short(s)) for s in labels]
    ax.set_xticks(range(n), ticks, rotation=30, ha="right", fontsize="small")
    ax.set_yticks(range(n), ticks, fontsize="small")
    ax.set_title("Verdict agreement (3-way) and Cohen's kappa")
    fig.colorbar(im, ax=ax, label="agreement %", shrink=0.8)
    return to_svg(fig)


def score_scatter(
    comparison: dict[str, Any], scores: list[list[float | None]], verdicts: list[list[str]]
) -> str | None:
    """P(violation): reference (x) against each candidate (y); flipped verdicts in red.

    `scores[k]` / `verdicts[k]` are config k's per-item values, aligned by item index.
    """
    labels = comparison["pairwise"]["labels"]
    panels = []
    for k in range(1, len(labels)):
        pts = [
            (a, b, va != vb)
            for a, b, va, vb in zip(scores[0], scores[k], verdicts[0], verdicts[k], strict=True)
            if a is not None and b is not None
        ]
        if pts:
            panels.append((labels[k], pts))
    if not panels:
        return None
    from matplotlib.figure import Figure

    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(3.8 * cols, 3.6 * rows), layout="constrained")
    for i, (label, pts) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        same = [(a, b) for a, b, f in pts if not f]
        flip = [(a, b) for a, b, f in pts if f]
        ax.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=1)
        if same:
            xs, ys = [a for a, _ in same], [b for _, b in same]
            ax.scatter(xs, ys, s=14, color=COLORS[0], alpha=0.7, label="same verdict")
        if flip:
            xs, ys = [a for a, _ in flip], [b for _, b in flip]
            ax.scatter(xs, ys, s=22, color=COLORS[1], marker="x", label="verdict flipped")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(_text(_short(labels[0], 36)) + " P(violation)", fontsize="small")
        ax.set_ylabel(_text(_short(label, 36)) + " P(violation)", fontsize="small")
        if i == 0:
            ax.legend(fontsize="x-small", loc="upper left")
    return to_svg(fig)
