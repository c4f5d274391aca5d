"""`ClassificationResult`: the seed's result fields plus an explicit three-way verdict.

Undetermined (refusal, empty answer, cut off, unparsable, parser error) is never a
"no violation": `verdict` says so explicitly and every metric reads the verdict.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edge_guard.response import ModelResponse


class Verdict(StrEnum):
    VIOLATION = "violation"
    NO_VIOLATION = "no_violation"
    UNDETERMINED = "undetermined"


@dataclass
class ClassificationResult:
    """Seed-compatible: a seed `parse()` builds one with the first six fields only."""

    binary_label: bool | None
    fine_grain_label: str | None
    float_label: float | None
    metadata: dict[str, Any] = field(default_factory=dict)
    model_response: ModelResponse | None = None
    parsed_successfully: bool = False
    verdict: Verdict | None = None
    # Filled in by classify():
    text: str | None = None
    policy: str | None = None
    cached: bool = False
    key: str | None = None
    error: str | None = None
    # A conversation item: its canonical {"messages", "target"} JSON (`text` = judged message).
    conversation: str | None = None

    def __post_init__(self) -> None:
        if self.verdict is None:
            self.verdict = self._derive_verdict()
        else:
            self.verdict = Verdict(self.verdict)

    def _derive_verdict(self) -> Verdict:
        resp = self.model_response
        if resp is not None and (resp.response is None or resp.error):
            return Verdict.UNDETERMINED
        if not self.parsed_successfully or self.binary_label is None:
            return Verdict.UNDETERMINED
        return Verdict.VIOLATION if self.binary_label else Verdict.NO_VIOLATION

    @property
    def undetermined(self) -> bool:
        return self.verdict == Verdict.UNDETERMINED

    @property
    def label(self) -> str | None:
        """The parsed answer (fine-grained label), None when undetermined."""
        return None if self.undetermined and not self.parsed_successfully else self.fine_grain_label

    def to_dict(self) -> dict[str, Any]:
        resp = self.model_response
        t = resp.timings if resp else None
        return {
            "text": self.text,
            "policy": self.policy,
            "verdict": str(self.verdict),
            "binary_label": self.binary_label,
            "fine_grain_label": self.fine_grain_label,
            "float_label": self.float_label,
            "parsed_successfully": self.parsed_successfully,
            "metadata": self.metadata,
            "final": resp.response if resp else None,
            "reasoning": resp.reasoning if resp else None,
            "finish_reason": resp.finish_reason if resp else None,
            "error": self.error or (resp.error if resp else None),
            "cached": self.cached,
            "key": self.key,
            **({"conversation": json.loads(self.conversation)} if self.conversation else {}),
            "timings": {
                "prompt_tokens": t.prompt_tokens,
                "cached_tokens": t.cached_tokens,
                "prompt_ms": round(t.prompt_ms, 3),
                "output_tokens": t.output_tokens,
                "output_ms": round(t.output_ms, 3),
            }
            if t
            else None,
        }


def headline_score(metadata: dict[str, Any], float_label: float | None) -> tuple[str, float] | None:
    """The one score to show for a result: ("expected_rating" | "p_violation" | "score", value).

    Label scores come first (the expected rating of a Likert policy, else P(violation)); a
    result without them falls back to its `float_label`; None when there is nothing.
    """
    for kind in ("expected_rating", "p_violation"):
        if metadata.get(kind) is not None:
            return kind, float(metadata[kind])
    return None if float_label is None else ("score", float(float_label))


def flagged(verdicts: Iterable[Verdict | str | None]) -> bool | None:
    """THE `flagged` of several verdicts (a set, a text under several policies): True if
    any is violation; None if none is but one is undetermined or missing (or there are
    none, never "not flagged"); False otherwise."""
    vs = [Verdict.UNDETERMINED.value if v is None else str(v) for v in verdicts]
    if Verdict.VIOLATION.value in vs:
        return True
    if Verdict.UNDETERMINED.value in vs or not vs:
        return None
    return False


@dataclass
class MultiResult:
    """One text under several policies: a result per policy (policy order) and `flagged`."""

    text: str | None
    results: dict[str, ClassificationResult]

    @property
    def flagged(self) -> bool | None:
        """True if any policy is violated; None if none is but some are undetermined."""
        return flagged(r.verdict for r in self.results.values())

    @property
    def violations(self) -> list[str]:
        return [name for name, r in self.results.items() if r.verdict == Verdict.VIOLATION]

    @property
    def undetermined(self) -> list[str]:
        return [name for name, r in self.results.items() if r.undetermined]

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "flagged": self.flagged,
            "violations": self.violations,
            "undetermined": self.undetermined,
            "results": {name: r.to_dict() for name, r in self.results.items()},
        }
