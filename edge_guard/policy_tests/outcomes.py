"""Judging policy test cases: a case's answer in the case's terms, pass / fail /
undetermined per case, the metrics over the cases, and `TestReport` (one run's outcome,
what the CLI prints, the TUI shows and the JUnit export writes). No model, no store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_guard.policy.cases import Case
from edge_guard.policy.core import OutputSpec, Policy
from edge_guard.policy.version_diff import VersionDiff
from edge_guard.policy.versions import (
    FAIL,
    PASS,
    UNDETERMINED,
    PolicyVersion,
    TestRunInfo,
)
from edge_guard.result import ClassificationResult, Verdict

__all__ = ["CaseOutcome", "TestReport", "case_metrics", "got_label", "judge"]


def got_label(result: ClassificationResult, spec: OutputSpec) -> str | None:
    """The answer in the same terms as a case's `expected` (None when undetermined)."""
    if result.verdict == Verdict.UNDETERMINED:
        return None
    if spec.kind == "json":
        return "1" if result.binary_label else "0"
    fine = result.fine_grain_label
    for label in spec.labels:
        if fine is not None and label.casefold() == str(fine).strip().casefold():
            return label
    if spec.kind == "binary" and result.binary_label is not None:  # custom parser labels
        safe = [lab for lab in spec.labels if lab not in spec.violation]
        return spec.violation[0] if result.binary_label else (safe[0] if safe else None)
    return None if fine is None else str(fine)


@dataclass
class CaseOutcome:
    case: Case
    outcome: str  # pass | fail | undetermined
    got: str | None
    result: ClassificationResult | None = None

    @property
    def final(self) -> str | None:
        resp = self.result.model_response if self.result else None
        return resp.response if resp else None

    @property
    def finish_reason(self) -> str | None:
        resp = self.result.model_response if self.result else None
        return resp.finish_reason if resp else None

    @property
    def seconds(self) -> float:
        resp = self.result.model_response if self.result else None
        if resp is None or self.result is None or self.result.cached:
            return 0.0
        return (resp.timings.prompt_ms + resp.timings.output_ms) / 1000

    def why(self) -> str:
        """One line: why this case did not pass ('' when it passed)."""
        if self.outcome == PASS:
            return ""
        if self.outcome == FAIL:
            return f"expected {self.case.expected}, got {self.got}"
        error = self.result.error if self.result else None
        detail = error or (
            f"finish {self.finish_reason}"
            if self.final is None
            else f"unparsable answer {_clip(self.final, 60)!r}"
        )
        return f"undetermined: expected {self.case.expected}, no verdict ({detail})"

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            **self.case.to_dict(),
            "outcome": self.outcome,
            "got": self.got,
            "final": self.final,
            "finish_reason": self.finish_reason,
            "verdict": str(r.verdict) if r else None,
            "cached": bool(r and r.cached),
            "error": r.error if r else None,
            "key": r.key if r else None,
        }


def judge(case: Case, result: ClassificationResult, spec: OutputSpec) -> CaseOutcome:
    got = got_label(result, spec)
    if got is None:
        return CaseOutcome(case, UNDETERMINED, None, result)
    return CaseOutcome(case, PASS if got == case.expected else FAIL, got, result)


def case_metrics(outcomes: Sequence[CaseOutcome], spec: OutputSpec) -> dict[str, Any] | None:
    """Binary/json: precision, recall, F1 over determined cases. Likert: mean abs. error."""
    done = [(o.case.expected, o.got) for o in outcomes if o.got is not None]
    if spec.kind in ("binary", "json"):
        viol = set(spec.violation) if spec.kind == "binary" else {"1"}
        y_true = [int(expected in viol) for expected, _ in done]
        y_pred = [int(got in viol) for _, got in done]
        out: dict[str, Any] = {
            "kind": "binary",
            "determined": len(done),
            "precision": None,
            "recall": None,
            "f1": None,
        }
        if done:
            from sklearn.metrics import precision_recall_fscore_support

            p, r, f, _ = precision_recall_fscore_support(
                y_true, y_pred, average="binary", pos_label=1, zero_division=0
            )
            out.update(precision=float(p), recall=float(r), f1=float(f))
        out["tp"] = sum(t and p for t, p in zip(y_true, y_pred, strict=True))
        out["fp"] = sum(p and not t for t, p in zip(y_true, y_pred, strict=True))
        out["fn"] = sum(t and not p for t, p in zip(y_true, y_pred, strict=True))
        return out
    if spec.kind == "likert":
        errs = [abs(int(got) - int(exp)) for exp, got in done if got.lstrip("-").isdigit()]
        return {
            "kind": "likert",
            "determined": len(done),
            "mae": sum(errs) / len(errs) if errs else None,
            "within_one": sum(e <= 1 for e in errs) / len(errs) if errs else None,
        }
    return None


@dataclass
class TestReport:
    """The outcome of one `run_policy_tests` call (what the CLI prints and the TUI shows)."""

    __test__ = False  # not a pytest class

    policy: Policy
    version: PolicyVersion
    new_version: bool
    run: str
    test_run: TestRunInfo
    model_ref: str
    config: dict[str, Any]
    outcomes: list[CaseOutcome]
    metrics: dict[str, Any] | None
    previous: VersionDiff | None = None
    cases_path: str | None = None
    seconds: float = 0.0  # wall time of the run
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(o.outcome == outcome for o in self.outcomes)

    @property
    def passed(self) -> int:
        return self.count(PASS)

    @property
    def failed(self) -> int:
        return self.count(FAIL)

    @property
    def undetermined(self) -> int:
        return self.count(UNDETERMINED)

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def ok(self) -> bool:
        """True when every case passed (undetermined counts as a failure)."""
        return self.passed == self.total

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def cached(self) -> int:
        return sum(bool(o.result and o.result.cached) for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.name,
            "version": self.version.to_dict(),
            "new_version": self.new_version,
            "run": self.run,
            "test_run_id": self.test_run.id,
            "model": self.model_ref,
            "config": self.config,
            "cases_path": self.cases_path,
            "total": self.total,
            "passed": self.passed,
            "failed": self.failed,
            "undetermined": self.undetermined,
            "pass_rate": self.pass_rate,
            "ok": self.ok,
            "cached": self.cached,
            "seconds": self.seconds,
            "metrics": self.metrics,
            "cases": [o.to_dict() for o in self.outcomes],
            "previous": self.previous.to_dict() if self.previous else None,
        }


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
