"""Report plots as inline SVG strings (matplotlib, no pyplot, deterministic ids).

Each function takes already-computed evaluations / outcomes and returns the `<svg …>`
element text (or None when there is nothing to draw), ready to embed in HTML.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from edge_guard.runs.metrics import TREATMENT_TITLES, VERDICTS, pr_curve

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")


def _text(s: str) -> str:
    """Plain text for matplotlib (no mathtext from user-chosen names)."""
    return s.replace("$", r"\$")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig: Any) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "edge-guard", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "edge_guard"})
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def f1_bars(labels: Sequence[str], evals: Sequence[dict[str, Any]]) -> str | None:
    """Headline F1 with its CI per run, plus markers for the other undetermined treatments."""
    if not any(
        e["treatments"][t]["f1"]["value"] is not None for e in evals for t in TREATMENT_TITLES
    ):
        return None
    fig = _figure(7, 0.5 * len(evals) + 1.8)
    ax = fig.add_subplot()
    ys = list(range(len(evals)))[::-1]
    for y, e in zip(ys, evals, strict=True):
        f1 = e["f1"]
        if f1["value"] is not None:
            err = None
            if f1["ci"]:
                err = [[f1["value"] - f1["ci"][0]], [f1["ci"][1] - f1["value"]]]
            ax.barh(
                y,
                f1["value"],
                color=COLORS[0],
                alpha=0.75,
                xerr=err,
                capsize=3,
                label=TREATMENT_TITLES["excluded"] + " (95% CI)" if y == ys[0] else None,
            )
        for t, marker in (("as_violation", "^"), ("as_safe", "v")):
            v = e["treatments"][t]["f1"]["value"]
            if v is not None:
                ax.plot(
                    v, y, marker, color="black", label=TREATMENT_TITLES[t] if y == ys[0] else None
                )
    ax.set_yticks(ys, [_text(s) for s in labels])
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    fig.legend(loc="outside lower center", ncols=3, fontsize="small")
    return to_svg(fig)


def pr_curves(
    labels: Sequence[str],
    golds: Sequence[Sequence[bool | None]],
    scores: Sequence[Sequence[float | None]],
) -> str | None:
    """Precision-recall curves from the label scores (runs with both gold classes)."""
    all_curves = [(lab, pr_curve(g, s)) for lab, g, s in zip(labels, golds, scores, strict=True)]
    curves = [(lab, c) for lab, c in all_curves if c is not None]
    if not curves:
        return None
    fig = _figure(6, 4.5)
    ax = fig.add_subplot()
    for k, (lab, (recall, precision)) in enumerate(curves):
        ax.step(recall, precision, where="post", color=COLORS[k % len(COLORS)], label=_text(lab))
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall (label score P(violation))")
    ax.legend(loc="upper right", fontsize="small")
    return to_svg(fig)


def confusion_grid(labels: Sequence[str], evals: Sequence[dict[str, Any]]) -> str | None:
    """Gold class × verdict (with undetermined) counts, one panel per run."""
    panels = [
        (lab, e["confusion"]) for lab, e in zip(labels, evals, strict=True) if e["n_labelled"]
    ]
    if not panels:
        return None
    import numpy as np

    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = _figure(3.6 * cols, 2.6 * rows)
    golds = ("violation", "no_violation")
    for k, (lab, conf) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        m = np.array([[conf[g][v] for v in VERDICTS] for g in golds])
        ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1, int(m.max())))
        for i in range(2):
            for j in range(3):
                ax.text(
                    j,
                    i,
                    str(m[i, j]),
                    ha="center",
                    va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black",
                )
        ax.set_xticks(range(3), ["violation", "no viol.", "undet."], fontsize="small")
        ax.set_yticks(range(2), ["gold viol.", "gold safe"], fontsize="small")
        ax.set_title(_text(lab), fontsize="small")
    return to_svg(fig)


def score_histograms(
    labels: Sequence[str],
    golds: Sequence[Sequence[bool | None]],
    scores: Sequence[Sequence[float | None]],
) -> str | None:
    """Distribution of the label score by gold class, one panel per run with scores."""
    panels = []
    for lab, g, s in zip(labels, golds, scores, strict=True):
        pos = [x for x, y in zip(s, g, strict=True) if x is not None and y is True]
        neg = [x for x, y in zip(s, g, strict=True) if x is not None and y is False]
        if pos or neg:
            panels.append((lab, pos, neg))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = _figure(3.6 * cols, 2.6 * rows)
    bins = [i / 20 for i in range(21)]
    for k, (lab, pos, neg) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.hist(
            [neg, pos],
            bins=bins,
            label=["gold safe", "gold violation"],
            color=[COLORS[0], COLORS[1]],
            alpha=0.8,
        )
        ax.set_yscale("symlog")
        ax.set_xlabel("P(violation)", fontsize="small")
        ax.set_title(_text(lab), fontsize="small")
        if k == 0:
            ax.legend(fontsize="x-small")
    return to_svg(fig)
