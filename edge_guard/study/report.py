"""A self-contained study report (HTML or Markdown): tables, embedded SVG charts, the seed's figures.

The same sections render to both formats: every text is HTML-escaped (Markdown cells go
through `edge_guard.sanitize.md_cell`: terminal controls, HTML and Markdown escaped), charts are embedded (inline SVG in HTML, a base64 data URI in Markdown), and
the seed's reference numbers (`reference.py`) sit beside ours.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.sanitize import md_cell, term
from edge_guard.study.plots import likert_svg
from edge_guard.study.reference import reference_name, seed_reference
from edge_guard.study.summary import num, pct, plural, pval

Table = tuple[str, list[str], list[list[str]]]  # title, header, rows

METHODS = (
    "Each item's rating is the parsed answer (with repeats: the modal rating). Unparsed answers "
    "are listed and excluded from the statistics, never counted as a rating. Agreement "
    "statistics use the items both models rated. ICC(2,1) is Shrout & Fleiss's two-way random, "
    "absolute-agreement, single-rater ICC; ICC(3,1) the two-way mixed consistency one. The "
    "middle-rating share is compared with an exact McNemar test because both models rate the "
    "same items (paired); the unpaired two-proportion z test is shown too because the seed's "
    "p ≈ 0.01 comes from it. Ratings are compared with the Wilcoxon signed-rank test (zero "
    "differences dropped) and a sign test (binomial)."
)


def _inline_svg(svg: str, prefix: str) -> str:
    """An SVG document as an inline element whose ids cannot clash with another chart's."""
    svg = re.sub(r"<\?xml[^>]*\?>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)
    return re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)


def _tables(a: dict[str, Any], seed: dict[str, Any]) -> list[Table]:
    s, labels = a["study"], a["study"]["models"]
    lo, hi = s["scale"]
    mid = s["middle"]
    scale = [str(k) for k in range(lo, hi + 1)]
    tables: list[Table] = []
    rows = []
    for lab in labels:
        m = a["models"][lab]
        rows.append(
            [
                lab,
                str(m["n"]),
                *[str(m["counts"][k]) for k in scale],
                num(m["mean"], ".2f"),
                num(m["sd"], ".2f"),
                pct(m["middle_share"]),
                str(m["n_unparsed"]),
                num(m.get("mean_expected"), ".2f"),
            ]
        )
    for name, m in seed["models"].items():
        rows.append(
            [
                f"seed: {name}",
                str(m["n"]),
                *[str(m["counts"].get(k, 0)) for k in scale],
                num(m["mean"], ".2f"),
                "—",
                pct(m["middle_share"]),
                str(seed["n_items"] - m["n"]),
                "—",
            ]
        )
    tables.append(
        (
            "Rating distribution (ours, then the seed's)",
            ["model", "n", *scale, "mean", "sd", f"share {mid}", "unparsed", "mean expected"],
            rows,
        )
    )
    comp = []
    for lab in labels:
        ref = reference_name(a["models"][lab]["ref"]) or reference_name(lab)
        sm = seed["models"].get(ref) if ref else None
        comp.append(
            [
                lab,
                pct(a["models"][lab]["middle_share"]),
                pct(sm["middle_share"]) if sm else "—",
                num(a["models"][lab]["mean"], ".2f"),
                num(sm["mean"], ".2f") if sm else "—",
            ]
        )
    tables.append(
        (
            "Beside the seed's figures (matched by model name)",
            ["model", f"share {mid} (ours)", f"share {mid} (seed)", "mean (ours)", "mean (seed)"],
            comp,
        )
    )
    for p in a["pairs"]:
        sp, icc, r = p["spearman"], p["icc"], p["ratings"]
        prow = [
            ["items rated by both", str(p["n_paired"]), f"{seed['n_items']} items"],
            ["differ", pct(p["differ_share"]), f"~{seed['differ_share']:.0%}"],
            ["exact agreement", pct(p["exact_agreement"]), f"~{1 - seed['differ_share']:.0%}"],
            ["within ±1", pct(p["within_one"]), "—"],
            ["kappa (quadratic)", num(p["kappa_quadratic"]), "—"],
            ["Spearman rho (p)", f"{num(sp['rho'])} ({pval(sp['p'])})", "—"],
            [
                "ICC(2,1) absolute / ICC(3,1) consistency",
                f"{num(icc['icc2_1'])} / {num(icc['icc3_1'])}",
                "—",
            ],
            [
                "mean diff (Wilcoxon p; sign test p)",
                f"{num(r['mean_diff'], '+.2f')} ({pval(r['wilcoxon']['p'])}; {pval(r['sign_test']['p'])})",
                f"means ≈ {seed['mean']}",
            ],
        ]
        if "middle" in p:
            m = p["middle"]
            prow.append(
                [
                    f"share of {mid}s: McNemar exact p (paired)",
                    f"{pct(m['share_a'])} vs {pct(m['share_b'])}: {pval(m['mcnemar']['p'])}",
                    "—",
                ]
            )
            prow.append(
                [
                    f"share of {mid}s: two-proportion z p (unpaired)",
                    pval(m["two_proportion_z"]["p"]),
                    f"≈ {seed['middle_p']}",
                ]
            )
        tables.append((f"{p['a']} vs {p['b']}", ["statistic", "ours", "seed"], prow))
    for lab in labels:
        bad = a["unparsed"][lab]
        if bad:
            tables.append(
                (
                    f"Unparsed ratings of {lab} ({len(bad)}, excluded from the statistics)",
                    ["id", "repeat", "text", "reason"],
                    [[u["id"], str(u["repeat"]), u["text"], u["reason"] or ""] for u in bad],
                )
            )
    if a["divergent"]:
        tables.append(
            (
                "Most divergent items",
                ["id", "topic", *labels, "text"],
                [
                    [
                        d["id"],
                        d["topic"] or "",
                        *[
                            "—" if d["ratings"][lab] is None else str(d["ratings"][lab])
                            for lab in labels
                        ],
                        d["text"],
                    ]
                    for d in a["divergent"]
                ],
            )
        )
    for lab, st in a.get("stability", {}).items():
        tables.append(
            (
                f"Stability of {lab} over {s['repeats']} repeats: mean modal share "
                f"{pct(st['mean_modal_share'])}, fully stable {pct(st['fully_stable_share'])}, "
                f"mean sd {num(st['mean_sd'], '.2f')}",
                ["id", "ratings", "modal share", "sd", "text"],
                [
                    [
                        d["id"],
                        ",".join("—" if x is None else str(x) for x in d["ratings"]),
                        pct(d["modal_share"]),
                        num(d["sd"], ".2f"),
                        d["text"],
                    ]
                    for d in st["least_stable"]
                ],
            )
        )
    if a["topics"]:
        tables.append(
            (
                "By topic: mean rating / share of the middle rating",
                ["topic", "items", *labels],
                [
                    [
                        t,
                        str(td["n_items"]),
                        *[
                            f"{num(td['models'][lab]['mean'], '.2f')} / {pct(td['models'][lab]['middle_share'])}"
                            for lab in labels
                        ],
                    ]
                    for t, td in a["topics"].items()
                ],
            )
        )
    return tables


