"""Agreement and difference statistics for two raters' paired ordinal ratings.

Each function takes equal-length sequences of integer ratings (unparsed items already
excluded by the caller, who counts them) and returns plain floats, or None where the
statistic is undefined (e.g. a correlation with a constant rater). scipy/sklearn compute
what they have (Spearman, Wilcoxon, binomial tests, weighted kappa); the ICC is the
Shrout & Fleiss two-way ANOVA formula in numpy.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def exact_agreement(a: Sequence[int], b: Sequence[int]) -> float | None:
    if not a:
        return None
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def within_one(a: Sequence[int], b: Sequence[int]) -> float | None:
    if not a:
        return None
    return sum(abs(x - y) <= 1 for x, y in zip(a, b, strict=True)) / len(a)


def weighted_kappa(a: Sequence[int], b: Sequence[int], labels: Sequence[int]) -> float | None:
    """Cohen's kappa with quadratic weights (sklearn); None when undefined."""
    if len(a) < 2:
        return None
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        k = cohen_kappa_score(a, b, labels=list(labels), weights="quadratic")
    return _finite(k)


def spearman(a: Sequence[int], b: Sequence[int]) -> dict[str, float | None]:
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return {"rho": None, "p": None}
    from scipy.stats import spearmanr

    res = spearmanr(a, b)
    return {"rho": _finite(res.statistic), "p": _finite(res.pvalue)}


def icc(a: Sequence[int], b: Sequence[int]) -> dict[str, float | None]:
    """ICC(2,1) (absolute agreement) and ICC(3,1) (consistency), Shrout & Fleiss (1979).

    Two-way ANOVA on the n × k matrix (items × raters): ICC(2,1) = (MSR - MSE) /
    (MSR + (k-1) MSE + k (MSC - MSE) / n); ICC(3,1) = (MSR - MSE) / (MSR + (k-1) MSE).
    """
    x = np.column_stack([np.asarray(a, float), np.asarray(b, float)])
    n, k = x.shape
    if n < 2:
        return {"icc2_1": None, "icc3_1": None}
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    den2 = msr + (k - 1) * mse + k * (msc - mse) / n
    den3 = msr + (k - 1) * mse
    return {
        "icc2_1": _finite((msr - mse) / den2) if den2 > 0 else None,
        "icc3_1": _finite((msr - mse) / den3) if den3 > 0 else None,
    }


def mcnemar_exact(a_hit: Sequence[bool], b_hit: Sequence[bool]) -> dict[str, Any]:
    """Exact McNemar test (binomial on the discordant pairs) for paired proportions.

    b = items where only the first rater hits, c = only the second; p = two-sided
    binomial test of b out of b + c at 1/2.
    """
    from scipy.stats import binomtest

    b = sum(x and not y for x, y in zip(a_hit, b_hit, strict=True))
    c = sum(y and not x for x, y in zip(a_hit, b_hit, strict=True))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"only_first": b, "only_second": c, "p": p}


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> dict[str, float | None]:
    """Pooled two-proportion z test (independent samples), two-sided."""
    if n1 == 0 or n2 == 0:
        return {"z": None, "p": None}
    from scipy.stats import norm

    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return {"z": None, "p": None}
    z = (p1 - p2) / se
    return {"z": z, "p": float(2 * norm.sf(abs(z)))}


def wilcoxon(a: Sequence[int], b: Sequence[int]) -> dict[str, Any]:
    """Wilcoxon signed-rank test of a - b (zero differences dropped: zero_method='wilcox')."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    nonzero = sum(d != 0 for d in diffs)
    if nonzero == 0:
        return {"statistic": None, "p": None, "n_nonzero": 0}
    from scipy.stats import wilcoxon as _wilcoxon

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _wilcoxon(a, b, zero_method="wilcox")
    return {"statistic": _finite(res.statistic), "p": _finite(res.pvalue), "n_nonzero": nonzero}


def sign_test(a: Sequence[int], b: Sequence[int]) -> dict[str, Any]:
    """Sign test: items rated higher by the first vs by the second (ties dropped), binomial."""
    from scipy.stats import binomtest

    plus = sum(x > y for x, y in zip(a, b, strict=True))
    minus = sum(x < y for x, y in zip(a, b, strict=True))
    p = 1.0 if plus + minus == 0 else float(binomtest(plus, plus + minus, 0.5).pvalue)
    return {"first_higher": plus, "second_higher": minus, "p": p}


def pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return _finite(float(np.corrcoef(a, b)[0, 1]))
