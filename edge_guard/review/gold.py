"""Human labels as gold: score a run against review decisions, and how well model, reviewer
and dataset agree.

`--gold dataset` (the default) scores against the dataset's labels, `review` against the
reviewers' decisions only, `dataset+review` against the dataset's label where there is one
and the decision where there is none. Skips are no label. Agreement (raw share and Cohen's
kappa, each with a percentile bootstrap interval: `compare.stats.agreement_ci`) is given
for model–reviewer, model–dataset gold and reviewer–dataset gold, over the items both sides
labelled; an undetermined verdict is its own category, so it counts as a disagreement.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.review.decisions import content_key, latest
from edge_guard.runs.outcomes import Outcomes
from edge_guard.store import Store

GOLD_SOURCES = ("dataset", "review", "dataset+review")
GOLD_TITLES = {
    "dataset": "dataset labels",
    "review": "review decisions",
    "dataset+review": "dataset labels, review decisions where unlabelled",
}


def review_labels(store: Store, out: Outcomes) -> list[bool | None]:
    """Per run row: True / False from the decision in force, None when none (or skip)."""
    policy = str(out.run.get("policy") or out.config.get("policy") or "")
    found = latest(store, policy)
    labels: list[bool | None] = []
    for row in out.rows:
        d = found.get(content_key(row.get("text"), row.get("conversation")))
        labels.append(None if d is None else d.violation)
    return labels


def with_gold(store: Store, out: Outcomes, source: str) -> Outcomes:
    """`out` with its gold labels taken from `source` (see GOLD_SOURCES)."""
    if source not in GOLD_SOURCES:
        raise EdgeGuardError(f"unknown gold source {source!r} (choose {', '.join(GOLD_SOURCES)})")
    if source == "dataset":
        return out
    review = review_labels(store, out)
    if source == "review":
        return replace(out, gold=review)
    return replace(
        out, gold=[g if g is not None else r for g, r in zip(out.gold, review, strict=True)]
    )


def _pair(a: list[str], b: list[str], n_resamples: int, seed: int, level: float) -> dict[str, Any]:
    from edge_guard.compare.stats import agreement_ci
    from edge_guard.runs.metrics import agreement

    point = agreement(a, b)
    ci = agreement_ci(a, b, n_resamples=n_resamples, seed=seed, level=level)
    return {
        "n": point["n"],
        "agreement": {"value": point["agreement"], "ci": ci["agreement"]},
        "kappa": {
            "value": point["kappa"],
            "ci": ci["kappa"] if point["kappa"] is not None else None,
        },
    }


def _side(v: bool) -> str:
    return "violation" if v else "no_violation"


def agreement_section(
    store: Store, out: Outcomes, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Model–reviewer, model–gold and reviewer–gold agreement over the run's items."""
    review = review_labels(store, out)
    dataset = out.gold  # the run's own labels, whatever gold the metrics use
    verdicts = out.verdicts

    def pair(xs: list[Any], ys: list[bool | None]) -> dict[str, Any]:
        both = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
        a = [x if isinstance(x, str) else _side(x) for x, _ in both]
        return _pair(a, [_side(y) for _, y in both], n_resamples, seed, level)

    n_und = sum(
        1
        for v, r in zip(verdicts, review, strict=True)
        if r is not None and v not in ("violation", "no_violation")
    )
    return {
        "n_reviewed": sum(r is not None for r in review),
        "n_review_violation": sum(bool(r) for r in review if r is not None),
        "n_reviewed_undetermined": n_und,
        "model_vs_reviewer": pair(list(verdicts), review),
        "model_vs_gold": pair(list(verdicts), dataset),
        "reviewer_vs_gold": pair(list(review), dataset),
        "ci": {
            "method": "percentile bootstrap over items (paired, seeded)",
            "level": level,
            "resamples": n_resamples,
            "seed": seed,
        },
    }


def evaluate_with_gold(
    store: Store,
    name: str,
    *,
    gold: str = "dataset",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """`runs.evaluate_run` scored against `gold`, with `gold_source` and (when the run's
    items have review decisions, or `gold` uses them) the `review` agreement section."""
    from edge_guard.runs.outcomes import evaluate_outcomes, run_outcomes
    from edge_guard.runs.paths import path_summary

    out = run_outcomes(store, name)
    scored = with_gold(store, out, gold)
    ev = evaluate_outcomes(scored, n_resamples=n_resamples, seed=seed, level=level)
    ev["paths"] = path_summary(store, name)
    ev["gold_source"] = gold
    section = agreement_section(store, out, n_resamples=n_resamples, seed=seed, level=level)
    ev["review"] = section if section["n_reviewed"] or gold != "dataset" else None
    return ev


def _fmt(m: dict[str, Any]) -> str:
    from edge_guard.runs.metrics import fmt_ci

    return f"agreement {fmt_ci(m['agreement'])}, kappa {fmt_ci(m['kappa'])}"


def format_review(ev: dict[str, Any]) -> list[str]:
    """The lines `eval` prints about review decisions (none when the run has none)."""
    s = ev.get("review")
    if not s:
        return []
    if not s["n_reviewed"]:
        return ["", f"review: no decisions on this run's items yet (edge-guard review {ev['run']})"]
    lines = [
        "",
        f"review: {s['n_reviewed']} items decided ({s['n_review_violation']} violation); "
        f"{s['n_reviewed_undetermined']} of them undetermined by the model (counted as "
        "disagreement)",
    ]
    for key, title in (
        ("model_vs_reviewer", "model vs reviewer"),
        ("model_vs_gold", "model vs dataset gold"),
        ("reviewer_vs_gold", "reviewer vs dataset gold"),
    ):
        m = s[key]
        lines.append(
            f"  {title:<26} n={m['n']:<5} " + (_fmt(m) if m["n"] else "no items in common")
        )
    return lines


def review_summary(ev: dict[str, Any]) -> str | None:
    """One plain line for reports: the gold used and the review agreement (None when the
    run is scored against its dataset labels and has no decisions)."""
    src, s = ev.get("gold_source") or "dataset", ev.get("review")
    if src == "dataset" and not s:
        return None
    parts = [f"gold: {GOLD_TITLES[src]}"]
    if s:
        parts.append(f"{s['n_reviewed']} items reviewed")
        for key, title in (
            ("model_vs_reviewer", "model vs reviewer"),
            ("model_vs_gold", "model vs dataset gold"),
            ("reviewer_vs_gold", "reviewer vs dataset gold"),
        ):
            if s[key]["n"]:
                parts.append(f"{title} (n={s[key]['n']}) {_fmt(s[key])}")
    return "; ".join(parts)
