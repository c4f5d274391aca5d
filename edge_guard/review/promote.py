"""Cases from decisions: reviewed items of a run appended to a policy's `cases.jsonl`.

Each decided item (violation / no_violation; skips are left out) becomes a golden case whose
`expected` is the policy's own label for that side, with the decision's note and tags (plus
the tag `review`) and a `provenance` object (run, item, decision, reviewer, when, policy
version, model verdict). A conversation stays a conversation (`messages` + `target`).
Items whose text (or conversation) is already a case, or appears twice, are left out;
existing cases are never rewritten (`policy.cases.append_cases`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.policy.cases import Case, CasesError, append_cases, load_cases, make_case
from edge_guard.policy.core import OutputSpec, Policy
from edge_guard.review.items import ReviewItem, ReviewSource

REVIEW_TAG = "review"


@dataclass
class Promotion:
    """What `cases_from_review` did: the cases appended and why others were left out."""

    path: Path
    added: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)  # item indices already cases
    conflicts: list[tuple[int, str, str]] = field(default_factory=list)  # (item, case, decision)
    skipped: list[int] = field(default_factory=list)  # decided "skip"
    unreviewed: list[int] = field(default_factory=list)  # asked for, but not reviewed
    unmappable: list[tuple[int, str]] = field(default_factory=list)  # (item, why)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "added": self.added,
            "n_added": len(self.added),
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "conflicts": [
                {"item": i, "case_expected": c, "decision_expected": d}
                for i, c, d in self.conflicts
            ],
            "unreviewed": self.unreviewed,
            "unmappable": [{"item": i, "why": w} for i, w in self.unmappable],
        }


def expected_for(label: str, spec: OutputSpec) -> str:
    """The policy's answer for a reviewer's side (violation / no_violation), or CasesError
    when the policy has several labels on that side (a Likert scale, several categories)."""
    violation = label == "violation"
    if spec.kind == "json":
        return "1" if violation else "0"
    side = [lab for lab in spec.labels if (lab in spec.violation) == violation]
    if len(side) != 1:
        names = ", ".join(side) or "none"
        raise CasesError(
            f"policy has {len(side)} {label} labels ({names}): a review decision "
            "does not say which one; add this case by hand"
        )
    return side[0]


def case_object(item: ReviewItem, spec: OutputSpec) -> dict[str, Any]:
    """The cases.jsonl object for a decided item (expected from the decision)."""
    d = item.decision
    assert d is not None and d.label != "skip"
    tags = list(dict.fromkeys([*d.tags, REVIEW_TAG]))
    obj: dict[str, Any] = {}
    if item.conversation:
        conv = json.loads(item.conversation)
        obj["messages"], obj["target"] = conv["messages"], conv.get("target") or "last"
    else:
        obj["text"] = item.text
    obj.update(
        {
            "expected": expected_for(d.label, spec),
            "note": d.note,
            "tags": tags,
            "provenance": {
                "source": "review",
                "run": item.run,
                "item": item.idx,
                "item_id": item.item_id,
                "decision_id": d.id,
                "decision": d.label,
                "reviewer": d.reviewer,
                "decided_at": d.created_at,
                "note": d.note,
                "tags": list(d.tags),
                "policy_hash": d.policy_hash,
                "result_key": d.result_key,
                "model_verdict": d.model_verdict,
            },
        }
    )
    return obj


def _dedup_key(case: Case) -> str:
    return f"conv:{case.conversation.canonical()}" if case.conversation else f"text:{case.text}"


def cases_target(policy: Policy) -> Path:
    """The cases.jsonl reviewed items are appended to (a policy folder's own)."""
    if policy.path is None or not Path(policy.path).is_dir():
        raise EdgeGuardError(
            f"policy {policy.name} is not a policy folder (policy.md + "
            "cases.jsonl): cases can only be added to a folder policy"
        )
    folder = Path(policy.path)
    if (folder / "cases.csv").is_file() and not (folder / "cases.jsonl").is_file():
        raise EdgeGuardError(
            f"policy {policy.name} keeps its cases in {folder / 'cases.csv'}: "
            "cases from review are appended to cases.jsonl only"
        )
    return folder / "cases.jsonl"


def cases_from_review(
    source: ReviewSource, policy: Policy, *, items: Sequence[int | str] | None = None
) -> Promotion:
    """Append `source`'s decided items (all, or the ones named) to `policy`'s cases.jsonl."""
    if source.policy_name != policy.name:
        raise EdgeGuardError(
            f"run {source.run!r} was classified under policy "
            f"{source.policy_name!r}, not {policy.name!r}"
        )
    path = cases_target(policy)
    chosen = [source.item(i) for i in items] if items else list(source.items)
    existing = load_cases(path, policy.output) if path.is_file() and path.stat().st_size else []
    seen = {_dedup_key(c): c.expected for c in existing}
    out = Promotion(path)
    for item in {i.idx: i for i in chosen}.values():  # an item named twice counts once
        d = item.decision
        if d is None:
            if items:
                out.unreviewed.append(item.idx)
            continue
        if d.label == "skip":
            out.skipped.append(item.idx)
            continue
        try:
            obj = case_object(item, policy.output)
        except CasesError as exc:
            out.unmappable.append((item.idx, str(exc)))
            continue
        key = _dedup_key(make_case(obj, policy.output, f"item {item.idx}"))
        if key in seen:
            out.duplicates.append(item.idx)
            if seen[key] != obj["expected"]:  # the case says otherwise: left as it is
                out.conflicts.append((item.idx, seen[key], obj["expected"]))
            continue
        seen[key] = obj["expected"]
        out.added.append(obj)
    append_cases(path, out.added, policy.output)
    return out
