"""Comparison statistics over stored runs: agreement with the reference, flips, ΔP, speed.

Verdicts are compared three ways (violation / no_violation / undetermined), so an answer
that turns undetermined counts as a disagreement. Agreement and Cohen's kappa
(`metrics.agreement`, sklearn) get percentile bootstrap intervals from resampling items
in pairs (seeded; resamples where kappa is undefined are left out). Per-config quality
(F1/P/R with CIs, parse and undetermined rates) is `runs.evaluate_outcomes`; speed comes
from the stored per-item timings; resources from what the runner recorded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from edge_guard.conversation import shown_text
from edge_guard.runs.metrics import VERDICTS, agreement
from edge_guard.runs.outcomes import Outcomes, evaluate_outcomes, item_score
from edge_guard.store import Store

CI_METHOD = "percentile bootstrap over items (paired, seeded)"


def _codes(verdicts: Sequence[str]) -> list[int]:
    return [VERDICTS.index(v) if v in VERDICTS else 2 for v in verdicts]


def kappa_rows(a: Any, b: Any, k: int = len(VERDICTS)) -> Any:
    """Cohen's kappa per row of two (resamples × n) integer arrays (NaN where undefined)."""
    import numpy as np

    po = (a == b).mean(axis=1)
    pe = np.zeros(a.shape[0])
    for c in range(k):
        pe += (a == c).mean(axis=1) * (b == c).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pe < 1.0, (po - pe) / (1.0 - pe), np.nan)


def agreement_ci(
    a: Sequence[str],
    b: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float] | None]:
    """Bootstrap intervals for raw agreement and Cohen's kappa of two verdict lists."""
    import numpy as np

    n = len(a)
    if n < 2 or n_resamples < 1:
        return {"agreement": None, "kappa": None}
    x, y = np.asarray(_codes(a)), np.asarray(_codes(b))
    rng = np.random.default_rng(seed)
    tail = 100 * (1 - level) / 2
    agree, kappa = [], []
    for start in range(0, n_resamples, 200):
        idx = rng.integers(0, n, size=(min(200, n_resamples - start), n))
        xa, yb = x[idx], y[idx]
        agree.append((xa == yb).mean(axis=1))
        kappa.append(kappa_rows(xa, yb))
    ag, kp = np.concatenate(agree), np.concatenate(kappa)
    kp = kp[~np.isnan(kp)]
    out: dict[str, tuple[float, float] | None] = {
        "agreement": (float(np.percentile(ag, tail)), float(np.percentile(ag, 100 - tail)))
    }
    out["kappa"] = (
        (float(np.percentile(kp, tail)), float(np.percentile(kp, 100 - tail)))
        if kp.size >= n_resamples / 2
        else None
    )
    return out


def _clip(s: str | None, n: int) -> str | None:
    if s is None:
        return None
    return s if len(s) <= n else s[:n] + f"… [{len(s) - n} more characters]"


def _side(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "verdict": row["verdict"],
        "final": _clip(row.get("final"), 400),
        "reasoning": _clip(row.get("reasoning"), 2000),
        "p_violation": item_score(row),
        "finish": row.get("finish_reason"),
        "error": row.get("error"),
    }


def pair_stats(
    ref: Outcomes,
    cand: Outcomes,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    max_flips: int = 50,
) -> dict[str, Any]:
    """The candidate against the reference on the items both have done (matched by index)."""
    by_idx = {r["idx"]: (r, g) for r, g in zip(ref.rows, ref.gold, strict=True)}
    pairs = [(by_idx[r["idx"]], r) for r in cand.rows if r["idx"] in by_idx]
    va = [p[0][0]["verdict"] for p in pairs]
    vb = [p[1]["verdict"] for p in pairs]
    point = agreement(va, vb)
    ci = agreement_ci(va, vb, n_resamples=n_resamples, seed=seed, level=level)
    transitions = {v: dict.fromkeys(VERDICTS, 0) for v in VERDICTS}
    flips, deltas, left_out = [], [], 0
    for ((ra, gold), rb), a, b in zip(pairs, va, vb, strict=True):
        transitions[a if a in VERDICTS else "undetermined"][
            b if b in VERDICTS else "undetermined"
        ] += 1
        sa, sb = item_score(ra), item_score(rb)  # None for an undetermined answer
        if sa is not None and sb is not None and not (math.isnan(sa) or math.isnan(sb)):
            deltas.append(abs(sb - sa))
        else:
            left_out += 1
        if a != b:
            flips.append(
                {
                    "idx": ra["idx"],
                    "item_id": ra.get("item_id"),
                    "gold": gold,
                    "text": _clip(shown_text(ra.get("text"), ra.get("conversation"), 500), 2000),
                    "ref": _side(ra),
                    "cand": _side(rb),
                }
            )
    return {
        "n": point["n"],
        "agreement": {"value": point["agreement"], "ci": ci["agreement"]},
        "kappa": {
            "value": point["kappa"],
            "ci": ci["kappa"] if point["kappa"] is not None else None,
        },
        "n_flips": len(flips),
        "flips": flips[:max_flips],
        "transitions": transitions,
        "delta_p": {
            "n": len(deltas),
            "mean_abs": sum(deltas) / len(deltas) if deltas else None,
            "max_abs": max(deltas) if deltas else None,
            "n_left_out": left_out,  # undetermined or unscored on either side
        },
    }


