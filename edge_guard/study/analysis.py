"""`analyze(StudyData) -> dict`: the study's numbers, JSON-ready (CLI, report and TUI read it).

Per model: rating counts and shares, mean, sd, share of the middle rating, unparsed ratings
(counted and listed, never dropped silently), mean expected rating (label scores). Between
each pair of models, on the items both rated: exact agreement, agreement within ±1,
quadratic-weighted kappa, Spearman, ICC(2,1) and ICC(3,1), the middle-share difference
(exact McNemar, paired; plus the unpaired two-proportion z the seed's p ≈ 0.01 came from)
and the rating difference (Wilcoxon signed-rank, sign test). With repeats, each item's
rating is its modal rating and per-item stability (modal share, sd) is reported.
"""

from __future__ import annotations

import statistics
from collections import Counter
from itertools import combinations
from typing import Any

from edge_guard.study import stats
from edge_guard.study.data import Obs, StudyData, model_label


def primary_rating(obs: list[Obs]) -> int | None:
    """The modal parsed rating; ties go to the mode nearest the mean (then the lower)."""
    ratings = [o.rating for o in obs if o.rating is not None]
    if not ratings:
        return None
    counts = Counter(ratings)
    top = max(counts.values())
    modes = [r for r, c in counts.items() if c == top]
    mean = sum(ratings) / len(ratings)
    return min(modes, key=lambda r: (abs(r - mean), r))


def mean_expected(obs: list[Obs]) -> float | None:
    """The mean expected rating over the determined answers (an unparsed answer has no score)."""
    vals = [o.expected for o in obs if o.expected is not None and o.rating is not None]
    return sum(vals) / len(vals) if vals else None


def display_names(models: list[str]) -> dict[str, str]:
    """model ref -> short unique label."""
    labels = {m: model_label(m) for m in models}
    if len(set(labels.values())) < len(labels):
        return {m: m for m in models}
    return labels


def _dist(ratings: list[int], scale: range, middle: int | None) -> dict[str, Any]:
    counts = Counter(ratings)
    n = len(ratings)
    return {
        "n": n,
        "counts": {str(k): counts.get(k, 0) for k in scale},
        "shares": {str(k): (counts.get(k, 0) / n if n else None) for k in scale},
        "mean": statistics.fmean(ratings) if n else None,
        "sd": statistics.stdev(ratings) if n > 1 else None,
        "median": statistics.median(ratings) if n else None,
        "middle_share": counts.get(middle, 0) / n if n and middle is not None else None,
    }


def analyze(data: StudyData, *, top: int = 10) -> dict[str, Any]:
    """All the study's statistics as a JSON-serialisable dict."""
    lo, hi = data.scale
    scale = range(lo, hi + 1)
    middle = (lo + hi) // 2 if (lo + hi) % 2 == 0 else None
    names = display_names(data.models)
    labels = [names[m] for m in data.models]
    by_id = {it.id: it for it in data.items}
    primary = {
        names[m]: {iid: primary_rating(o) for iid, o in data.obs[m].items()} for m in data.models
    }
    expected = {
        names[m]: {iid: mean_expected(o) for iid, o in data.obs[m].items()} for m in data.models
    }

    models: dict[str, Any] = {}
    unparsed: dict[str, list[dict[str, Any]]] = {}
    for m in data.models:
        lab = names[m]
        rated = [r for r in primary[lab].values() if r is not None]
        bad = [
            {**_item(by_id[iid]), "repeat": o.repeat, "reason": o.reason}
            for iid, obs in data.obs[m].items()
            for o in obs
            if o.rating is None
        ]
        unparsed[lab] = bad
        exp = [e for e in expected[lab].values() if e is not None]
        models[lab] = {
            "ref": m,
            "n_items": len(data.obs[m]),
            "n_ratings": sum(len(o) for o in data.obs[m].values()),
            "n_unparsed": len(bad),
            "n_items_unrated": sum(r is None for r in primary[lab].values()),
            **_dist(rated, scale, middle),
            "mean_expected": statistics.fmean(exp) if exp else None,
            "n_expected": len(exp),
        }
        if data.repeats > 1:
            every = [o.rating for obs in data.obs[m].values() for o in obs if o.rating is not None]
            models[lab]["all_repeats"] = _dist(every, scale, middle)

    pairs = [
        _pair(a, b, primary, expected, scale, middle, models) for a, b in combinations(labels, 2)
    ]
    out: dict[str, Any] = {
        "study": {
            "name": data.name,
            "source": data.source,
            "models": labels,
            "policy": data.config.get("policy"),
            "n_items": len(data.items),
            "repeats": data.repeats,
            "scale": [lo, hi],
            "middle": middle,
            "temperature": data.config.get("temperature"),
            "effort": data.config.get("effort"),
            "n_planned": data.n_planned,
            "n_observed": data.n_observed,
            "n_missing": max(0, (data.n_planned or data.n_observed) - data.n_observed),
        },
        "models": models,
        "pairs": pairs,
        "unparsed": unparsed,
        "divergent": _divergent(data, labels, primary, expected, by_id, top),
        "topics": _topics(data, labels, primary, middle, by_id),
        "items": [
            {
                **_item(it),
                "ratings": {lab: primary[lab].get(it.id) for lab in labels},
                "expected": {lab: expected[lab].get(it.id) for lab in labels},
                **(
                    {
                        "repeats": {
                            names[m]: [o.rating for o in data.obs[m].get(it.id, [])]
                            for m in data.models
                        }
                    }
                    if data.repeats > 1
                    else {}
                ),
            }
            for it in data.items
        ],
    }
    if data.repeats > 1:
        out["stability"] = {names[m]: _stability(data.obs[m], by_id, top) for m in data.models}
    return out


