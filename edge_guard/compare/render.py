"""Renders a comparison (from `compare.report.build_report`) as HTML or Markdown.

Reuses the evaluation report's building blocks: `report.html` (`esc`, `table`, CSS and a
script-forbidding Content-Security-Policy) and `report.markdown` (`md`, `block`, `table`).
Every value taken from data (texts, answers, reasoning, labels, names) is escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from edge_guard.compare.summary import gpu, num, pct, rate, size, summary_table
from edge_guard.runs.metrics import VERDICTS, fmt_ci

SIDES = ("ref", "cand")
_INTRO = (
    "Each config classified the same items; the first is the reference. Verdicts are compared "
    "three ways (violation / no violation / undetermined): an answer that becomes undetermined "
    "counts as a disagreement. A flip is an item whose verdict differs from the reference's. "
    "|ΔP| is the absolute difference of the label score P(violation) on items both scored."
)
_SPEED = (
    "Speed comes from the stored per-item timings: prompt tok/s = prompt tokens evaluated (not "
    "reused from the prefix cache) / prompt time, output tok/s = generated tokens / decoding "
    "time, s/label = mean prompt + decoding time per item. With parallel decoding items overlap, "
    "so throughput is higher than 1/(s/label); 'wall s/label' is the elapsed time of the last "
    "run that classified new items, divided by their number. Configs run one after another in "
    "one process, each model loaded alone: peak RSS is the process's peak resident memory "
    "while the config ran; baseline is the RSS just before its model was loaded (Python, "
    "edge_guard, the tokenizer, earlier configs' leftovers); peak RSS Δ = peak − baseline is "
    "what the model needed (mapped weights, KV cache, buffers). GPU memory is from nvidia-smi "
    "('n/a' without it). Cached reruns keep the measurements of the run that classified the "
    "items."
)


def _resource_rows(c: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = [
        "config",
        "prompt tok/s",
        "output tok/s",
        "s/label",
        "mean output tokens",
        "wall s/label",
        "peak RSS",
        "baseline RSS",
        "peak RSS Δ",
        "GPU memory",
        "file",
        "backend",
        "measured how",
    ]
    rows = []
    for cfg in c["configs"]:
        sp, res = cfg["speed"], cfg["resources"] or {}
        wall = res["wall_s"] / res["n_new"] if res.get("n_new") else None
        how = f"{res.get('rss_method', 'not measured')}; GPU: {res.get('gpu_method', 'n/a')}"
        rows.append(
            [
                cfg["label"],
                rate(sp["prompt_tokens_per_s"]),
                rate(sp["output_tokens_per_s"]),
                num(sp["s_per_label"], 2),
                num(sp["mean_output_tokens"], 1),
                num(wall, 2),
                size(res.get("peak_rss_bytes")),
                size(res.get("baseline_rss_bytes")),
                size(res.get("model_rss_bytes")),
                gpu(res),
                size(cfg["file_bytes"]),
                str(cfg["backend"]),
                how if res else "not measured (no new items ran)",
            ]
        )
    return head, rows


def _quality_rows(c: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = [
        "config",
        "n labelled",
        "F1 (95% CI)",
        "precision",
        "recall",
        "accuracy",
        "F1 und.=viol.",
        "F1 und.=safe",
        "ROC-AUC",
        "AUPRC",
    ]
    rows = []
    for cfg in c["configs"]:
        ev, s = cfg["eval"], cfg["eval"].get("scores") or {}
        tr = ev["treatments"]
        rows.append(
            [
                cfg["label"],
                str(ev["treatments"]["excluded"]["n"]),
                fmt_ci(ev["f1"]),
                fmt_ci(ev["precision"]),
                fmt_ci(ev["recall"]),
                fmt_ci(ev["accuracy"]),
                num(tr["as_violation"]["f1"]["value"]),
                num(tr["as_safe"]["f1"]["value"]),
                num(s.get("roc_auc")),
                num(s.get("auprc")),
            ]
        )
    return head, rows


def _config_rows(c: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["#", "config", "as written", "run", "model", "identity", "style / effort", "sampling"]
    rows = [
        [
            str(cfg["index"] + 1),
            cfg["label"],
            str(cfg["spec"]),
            cfg["run"],
            str(cfg["model"]),
            str(cfg["model_identity"]),
            f"{cfg['style']} / {cfg['effort']}",
            str(cfg["sampling"]),
        ]
        for cfg in c["configs"]
    ]
    return head, rows


def _transition_rows(vs: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["reference ↓ / candidate →", *VERDICTS]
    t = vs["transitions"]
    return head, [[a, *(str(t[a][b]) for b in VERDICTS)] for a in VERDICTS]


def _flips(n: int) -> str:
    return f"{n} flip" + ("" if n == 1 else "s")


def _left_out(dp: dict[str, Any]) -> str:
    n = dp.get("n_left_out") or 0
    return f" ({n} left out: undetermined or unscored on a side)" if n else ""


def _gold(g: bool | None) -> str:
    return "unlabelled" if g is None else "violation" if g else "safe"


def _meta(c: dict[str, Any]) -> str:
    ci = c["ci"]
    return (
        f"Generated {c['generated_at']} by edge_guard {c['version']}. Dataset {c['dataset']}; "
        f"policy {c['policy']}; {c['n_items']} items; reference: {c['reference']}. "
        f"Intervals: {ci['method']}, {ci['resamples']} resamples, seed {ci['seed']}, "
        f"{int(ci['level'] * 100)}%."
    )


# -- HTML --------------------------------------------------------------------------------------
def render_html(c: dict[str, Any]) -> str:
    from edge_guard.report.html import CSP, CSS, esc, table

    def tbl(ht: tuple[list[str], list[list[str]]], numeric_from: int = 99) -> str:
        head, rows = ht
        return table([esc(h) for h in head], [[esc(x) for x in r] for r in rows], numeric_from)

    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{esc(c['title'])}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(c['title'])}</h1>",
        f"<p class=note>{esc(_meta(c))}</p>",
        f"<p>{esc(_INTRO)}</p>",
        "<h2>Summary</h2>",
        tbl(summary_table(c), 2),
        f"<p class=note>{esc(_SPEED)}</p>",
    ]
    if c["plots"]:
        parts.append("<h2>Plots</h2>")
        parts += [
            f"<figure>{svg}<figcaption>{esc(t)}</figcaption></figure>"
            for t, svg in c["plots"].items()
        ]
    parts.append("<h2>Against the reference</h2>")
    for cfg in c["configs"][1:]:
        vs = cfg["vs_reference"]
        dp = vs["delta_p"]
        parts += [
            f"<h3>{esc(cfg['label'])}</h3>",
            f"<p>{vs['n']} items compared: agreement {esc(pct(vs['agreement']['value']))}, "
            f"kappa {esc(fmt_ci(vs['kappa'], 3))}, {_flips(vs['n_flips'])}; |ΔP(violation)| "
            f"mean {num(dp['mean_abs'])}, max {num(dp['max_abs'])} over {dp['n']} items "
            f"scored by both{_left_out(dp)}.</p>",
            tbl(_transition_rows(vs), 1),
        ]
    if c["has_gold"]:
        parts += [
            "<h2>Quality against the gold labels</h2>",
            "<p class=note>Headline metrics exclude undetermined answers; the columns "
            "und.=viol. / und.=safe count them as violation / safe.</p>",
            tbl(_quality_rows(c), 1),
        ]
    parts += [
        "<h2>Speed and resources</h2>",
        tbl(_resource_rows(c), 1),
        "<h2>Configs</h2>",
        tbl(_config_rows(c)),
        "<h2>Label flips</h2>",
    ]
    any_flip = False
    for cfg in c["configs"][1:]:
        vs = cfg["vs_reference"]
        if not vs["flips"]:
            continue
        any_flip = True
        shown = f" (first {len(vs['flips'])})" if len(vs["flips"]) < vs["n_flips"] else ""
        parts.append(f"<h3>{esc(cfg['label'])}: {vs['n_flips']} flips{shown}</h3>")
        parts += [_flip_html(f, c["reference"], cfg["label"], esc) for f in vs["flips"]]
    if not any_flip:
        parts.append("<p>No verdict differs from the reference's.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _flip_html(f: dict[str, Any], ref_label: str, label: str, esc: Callable[[Any], str]) -> str:
    head = (
        f"item {f['idx']}"
        + (f" · id {esc(f['item_id'])}" if f["item_id"] else "")
        + f" · gold {_gold(f['gold'])}"
    )
    out = [f"<div class=ex><div class=note>{head}</div><pre>{esc(f['text'])}</pre>"]
    for side, name in zip(SIDES, (ref_label, label), strict=True):
        s = f[side]
        out.append(
            f"<div><b>{esc(name)}</b>: verdict {esc(s['verdict'])} · P(violation) "
            f"{num(s['p_violation'])} · finish {esc(s['finish'])} · answer "
            f"<code>{esc(s['final'])}</code>"
            + (f" · error: {esc(s['error'])}" if s["error"] else "")
            + "</div>"
        )
        if s["reasoning"]:
            out.append(
                f"<details><summary>{esc(name)} reasoning</summary>"
                f"<pre>{esc(s['reasoning'])}</pre></details>"
            )
    return "".join(out) + "</div>"


# -- Markdown ----------------------------------------------------------------------------------
def render_markdown(c: dict[str, Any]) -> str:
    from edge_guard.report.markdown import block, md, table

    def tbl(ht: tuple[list[str], list[list[str]]]) -> str:
        head, rows = ht
        return table([md(h) for h in head], [[md(x) for x in r] for r in rows])

    out = [
        f"# {md(c['title'])}",
        "",
        md(_meta(c)),
        "",
        md(_INTRO),
        "",
        "## Summary",
        "",
        tbl(summary_table(c)),
        "",
        md(_SPEED),
    ]
    if c["plots"]:
        out += ["", "## Plots", ""]
        for t, svg in c["plots"].items():
            data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
            out += [f"![{md(t)}](data:image/svg+xml;base64,{data})", ""]
    out += ["", "## Against the reference"]
    for cfg in c["configs"][1:]:
        vs = cfg["vs_reference"]
        dp = vs["delta_p"]
        out += [
            "",
            f"### {md(cfg['label'])}",
            "",
            f"{vs['n']} items compared: agreement {md(pct(vs['agreement']['value']))}, kappa "
            f"{md(fmt_ci(vs['kappa'], 3))}, {_flips(vs['n_flips'])}; \\|ΔP(violation)\\| mean "
            f"{md(num(dp['mean_abs']))}, max {md(num(dp['max_abs']))} over {dp['n']} items "
            f"scored by both{_left_out(dp)}.",
            "",
            tbl(_transition_rows(vs)),
        ]
    if c["has_gold"]:
        out += [
            "",
            "## Quality against the gold labels",
            "",
            "Headline metrics exclude undetermined answers; und.=viol. / und.=safe count "
            "them as violation / safe.",
            "",
            tbl(_quality_rows(c)),
        ]
    out += [
        "",
        "## Speed and resources",
        "",
        tbl(_resource_rows(c)),
        "",
        "## Configs",
        "",
        tbl(_config_rows(c)),
        "",
        "## Label flips",
    ]
    any_flip = False
    for cfg in c["configs"][1:]:
        vs = cfg["vs_reference"]
        for f in vs["flips"]:
            any_flip = True
            out += [
                "",
                f"**{md(cfg['label'])}**, item {f['idx']}"
                + (f" (id {md(f['item_id'])})" if f["item_id"] else "")
                + f", gold {_gold(f['gold'])}",
                "",
                block(f["text"]),
            ]
            for side, name in zip(SIDES, (c["reference"], cfg["label"]), strict=True):
                s = f[side]
                out += [
                    "",
                    f"- {md(name)}: verdict {md(s['verdict'])}, P(violation) "
                    f"{md(num(s['p_violation']))}, finish {md(s['finish'])}, answer "
                    f"{md(repr(s['final']))}",
                ]
                if s["reasoning"]:
                    out += ["", f"{md(name)} reasoning:", "", block(s["reasoning"])]
        if len(vs["flips"]) < vs["n_flips"]:
            out += ["", f"… {vs['n_flips'] - len(vs['flips'])} more flips for {md(cfg['label'])}."]
    if not any_flip:
        out += ["", "No verdict differs from the reference's."]
    return "\n".join(out) + "\n"