def _charts(a: dict[str, Any], seed: dict[str, Any]) -> list[tuple[str, str]]:
    labels = a["study"]["models"]
    ours = {lab: a["models"][lab]["counts"] for lab in labels}
    charts = []
    if any(sum(c.values()) for c in ours.values()):
        charts.append(("Our ratings", likert_svg(ours, "This study: Likert distribution")))
    seed_counts = {k: v["counts"] for k, v in seed["models"].items()}
    title = f"Seed study ({seed['n_items']} opinions): Likert distribution"
    charts.append(("The seed's ratings (reference)", likert_svg(seed_counts, title)))
    return charts


def _intro(a: dict[str, Any]) -> list[str]:
    s = a["study"]
    lines = [
        f"Source: {s['source']}.",
        f"{s['n_items']} items × {plural(len(s['models']), 'model')} × {plural(s['repeats'], 'repeat')}; policy "
        f"{s.get('policy') or '—'}; effort {s.get('effort') or '—'}; temperature "
        f"{s.get('temperature') if s.get('temperature') is not None else '—'}.",
    ]
    if s.get("n_missing"):
        lines.append(f"Incomplete: {s['n_missing']} of {s['n_planned']} ratings have not run yet.")
    return lines


def render_html(a: dict[str, Any]) -> str:
    seed = seed_reference()
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Study {e(a['study']['name'])}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:left;vertical-align:top}th{background:#f3f3f3}.charts{display:flex;flex-wrap:wrap;gap:1em}"
        ".charts figure{margin:0;flex:1 1 480px}.charts svg{max-width:100%;height:auto}</style></head><body>",
        f"<h1>Controversial-opinion study: {e(a['study']['name'])}</h1>",
        *[f"<p>{e(line)}</p>" for line in _intro(a)],
        '<div class="charts">',
    ]
    for n, (title, svg) in enumerate(_charts(a, seed)):
        parts.append(
            f"<figure><figcaption>{e(title)}</figcaption>{_inline_svg(svg, f'c{n}')}</figure>"
        )
    parts.append("</div>")
    for title, header, rows in _tables(a, seed):
        parts.append(
            f"<h2>{e(title)}</h2><table><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in header)
            + "</tr>"
        )
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts += [
        f"<h2>Methods</h2><p>{e(METHODS)}</p>",
        f"<p><small>Seed figures: {e(seed['source'])}.</small></p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _md_cell(text: str) -> str:
    return md_cell(" ".join(term(text).split()))


def render_markdown(a: dict[str, Any]) -> str:
    seed = seed_reference()
    parts = [f"# Controversial-opinion study: {_md_cell(a['study']['name'])}", ""]
    parts += [_md_cell(line) + "\n" for line in _intro(a)]
    for title, svg in _charts(a, seed):
        data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
        parts += [f"![{_md_cell(title)}](data:image/svg+xml;base64,{data})", ""]
    for title, header, rows in _tables(a, seed):
        parts += [
            f"## {_md_cell(title)}",
            "",
            "| " + " | ".join(_md_cell(h) for h in header) + " |",
            "|" + "---|" * len(header),
        ]
        parts += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        parts.append("")
    parts += [
        "## Methods",
        "",
        _md_cell(METHODS),
        "",
        f"Seed figures: {_md_cell(seed['source'])}.",
        "",
    ]
    return "\n".join(parts)


def write_report(a: dict[str, Any], out: str | Path) -> Path:
    """Write the report as .html or .md (chosen by suffix), via a temporary file."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        text = render_html(a)
    elif suffix == ".md":
        text = render_markdown(a)
    else:
        raise EdgeGuardError(
            f"report format {suffix or '(none)'} is not supported: use .html or .md"
        )
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
