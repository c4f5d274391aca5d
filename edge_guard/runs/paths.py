"""Which path decided a run's items (one-pass / escalated) and how it agrees with full reasoning.

For a run made with ``--reasoning none|none-empty-analysis`` or ``--cascade LOW:HIGH``:
the items decided by one pass, the items escalated to full reasoning and the share
escalated; and, when the store holds a plain full-reasoning run of the same texts (same
dataset, policy version, model, prompt style, effort and date; items matched by index and
text), the agreement (share and Cohen's kappa) of this run's verdicts with it and the F1,
precision and recall of this run taking the full-reasoning verdicts as the reference
(items undetermined in either run left out and counted).
"""

from __future__ import annotations

import json
from typing import Any

from edge_guard.sanitize import term_line
from edge_guard.store import Store

# Run config keys that must match for two runs to have classified the same texts the same
# way apart from the reasoning path.
SAME = (
    "dataset_sha256",
    "text_field",
    "sample",
    "seed",
    "policy_hash",
    "model_identity",
    "style",
    "effort",
    "date",
)
DECIDED = ("violation", "no_violation")


def _config(run: dict[str, Any]) -> dict[str, Any]:
    cfg = json.loads(run.get("config") or "{}")
    return cfg if isinstance(cfg, dict) else {}


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    meta = json.loads(row.get("metadata") or "{}")
    return meta if isinstance(meta, dict) else {}


def full_partner(store: Store, run: dict[str, Any]) -> dict[str, Any] | None:
    """The latest plain full-reasoning run of the same texts, or None."""
    cfg = _config(run)
    if not cfg.get("dataset_sha256"):
        return None
    for other in store.query(
        "SELECT * FROM runs WHERE name != ? ORDER BY updated_at DESC", [run["name"]]
    ):
        oc = _config(other)
        if "reasoning" in oc or "cascade" in oc:
            continue
        if all(oc.get(k) == cfg.get(k) for k in SAME):
            return other
    return None


def path_summary(store: Store, name: str) -> dict[str, Any] | None:
    """The run's paths and its agreement with full reasoning; None for a plain full run."""
    run = store.run(name)
    if run is None:
        return None
    cfg = _config(run)
    if "reasoning" not in cfg and "cascade" not in cfg:
        return None
    rows = store.run_results(name)
    paths = [_meta(r).get("path") for r in rows]
    n_one, n_esc = paths.count("one-pass"), paths.count("escalated")
    decided = n_one + n_esc
    out: dict[str, Any] = {
        "reasoning": cfg.get("reasoning"),
        "cascade": cfg.get("cascade"),
        "n": len(rows),
        "one_pass": n_one,
        "escalated": n_esc,
        "escalated_share": n_esc / decided if cfg.get("cascade") and decided else None,
        "vs_full": None,
    }
    partner = full_partner(store, run)
    if partner is not None:
        out["vs_full"] = compare_verdicts(rows, store.run_results(partner["name"]))
        out["vs_full"]["run"] = partner["name"]
    return out


def compare_verdicts(rows: list[dict[str, Any]], full: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement and F1 of `rows`' verdicts against `full`'s (same index and same text)."""
    from edge_guard.runs.metrics import agreement, binary_metrics

    ref = {r["idx"]: r for r in full}
    pairs = [
        (r["verdict"], ref[r["idx"]]["verdict"])
        for r in rows
        if r["idx"] in ref and ref[r["idx"]]["text"] == r["text"]
    ]
    both = [(a, b) for a, b in pairs if a in DECIDED and b in DECIDED]
    agree = agreement([a for a, _ in pairs], [b for _, b in pairs])
    y_pred = [int(a == "violation") for a, _ in both]
    y_true = [int(b == "violation") for _, b in both]
    m = binary_metrics(y_true, y_pred) if both else {}
    return {
        "n": len(pairs),
        "n_undetermined": len(pairs) - len(both),
        "agreement": agree["agreement"],
        "kappa": agree["kappa"],
        "f1": _value(m.get("f1")),
        "precision": _value(m.get("precision")),
        "recall": _value(m.get("recall")),
    }


def _value(x: Any) -> float | None:
    if isinstance(x, dict):
        x = x.get("value")
    return None if x is None else float(x)


def format_paths(s: dict[str, Any] | None) -> list[str]:
    """The text lines `edge-guard eval` prints (none for a plain full run)."""
    if not s:
        return []
    how = (
        f"cascade {':'.join(str(b) for b in s['cascade'])}"
        if s["cascade"]
        else f"reasoning {s['reasoning']}"
    )
    line = f"paths ({how}): {s['one_pass']} decided by one pass, {s['escalated']} escalated"
    if s["escalated_share"] is not None:
        line += f" ({100 * s['escalated_share']:.1f}% escalated)"
    lines = ["", line]
    v = s.get("vs_full")
    if v is None:
        lines.append("vs full reasoning: no full-reasoning run of the same texts in this store")
    else:
        f = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
        lines.append(
            f"vs full reasoning (run {term_line(v['run'])}, n={v['n']}, {v['n_undetermined']} "
            f"undetermined left out): agreement {f(v['agreement'])}, kappa "
            f"{f(v['kappa'])}, F1 {f(v['f1'])} (P {f(v['precision'])}, R "
            f"{f(v['recall'])})"
        )
    return lines
