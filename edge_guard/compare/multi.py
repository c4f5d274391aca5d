"""Comparing configs over several policies, e.g. separate vs combined mode side by side.

Each config (`mode=combined`, `mode=taxonomy` — see `compare.taxonomy` — or any other
`compare` key) becomes a multi-policy run of kind "compare" (`runs.multi`: one pair per
(text, policy), resumable) named `<comparison>/<k>:<label>`. `multi_summary` then
compares every candidate with the first config policy by policy, on the texts both have:
agreement, Cohen's κ, flips (verdict changes, with their transitions), and each config's
F1 / undetermined rate per policy and for "any violation".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_guard.compare.config import CompareConfig, check_configs
from edge_guard.compare.runner import RUN_KIND, config_run_name
from edge_guard.datasets.files import Dataset, usable_dataset
from edge_guard.policy.sets import PolicySet
from edge_guard.policy.taxonomy import MODE_TAXONOMY
from edge_guard.runs.batch import RunProgress
from edge_guard.runs.metrics import agreement, fmt_ci
from edge_guard.runs.multi import Steer, execute_multi_run
from edge_guard.runs.multi_eval import ANY, any_outcomes, evaluate_multi_run, multi_outcomes
from edge_guard.runs.multi_plan import plan_multi_run
from edge_guard.store import Store


def default_multi_name(
    ds: Dataset, pset: PolicySet, configs: Sequence[CompareConfig], selection: dict[str, Any]
) -> str:
    blob = json.dumps(
        {
            "configs": [c.spec() for c in configs],
            "sha": ds.sha256,
            "policies": [m.policy.hash for m in pset.members],
            **selection,
        },
        sort_keys=True,
        default=str,
    )
    return f"compare__{Path(ds.path).stem}__set-{pset.name}__{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def run_multi_compare(
    dataset: str | Path | Dataset,
    pset: PolicySet,
    configs: Sequence[CompareConfig],
    *,
    base_opts: dict[str, Any] | None = None,
    name: str | None = None,
    label_fields: dict[str, str] | None = None,
    text_field: str | None = None,
    id_field: str | None = None,
    limit: int | None = None,
    sample: str | None = None,
    sample_seed: int = 0,
    steer: Callable[[int, CompareConfig], Steer | None] | None = None,
    on_start: Callable[[int, str, Any], None] | None = None,
    on_result: Callable[..., None] | None = None,
    door: str = "python",
) -> tuple[Store, list[str], list[str]]:
    """Run the set through every config (first = reference); (store, run names, labels).
    A bad setting is named in the terms of the caller's `door` (the compare CLI: "cli")."""
    from edge_guard.api import build_classifier
    from edge_guard.settings.resolve import resolve_settings, setting_flags

    base = dict(base_opts or {})
    labels = check_configs(configs, base.get("model"))
    ds = usable_dataset(dataset, text_field=text_field, id_field=id_field)
    selection = {
        "limit": limit,
        "sample": sample,
        "sample_seed": sample_seed if sample else None,
        "labels": label_fields or {},
        "fields": [ds.text_field, ds.id_field],
    }
    name = name or default_multi_name(ds, pset, configs, selection)
    specs = [c.spec() for c in configs]
    runs: list[str] = []
    store: Store | None = None
    for k, (cfg, label) in enumerate(zip(configs, labels, strict=True)):
        merged = {**base, **cfg.opts, "model": cfg.model or base.get("model")}
        mode = str(merged.pop("mode", "separate"))
        settings = resolve_settings(setting_flags(merged), door=door)
        classifier = build_classifier(pset.policies, settings)
        store = classifier.store
        meta = {
            "name": name,
            "index": k,
            "label": label,
            "spec": specs[k],
            "configs": specs,
            "reference": labels[0],
            "mode": mode,
            "backend": classifier.backend.name,
        }
        run_name = config_run_name(name, k, label)
        plan_fn, execute_fn = plan_multi_run, execute_multi_run
        if mode == MODE_TAXONOMY:  # one prompt per text, a 0/1 per policy (compare/taxonomy.py)
            from edge_guard.compare.taxonomy import execute_taxonomy_run, plan_taxonomy_run

            plan_fn, execute_fn = plan_taxonomy_run, execute_taxonomy_run
        plan = plan_fn(
            ds,
            classifier,
            pset,
            mode=mode,
            label_fields=label_fields,
            name=run_name,
            limit=limit,
            sample=sample,
            seed=sample_seed,
            kind=RUN_KIND,
            extra_config={"compare": meta},
        )
        if on_start is not None:
            on_start(k, label, plan)

        def _on(p: RunProgress, *rest: Any, k: int = k) -> None:
            if on_result is not None:
                on_result(k, p, *rest)

        execute_fn(
            plan, classifier, on_result=_on, steer=steer(k, cfg) if steer is not None else None
        )
        classifier.backend.close()
        runs.append(run_name)
    assert store is not None
    return store, runs, labels


def _by_text(o: Any) -> dict[int, str]:
    return dict(zip(o.text_idx, o.verdicts, strict=True))


