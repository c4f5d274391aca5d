"""Evaluation of a multi-policy run: metrics per policy, macro averages, "any violation".

Reads the pairs of a run stored by `runs.multi` back per policy (the set's thresholds on
P(violation) applied to determined verdicts, as at classification time), evaluates each
policy with `metrics.evaluate` (bootstrap CIs, three undetermined treatments), averages
precision/recall/F1 over policies (macro, with a bootstrap CI over texts), and scores the
per-text "any violation" verdict (`policy.thresholds.flagged`) against the "any violation" gold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypedDict

from edge_guard.errors import EdgeGuardError
from edge_guard.policy.thresholds import flagged, threshold_verdict
from edge_guard.runs.metrics import HEADLINE, METRICS, evaluate, fmt_ci, predictions
from edge_guard.runs.outcomes import item_score
from edge_guard.store import Store

ANY = "any_violation"
MACRO_METRICS = ("precision", "recall", "f1")


class BootstrapArgs(TypedDict):
    """The bootstrap settings every evaluation of one run shares."""

    n_resamples: int
    seed: int
    level: float


@dataclass
class PolicyOutcomes:
    """One policy's pairs of a run, in text order (texts without this pair left out)."""

    name: str
    text_idx: list[int]
    verdicts: list[str]
    gold: list[bool | None]
    scores: list[float | None]
    parsed: list[bool]


def thresholded(verdict: str, row: dict[str, Any], threshold: float | None) -> str:
    """A stored verdict with the set's threshold applied (`policy.thresholds.threshold_verdict`,
    the rule `apply_threshold` uses; undetermined stays undetermined)."""
    if threshold is None:
        return verdict
    meta = json.loads(row.get("metadata") or "{}")
    return str(threshold_verdict(verdict, meta if isinstance(meta, dict) else {}, threshold))


