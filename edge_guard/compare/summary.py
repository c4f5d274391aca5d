"""The comparison's summary table: one row of plain strings per config, and its text form.

Shared by the report (`compare.report`) and its renderers (`compare.render`), which escape
the strings; the number formatting helpers (`pct`, `num`, `rate`, `size`, `gpu`) live here.
"""

from __future__ import annotations

from typing import Any

from edge_guard.runs.metrics import fmt_ci

SUMMARY_HEAD = [
    "#",
    "config",
    "agree vs ref (95% CI)",
    "kappa (95% CI)",
    "flips",
    "mean |ΔP|",
    "F1 (95% CI)",
    "P",
    "R",
    "parse",
    "undet.",
    "prompt tok/s",
    "output tok/s",
    "s/label",
    "peak RSS Δ",
    "GPU mem",
    "file",
]


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
        rows.append(
            [
                str(cfg["index"] + 1),
                cfg["label"] + (" (reference)" if vs is None else ""),
                "—" if vs is None else pct_ci(vs["agreement"]),
                "—" if vs is None else fmt_ci(vs["kappa"], 2),
                "—" if vs is None else f"{vs['n_flips']}/{vs['n']}",
                "—" if vs is None else num(vs["delta_p"]["mean_abs"]),
                fmt_ci(ev["f1"]) if gold else "no gold",
                num(ev["precision"]["value"]) if gold else "—",
                num(ev["recall"]["value"]) if gold else "—",
                pct(ev["parse_rate"]),
                pct(ev["undetermined_rate"]),
                rate(sp["prompt_tokens_per_s"]),
                rate(sp["output_tokens_per_s"]),
                num(sp["s_per_label"], 2),
                size(res.get("model_rss_bytes")),
                gpu(res),
                size(cfg["file_bytes"]),
            ]
        )
    return SUMMARY_HEAD, rows


def format_summary(c: dict[str, Any]) -> str:
    """The summary table as aligned text for the terminal, with one line of context."""
    head, rows = summary_table(c)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        f"comparison {c['name']}: {c['n_items']} items, policy {c['policy']}, "
        f"reference {c['reference']}"
    ]
    for r in [head, *rows]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    lines.append(
        "verdicts compared 3-way (undetermined = its own class); speed from the stored "
        "per-item timings; peak RSS Δ = process peak while the config ran − RSS before "
        "its model loaded; GPU from nvidia-smi"
    )
    return "\n".join(lines)
