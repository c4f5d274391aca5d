"""Renders a `Report` as Markdown (plots embedded as data-URI SVG images).

Data values go through `edge_guard.sanitize` (`md()` = `md_cell`, `block()` = `md_block`:
terminal controls, HTML and Markdown escaped), so a hostile text can neither inject HTML,
break a table nor carry an escape sequence; long texts are shown in quoted blocks.
"""

from __future__ import annotations

import base64

from edge_guard.report import EXAMPLE_KINDS, Report, short_model
from edge_guard.report import reference as ref
from edge_guard.report.paths import HEAD, NOTE, paths_rows
from edge_guard.runs.metrics import METRICS, TREATMENT_TITLES, TREATMENTS, VERDICTS, fmt_ci
from edge_guard.sanitize import md_block as block
from edge_guard.sanitize import md_cell as md

__all__ = ["block", "md", "render_markdown", "table"]


def num(x: float | None, d: int = 3) -> str:
    return "—" if x is None else f"{x:.{d}f}"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def render_markdown(report: Report) -> str:
    runs = report.runs
    ci = runs[0].eval["ci"]
    out = [
        f"# {md(report.title)}",
        "",
        f"Generated {md(report.generated_at)} by edge\\_guard {md(report.version)}; {len(runs)} "
        f"run(s). Intervals: {md(ci['method'])}, {ci['resamples']} resamples, seed {ci['seed']}, "
        f"{int(ci['level'] * 100)}% (point estimate with the percentile interval).",
        "",
        "**Headline metrics exclude undetermined answers** (computed over determined items, "
        "shown with the undetermined rate); the same metrics with undetermined counted as "
        "violation and as safe are shown beside them.",
        "",
        "## Policy × model",
        "",
    ]
    models, rows, cells = report.pivot()
    body = []
    for ds, pol in rows:
        line = [md(ds), md(pol)]
        for m in models:
            r = cells.get((ds, pol, m))
            e = r.eval if r else None
            line.append(
                f"F1 {md(fmt_ci(e['f1']))}; P {num(e['precision']['value'])}, R "
                f"{num(e['recall']['value'])}; parse {pct(e['parse_rate'])}, undetermined "
                f"{pct(e['undetermined_rate'])}"
                if e
                else ""
            )
        body.append(line)
    heads = ["dataset", "policy", *(md(short_model(m)) for m in models)]
    out += [table(heads, body), "", "## All runs", ""]
    body = []
    for k, r in enumerate(runs, 1):
        e, s = r.eval, r.eval.get("scores") or {}
        body.append(
            [
                str(k),
                md(r.name),
                md(e["policy"]),
                md(e["model"]),
                f"{e['n_done']}/{e['n_items']}",
                md(e["status"]),
                md(fmt_ci(e["f1"])),
                md(fmt_ci(e["precision"])),
                md(fmt_ci(e["recall"])),
                num(e["treatments"]["as_violation"]["f1"]["value"]),
                num(e["treatments"]["as_safe"]["f1"]["value"]),
                pct(e["parse_rate"]),
                pct(e["undetermined_rate"]),
                num(s.get("roc_auc")),
                num(s.get("auprc")),
            ]
        )
    out.append(
        table(
            [
                "#",
                "run",
                "policy",
                "model",
                "done",
                "status",
                "F1 (95% CI)",
                "precision",
                "recall",
                "F1 und.=viol.",
                "F1 und.=safe",
                "parse",
                "undet.",
                "ROC-AUC",
                "AUPRC",
            ],
            body,
        )
    )
    if paths_rows(runs):  # one-pass / cascade runs
        out += [
            "",
            "## Reasoning paths",
            "",
            table(HEAD, [[md(c) for c in row] for row in paths_rows(runs)]),
            "",
            md(NOTE),
        ]
    if report.benchmark == "toxic-chat":
        out += ["", "## Reference figures (ToxicChat)", ""]
        ours = []
        for r in runs:
            fam = ref.model_family(r.eval["model"]) or ""
            seed = ref.SEED_TOXICCHAT.get(str(r.eval["policy"]), (0, {}))[1].get(fam)
            oa = ref.OPENAI_F1.get(fam)
            ours.append(
                [
                    md(r.eval["policy"]),
                    md(r.eval["model"]),
                    md(fmt_ci(r.eval["f1"])),
                    num(r.eval["treatments"]["as_safe"]["f1"]["value"]),
                    num(seed[2]) if seed else "—",
                    f"{oa[1] / 100:.3f}" if oa else "—",
                ]
            )
        out.append(
            table(
                [
                    "policy",
                    "model",
                    "our F1 (headline)",
                    "our F1 (und.=safe)",
                    f"seed F1 (n={ref.SEED_N})",
                    "OpenAI F1",
                ],
                ours,
            )
        )
        seed_rows = [
            [
                md(p),
                f"\\~{c:,}",
                " / ".join(num(x) for x in bm["gpt-oss-20b"][:3]),
                " / ".join(num(x) for x in bm["gpt-oss-safeguard-20b"][:3]),
            ]
            for p, (c, bm) in ref.SEED_TOXICCHAT.items()
        ]
        out += [
            "",
            table(
                ["policy", "chars", "gpt-oss-20b P / R / F1", "safeguard-20b P / R / F1"], seed_rows
            ),
            "",
            f"Source: {md(ref.SEED_SOURCE)}.",
            "",
        ]
        out.append(
            table(
                ["model", "OpenAI Mod 2022 F1", "ToxicChat F1"],
                [[md(m), f"{a:.1f}", f"{b:.1f}"] for m, (a, b) in ref.OPENAI_F1.items()],
            )
        )
        out += ["", f"Source: {md(ref.OPENAI_SOURCE)}."]
    if report.plots:
        out += ["", "## Plots", ""]
        for title, svg in report.plots.items():
            data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
            out += [f"![{md(title)}](data:image/svg+xml;base64,{data})", ""]
    out += ["", "## Run details"]
    for k, r in enumerate(runs, 1):
        e = r.eval
        out += [
            "",
            f"### \\#{k} {md(r.name)}",
            "",
            f"Dataset {md(e.get('dataset'))}; policy {md(e['policy'])}; model {md(e['model'])}; "
            f"{e['n_done']}/{e['n_items']} done, {e['n_labelled']} labelled "
            f"({e['n_gold_violation']} violations).",
            "",
        ]
        from edge_guard.review.gold import review_summary

        if review_summary(e):  # scored against review decisions, or the run has some
            out += [md(review_summary(e)), ""]
        head = ["metric"] + [
            md(TREATMENT_TITLES[t]) + (" (headline)" if t == e["headline"] else "")
            for t in TREATMENTS
        ]
        rows_ = [[m] + [md(fmt_ci(e["treatments"][t][m])) for t in TREATMENTS] for m in METRICS]
        out.append(table(head, rows_))
        conf = e["confusion"]
        out += [
            "",
            table(
                ["", *(f"verdict {v}" for v in VERDICTS)],
                [
                    [f"gold {g}"] + [str(conf[g][v]) for v in VERDICTS]
                    for g in ("violation", "no_violation")
                ],
            ),
        ]
        notes = e.get("notes") or {}
        if notes.get("malformed"):
            out += [
                "",
                f"{notes['malformed']} malformed rows skipped (first: "
                + md(", ".join(f"{a}: {b}" for a, b in notes.get("malformed_first", [])[:10]))
                + ").",
            ]
    out += ["", "## Misclassified examples"]
    for k, r in enumerate(runs, 1):
        for kind, title in EXAMPLE_KINDS:
            for x in r.examples[kind]:
                out += [
                    "",
                    f"**\\#{k} {md(r.name)} — {md(title)}**, item {x['idx']}, verdict "
                    f"{md(x['verdict'])}, P(violation) {num(x['score'])}, answer "
                    f"{md(repr(x['final']))}",
                    "",
                    block(x["text"]),
                ]
                if x["reasoning"]:
                    out += ["", "Reasoning:", "", block(x["reasoning"])]
    return "\n".join(out) + "\n"
