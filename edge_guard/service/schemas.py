"""Request and response bodies of the HTTP API (pydantic), and result -> JSON conversion.

`/v1/moderations` follows the OpenAI Moderation shape. Undetermined rule (also in the
README): a policy that could not decide has `categories[policy] = null`, its
`category_scores[policy]` is P(violation) when it was measured (else null), and it is
listed in `undetermined`; `flagged` is true when any policy found a violation OR could not
decide (fail closed), so code reading only `flagged` never takes "undecided" for "fine".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_guard.result import ClassificationResult, Verdict, headline_score


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModerationRequest(BaseModel):
    """OpenAI's body; unknown extra fields are ignored as OpenAI does."""

    input: str | list[str]
    model: str | None = None


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool | None]
    category_scores: dict[str, float | None]
    category_applied_input_types: dict[str, list[str]]
    undetermined: list[str]
    verdicts: dict[str, str]
    cached: dict[str, bool]


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


class ClassifyRequest(_Strict):
    """The native call. Give `text` or `texts`, and `policy` (a name) or `policy_text`."""

    texts: list[str] | None = None
    text: str | None = None
    policy: str | None = Field(None, description="A policy or policy-set name.")
    policy_text: str | None = Field(
        None, description="Inline policy text (only with --allow-inline-policies)."
    )
    policy_output: dict[str, Any] | None = Field(
        None, description="Inline policy's [output] table: kind, labels, violation."
    )
    effort: Literal["low", "medium", "high"] = "medium"
    style: Literal["harmony", "chat-template"] = "harmony"
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    seed: int = 0
    max_tokens: int | None = Field(None, ge=1)
    reasoning: bool = Field(False, description="Include the model's reasoning in results.")
    no_cache: bool = Field(False, description="Recompute even when the store has the label.")
    stream: bool = Field(False, description="Server-sent events: reasoning deltas, results.")

    def all_texts(self) -> list[str]:
        if self.texts is not None and self.text is not None:
            raise ValueError("give either text or texts, not both")
        if self.texts is None and self.text is None:
            raise ValueError("give text or texts")
        return list(self.texts) if self.texts is not None else [self.text or ""]


def result_json(res: ClassificationResult, *, reasoning: bool) -> dict[str, Any]:
    """The full native result: verdict, labels, scores, answer, finish, cache, timings, key."""
    d = res.to_dict()
    if not reasoning:
        d.pop("reasoning", None)
    score = headline_score(res.metadata or {}, res.float_label)
    d["score"] = None if score is None else {"kind": score[0], "value": score[1]}
    d["p_violation"] = (res.metadata or {}).get("p_violation")
    d["label_probs"] = (res.metadata or {}).get("label_probs")
    return d


def moderation_result(policies: list[str],
                      results: list[ClassificationResult]) -> ModerationResult:  # fmt: skip
    """One input's results under each policy -> the OpenAI result (undetermined: see module)."""
    categories: dict[str, bool | None] = {}
    scores: dict[str, float | None] = {}
    undetermined: list[str] = []
    verdicts: dict[str, str] = {}
    cached: dict[str, bool] = {}
    for name, res in zip(policies, results, strict=True):
        verdicts[name] = str(res.verdict)
        cached[name] = res.cached
        p = (res.metadata or {}).get("p_violation")
        scores[name] = None if p is None else float(p)
        if res.verdict == Verdict.UNDETERMINED:
            categories[name] = None
            undetermined.append(name)
        else:
            categories[name] = res.verdict == Verdict.VIOLATION
    flagged = any(v is True for v in categories.values()) or bool(undetermined)
    return ModerationResult(
        flagged=flagged,
        categories=categories,
        category_scores=scores,
        category_applied_input_types={n: ["text"] for n in policies},
        undetermined=undetermined,
        verdicts=verdicts,
        cached=cached,
    )


def error_body(message: str, type_: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:  # fmt: skip
    """OpenAI's error shape, so its client raises the matching exception."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