def _item(it: Any) -> dict[str, Any]:
    return {"id": it.id, "topic": it.topic, "text": it.text}


def _pair(
    a: str,
    b: str,
    primary: dict[str, dict[str, int | None]],
    expected: dict[str, dict[str, float | None]],
    scale: range,
    middle: int | None,
    models: dict[str, Any],
) -> dict[str, Any]:
    ids = [i for i in primary[a] if i in primary[b]]
    rated = [(primary[a][i], primary[b][i]) for i in ids]
    both = [(x, y) for x, y in rated if x is not None and y is not None]
    ra, rb = [x for x, _ in both], [y for _, y in both]
    pair: dict[str, Any] = {
        "a": a,
        "b": b,
        "n_paired": len(both),
        "n_excluded": len(ids) - len(both),
        "exact_agreement": stats.exact_agreement(ra, rb),
        "within_one": stats.within_one(ra, rb),
        "kappa_quadratic": stats.weighted_kappa(ra, rb, list(scale)),
        "spearman": stats.spearman(ra, rb),
        "icc": stats.icc(ra, rb),
        "ratings": {
            "mean_a": statistics.fmean(ra) if ra else None,
            "mean_b": statistics.fmean(rb) if rb else None,
            "mean_diff": statistics.fmean([x - y for x, y in zip(ra, rb, strict=True)])
            if ra
            else None,
            "wilcoxon": stats.wilcoxon(ra, rb),
            "sign_test": stats.sign_test(ra, rb),
        },
    }
    ea = pair["exact_agreement"]
    pair["differ_share"] = None if ea is None else 1 - ea
    if middle is not None:
        ha, hb = [x == middle for x in ra], [y == middle for y in rb]
        ma, mb = models[a], models[b]
        pair["middle"] = {
            "share_a": sum(ha) / len(ha) if ha else None,
            "share_b": sum(hb) / len(hb) if hb else None,
            "mcnemar": stats.mcnemar_exact(ha, hb),
            "two_proportion_z": stats.two_proportion_z(
                ma["counts"][str(middle)], ma["n"], mb["counts"][str(middle)], mb["n"]
            ),
        }
    scored = [(expected[a].get(i), expected[b].get(i)) for i in ids]
    ex = [(x, y) for x, y in scored if x is not None and y is not None]
    if ex:
        xa, xb = [x for x, _ in ex], [y for _, y in ex]
        pair["expected"] = {
            "n": len(ex),
            "pearson": stats.pearson(xa, xb),
            "mean_diff": statistics.fmean([x - y for x, y in ex]),
        }
    return pair


def _divergent(
    data: StudyData,
    labels: list[str],
    primary: dict[str, dict[str, int | None]],
    expected: dict[str, dict[str, float | None]],
    by_id: dict[str, Any],
    top: int,
) -> list[dict[str, Any]]:
    rows = []
    for it in data.items:
        rs = {lab: primary[lab].get(it.id) for lab in labels}
        got = [r for r in rs.values() if r is not None]
        if len(got) < 2:
            continue
        ex = [e for e in (expected[lab].get(it.id) for lab in labels) if e is not None]
        spread = max(got) - min(got)
        ex_spread = max(ex) - min(ex) if len(ex) > 1 else 0.0
        rows.append((spread, ex_spread, it, rs))
    rows.sort(key=lambda r: (-r[0], -r[1], r[2].id))
    return [
        {
            **_item(it),
            "spread": spread,
            "ratings": rs,
            "expected": {lab: expected[lab].get(it.id) for lab in labels},
        }
        for spread, _e, it, rs in rows[:top]
        if spread > 0
    ]


def _topics(
    data: StudyData,
    labels: list[str],
    primary: dict[str, dict[str, int | None]],
    middle: int | None,
    by_id: dict[str, Any],
) -> dict[str, Any]:
    topics = sorted({it.topic for it in data.items if it.topic})
    out: dict[str, Any] = {}
    for t in topics:
        ids = [it.id for it in data.items if it.topic == t]
        per = {}
        for lab in labels:
            found = [primary[lab].get(i) for i in ids]
            rs = [r for r in found if r is not None]
            per[lab] = {
                "n": len(rs),
                "mean": statistics.fmean(rs) if rs else None,
                "middle_share": (sum(r == middle for r in rs) / len(rs))
                if rs and middle is not None
                else None,
            }
        out[t] = {"n_items": len(ids), "models": per}
    return out


def _stability(obs: dict[str, list[Obs]], by_id: dict[str, Any], top: int) -> dict[str, Any]:
    per = []
    for iid, os_ in obs.items():
        rs = [o.rating for o in os_ if o.rating is not None]
        if not rs:
            continue
        mode = primary_rating(os_)
        per.append(
            {
                **_item(by_id[iid]),
                "ratings": [o.rating for o in os_],
                "modal_share": (rs.count(mode) if mode is not None else 0) / len(rs),
                "sd": statistics.pstdev(rs),
            }
        )
    if not per:
        return {
            "n_items": 0,
            "mean_modal_share": None,
            "fully_stable_share": None,
            "mean_sd": None,
            "least_stable": [],
        }
    least = sorted(per, key=lambda d: (d["modal_share"], -d["sd"], d["id"]))
    return {
        "n_items": len(per),
        "mean_modal_share": statistics.fmean(d["modal_share"] for d in per),
        "fully_stable_share": sum(d["modal_share"] == 1.0 for d in per) / len(per),
        "mean_sd": statistics.fmean(d["sd"] for d in per),
        "least_stable": [d for d in least[:top] if d["modal_share"] < 1.0],
    }
