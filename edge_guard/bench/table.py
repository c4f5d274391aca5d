"""`edge-guard bench`'s plain-text report: one row per variant, the rates, the ratios and
the definitions behind them (the JSON report carries the same figures)."""

from __future__ import annotations

from typing import Any

from edge_guard.bench import onepass as bench_onepass
from edge_guard.bench.roofline import ROOFLINE_DEFINITION
from edge_guard.sanitize import term_line

STEADY_DEFINITION = (
    "steady l/h: labels/hour once the policy prefix is resident (it is evaluated once per "
    "policy and kept on disk between runs): the variant's time minus its one prefix "
    "evaluation ((d)-(g): timed apart before the texts; (b), (c): the first text's extra "
    "time; (a) pays the prefix for every text by design, so it is not taken off)"
)


def _timed(row: dict[str, Any]) -> str:
    if row.get("timed_texts", row["n"]) == row["n"]:
        return str(row["n"])
    return f"{row['timed_texts']}/{row['n']}"


def format_table(report: dict[str, Any], variants: tuple[str, ...], labels: dict[str, str]) -> str:
    """A plain-text table of the results plus the ratios and the roofline's definition."""
    res, w = report["results"], report["workload"]
    lines = [
        f"model: {term_line(report['model'])}",
        f"workload: prefix {w['prefix_tokens']} tokens, suffix {w['mean_suffix_tokens']:.0f} "
        f"tokens/text, {w['output_tokens']} output tokens/text, n={w['n']}; "
        f"threads {report['engine']['n_threads']}",
        "",
        f"{'variant':32} {'timed':>9} {'seconds':>9} {'cpu s':>9} {'labels/s':>9} "
        f"{'labels/h':>9} {'steady l/h':>10} {'tok/s':>9} {'out tok/s':>9}  same output",
    ]
    for name in (*variants, "roofline", *bench_onepass.ONE_PASS_VARIANTS, "one_pass_roofline"):
        r = res.get(name)
        if r is None:
            continue
        same = r.get("outputs_match_cold")
        n_cmp = min(r["timed_texts"], res.get("cold", r)["timed_texts"])
        mark = "" if same is None else ("yes" if same else f"NO ({r['outputs_differing']}/{n_cmp})")
        lines.append(
            f"{labels[name]:32} {_timed(r):>9} {r['seconds']:>9.2f} {r['cpu_seconds']:>9.2f} "
            f"{r['labels_per_s']:>9.3f} {r['labels_per_hour']:>9.0f} "
            f"{r['steady_labels_per_hour']:>10.0f} "
            f"{r['tokens_per_s']:>9.1f} {r['output_tokens_per_s']:>9.1f}  {mark}"
        )
    rates = report["rates"]
    lines += [
        "",
        f"llama.cpp rates: prompt {rates['prompt_tok_s']:.1f} tok/s (prefix), "
        f"suffix {rates['suffix_tok_s']:.1f} tok/s, generation {rates['gen_tok_s']:.1f} tok/s "
        f"({rates['gen_batch']} sequences/step)",
        "ratios (labels/s): "
        + ", ".join(f"(d)/{k.split('/')[1]} = {v:.2f}" for k, v in report["ratios"].items() if v),
        "steady ratios: "
        + ", ".join(
            f"(d)/{k.split('/')[1]} = {v:.2f}" for k, v in report["steady_ratios"].items() if v
        ),
        "same from CPU time: "
        + ", ".join(f"{v:.2f}" for v in report["cpu_ratios"].values() if v)
        + " (meaningful with --threads 1 on a busy machine; llama.cpp's threads spin)",
        "timed: texts timed / texts; a loop timed on fewer texts is scaled to all of them "
        "(per-text mean; in (b) and (c) the first text, which also evaluates the prefix, once).",
        "tok/s counts every prompt token (cached or not) plus output tokens, per second.",
        STEADY_DEFINITION + ".",
        ROOFLINE_DEFINITION + ".",
    ]
    extra = bench_onepass.table_notes(report)
    return "\n".join(lines + extra)