def multi_outcomes(store: Store, name: str) -> tuple[dict[str, Any], dict[str, PolicyOutcomes]]:
    """(run row, {policy: outcomes}) for a multi-policy run; a one-line error otherwise."""
    run = store.run(name)
    if run is None:
        raise EdgeGuardError(f"no run named {name!r} in {store.path}")
    cfg = json.loads(run.get("config") or "{}")
    names = cfg.get("policies")
    if not isinstance(names, list):
        raise EdgeGuardError(f"run {name!r} is a single-policy run (use `edge-guard eval`)")
    thresholds = cfg.get("thresholds") or {}
    out = {n: PolicyOutcomes(n, [], [], [], [], []) for n in names}
    for r in store.run_results(name):
        extra = json.loads(r.get("extra") or "{}")
        pol = extra.get("policy") if isinstance(extra, dict) else None
        if pol not in out:
            continue
        o = out[pol]
        o.text_idx.append(int(extra.get("text_idx", r["idx"] // len(names))))
        o.verdicts.append(thresholded(r["verdict"], r, thresholds.get(pol)))
        g = extra.get("gold_violation")
        o.gold.append(None if g is None else bool(g))
        o.scores.append(item_score(r))
        o.parsed.append(bool(r["parsed"]))
    return run, out


def any_outcomes(per: dict[str, PolicyOutcomes]) -> tuple[list[int], list[str], list[bool | None]]:
    """Per text with every pair done: the "any violation" verdict and gold.

    Verdict: violation if any policy's is, undetermined if none is but one is undetermined,
    else no_violation. Gold: violation if any policy's gold is, safe if all are known safe.
    Only policies with gold labels count when some have them (a dataset without a column
    for a policy says nothing about it).
    """
    labelled = {n: o for n, o in per.items() if any(g is not None for g in o.gold)}
    per = labelled or per
    by_text: dict[int, dict[str, tuple[str, bool | None]]] = {}
    for name, o in per.items():
        for t, v, g in zip(o.text_idx, o.verdicts, o.gold, strict=True):
            by_text.setdefault(t, {})[name] = (v, g)
    texts, verdicts, golds = [], [], []
    for t in sorted(by_text):
        pairs = by_text[t]
        if len(pairs) != len(per):
            continue
        flag = flagged(v for v, _g in pairs.values())
        verdicts.append(
            "undetermined" if flag is None else ("violation" if flag else "no_violation")
        )
        gs = [g for _v, g in pairs.values()]
        golds.append(
            True if any(g is True for g in gs) else (False if all(g is False for g in gs) else None)
        )
        texts.append(t)
    return texts, verdicts, golds


def macro(
    per_eval: dict[str, dict[str, Any]],
    per: dict[str, PolicyOutcomes],
    *,
    n_resamples: int,
    seed: int,
    level: float,
) -> dict[str, Any]:
    """Mean over policies of the headline precision/recall/F1, with a bootstrap CI that
    resamples texts (every policy's pairs of a text move together); None when a policy
    has the metric undefined."""
    import numpy as np

    labelled = {n: o for n, o in per.items() if per_eval[n]["n_labelled"]}
    per, per_eval = labelled, {n: per_eval[n] for n in labelled}
    out: dict[str, Any] = {"policies": list(per)}
    for m in MACRO_METRICS:
        vals = [
            e[m]["value"] if isinstance(e.get(m), dict) else e.get(m) for e in per_eval.values()
        ]
        nums = [v for v in vals if v is not None]
        out[m] = {
            "value": float(np.mean(nums)) if nums and len(nums) == len(vals) else None,
            "ci": None,
        }
    texts = sorted({t for o in per.values() for t in o.text_idx})
    if len(texts) < 2 or n_resamples < 1 or not per:
        return out
    pos = {t: i for i, t in enumerate(texts)}
    n, k = len(texts), len(per)
    yt = np.zeros((k, n), dtype=np.int8)
    yp = np.zeros((k, n), dtype=np.int8)
    mask = np.zeros((k, n), dtype=bool)
    for j, o in enumerate(per.values()):
        for t, p, g in zip(o.text_idx, predictions(o.verdicts, HEADLINE), o.gold, strict=True):
            if p is not None and g is not None:
                yt[j, pos[t]], yp[j, pos[t]], mask[j, pos[t]] = int(g), int(p), True
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    t_, p_, m_ = yt[:, idx], yp[:, idx], mask[:, idx]  # (k, R, n)
    tp = ((t_ == 1) & (p_ == 1) & m_).sum(-1).astype(float)
    fp = ((t_ == 0) & (p_ == 1) & m_).sum(-1).astype(float)
    fn = ((t_ == 1) & (p_ == 0) & m_).sum(-1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = {
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }
    alpha = (1 - level) / 2
    for m, arr in stats.items():
        if out[m]["value"] is None:
            continue
        mean = arr.mean(0)  # NaN when a policy's metric is undefined in that resample
        mean = mean[~np.isnan(mean)]
        if mean.size:
            out[m]["ci"] = [float(np.quantile(mean, alpha)), float(np.quantile(mean, 1 - alpha))]
    return out


def evaluate_multi_run(
    store: Store, name: str, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Per-policy metrics, macro precision/recall/F1 and the "any violation" metric of a run."""
    run, per = multi_outcomes(store, name)
    cfg = json.loads(run.get("config") or "{}")
    boot = BootstrapArgs(n_resamples=n_resamples, seed=seed, level=level)
    per_eval = {
        n: evaluate(o.verdicts, o.gold, o.scores, parsed=o.parsed, **boot) for n, o in per.items()
    }
    _texts, any_v, any_g = any_outcomes(per)
    return {
        "run": name,
        "status": run.get("status"),
        "dataset": cfg.get("dataset") or run.get("dataset"),
        "policy": run.get("policy"),
        "policies": list(per),
        "mode": cfg.get("mode", "separate"),
        "thresholds": cfg.get("thresholds") or {},
        "model": run.get("model"),
        "n_texts": cfg.get("n_texts"),
        "n_items": run.get("n_items"),
        "n_done": sum(len(o.verdicts) for o in per.values()),
        "per_policy": per_eval,
        "macro": macro(per_eval, per, **boot),
        ANY: evaluate(any_v, any_g, None, **boot),
    }


def _metric(ev: dict[str, Any], m: str) -> dict[str, Any] | None:
    return ev["treatments"][HEADLINE].get(m)


def policy_table(ev: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per policy, then macro and "any violation" (text and report)."""
    pct = lambda x: "—" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    header = ["policy", "n", "violation", "undetermined", *METRICS]
    rows = []
    for name, e in [*ev["per_policy"].items(), (ANY, ev[ANY])]:
        rows.append(
            [
                name,
                str(e["n"]),
                str(e["verdicts"]["violation"]),
                pct(e["undetermined_rate"]),
                *(fmt_ci(_metric(e, m)) for m in METRICS),
            ]
        )
    rows.insert(
        len(ev["per_policy"]),
        ["macro (mean)", "", "", "", "", *(fmt_ci(ev["macro"][m]) for m in MACRO_METRICS)],
    )
    return header, rows


def format_multi_eval(ev: dict[str, Any]) -> str:
    """The text form of `edge-guard eval` for a multi-policy run."""
    header, rows = policy_table(ev)
    widths = [max(len(r[i]) for r in [header, *rows]) + 2 for i in range(len(header))]
    lines = [
        f"run {ev['run']} — {len(ev['policies'])} policies ({ev['mode']} mode), model {ev['model']}, "
        f"{ev['n_done']}/{ev['n_items']} pairs over {ev['n_texts']} texts ({ev['status']})",
        "",
        "".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
    ]
    lines += ["".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    th = {k: v for k, v in (ev.get("thresholds") or {}).items() if v is not None}
    if th:
        lines.append(
            "\nthresholds on P(violation): " + ", ".join(f"{k} {v:g}" for k, v in th.items())
        )
    ci = ev[ANY]["ci"]
    lines.append(
        f"\nmetrics: undetermined excluded (headline), [lo, hi] = {int(ci['level'] * 100)}% "
        f"bootstrap, {ci['resamples']} resamples, seed {ci['seed']}; macro = mean over "
        f"the policies with gold labels (CI resamples texts); {ANY}: flagged if any policy's verdict is violation, "
        "undetermined if none is but one is undetermined"
    )
    return "\n".join(lines)
