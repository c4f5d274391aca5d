"""Study statistics against values computed by hand on small fixtures (scipy as a cross-check)."""

from __future__ import annotations

import math
import statistics

import pytest
import scipy.stats

from edge_guard.study import stats
from edge_guard.study.analysis import analyze, primary_rating
from edge_guard.study.data import Obs, StudyData
from edge_guard.study.dataset import StudyItem

A = [1, 2, 3, 3, 4, 5, 3, 2]
B = [1, 3, 3, 2, 4, 4, 3, 4]  # differences A-B: 0 -1 0 +1 0 +1 0 -2


def test_agreement_and_within_one_by_hand() -> None:
    assert stats.exact_agreement(A, B) == 4 / 8
    assert stats.within_one(A, B) == 7 / 8  # only the last pair differs by 2


def test_quadratic_kappa_matches_the_hand_formula() -> None:
    # kappa_w = 1 - sum w*O / sum w*E with w = (i - j)^2:
    # observed: mean (a-b)^2 = (0+1+0+1+0+1+0+4)/8 = 7/8
    # expected: mean over all (a_i, b_j) pairs = E[a^2] - 2 E[a] E[b] + E[b^2]
    #         = 77/8 - 2 * (23/8) * 3 + 80/8 = 2.375
    by_hand = 1 - (7 / 8) / 2.375
    assert by_hand == pytest.approx(12 / 19)
    # the same from the confusion-matrix definition, written out
    cats = range(1, 6)
    n = len(A)
    obs = {
        (i, j): sum(x == i and y == j for x, y in zip(A, B, strict=True)) / n
        for i in cats
        for j in cats
    }
    pa = {i: A.count(i) / n for i in cats}
    pb = {j: B.count(j) / n for j in cats}
    num = sum((i - j) ** 2 * obs[i, j] for i in cats for j in cats)
    den = sum((i - j) ** 2 * pa[i] * pb[j] for i in cats for j in cats)
    assert 1 - num / den == pytest.approx(by_hand)
    assert stats.weighted_kappa(A, B, list(cats)) == pytest.approx(by_hand)


def test_icc_by_hand_anova() -> None:
    # Two-way ANOVA on the 8 x 2 matrix: SS_rows = 15.4375, SS_cols = 0.0625,
    # SS_total = 157 - 16 * (47/16)^2 = 18.9375, SS_err = 3.4375.
    # ICC(3,1) = (SSR - SSE) / (SSR + SSE) (both /7) = 12 / 18.875
    # ICC(2,1) = (MSR - MSE) / (MSR + MSE + 2 (MSC - MSE) / 8) = 12 / 18.125
    icc = stats.icc(A, B)
    assert icc["icc3_1"] == pytest.approx(12 / 18.875)
    assert icc["icc2_1"] == pytest.approx(12 / 18.125)


def test_rank_tests_agree_with_scipy() -> None:
    sp = stats.spearman(A, B)
    ref = scipy.stats.spearmanr(A, B)
    assert sp["rho"] == pytest.approx(ref.statistic)
    assert sp["p"] == pytest.approx(ref.pvalue)
    w = stats.wilcoxon(A, B)
    wref = scipy.stats.wilcoxon(A, B, zero_method="wilcox")
    assert w["statistic"] == pytest.approx(wref.statistic)
    assert w["p"] == pytest.approx(wref.pvalue)
    assert w["n_nonzero"] == 4
    st = stats.sign_test(A, B)
    assert (st["first_higher"], st["second_higher"]) == (2, 2)
    assert st["p"] == pytest.approx(scipy.stats.binomtest(2, 4, 0.5).pvalue)


def test_mcnemar_exact_by_hand() -> None:
    # 1 item "middle" only for the first rater, 6 only for the second, 3 for both:
    # two-sided exact p = 2 * P(X <= 1 | n = 7, 1/2) = 2 * (1 + 7) / 128 = 0.125
    first = [True] * 3 + [True] + [False] * 6
    second = [True] * 3 + [False] + [True] * 6
    res = stats.mcnemar_exact(first, second)
    assert (res["only_first"], res["only_second"]) == (1, 6)
    assert res["p"] == pytest.approx(0.125)


def test_two_proportion_z_reproduces_the_seed_p() -> None:
    # The seed: 73 of 101 safeguard ratings were 3 vs 56 of 101 for the base model, p ≈ 0.01.
    res = stats.two_proportion_z(73, 101, 56, 101)
    pooled = 129 / 202
    z = (73 / 101 - 56 / 101) / math.sqrt(pooled * (1 - pooled) * 2 / 101)
    assert res["z"] == pytest.approx(z)
    assert res["p"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    assert 0.005 < res["p"] < 0.02


def test_undefined_statistics_are_none_not_nan() -> None:
    assert stats.spearman([3, 3, 3], [1, 2, 3]) == {"rho": None, "p": None}
    assert stats.wilcoxon([2, 3], [2, 3])["p"] is None
    assert stats.exact_agreement([], []) is None
    assert stats.weighted_kappa([3, 3], [3, 3], [1, 2, 3, 4, 5]) is None


def test_primary_rating_is_the_mode_ties_nearest_the_mean() -> None:
    assert primary_rating([Obs(0, 4), Obs(1, 4), Obs(2, 2)]) == 4
    assert primary_rating([Obs(0, 1), Obs(1, 3), Obs(2, 3), Obs(3, 1), Obs(4, 5)]) == 3
    assert primary_rating([Obs(0, None, reason="x")]) is None


def _data() -> StudyData:
    items = [StudyItem(f"i{k}", f"text {k}", "x" if k < 5 else "y") for k in range(9)]
    obs = {
        "sg": {f"i{k}": [Obs(0, r)] for k, r in enumerate(A)},
        "base": {f"i{k}": [Obs(0, r)] for k, r in enumerate(B)},
    }
    obs["sg"]["i8"] = [Obs(0, None, reason="no final answer (finish: length)")]
    obs["base"]["i8"] = [Obs(0, 3)]
    return StudyData("fixture", ["sg", "base"], items, obs)


def test_analyze_counts_pairs_and_lists_unparsed() -> None:
    a = analyze(_data())
    sg = a["models"]["sg"]
    assert sg["counts"] == {"1": 1, "2": 2, "3": 3, "4": 1, "5": 1}
    assert sg["n"] == 8 and sg["n_unparsed"] == 1
    assert sg["mean"] == pytest.approx(23 / 8)
    assert sg["sd"] == pytest.approx(statistics.stdev(A))
    assert sg["middle_share"] == pytest.approx(3 / 8)
    assert a["models"]["base"]["middle_share"] == pytest.approx(4 / 9)  # i8 rated 3 by base only
    assert a["unparsed"]["sg"] == [
        {
            "id": "i8",
            "topic": "y",
            "text": "text 8",
            "repeat": 0,
            "reason": "no final answer (finish: length)",
        }
    ]
    (pair,) = a["pairs"]
    assert (pair["n_paired"], pair["n_excluded"]) == (8, 1)
    assert pair["exact_agreement"] == 0.5 and pair["differ_share"] == 0.5
    assert pair["kappa_quadratic"] == pytest.approx(12 / 19)
    assert pair["middle"]["two_proportion_z"] == stats.two_proportion_z(3, 8, 4, 9)
    assert a["divergent"][0]["id"] == "i7" and a["divergent"][0]["spread"] == 2
    assert {d["id"] for d in a["divergent"]} == {"i1", "i3", "i5", "i7"}
    assert a["topics"]["y"]["models"]["sg"]["n"] == 3
