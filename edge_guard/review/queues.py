"""Review queues: a source's items in the order they most need a human.

- `disagree`: the verdict contradicts the gold label (confident mistakes first);
- `uncertain`: P(violation) nearest the policy's decision threshold;
- `undetermined`: no verdict (cut off, unparsable, refused, failed);
- `flips`: the verdict differs in a compared run (another policy version, model or config;
  the largest change in P(violation) first);
- `sample`: a seeded random sample (calibration: how good are the verdicts nobody flagged);
- `triage` (default): every item, those in disagree, flips, undetermined first, then the
  rest nearest the threshold first; `all`: every item in run order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.review.items import ReviewItem, ReviewSource

QUEUES = ("triage", "disagree", "uncertain", "undetermined", "flips", "sample", "all")
DEFAULT_SAMPLE = 20


def reasons(item: ReviewItem) -> list[str]:
    """Why an item needs a human: disagree, flip, undetermined (empty when none applies)."""
    out = []
    if item.determined and item.gold is not None and (item.verdict == "violation") != item.gold:
        out.append("disagree")
    if any(p.verdict != item.verdict for p in item.partners):
        out.append("flip")
    if not item.determined:
        out.append("undetermined")
    return out


def distance(item: ReviewItem, threshold: float) -> float | None:
    """|P(violation) - threshold| for a determined, scored item, else None."""
    if not item.determined or item.score is None or item.score != item.score:  # NaN
        return None
    return abs(item.score - threshold)


def _delta(item: ReviewItem) -> float:
    """The largest change in P(violation) to a partner that flipped (-1 when unscored)."""
    deltas = [
        abs(p.score - item.score)
        for p in item.partners
        if p.verdict != item.verdict and p.score is not None and item.score is not None
    ]
    return max(deltas) if deltas else -1.0


@dataclass
class Queue:
    source: ReviewSource
    name: str
    items: list[ReviewItem]  # the whole queue, in order
    limit: int | None = None
    todo: bool = False
    note: str | None = None  # why the queue is empty or short
    why: dict[int, list[str]] = field(default_factory=dict)  # idx -> reasons

    @property
    def reviewed(self) -> int:
        return sum(i.decision is not None for i in self.items)

    @property
    def remaining(self) -> int:
        return len(self.items) - self.reviewed

    @property
    def shown(self) -> list[ReviewItem]:
        """What is listed: not yet reviewed ones only with `todo`, at most `limit`."""
        items = [i for i in self.items if i.decision is None] if self.todo else self.items
        return items if self.limit is None else items[: self.limit]

    def to_dict(self) -> dict[str, Any]:
        s = self.source
        return {
            "run": s.run,
            "ref": s.ref,
            "kind": s.kind,
            "policy": s.policy_name,
            "policy_hash": s.policy_hash,
            "partners": s.partners,
            "queue": self.name,
            "threshold": s.threshold,
            "n_items": len(s.items),
            "n_queue": len(self.items),
            "reviewed": self.reviewed,
            "remaining": self.remaining,
            "note": self.note,
            "items": [{**i.to_dict(), "reasons": self.why.get(i.idx, [])} for i in self.shown],
        }


def build_queue(
    source: ReviewSource,
    name: str = "triage",
    *,
    limit: int | None = None,
    seed: int = 0,
    todo: bool = False,
) -> Queue:
    """The items of queue `name` in review order (see the module docstring)."""
    if name not in QUEUES:
        raise EdgeGuardError(f"unknown review queue {name!r} (choose {', '.join(QUEUES)})")
    if limit is not None and limit < 1:
        raise EdgeGuardError(f"--limit must be >= 1, got {limit}")
    items, t = source.items, source.threshold
    why = {i.idx: reasons(i) for i in items}
    note = None

    def near(i: ReviewItem) -> tuple[float, int]:
        d = distance(i, t)
        return (d if d is not None else 2.0, i.idx)

    if name == "disagree":
        picked = sorted(
            (i for i in items if "disagree" in why[i.idx]),
            key=lambda i: (-(distance(i, t) or -1.0), i.idx),
        )
        if not any(i.gold is not None for i in items):
            note = "no gold labels in this run: nothing can disagree (try uncertain or sample)"
    elif name == "uncertain":
        picked = sorted((i for i in items if distance(i, t) is not None), key=near)
        if not picked:
            note = "no item has a P(violation) score (undetermined or unscored answers)"
    elif name == "undetermined":
        picked = [i for i in items if not i.determined]
    elif name == "flips":
        if not source.partners:
            raise EdgeGuardError(
                f"the flips queue needs a run to compare {source.run!r} with: pass --against RUN "
                "(another policy version or model over the same items), or review a comparison"
            )
        picked = sorted(
            (i for i in items if "flip" in why[i.idx]), key=lambda i: (-_delta(i), i.idx)
        )
    elif name == "sample":
        size = min(limit or DEFAULT_SAMPLE, len(items))
        picked = sorted(random.Random(seed).sample(items, size), key=lambda i: i.idx)
    elif name == "all":
        picked = list(items)
    else:  # triage
        rank = {"disagree": 0, "flip": 1, "undetermined": 2}
        picked = sorted(
            items, key=lambda i: (min((rank[r] for r in why[i.idx]), default=3), near(i))
        )
    return Queue(source, name, picked, limit, todo, note, why)
