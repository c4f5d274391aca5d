"""Two versions of a policy side by side: the text diff, and which golden cases flipped
between a test run of each (fixed / broke / still failing / added / removed), with notes
when the runs are not comparable (no run, other model or settings). The records they are
read from are `policy.versions`.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.policy.versions import (
    PASS,
    PolicyVersion,
    TestRunInfo,
    resolve_version,
    run_outcomes,
    test_runs,
    versions,
)
from edge_guard.store import Store

__all__ = ["CaseFlip", "VersionDiff", "case_flip", "compare_runs", "diff_versions"]


@dataclass
class CaseFlip:
    """One case in both runs (or only one): its outcome before and after."""

    key: str
    case_id: str | None
    text: str
    expected: str
    old_got: str | None = None
    old_outcome: str | None = None
    new_got: str | None = None
    new_outcome: str | None = None

    @property
    def name(self) -> str:
        flat = " ".join(self.text.split())
        return self.case_id or (flat if len(flat) <= 40 else flat[:39] + "…")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name}


@dataclass
class VersionDiff:
    policy_name: str
    old: PolicyVersion
    new: PolicyVersion
    text_diff: list[str]
    old_run: TestRunInfo | None
    new_run: TestRunInfo | None
    fixed: list[CaseFlip] = field(default_factory=list)
    broke: list[CaseFlip] = field(default_factory=list)
    still_failing: list[CaseFlip] = field(default_factory=list)
    still_passing: int = 0
    added: list[CaseFlip] = field(default_factory=list)
    removed: list[CaseFlip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        flips = ("fixed", "broke", "still_failing", "added", "removed")
        return {
            "policy": self.policy_name,
            "old": self.old.to_dict(),
            "new": self.new.to_dict(),
            "text_diff": "".join(self.text_diff),
            "old_run": self.old_run.to_dict() if self.old_run else None,
            "new_run": self.new_run.to_dict() if self.new_run else None,
            **{k: [f.to_dict() for f in getattr(self, k)] for k in flips},
            "still_passing": self.still_passing,
            "notes": self.notes,
        }


def case_flip(key: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> CaseFlip:
    ref = new or old or {}
    return CaseFlip(
        key,
        ref.get("case_id"),
        ref.get("text") or "",
        ref.get("expected") or "",
        old["got"] if old else None,
        old["outcome"] if old else None,
        new["got"] if new else None,
        new["outcome"] if new else None,
    )


def compare_runs(
    store: Store,
    old: PolicyVersion,
    new: PolicyVersion,
    old_run: TestRunInfo | None,
    new_run: TestRunInfo | None,
) -> VersionDiff:
    """Text diff of two versions and which cases flipped between two of their test runs."""
    text_diff = list(
        difflib.unified_diff(
            old.text.splitlines(keepends=True),
            new.text.splitlines(keepends=True),
            fromfile=f"{old.policy_name} {old.label}",
            tofile=f"{new.policy_name} {new.label}",
        )
    )
    diff = VersionDiff(old.policy_name, old, new, text_diff, old_run, new_run)
    if not text_diff and old.hash != new.hash:
        diff.notes.append("policy text unchanged: the parser or the output format changed")
    for v, run in ((old, old_run), (new, new_run)):
        if run is None:
            diff.notes.append(f"{v.label} has no test run to compare")
    if old_run is None or new_run is None:
        return diff
    if old_run.config_hash != new_run.config_hash:
        diff.notes.append(
            f"the two runs used different models or settings ({old_run.model_ref} vs "
            f"{new_run.model_ref}): flips may come from that, not from the policy"
        )
    before, after = run_outcomes(store, old_run.id), run_outcomes(store, new_run.id)
    for key, row in after.items():
        prev = before.get(key)
        if prev is None:
            diff.added.append(case_flip(key, None, row))
            continue
        ok_before, ok_after = prev["outcome"] == PASS, row["outcome"] == PASS
        if ok_before and ok_after:
            diff.still_passing += 1
        else:
            bucket = diff.broke if ok_before else diff.fixed if ok_after else diff.still_failing
            bucket.append(case_flip(key, prev, row))
    diff.removed = [case_flip(k, r, None) for k, r in before.items() if k not in after]
    return diff


def matching_run(runs: list[TestRunInfo], like: TestRunInfo | None) -> TestRunInfo | None:
    """The newest run with the same model/settings as `like`, else the newest run."""
    if like is not None:
        for r in runs:
            if r.config_hash == like.config_hash:
                return r
    return runs[0] if runs else None


def diff_versions(
    store: Store, name: str, v1: str | int | None = None, v2: str | int | None = None
) -> VersionDiff:
    """Compare two versions (default: the one before the latest vs the latest)."""
    new = resolve_version(store, name, v2 if v2 is not None else "latest")
    if v1 is None:
        older = [v for v in versions(store, name) if v.number < new.number]
        if not older:
            raise EdgeGuardError(
                f"policy {name!r} has no version before {new.label}: edit it and test again "
                "to compare"
            )
        old = older[-1]
    else:
        old = resolve_version(store, name, v1)
    new_run = matching_run(test_runs(store, name, new.id), None)
    old_run = matching_run(test_runs(store, name, old.id), new_run)
    return compare_runs(store, old, new, old_run, new_run)
