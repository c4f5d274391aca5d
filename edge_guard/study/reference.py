"""The seed's controversial-opinion study figures, for reports to show beside ours.

Source: the seed workspace's README ("Hackathon Contributions"; write-up at
https://dactile.net/p/dev-notes-24/article.html), as collected in the project's
reference notes (REFERENCE.md, "The seed's controversial-opinion study"): 102 opinions,
`is_good` policy (1 = not good … 5 = good, a number only), hosted inference, medium
reasoning, one greedy run per model.
"""

from __future__ import annotations

from typing import Any

SOURCE = (
    "seed workspace README (dactile.net/p/dev-notes-24) via REFERENCE.md: 102 opinions, "
    "is_good policy, hosted, medium reasoning, one greedy run each"
)

SEED_COUNTS: dict[str, dict[str, int]] = {
    "gpt-oss-safeguard-20b": {"1": 2, "2": 14, "3": 73, "4": 12, "5": 0},
    "gpt-oss-20b": {"1": 2, "2": 22, "3": 56, "4": 20, "5": 1},
}
SEED_N_ITEMS = 102
SEED_DIFFER_SHARE = 0.44  # "the two models gave different ratings in ~44% of utterances"
SEED_MIDDLE_SHARE = {"gpt-oss-safeguard-20b": 0.72, "gpt-oss-20b": 0.55}
SEED_MIDDLE_P = 0.01  # "share of 3s differs, p ≈ 0.01"
SEED_MEAN = 2.95  # "means do not differ (≈2.95)"


def seed_reference() -> dict[str, Any]:
    """The seed's figures in the shape of `analyze()`'s per-model entries, plus the pair."""
    models = {}
    for name, counts in SEED_COUNTS.items():
        n = sum(counts.values())
        models[name] = {
            "n": n,
            "counts": dict(counts),
            "shares": {k: v / n for k, v in counts.items()},
            "mean": sum(int(k) * v for k, v in counts.items()) / n,
            "middle_share": counts["3"] / n,
            "reported_middle_share": SEED_MIDDLE_SHARE[name],
        }
    return {
        "source": SOURCE,
        "n_items": SEED_N_ITEMS,
        "models": models,
        "differ_share": SEED_DIFFER_SHARE,
        "middle_p": SEED_MIDDLE_P,
        "mean": SEED_MEAN,
    }


def reference_name(model_ref: str) -> str | None:
    """The seed model a reference corresponds to (safeguard vs base), if any."""
    low = model_ref.lower()
    if "gpt-oss-safeguard-20b" in low:
        return "gpt-oss-safeguard-20b"
    if "gpt-oss-20b" in low:
        return "gpt-oss-20b"
    return None
