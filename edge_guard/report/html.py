"""Renders a `Report` as one self-contained HTML page (inline CSS and SVG, no scripts).

Every value that comes from data (texts, answers, reasoning, run/policy/model names) goes
through `esc()`; a Content-Security-Policy forbids scripts as a second line of defence.
"""

from __future__ import annotations

import html
from typing import Any

from edge_guard.report import EXAMPLE_KINDS, Report, RunReport, short_model
from edge_guard.report import reference as ref
from edge_guard.report.paths import HEAD, NOTE, paths_rows
from edge_guard.runs.metrics import METRICS, TREATMENT_TITLES, TREATMENTS, VERDICTS, fmt_ci

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .5em;
vertical-align:top}th{background:#f3f3f3;text-align:left}td.n{text-align:right;white-space:nowrap}
.note{color:#555;font-size:.92em}.ex{border:1px solid #ddd;margin:.5em 0;padding:.4em .6em}
pre{white-space:pre-wrap;word-break:break-word;background:#f8f8f8;padding:.4em;margin:.3em 0}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}code{background:#f3f3f3}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def num(x: float | None, d: int = 3) -> str:
    return "—" if x is None else f"{x:.{d}f}"


def table(head: list[str], rows: list[list[str]], numeric_from: int = 99) -> str:
    """A table; cells are already-escaped HTML; columns >= numeric_from are right-aligned."""
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = "".join(
            f'<td class="n">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
            for i, c in enumerate(r)
        )
        out.append(f"<tr>{cells}</tr>")
    return "".join(out) + "</table>"


def seed_table(report: Report) -> str:
    models, rows, cells = report.pivot()
    head = ["dataset", "policy"] + [esc(short_model(m)) for m in models]
    body = []
    for ds, pol in rows:
        line = [esc(ds), esc(pol)]
        for m in models:
            r = cells.get((ds, pol, m))
            if r is None:
                line.append("")
                continue
            e = r.eval
            line.append(
                f"F1 {esc(fmt_ci(e['f1']))}<br>P {num(e['precision']['value'])} · "
                f"R {num(e['recall']['value'])} · n {e['treatments']['excluded']['n']}<br>"
                f"<span class=note>parse {pct(e['parse_rate'])} · undetermined "
                f"{pct(e['undetermined_rate'])}</span>"
            )
        body.append(line)
    return table(head, body)


def runs_table(report: Report) -> str:
    head = [
        "#",
        "run",
        "policy",
        "model",
        "style / effort",
        "done",
        "status",
        "F1 (95% CI)",
        "precision",
        "recall",
        "accuracy",
        "F1 und.=viol.",
        "F1 und.=safe",
        "parse",
        "undet.",
        "ROC-AUC",
        "AUPRC",
    ]
    body = []
    for k, r in enumerate(report.runs, 1):
        e, s = r.eval, r.eval.get("scores") or {}
        body.append(
            [
                str(k),
                esc(r.name),
                esc(e["policy"]),
                esc(e["model"]),
                f"{esc(e.get('style'))} / {esc(e.get('effort'))}",
                f"{e['n_done']}/{e['n_items']}",
                esc(e["status"]),
                esc(fmt_ci(e["f1"])),
                esc(fmt_ci(e["precision"])),
                esc(fmt_ci(e["recall"])),
                esc(fmt_ci(e["accuracy"])),
                num(e["treatments"]["as_violation"]["f1"]["value"]),
                num(e["treatments"]["as_safe"]["f1"]["value"]),
                pct(e["parse_rate"]),
                pct(e["undetermined_rate"]),
                num(s.get("roc_auc")),
                num(s.get("auprc")),
            ]
        )
    return table(head, body, numeric_from=5)


def reference_section(report: Report) -> str:
    if report.benchmark != "toxic-chat":
        return ""
    parts = [
        "<h2>Reference figures (ToxicChat)</h2>",
        "<p>Our runs beside published figures. Different prompts, samples and inference "
        "stacks: read these as context, not as a like-for-like comparison.</p>",
    ]
    ours = []
    for r in report.runs:
        fam = ref.model_family(r.eval["model"])
        seed = ref.SEED_TOXICCHAT.get(str(r.eval["policy"]), (0, {}))[1].get(fam or "")
        oa = ref.OPENAI_F1.get(fam or "")
        ours.append(
            [
                esc(r.eval["policy"]),
                esc(r.eval["model"]),
                str(r.eval["n_labelled"]),
                esc(fmt_ci(r.eval["f1"])),
                num(r.eval["treatments"]["as_safe"]["f1"]["value"]),
                num(seed[2]) if seed else "—",
                f"{oa[1] / 100:.3f}" if oa else "—",
            ]
        )
    parts.append(
        table(
            [
                "policy",
                "model",
                "n",
                "our F1 (headline)",
                "our F1 (und.=safe)",
                f"seed F1 (n={ref.SEED_N})",
                "OpenAI F1",
            ],
            ours,
            numeric_from=2,
        )
    )
    seed_rows = []
    for pol, (chars, by_model) in ref.SEED_TOXICCHAT.items():
        b, s = by_model["gpt-oss-20b"], by_model["gpt-oss-safeguard-20b"]
        seed_rows.append(
            [
                esc(pol),
                f"~{chars:,}",
                " / ".join(num(x) for x in b[:3]),
                " / ".join(num(x) for x in s[:3]),
                f"{num(b[3])} / {num(s[3])}",
            ]
        )
    parts.append("<h3>The seed's table</h3>")
    parts.append(
        table(
            [
                "policy",
                "chars",
                "gpt-oss-20b P / R / F1",
                "gpt-oss-safeguard-20b P / R / F1",
                "parse 20b / SG",
            ],
            seed_rows,
        )
    )
    parts.append(
        f"<p class=note>Source: {esc(ref.SEED_SOURCE)}. "
        + " ".join(esc(n) for n in ref.SEED_NOTES)
        + "</p>"
    )
    oa_rows = [[esc(m), f"{a:.1f}", f"{b:.1f}"] for m, (a, b) in ref.OPENAI_F1.items()]
    parts.append("<h3>OpenAI's reported F1</h3>")
    parts.append(table(["model", "OpenAI Mod 2022 F1", "ToxicChat F1"], oa_rows, numeric_from=1))
    parts.append(f"<p class=note>Source: {esc(ref.OPENAI_SOURCE)}.</p>")
    return "".join(parts)


def sample_text(cfg: dict[str, Any]) -> str:
    n = cfg.get("limit")
    if cfg.get("sample"):
        return f"{cfg['sample']} sample of {n or 'all'}, seed {cfg.get('seed')}"
    return f"first {n} rows" if n else "all rows"


def run_details(k: int, r: RunReport) -> str:
    e, cfg = r.eval, r.config
    parts = [f"<h3>#{k} {esc(r.name)}</h3>"]
    facts = [
        ("dataset", f"{cfg.get('dataset')} (sha256 {str(cfg.get('dataset_sha256'))[:12]}…)"),
        (
            "fields",
            f"text={cfg.get('text_field')}, label={cfg.get('label_field')}, id={cfg.get('id_field')}",
        ),
        ("sample", sample_text(cfg)),
        ("policy", f"{e['policy']} (hash {str(cfg.get('policy_hash'))[:12]}…)"),
        ("model", f"{e['model']} ({cfg.get('model_identity')})"),
        ("prompt", f"style {cfg.get('style')}, effort {cfg.get('effort')}, date {cfg.get('date')}"),
        ("sampling", cfg.get("sampling")),
        (
            "items",
            f"{e['n_done']} done of {e['n_items']}; {e['n_labelled']} labelled, "
            f"{e['n_gold_violation']} gold violations; status {e['status']}",
        ),
    ]
    notes = e.get("notes") or {}
    if notes.get("malformed"):
        first = ", ".join(f"{line}: {why}" for line, why in notes.get("malformed_first", [])[:10])
        facts.append(("malformed rows", f"{notes['malformed']} skipped (first: {first})"))
    if notes.get("unmapped_labels"):
        facts.append(("unmapped gold labels", notes["unmapped_labels"]))
    from edge_guard.review.gold import review_summary

    if review_summary(e):  # scored against review decisions, or the run has some
        facts.append(("gold and review", review_summary(e)))
    parts.append(table(["", ""], [[esc(a), esc(b)] for a, b in facts]))
    head = ["metric"] + [
        esc(TREATMENT_TITLES[t]) + (" (headline)" if t == e["headline"] else "") for t in TREATMENTS
    ]
    rows = [[m] + [esc(fmt_ci(e["treatments"][t][m])) for t in TREATMENTS] for m in METRICS]
    rows.append(["n"] + [str(e["treatments"][t]["n"]) for t in TREATMENTS])
    parts.append(table(head, rows, numeric_from=1))
    conf = e["confusion"]
    crow = [
        [f"gold {g}"] + [str(conf[g][v]) for v in VERDICTS] for g in ("violation", "no_violation")
    ]
    parts.append(table(["", *(f"verdict {v}" for v in VERDICTS)], crow, numeric_from=1))
    s = e.get("scores") or {}
    parts.append(
        f"<p>Label scores: {s.get('n', 0)} items scored; ROC-AUC {num(s.get('roc_auc'))}, "
        f"AUPRC {num(s.get('auprc'))} (prevalence {num(s.get('prevalence'))}).</p>"
    )
    return "".join(parts)


def examples_section(k: int, r: RunReport) -> str:
    parts = []
    for kind, title in EXAMPLE_KINDS:
        exs = r.examples[kind]
        if not exs:
            continue
        parts.append(f"<h4>#{k} {esc(r.name)}: {esc(title)} — first {len(exs)}</h4>")
        for x in exs:
            meta = (
                f"item {x['idx']}{' · id ' + esc(x['item_id']) if x['item_id'] else ''} · gold "
                f"{'violation' if x['gold'] else 'safe'} · verdict {esc(x['verdict'])} · "
                f"P(violation) {num(x['score'])} · finish {esc(x['finish'])}"
            )
            body = [f"<div class=ex><div class=note>{meta}</div><pre>{esc(x['text'])}</pre>"]
            body.append(
                f"<div>answer: <code>{esc(x['final'])}</code>"
                + (f" · error: {esc(x['error'])}" if x["error"] else "")
                + "</div>"
            )
            if x["reasoning"]:
                body.append(
                    f"<details><summary>reasoning</summary><pre>{esc(x['reasoning'])}"
                    "</pre></details>"
                )
            parts.append("".join(body) + "</div>")
    return "".join(parts)


def render_html(report: Report) -> str:
    runs = report.runs
    ci = runs[0].eval["ci"]
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{esc(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
        f"<p class=note>Generated {esc(report.generated_at)} by edge_guard {esc(report.version)}; "
        f"{len(runs)} run(s). Intervals: {esc(ci['method'])}, {ci['resamples']} resamples, "
        f"seed {ci['seed']}, {int(ci['level'] * 100)}% (point estimate with the percentile "
        "interval).</p>",
        "<p><b>Headline metrics exclude undetermined answers</b> (refusals, empty or cut-off "
        "answers, parse failures): they are computed over determined items only and always "
        "shown next to the undetermined rate. The same metrics with undetermined counted as "
        "violation and as safe are shown beside them; nothing undetermined is counted as safe "
        "silently.</p>",
        "<h2>Policy × model</h2>",
        seed_table(report),
        "<h2>All runs</h2>",
        runs_table(report),
        reference_section(report),
    ]
    if paths_rows(runs):  # one-pass / cascade runs
        parts += [
            "<h2>Reasoning paths</h2>",
            table(HEAD, [[esc(c) for c in row] for row in paths_rows(runs)], 3),
            f"<p class=note>{esc(NOTE)}</p>",
        ]
    if report.plots:
        parts.append("<h2>Plots</h2>")
        for title, svg in report.plots.items():
            parts.append(f"<figure>{svg}<figcaption>{esc(title)}</figcaption></figure>")
    parts.append("<h2>Run details</h2>")
    parts += [run_details(k, r) for k, r in enumerate(runs, 1)]
    parts.append("<h2>Misclassified examples</h2>")
    ex = [examples_section(k, r) for k, r in enumerate(runs, 1)]
    parts += ex if any(ex) else ["<p>None among the labelled items.</p>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)
