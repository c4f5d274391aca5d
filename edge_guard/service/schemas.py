"""Request and response bodies of the HTTP API (pydantic), and result -> JSON conversion.

`/v1/moderations` follows the OpenAI Moderation shape. Undetermined rule (also in the
README): a policy that could not decide has `categories[policy] = null`, its
`category_scores[policy]` is P(violation) when it was measured (else null), and it is
listed in `undetermined`; `flagged` is `edge_guard.result.flagged` (the one rule) with its
undetermined (None) mapped to true in `openai_flagged` (fail closed), so code reading only
`flagged` never takes "undecided" for "fine". A moderation body that carries an
edge-guard field it cannot take (a request option, a conversation, a /v1/classify field)
is refused (`refuse_classify_fields`); other unknown fields are ignored, as OpenAI does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_guard import result as _result
from edge_guard.conversation import Conversation, ConversationError
from edge_guard.result import ClassificationResult, Verdict, headline_score
from edge_guard.settings.resolve import request_options


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModerationRequest(BaseModel):
    """OpenAI's body. Extra fields are kept so that `refuse_classify_fields` can refuse the
    edge-guard ones; any other unknown field is ignored, as OpenAI does."""

    model_config = ConfigDict(extra="allow")
    input: str | list[str] | list[dict[str, Any]]  # content parts: service/openai_shape.py
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


# Values a flag's error may quote after the flag ("--reasoning none" -> "reasoning": "none").
_VALUES = r"full|none-empty-analysis|none|low|medium|high|harmony|chat-template"
_FLAG = re.compile(rf"--(?P<flag>[a-z][a-z-]*)(?: (?P<value>{_VALUES})\b)?")
_FIELD_NAMES = (
    "style",
    "effort",
    "date",
    "reasoning",
    "cascade",
    "truncate",
    "parallel",
    "temperature",
    "seed",
    "max-tokens",
    "messages",
    "target",
    "policy",
    "no-cache",
)
_FLAG_FIELDS = {name: name.replace("-", "_") for name in _FIELD_NAMES}

# Numbers a request may carry: finite, in range, integers strict (no "5", no 5.0, no true).
SEED_MAX = 2**63 - 1
TOP_K_MAX = 1 << 20
Reasoning = Literal["full", "none", "none-empty-analysis"]


class ClassifyRequest(_Strict):
    """The native call: the input (`text`, `texts`, or a conversation as `messages` with
    `target`), the policy (`policy`, a name, or `policy_text`), and per-request settings.

    Every setting left out takes the server's value (its flags, environment and
    config.toml): style, effort, date, reasoning, cascade, truncate, parallel,
    temperature, seed, max_tokens. `date` and `cascade` given as null turn them off.
    """

    texts: list[str] | None = None
    text: str | None = None
    messages: list[Any] | None = Field(
        None, description='A conversation: a list of {"role", "content"} messages.'
    )
    target: Literal["last", "user", "assistant", "all"] | None = Field(
        None, description="Which message of `messages` is judged (default last)."
    )
    policy: str | None = Field(None, description="A policy or policy-set name.")
    policy_text: str | None = Field(
        None, description="Inline policy text (only with --allow-inline-policies)."
    )
    policy_output: dict[str, Any] | None = Field(
        None, description="Inline policy's [output] table: kind, labels, violation."
    )
    style: Literal["harmony", "chat-template"] | None = None
    effort: Literal["low", "medium", "high"] | None = None
    date: str | None = Field(None, description="Date line YYYY-MM-DD (null: none).")
    reasoning: Reasoning | None = Field(
        None, description="Reasoning path: full, none (one pass), none-empty-analysis."
    )
    cascade: str | list[float] | None = Field(
        None, description='One pass, then full reasoning for P(violation) in "LOW:HIGH".'
    )
    truncate: bool | None = Field(None, strict=True)
    parallel: int | None = Field(None, ge=1, strict=True)
    temperature: float | None = Field(None, ge=0.0, le=5.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int = Field(0, ge=0, le=TOP_K_MAX, strict=True)
    seed: int | None = Field(None, ge=0, le=SEED_MAX, strict=True)
    max_tokens: int | None = Field(None, ge=1, strict=True)
    include_reasoning: bool = Field(
        False, strict=True, description="Include the model's reasoning text in results."
    )
    no_cache: bool = Field(
        False, strict=True, description="Recompute even when the store has the label."
    )
    stream: bool = Field(
        False, strict=True, description="Server-sent events: reasoning deltas, results."
    )

    @field_validator("reasoning", mode="before")
    @classmethod
    def _mode_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(
                "a reasoning mode (full, none, none-empty-analysis); the "
                "reasoning text is asked for with include_reasoning"
            )
        return value

    def inputs(self) -> list[str | Conversation]:
        """The texts, or the one conversation (validated as `--messages` is)."""
        given = [n for n in ("text", "texts", "messages") if getattr(self, n) is not None]
        if len(given) > 1:
            raise FieldError(
                given[1], f"give one of text, texts or messages, not {' and '.join(given)}"
            )
        if not given:
            raise FieldError("texts", "give text, texts or messages")
        if self.target is not None and self.messages is None:
            raise FieldError("target", "needs messages")
        if self.messages is not None:
            try:
                return [Conversation.from_json(self.messages, self.target, where="messages")]
            except ConversationError as exc:
                raise FieldError("messages", str(exc).removeprefix("messages: ")) from None
        return list(self.texts) if self.texts is not None else [self.text or ""]


# Fields /v1/moderations refuses (400 pointing to /v1/classify) instead of ignoring them:
# every request option and every /v1/classify field that OpenAI's body does not have.
MODERATION_REFUSED = tuple(
    dict.fromkeys(
        [
            *request_options(),
            *(n for n in ClassifyRequest.model_fields if n not in ModerationRequest.model_fields),
        ]
    )
)
_MODERATION_WHY = {
    "messages": "/v1/moderations judges the text in 'input'; send a conversation to "
    "/v1/classify as 'messages' with 'target'",
    "text": "/v1/moderations takes its texts as 'input' ('text'/'texts' are /v1/classify's)",
    "policy": "/v1/moderations names its policy or set as 'model' (inline policies and "
    "'policy' are /v1/classify's)",
}
_MODERATION_WHY.update(
    target=_MODERATION_WHY["messages"],
    texts=_MODERATION_WHY["text"],
    policy_text=_MODERATION_WHY["policy"],
    policy_output=_MODERATION_WHY["policy"],
)
_OPTION_WHY = (
    "/v1/moderations uses the server's settings (its flags); send per-request "
    "options to /v1/classify"
)


def refuse_classify_fields(body: ModerationRequest) -> None:
    """A FieldError (400, `param` = the first such field) when a moderation body carries
    an edge-guard field /v1/moderations cannot take: never silently dropped."""
    refused = [name for name in (body.model_extra or {}) if name in MODERATION_REFUSED]
    if not refused:
        return
    why = _MODERATION_WHY.get(refused[0], _OPTION_WHY)
    more = f" (also not taken here: {', '.join(refused[1:])})" if refused[1:] else ""
    raise FieldError(refused[0], why + more)


class FieldError(ValueError):
    """A request field that is not valid: HTTP 400 naming it (`param`)."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"field {field!r}: {why}")
        self.field = field


