"""Gold labels and row sampling: raw dataset labels (0/1, true/false, "toxic"/"safe", or a
policy label) mapped to a policy's labels, and the rows a run picks (first, natural, balanced)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_guard.errors import EdgeGuardError
from edge_guard.policy.core import OutputSpec

if TYPE_CHECKING:
    from edge_guard.datasets.files import Row

TRUE_WORDS = {
    "1",
    "true",
    "yes",
    "y",
    "toxic",
    "violation",
    "violating",
    "unsafe",
    "harmful",
    "positive",
    "flagged",
    "bad",
    "abusive",
    "offensive",
}
FALSE_WORDS = {
    "0",
    "false",
    "no",
    "n",
    "non-toxic",
    "nontoxic",
    "not toxic",
    "not_toxic",
    "safe",
    "benign",
    "negative",
    "no_violation",
    "clean",
    "ok",
    "neutral",
}


# -- gold labels -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Gold:
    """A mapped gold label: the policy label (None if only the side is known) and its side."""

    label: str | None
    violation: bool


class GoldMapper:
    """Maps raw dataset labels (0/1, true/false, toxic/safe, a policy label) to the policy's."""

    def __init__(self, output: OutputSpec) -> None:
        self.output = output
        labels = list(output.labels)
        self.by_name = {lab.casefold(): lab for lab in labels}
        viol = [lab for lab in labels if lab in output.violation]
        safe = [lab for lab in labels if lab not in output.violation]
        self.violation_label = viol[0] if len(viol) == 1 else None
        self.safe_label = safe[0] if len(safe) == 1 else None

    def map(self, raw: Any) -> Gold | None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, bool):
            key = "1" if raw else "0"
        elif isinstance(raw, float) and raw.is_integer():
            key = str(int(raw))
        else:
            key = str(raw).strip().casefold()
        if self.by_name and key in self.by_name and self.output.violation:
            label = self.by_name[key]
            return Gold(label, label in self.output.violation)
        if key in TRUE_WORDS:
            return Gold(self.violation_label, True)
        if key in FALSE_WORDS:
            return Gold(self.safe_label, False)
        return None


def map_golds(rows: Sequence[Row], output: OutputSpec) -> tuple[list[Gold | None], dict[str, int]]:
    """Gold per row (None when unlabelled or unmappable) and the unmappable values' counts."""
    return map_gold_values([r.label for r in rows], output)


def map_gold_values(
    values: Sequence[Any], output: OutputSpec
) -> tuple[list[Gold | None], dict[str, int]]:
    """`map_golds` over raw label values (one gold column of a multi-policy dataset)."""
    mapper = GoldMapper(output)
    golds: list[Gold | None] = []
    unmapped: dict[str, int] = {}
    for raw in values:
        g = mapper.map(raw)
        if g is None and raw is not None and str(raw).strip():
            unmapped[str(raw)] = unmapped.get(str(raw), 0) + 1
        golds.append(g)
    return golds, unmapped


# -- sampling --------------------------------------------------------------------------------
def select_rows(
    golds: Sequence[Gold | None],
    *,
    limit: int | None = None,
    sample: str | None = None,
    seed: int = 0,
) -> tuple[list[int], str | None]:
    """Indices of the rows to run (in file order) and a note when a request was reduced.

    No `sample`: the first `limit`. `natural`: a seeded random `limit` rows. `balanced`:
    equal numbers per gold class (seeded), `limit` in total (default: all of the rarest).
    """
    n = len(golds)
    if limit is not None and limit < 1:
        raise EdgeGuardError(f"--limit must be >= 1, got {limit}")
    if sample is None:
        return list(range(n if limit is None else min(limit, n))), None
    rng = random.Random(seed)
    if sample == "natural":
        if limit is None or limit >= n:
            return list(range(n)), None
        return sorted(rng.sample(range(n), limit)), None
    if sample != "balanced":
        raise EdgeGuardError(f"unknown --sample {sample!r}: use natural or balanced")
    classes: dict[bool, list[int]] = {}
    for i, g in enumerate(golds):
        if g is not None:
            classes.setdefault(g.violation, []).append(i)
    if len(classes) < 2:
        raise EdgeGuardError("--sample balanced needs gold labels of both classes in the dataset")
    smallest = min(len(v) for v in classes.values())
    per = smallest if limit is None else limit // len(classes)
    if per < 1:
        raise EdgeGuardError(f"--limit {limit} is too small for a balanced sample of 2 classes")
    note = None
    if per > smallest:
        note = f"balanced sample reduced to {smallest} per class (the rarest class has {smallest})"
        per = smallest
    picked = [i for cls in sorted(classes) for i in rng.sample(classes[cls], per)]
    return sorted(picked), note