def speed(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rates from the stored per-item timings (each item's own prompt and decode time)."""
    timed = [r for r in rows if (r.get("prompt_ms") or 0) + (r.get("output_ms") or 0) > 0]
    evaluated = sum(max(0, (r["prompt_tokens"] or 0) - (r["cached_tokens"] or 0)) for r in timed)
    prompt_s = sum(r["prompt_ms"] or 0.0 for r in timed) / 1000
    out_tok = sum(r["output_tokens"] or 0 for r in timed)
    out_s = sum(r["output_ms"] or 0.0 for r in timed) / 1000
    return {
        "n_timed": len(timed),
        "prompt_tokens_per_s": evaluated / prompt_s if prompt_s > 0 else None,
        "output_tokens_per_s": out_tok / out_s if out_s > 0 else None,
        "s_per_label": (prompt_s + out_s) / len(timed) if timed else None,
        "mean_output_tokens": out_tok / len(timed) if timed else None,
    }


def compare_outcomes(
    outcomes: Sequence[Outcomes],
    labels: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    max_flips: int = 50,
) -> dict[str, Any]:
    """Everything a comparison report shows, as one JSON-ready dict (config 0 = reference)."""
    import json

    ref = outcomes[0]
    configs = []
    for k, (out, label) in enumerate(zip(outcomes, labels, strict=True)):
        cfg = out.config
        meta = cfg.get("compare") or {}
        notes = json.loads(out.run.get("notes") or "{}")
        ev = evaluate_outcomes(out, n_resamples=n_resamples, seed=seed, level=level)
        configs.append(
            {
                "index": k,
                "label": label,
                "run": out.run["name"],
                "spec": meta.get("spec"),
                "model": cfg.get("model"),
                "model_identity": cfg.get("model_identity"),
                "model_path": meta.get("model_path"),
                "file_bytes": meta.get("file_bytes"),
                "backend": meta.get("backend"),
                "style": cfg.get("style"),
                "effort": cfg.get("effort"),
                "sampling": cfg.get("sampling"),
                "eval": ev,
                "speed": speed(out.rows),
                "resources": notes.get("resources"),
                "vs_reference": None
                if k == 0
                else pair_stats(
                    ref, out, n_resamples=n_resamples, seed=seed, level=level, max_flips=max_flips
                ),
            }
        )
    n = len(outcomes)
    matrix: list[list[float | None]] = [[None] * n for _ in range(n)]
    kappas: list[list[float | None]] = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            a = {r["idx"]: r["verdict"] for r in outcomes[i].rows}
            b = {r["idx"]: r["verdict"] for r in outcomes[j].rows}
            common = sorted(set(a) & set(b))
            ag = agreement([a[x] for x in common], [b[x] for x in common])
            matrix[i][j], kappas[i][j] = ag["agreement"], ag["kappa"]
    meta0 = ref.config.get("compare") or {}
    idxs = [r["idx"] for r in ref.rows]
    per = [{r["idx"]: r for r in out.rows} for out in outcomes]
    items = {
        "idx": idxs,
        "verdicts": [[p[i]["verdict"] if i in p else None for i in idxs] for p in per],
        "scores": [[item_score(p[i]) if i in p else None for i in idxs] for p in per],
    }
    return {
        "name": meta0.get("name"),
        "dataset": ref.config.get("dataset"),
        "policy": ref.run.get("policy"),
        "n_items": ref.run.get("n_items"),
        "reference": labels[0],
        "has_gold": any(g is not None for g in ref.gold),
        "configs": configs,
        "pairwise": {"labels": list(labels), "agreement": matrix, "kappa": kappas},
        "items": items,
        "ci": {"method": CI_METHOD, "level": level, "resamples": n_resamples, "seed": seed},
    }


def load_comparison(
    store: Store, run_names: Sequence[str], labels: Sequence[str] | None = None, **kw: Any
) -> dict[str, Any]:
    """`compare_outcomes` over stored runs (labels default to the ones recorded at run time)."""
    from edge_guard.runs.outcomes import run_outcomes

    outs = [run_outcomes(store, n) for n in run_names]
    if labels is None:
        labels = [(o.config.get("compare") or {}).get("label") or o.run["name"] for o in outs]
    return compare_outcomes(outs, labels, **kw)