def field_terms(message: str) -> tuple[str, str | None]:
    """An error written in flags ("--reasoning none ... use --reasoning full") in request
    fields ('"reasoning": "none" ... use "reasoning": "full"'), and the first field named."""
    first: list[str] = []

    def repl(m: re.Match[str]) -> str:
        field = _FLAG_FIELDS.get(m["flag"])
        if field is None:
            return m[0]
        first.append(field)
        return f'"{field}": "{m["value"]}"' if m["value"] else f"field {field!r}"

    return _FLAG.sub(repl, message), (first[0] if first else None)


def result_json(res: ClassificationResult, *, include_reasoning: bool) -> dict[str, Any]:
    """The full native result: verdict, labels, scores, answer, finish, cache, timings, key."""
    d = res.to_dict()
    if d.get("error"):
        d["error"] = field_terms(str(d["error"]))[0]
    if not include_reasoning:
        d.pop("reasoning", None)
    score = headline_score(res.metadata or {}, res.float_label)
    d["score"] = None if score is None else {"kind": score[0], "value": score[1]}
    d["p_violation"] = (res.metadata or {}).get("p_violation")
    d["label_probs"] = (res.metadata or {}).get("label_probs")
    return d


def moderation_result(policies: list[str], results: list[ClassificationResult]) -> ModerationResult:
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
    return ModerationResult(
        flagged=openai_flagged(res.verdict for res in results),
        categories=categories,
        category_scores=scores,
        category_applied_input_types={n: ["text"] for n in policies},
        undetermined=undetermined,
        verdicts=verdicts,
        cached=cached,
    )


# The one place an undetermined `flagged` (None) becomes the bool OpenAI's shape needs:
# flagged, fail closed (README, "Use it from other programs": how undetermined is reported).
UNDETERMINED_FLAGGED = True


def openai_flagged(verdicts: Iterable[Verdict | str | None]) -> bool:
    """`edge_guard.result.flagged` (the one rule) as OpenAI's bool: None -> flagged."""
    flag = _result.flagged(verdicts)
    return UNDETERMINED_FLAGGED if flag is None else flag


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error shape, so its client raises the matching exception."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
