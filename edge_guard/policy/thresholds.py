"""How a set's verdicts are decided and combined: THE threshold rule and its uses.

`violates` is the one rule, P(violation) >= threshold (sets, one-pass decisions, eval).
`apply_threshold` is THE implementation every door calls (classify, runs, the service, the
TUI): a result decided by its member's threshold, consistent in every field, the model's
own answer kept. `threshold_verdict` is the same rule on a stored row's verdict (eval,
compare, reports). `flagged` over a set is True when any member's verdict is violation,
None when none is but some member is undetermined (never reported as "not flagged"),
False otherwise (`edge_guard.result.flagged`, re-exported here); `flag_label` words it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

from edge_guard.policy.core import Policy
from edge_guard.result import ClassificationResult, MultiResult, Verdict
from edge_guard.result import flagged as flagged  # re-exported: the one `flagged`

if TYPE_CHECKING:
    from edge_guard.policy.sets import PolicySet

__all__ = [
    "apply_threshold",
    "flag_label",
    "flagged",
    "side_label",
    "threshold_multi",
    "threshold_verdict",
    "violates",
]


def violates(p_violation: float, threshold: float) -> bool:
    """The one threshold rule (sets, one-pass decisions, eval): P(violation) >= threshold."""
    return float(p_violation) >= threshold


def side_label(
    spec: Any, probs: Mapping[str, float] | None, violating: bool, prefer: str | None = None
) -> str | None:
    """The fine-grained label on the decided side: `prefer` (the model's own label) when it
    lies on that side, else that side's most probable label (None without scores)."""
    side = [lab for lab in spec.labels if (lab in spec.violation) == violating] or list(spec.labels)
    if prefer in side:
        return prefer
    if not probs:
        return None
    return max(side, key=lambda lab: (float(probs.get(lab, 0.0)), -spec.labels.index(lab)))


def threshold_verdict(
    verdict: Verdict | str, metadata: Mapping[str, Any] | None, threshold: float | None
) -> Verdict:
    """A verdict with `threshold` applied to the P(violation) in `metadata` (stored rows:
    eval, compare, reports). Undetermined stays; no threshold or no score: unchanged."""
    v = Verdict(str(verdict))
    p = (metadata or {}).get("p_violation")
    if threshold is None or v == Verdict.UNDETERMINED or not _is_number(p):
        return v
    return Verdict.VIOLATION if violates(p, threshold) else Verdict.NO_VIOLATION


def _is_number(x: object) -> TypeGuard[float]:
    return isinstance(x, int | float) and not isinstance(x, bool)


def apply_threshold(
    result: ClassificationResult, threshold: float | None, policy: Policy | None = None
) -> ClassificationResult:
    """`result` decided by P(violation) >= threshold: a copy consistent in every field —
    `verdict`, `binary_label` and `fine_grain_label` (the model's own label when it lies on
    the decided side, else that side's most probable label; pass the member's `policy` so
    its labels are known) — with the model's own verdict and label kept in
    `metadata["model_verdict"]` / `["model_label"]`. Undetermined stays undetermined;
    without a threshold or a P(violation) score the result is returned unchanged. Applying
    it again (another threshold, or the same) starts from the model's own answer.
    """
    meta = dict(result.metadata or {})
    if threshold is None or result.undetermined or not _is_number(meta.get("p_violation")):
        return result
    if "model_verdict" in meta:  # already thresholded: start from the model's answer
        model_verdict, model_label = meta["model_verdict"], meta.get("model_label")
    else:
        model_verdict, model_label = str(result.verdict), result.fine_grain_label
    violating = violates(meta["p_violation"], threshold)
    out = copy.copy(result)
    out.metadata = {
        **meta,
        "threshold": threshold,
        "model_verdict": model_verdict,
        "model_label": model_label,
    }
    out.verdict = Verdict.VIOLATION if violating else Verdict.NO_VIOLATION
    out.binary_label = violating
    if str(model_verdict) == str(out.verdict):
        out.fine_grain_label = model_label
    elif policy is not None and policy.output.closed:
        out.fine_grain_label = side_label(
            policy.output, meta.get("label_probs"), violating, model_label
        )
    else:  # the policy's labels unknown here: no label rather than one from the other side
        out.fine_grain_label = None
    return out


def threshold_multi(multi: MultiResult, pset: PolicySet) -> MultiResult:
    """A `MultiResult` with each member's threshold applied (`apply_threshold`)."""
    by_name = {m.name: m for m in pset.members}
    results = {}
    for name, res in multi.results.items():
        m = by_name.get(name)
        results[name] = apply_threshold(res, m.threshold, m.policy) if m is not None else res
    return MultiResult(multi.text, results)


def flag_label(flag: bool | None) -> str:
    """`flagged`, `not_flagged` or `undetermined` (the words printed and stored)."""
    return "undetermined" if flag is None else ("flagged" if flag else "not_flagged")
