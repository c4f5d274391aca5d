"""The report of multi-policy runs: a policy × metric table per run (HTML or Markdown).

Each run (stored by `runs.multi`) gets its per-policy rows (n, violations, undetermined
rate, accuracy/precision/recall/F1 with bootstrap CIs), the macro average and the "any
violation" row from `runs.multi_eval.policy_table`. Every value is escaped (run names,
policy names and dataset paths are user data).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.runs.multi_eval import evaluate_multi_run, policy_table
from edge_guard.sanitize import md_cell, term
from edge_guard.store import Store

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
    "padding:.3em .6em;text-align:left}th{background:#f4f4f4}td.num{text-align:right}"
)


def _meta(ev: dict[str, Any]) -> str:
    th = {k: v for k, v in (ev.get("thresholds") or {}).items() if v is not None}
    s = (
        f"{len(ev['policies'])} policies ({ev['mode']} mode) · model {ev['model']} · "
        f"{ev['n_done']}/{ev['n_items']} pairs over {ev['n_texts']} texts · dataset {ev['dataset']}"
    )
    if th:
        s += " · thresholds on P(violation): " + ", ".join(f"{k} {v:g}" for k, v in th.items())
    return s


NOTE = (
    "Metrics exclude undetermined answers (read them with the undetermined rate); [lo, hi] "
    "= 95% percentile bootstrap. Macro = mean over the policies with gold labels. Any "
    "violation: a text is flagged if any policy's verdict is violation, undetermined if none "
    "is but one is undetermined."
)


def render_html(evs: list[dict[str, Any]], title: str) -> str:
    esc = lambda x: html.escape(term(x))  # noqa: E731
    parts = [
        f"<!doctype html><meta charset=utf-8><title>{esc(title)}</title>",
        f"<style>{STYLE}</style><h1>{esc(title)}</h1>",
    ]
    for ev in evs:
        header, rows = policy_table(ev)
        parts.append(
            f"<h2>{esc(ev['run'])}</h2><p>{esc(_meta(ev))}</p><table><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in header)
            + "</tr>"
        )
        for r in rows:
            cells = [f"<th>{esc(r[0])}</th>"] + [f"<td class=num>{esc(c)}</td>" for c in r[1:]]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    parts.append(f"<p><small>{esc(NOTE)}</small></p>")
    return "\n".join(parts) + "\n"


def render_markdown(evs: list[dict[str, Any]], title: str) -> str:
    lines = [f"# {md_cell(title)}", ""]
    for ev in evs:
        header, rows = policy_table(ev)
        lines += [
            f"## {md_cell(ev['run'])}",
            "",
            md_cell(_meta(ev)),
            "",
            "| " + " | ".join(md_cell(h) for h in header) + " |",
            "|" + "---|" * len(header),
        ]
        lines += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]
        lines.append("")
    lines.append(md_cell(NOTE))
    return "\n".join(lines) + "\n"


def write_multi_report(
    names: list[str],
    out: str | os.PathLike[str],
    *,
    store: Store,
    n_resamples: int = 1000,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Evaluate multi-policy runs and write their policy × metric tables (atomic write)."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".md", ".markdown"):
        raise EdgeGuardError(f"unknown report format {suffix or '(none)'}: use .html or .md")
    evs = [evaluate_multi_run(store, n, n_resamples=n_resamples, seed=seed) for n in names]
    title = title or "Multi-policy runs: " + ", ".join(names)
    text = render_html(evs, title) if suffix in (".html", ".htm") else render_markdown(evs, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
