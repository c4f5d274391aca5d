"""Evaluation metrics for verdicts against gold labels, honest about undetermined answers.

Pure functions over lists (verdict strings, gold booleans, label scores), reused by `eval`,
reports, comparisons and studies. Statistics come from scikit-learn (accuracy, precision,
recall, F1, confusion counts, ROC-AUC, average precision, Cohen's kappa) and scipy
(percentile bootstrap, paired, seeded).

Undetermined verdicts are never silently counted as safe. Three treatments are always
computed side by side: `excluded` (the headline: metrics over determined items only,
reported together with the undetermined rate), `as_violation` and `as_safe`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, TypeGuard

TREATMENTS = ("excluded", "as_violation", "as_safe")
HEADLINE = "excluded"
TREATMENT_TITLES = {
    "excluded": "undetermined excluded",
    "as_violation": "undetermined = violation",
    "as_safe": "undetermined = safe",
}
METRICS = ("accuracy", "precision", "recall", "f1")
VERDICTS = ("violation", "no_violation", "undetermined")


def predictions(verdicts: Sequence[str], treatment: str = HEADLINE) -> list[int | None]:
    """1 / 0 per verdict; undetermined → None (excluded), 1 (as_violation) or 0 (as_safe)."""
    if treatment not in TREATMENTS:
        raise ValueError(f"unknown treatment {treatment!r}")
    und = {"excluded": None, "as_violation": 1, "as_safe": 0}[treatment]
    return [1 if v == "violation" else 0 if v == "no_violation" else und for v in verdicts]


def _pairs(gold: Sequence[bool | None], pred: Sequence[int | None]) -> tuple[list[int], list[int]]:
    yt, yp = [], []
    for g, p in zip(gold, pred, strict=True):
        if g is not None and p is not None:
            yt.append(int(bool(g)))
            yp.append(int(p))
    return yt, yp


def _num(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def binary_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 (None where undefined) and the confusion counts."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    n = len(y_true)
    if n == 0:
        return {"n": 0, **dict.fromkeys(METRICS), "tp": 0, "fp": 0, "fn": 0, "tn": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, average="binary", pos_label=1, labels=[0, 1], zero_division=float("nan")
        )
        tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "n": n,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": _num(p),
        "recall": _num(r),
        "f1": _num(f),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "tn": int(tn),
    }


def _resample_stat(t: Any, q: Any, axis: int = -1) -> Any:
    """accuracy/precision/recall/F1 for a batch of resamples at once (sklearn multilabel)."""
    import numpy as np
    from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support

    t, q = np.moveaxis(np.asarray(t), axis, -1), np.moveaxis(np.asarray(q), axis, -1)
    n, shape = t.shape[-1], t.shape[:-1]
    tt, qq = t.reshape(-1, n).T, q.reshape(-1, n).T  # one column per resample
    k = tt.shape[1]
    if k == 1:  # a single column would be read as binary, not multilabel
        tt, qq = np.hstack([tt, tt]), np.hstack([qq, qq])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, _ = precision_recall_fscore_support(
            tt, qq, average=None, zero_division=float("nan")
        )
        mcm = multilabel_confusion_matrix(tt, qq)
    acc = (mcm[:, 0, 0] + mcm[:, 1, 1]) / n
    return np.stack([acc, p, r, f])[:, :k].reshape((4, *shape))


def bootstrap_ci(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap intervals (paired resampling of items, seeded) per metric.

    The percentiles are taken over the resamples where the metric is defined (a resample
    without predicted positives has no precision); None when it is never defined.
    """
    import numpy as np
    from scipy.stats import bootstrap

    if len(y_true) < 2 or n_resamples < 1:
        return dict.fromkeys(METRICS)
    data = (np.asarray(y_true, dtype=np.int8), np.asarray(y_pred, dtype=np.int8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(
            data,
            _resample_stat,
            paired=True,
            vectorized=True,
            method="percentile",
            n_resamples=n_resamples,
            confidence_level=level,
            rng=np.random.default_rng(seed),
            batch=200,
        )
    alpha = (1 - level) / 2
    out: dict[str, tuple[float, float] | None] = {}
    for i, m in enumerate(METRICS):
        dist = res.bootstrap_distribution[i]
        dist = dist[~np.isnan(dist)]
        out[m] = (
            (float(np.quantile(dist, alpha)), float(np.quantile(dist, 1 - alpha)))
            if dist.size
            else None
        )
    return out


def treatment_metrics(
    verdicts: Sequence[str],
    gold: Sequence[bool | None],
    treatment: str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Metrics (point estimate + CI) over labelled items under one undetermined treatment."""
    yt, yp = _pairs(gold, predictions(verdicts, treatment))
    point = binary_metrics(yt, yp)
    cis = bootstrap_ci(yt, yp, n_resamples=n_resamples, seed=seed, level=level)
    out: dict[str, Any] = {"treatment": treatment, "n": point["n"]}
    for m in METRICS:
        ci = cis[m] if point[m] is not None else None
        out[m] = {"value": point[m], "ci": None if ci is None else [ci[0], ci[1]]}
    out["confusion"] = {k: point[k] for k in ("tp", "fp", "fn", "tn")}
    return out


def _scored(s: float | None) -> TypeGuard[float]:
    return s is not None and not math.isnan(s)


def score_metrics(
    gold: Sequence[bool | None],
    scores: Sequence[float | None],
    verdicts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """ROC-AUC and average precision (AUPRC) over items with a gold label and a score.

    Undetermined items (when `verdicts` are given) have no score, whatever `scores` holds.
    `n_left_out` counts the labelled items without a score, `n_undetermined_left_out` the
    undetermined ones among them.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    determined = (
        [v in ("violation", "no_violation") for v in verdicts]
        if verdicts is not None
        else [True] * len(gold)
    )
    pairs = [
        (int(bool(g)), float(s))
        for g, s, d in zip(gold, scores, determined, strict=True)
        if g is not None and d and _scored(s)
    ]
    n_labelled = sum(g is not None for g in gold)
    n_pos = sum(g for g, _ in pairs)
    out: dict[str, Any] = {
        "n": len(pairs),
        "n_positive": n_pos,
        "roc_auc": None,
        "auprc": None,
        "prevalence": n_pos / len(pairs) if pairs else None,
        "n_left_out": n_labelled - len(pairs),
        "n_undetermined_left_out": sum(
            1 for g, d in zip(gold, determined, strict=True) if g is not None and not d
        ),
    }
    if pairs and 0 < n_pos < len(pairs):
        yt, ys = [g for g, _ in pairs], [s for _, s in pairs]
        out["roc_auc"] = float(roc_auc_score(yt, ys))
        out["auprc"] = float(average_precision_score(yt, ys))
    return out


def pr_curve(
    gold: Sequence[bool | None], scores: Sequence[float | None]
) -> tuple[list[float], list[float]] | None:
    """(recall, precision) points of the precision-recall curve, or None without both classes."""
    from sklearn.metrics import precision_recall_curve

    pairs = [
        (int(bool(g)), float(s))
        for g, s in zip(gold, scores, strict=True)
        if g is not None and s is not None and not math.isnan(s)
    ]
    if len({g for g, _ in pairs}) < 2:
        return None
    precision, recall, _ = precision_recall_curve([g for g, _ in pairs], [s for _, s in pairs])
    return [float(x) for x in recall], [float(x) for x in precision]


def verdict_counts(verdicts: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(VERDICTS, 0)
    for v in verdicts:
        counts[v if v in counts else "undetermined"] += 1
    return counts


def confusion_3way(
    verdicts: Sequence[str], gold: Sequence[bool | None]
) -> dict[str, dict[str, int]]:
    """Gold class (violation / no_violation) × verdict (incl. undetermined) counts."""
    out = {g: dict.fromkeys(VERDICTS, 0) for g in ("violation", "no_violation")}
    for v, g in zip(verdicts, gold, strict=True):
        if g is not None:
            out["violation" if g else "no_violation"][v if v in VERDICTS else "undetermined"] += 1
    return out


def evaluate(
    verdicts: Sequence[str],
    gold: Sequence[bool | None],
    scores: Sequence[float | None] | None = None,
    *,
    parsed: Sequence[bool] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Everything `eval` reports: verdict counts, rates, the three treatments, scores.

    Top-level `accuracy`/`precision`/`recall`/`f1` are the headline treatment's
    (`excluded`: determined items only); always read them with `undetermined_rate`.
    """
    n = len(verdicts)
    counts = verdict_counts(verdicts)
    labelled = [g for g in gold if g is not None]
    treatments = {
        t: treatment_metrics(verdicts, gold, t, n_resamples=n_resamples, seed=seed, level=level)
        for t in TREATMENTS
    }
    und_labelled = sum(
        1
        for v, g in zip(verdicts, gold, strict=True)
        if g is not None and v not in ("violation", "no_violation")
    )
    out: dict[str, Any] = {
        "n": n,
        "n_labelled": len(labelled),
        "n_gold_violation": sum(labelled),
        "verdicts": counts,
        "undetermined_rate": counts["undetermined"] / n if n else None,
        "undetermined_labelled": und_labelled,
        "parse_rate": (sum(bool(p) for p in parsed) / n if n else None)
        if parsed is not None
        else None,
        "headline": HEADLINE,
        **{m: treatments[HEADLINE][m] for m in METRICS},
        "treatments": treatments,
        "confusion": confusion_3way(verdicts, gold),
        "scores": score_metrics(gold, scores, verdicts) if scores is not None else None,
        "ci": {
            "method": "percentile bootstrap (paired, scipy.stats.bootstrap)",
            "level": level,
            "resamples": n_resamples,
            "seed": seed,
        },
    }
    return out


def agreement(a: Sequence[str], b: Sequence[str]) -> dict[str, Any]:
    """Agreement between two verdict lists on the same items: raw share and Cohen's kappa."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score

    if len(a) != len(b):
        raise ValueError("agreement needs two lists of the same length")
    n = len(a)
    if n == 0:
        return {"n": 0, "agreement": None, "kappa": None}
    same = float(accuracy_score(list(a), list(b)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kappa = _num(cohen_kappa_score(list(a), list(b))) if len(set(a) | set(b)) > 1 else None
    return {"n": n, "agreement": same, "kappa": kappa}


def fmt_ci(m: dict[str, Any] | None, digits: int = 3) -> str:
    """'0.842 [0.770, 0.910]' for a {"value", "ci"} metric; '—' when undefined."""
    if not m or m.get("value") is None:
        return "—"
    s = f"{m['value']:.{digits}f}"
    if m.get("ci"):
        s += f" [{m['ci'][0]:.{digits}f}, {m['ci'][1]:.{digits}f}]"
    return s