def _pair(ref: dict[int, str], cand: dict[int, str]) -> dict[str, Any]:
    """Agreement, κ and flips of a candidate's verdicts against the reference's."""
    common = sorted(set(ref) & set(cand))
    a, b = [ref[t] for t in common], [cand[t] for t in common]
    agr = agreement(a, b)
    trans: dict[str, int] = {}
    for x, y in zip(a, b, strict=True):
        if x != y:
            trans[f"{x}→{y}"] = trans.get(f"{x}→{y}", 0) + 1
    return {**agr, "flips": sum(trans.values()), "transitions": dict(sorted(trans.items()))}


def multi_summary(
    store: Store,
    run_names: Sequence[str],
    labels: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per config: per-policy and any-violation metrics; per candidate and policy: agreement,
    κ and flips against the reference (the first config)."""
    evs = [evaluate_multi_run(store, r, n_resamples=n_resamples, seed=seed) for r in run_names]
    outs = [multi_outcomes(store, r)[1] for r in run_names]
    names = list(outs[0])
    vs_ref: list[dict[str, Any]] = []
    for k in range(1, len(run_names)):
        per = {n: _pair(_by_text(outs[0][n]), _by_text(outs[k][n])) for n in names}
        t0, v0, _ = any_outcomes(outs[0])
        tk, vk, _ = any_outcomes(outs[k])
        per[ANY] = _pair(dict(zip(t0, v0, strict=True)), dict(zip(tk, vk, strict=True)))
        vs_ref.append({"label": labels[k], "run": run_names[k], "policies": per})
    return {
        "runs": list(run_names),
        "labels": list(labels),
        "policies": names,
        "modes": [e["mode"] for e in evs],
        "evals": evs,
        "vs_reference": vs_ref,
    }


def format_multi_summary(c: dict[str, Any]) -> str:
    """Text tables: each config's F1 / undetermined per policy, then flips vs the reference."""
    pct = lambda x: "—" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    num = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    rows = [["config", "mode", "policy", "F1", "undetermined"]]
    for label, ev in zip(c["labels"], c["evals"], strict=True):
        for n, e in [*ev["per_policy"].items(), (ANY, ev[ANY])]:
            rows.append(
                [
                    label,
                    ev["mode"],
                    n,
                    fmt_ci(e["f1"]) if e["n_labelled"] else "—",
                    pct(e["undetermined_rate"]),
                ]
            )
    lines = [*_table(rows), "", f"vs reference {c['labels'][0]} (same texts):"]
    rows = [["candidate", "policy", "n", "agreement", "kappa", "flips", "transitions"]]
    for v in c["vs_reference"]:
        for n, s in v["policies"].items():
            trans = ", ".join(f"{k} {x}" for k, x in s["transitions"].items()) or "—"
            rows.append(
                [
                    v["label"],
                    n,
                    str(s["n"]),
                    pct(s["agreement"]),
                    num(s["kappa"]),
                    str(s["flips"]),
                    trans,
                ]
            )
    return "\n".join(lines + _table(rows))


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
    return ["".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def write_multi_compare(c: dict[str, Any], out: str | Path, title: str | None = None) -> Path:
    """The comparison as a self-contained .html or .md file: each config's policy x metric
    table (`report.multi`), then agreement, kappa and flips per policy (escaped)."""
    import html
    import os

    from edge_guard.errors import EdgeGuardError
    from edge_guard.report.multi import render_html, render_markdown
    from edge_guard.sanitize import md_cell, term

    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".md", ".markdown"):
        raise EdgeGuardError(f"unknown report format {suffix or '(none)'}: use .html or .md")
    title = title or f"Comparison over {len(c['policies'])} policies: " + " vs ".join(c["labels"])
    rows = [["candidate", "policy", "n", "agreement", "kappa", "flips", "transitions"]]
    for v in c["vs_reference"]:
        for n, s in v["policies"].items():
            rows.append(
                [
                    v["label"],
                    n,
                    str(s["n"]),
                    "—" if s["agreement"] is None else f"{100 * s['agreement']:.1f}%",
                    "—" if s["kappa"] is None else f"{s['kappa']:.3f}",
                    str(s["flips"]),
                    ", ".join(f"{k} {x}" for k, x in s["transitions"].items()) or "—",
                ]
            )
    head = f"vs reference {c['labels'][0]} (same texts)"
    if suffix in (".html", ".htm"):
        esc = lambda x: html.escape(term(x))  # noqa: E731
        table = (
            f"<h2>{esc(head)}</h2><table>"
            + "".join(
                "<tr>"
                + "".join(
                    f"<{'th' if i == 0 else 'td'}>{esc(x)}</{'th' if i == 0 else 'td'}>" for x in r
                )
                + "</tr>"
                for i, r in enumerate(rows)
            )
            + "</table>"
        )
        text = render_html(c["evals"], title).replace("<p><small>", table + "\n<p><small>", 1)
    else:
        md = [
            f"## {md_cell(head)}",
            "",
            "| " + " | ".join(md_cell(x) for x in rows[0]) + " |",
            "|" + "---|" * len(rows[0]),
        ]
        md += ["| " + " | ".join(md_cell(x) for x in r) + " |" for r in rows[1:]]
        text = render_markdown(c["evals"], title) + "\n" + "\n".join(md) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
