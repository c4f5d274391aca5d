"""A stored run read back for metrics and reports: one `Outcomes` per run (verdicts, gold
as violation or not, label scores, parse flags, in item order), the label score of a
stored row (`item_score`: an undetermined answer has none), and `evaluate_run` /
`evaluate_outcomes` (metrics with bootstrap CIs plus the run's identity and progress).
Writing runs is `runs.batch`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge_guard.datasets.gold import GoldMapper
from edge_guard.errors import EdgeGuardError
from edge_guard.policy.core import OutputSpec
from edge_guard.store import Store

__all__ = ["Outcomes", "evaluate_outcomes", "evaluate_run", "item_score", "run_outcomes"]


@dataclass
class Outcomes:
    """A stored run as metric inputs (one entry per done item, in item order)."""

    run: dict[str, Any]
    rows: list[dict[str, Any]]
    verdicts: list[str]
    gold: list[bool | None]
    scores: list[float | None]
    parsed: list[bool]

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.run.get("config") or "{}")

    @property
    def notes(self) -> dict[str, Any]:
        return json.loads(self.run.get("notes") or "{}")


def item_score(row: dict[str, Any]) -> float | None:
    """The label score: metadata.p_violation, else float_label (None when neither).

    An undetermined answer has no score (its float_label is not "certainly safe"): None.
    """
    if row.get("verdict") not in ("violation", "no_violation"):
        return None
    meta = json.loads(row.get("metadata") or "{}")
    p = meta.get("p_violation") if isinstance(meta, dict) else None
    if isinstance(p, int | float):
        return float(p)
    return None if row.get("float_label") is None else float(row["float_label"])


def run_outcomes(store: Store, name: str) -> Outcomes:
    run = store.run(name)
    if run is None:
        names = [
            r["name"] for r in store.query("SELECT name FROM runs ORDER BY updated_at DESC LIMIT 5")
        ]
        hint = f" (recent runs: {', '.join(names)})" if names else " (no runs in this store)"
        raise EdgeGuardError(f"no run named {name!r} in {store.path}{hint}")
    rows = store.run_results(name)
    gold: list[bool | None] = []
    fallback = GoldMapper(OutputSpec())  # runs written by other tools: gold "1"/"0"/true/…
    for r in rows:
        extra = json.loads(r.get("extra") or "{}")
        g = extra.get("gold_violation") if isinstance(extra, dict) else None
        if g is None and r.get("gold") is not None:
            mapped = fallback.map(r["gold"])
            g = None if mapped is None else mapped.violation
        gold.append(g)
    return Outcomes(
        run,
        rows,
        [r["verdict"] for r in rows],
        gold,
        [item_score(r) for r in rows],
        [bool(r["parsed"]) for r in rows],
    )


def evaluate_run(
    store: Store, name: str, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """`metrics.evaluate` on a stored run, plus the run's identity, progress and notes."""
    from edge_guard.runs.paths import path_summary

    ev = evaluate_outcomes(
        run_outcomes(store, name), n_resamples=n_resamples, seed=seed, level=level
    )
    ev["paths"] = path_summary(store, name)  # one-pass / cascade runs: paths, vs full reasoning
    return ev


def evaluate_outcomes(
    out: Outcomes, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    from edge_guard.runs.metrics import evaluate

    name = out.run["name"]
    cfg = out.config
    ev = evaluate(
        out.verdicts,
        out.gold,
        out.scores,
        parsed=out.parsed,
        n_resamples=n_resamples,
        seed=seed,
        level=level,
    )
    return {
        "run": name,
        "status": out.run.get("status"),
        "dataset": cfg.get("dataset") or out.run.get("dataset"),
        "policy": out.run.get("policy"),
        "model": out.run.get("model"),
        "style": cfg.get("style"),
        "effort": cfg.get("effort"),
        "n_items": out.run.get("n_items"),
        "n_done": len(out.rows),
        "notes": out.notes,
        **ev,
    }
