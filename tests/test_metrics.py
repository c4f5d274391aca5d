"""Metrics against hand-computed values; undetermined treatments; seeded bootstrap intervals."""

from __future__ import annotations

import pytest

from edge_guard.runs.metrics import (
    agreement,
    binary_metrics,
    bootstrap_ci,
    evaluate,
    fmt_ci,
    predictions,
    score_metrics,
    treatment_metrics,
)

V, N, U = "violation", "no_violation", "undetermined"

# 10 labelled items: TP=3, FN=1, FP=2, TN=2, plus undetermined on one gold-violation and one
# gold-safe item.
GOLD = [True, True, True, True, False, False, False, False, True, False]
VERD = [V, V, V, N, V, V, N, N, U, U]


def test_binary_metrics_match_hand_computation() -> None:
    yt = [1, 1, 1, 1, 0, 0, 0, 0]
    yp = [1, 1, 1, 0, 1, 1, 0, 0]
    m = binary_metrics(yt, yp)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 2, 2)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))  # 0.6667


def test_undefined_metrics_are_none_not_zero() -> None:
    m = binary_metrics([1, 0, 0], [0, 0, 0])  # nothing predicted positive
    assert m["precision"] is None
    assert m["recall"] == 0.0
    assert binary_metrics([], [])["f1"] is None


def test_treatments_of_undetermined() -> None:
    assert predictions([V, N, U], "excluded") == [1, 0, None]
    assert predictions([V, N, U], "as_violation") == [1, 0, 1]
    assert predictions([V, N, U], "as_safe") == [1, 0, 0]
    ex = treatment_metrics(VERD, GOLD, "excluded", n_resamples=0)
    assert ex["n"] == 8
    assert ex["f1"]["value"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))  # 6/9
    av = treatment_metrics(VERD, GOLD, "as_violation", n_resamples=0)
    # TP 4, FN 1, FP 3, TN 2
    assert av["confusion"] == {"tp": 4, "fp": 3, "fn": 1, "tn": 2}
    assert av["precision"]["value"] == pytest.approx(4 / 7)
    assert av["recall"]["value"] == pytest.approx(4 / 5)
    sf = treatment_metrics(VERD, GOLD, "as_safe", n_resamples=0)
    # TP 3, FN 2, FP 2, TN 3
    assert sf["confusion"] == {"tp": 3, "fp": 2, "fn": 2, "tn": 3}
    assert sf["accuracy"]["value"] == pytest.approx(6 / 10)
    assert sf["f1"]["value"] == pytest.approx(6 / 10)


def test_evaluate_headline_excludes_undetermined_and_reports_rates() -> None:
    ev = evaluate([*VERD, V], [*GOLD, None], parsed=[True] * 8 + [False] * 3, n_resamples=200)
    assert ev["headline"] == "excluded"
    assert ev["f1"] == ev["treatments"]["excluded"]["f1"]
    assert ev["n"] == 11 and ev["n_labelled"] == 10 and ev["n_gold_violation"] == 5
    assert ev["verdicts"] == {"violation": 6, "no_violation": 3, "undetermined": 2}
    assert ev["undetermined_rate"] == pytest.approx(2 / 11)
    assert ev["parse_rate"] == pytest.approx(8 / 11)
    assert ev["confusion"]["violation"] == {"violation": 3, "no_violation": 1, "undetermined": 1}
    assert ev["confusion"]["no_violation"] == {"violation": 2, "no_violation": 2, "undetermined": 1}
    assert set(ev["treatments"]) == {"excluded", "as_violation", "as_safe"}


def test_bootstrap_ci_contains_point_estimate_and_is_seeded() -> None:
    yt = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 1, 0] * 3
    yp = [1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1] * 3
    point = binary_metrics(yt, yp)
    a = bootstrap_ci(yt, yp, n_resamples=1000, seed=7)
    b = bootstrap_ci(yt, yp, n_resamples=1000, seed=7)
    c = bootstrap_ci(yt, yp, n_resamples=1000, seed=8)
    assert a == b
    assert a != c
    for m in ("accuracy", "precision", "recall", "f1"):
        lo, hi = a[m]
        assert lo < point[m] < hi
    # The seeded intervals themselves (scipy percentile bootstrap, 1000 paired resamples,
    # seed 7): accuracy's ends are resampled accuracies, 27/48 and 39/48.
    assert a["accuracy"] == (27 / 48, 39 / 48)
    assert a["precision"] == pytest.approx((0.48148148148148145, 0.8422064777327933), abs=1e-12)
    assert a["recall"] == pytest.approx((0.5714285714285714, 0.9130434782608695), abs=1e-12)
    assert a["f1"] == pytest.approx((0.5454545454545454, 0.8333333333333334), abs=1e-12)


def test_score_metrics_hand_computed() -> None:
    # sorted by score: 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg)
    s = score_metrics([False, False, True, True, None], [0.1, 0.4, 0.35, 0.8, 0.9])
    assert s["n"] == 4 and s["n_positive"] == 2
    assert s["roc_auc"] == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ranked right
    assert s["auprc"] == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    one_class = score_metrics([True, True], [0.2, 0.9])
    assert one_class["roc_auc"] is None and one_class["auprc"] is None
    assert score_metrics([True, False], [None, 0.3])["roc_auc"] is None


def test_agreement_and_kappa() -> None:
    a = [V, V, N, N]
    b = [V, N, N, N]
    r = agreement(a, b)
    # po = 3/4; pe = (2/4*1/4) + (2/4*3/4) = 0.5; kappa = (0.75-0.5)/(1-0.5) = 0.5
    assert r["agreement"] == pytest.approx(0.75)
    assert r["kappa"] == pytest.approx(0.5)


def test_fmt_ci() -> None:
    assert fmt_ci({"value": 0.5, "ci": [0.25, 0.75]}) == "0.500 [0.250, 0.750]"
    assert fmt_ci({"value": None, "ci": None}) == "—"


def test_bootstrap_ignores_resamples_where_a_metric_is_undefined() -> None:
    # everything predicted violation: recall is 1 whenever defined; some resamples draw no
    # gold violation (recall undefined) and must not drag the interval down to 0
    yt = [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
    ci = bootstrap_ci(yt, [1] * 12, n_resamples=500, seed=0)
    assert ci["recall"] == (1.0, 1.0)
    assert bootstrap_ci([0, 0, 0], [0, 0, 0], n_resamples=50)["precision"] is None
