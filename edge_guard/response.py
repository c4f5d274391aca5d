"""`ModelResponse`: what one generation returns (ids, parsed channels, finish reason, timings)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edge_guard.harmony.parse import HarmonyMessage, ParsedOutput


@dataclass
class Timings:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from a prefix state, not evaluated again
    prompt_ms: float = 0.0
    output_tokens: int = 0
    output_ms: float = 0.0

    @property
    def prompt_tok_per_s(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / (self.prompt_ms / 1000) if self.prompt_ms > 0 else 0.0

    @property
    def output_tok_per_s(self) -> float:
        return self.output_tokens / (self.output_ms / 1000) if self.output_ms > 0 else 0.0

    @property
    def total_ms(self) -> float:
        return self.prompt_ms + self.output_ms


@dataclass
class ModelResponse:
    """One completion. `response` is the final answer text (the seed's field name).

    `response` is None when there is no complete final-channel message: the output was
    cut off (`finish_reason == "length"`), the model stopped elsewhere, or it errored.
    """

    response: str | None
    reasoning: str
    finish_reason: str
    prompt_token_ids: list[int] = field(default_factory=list)
    output_token_ids: list[int] = field(default_factory=list)
    messages: list[HarmonyMessage] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    # log P(token) over the full vocabulary at the first token of the final answer,
    # for the token ids the caller asked about (label scores).
    final_token_logprobs: dict[int, float] | None = None
    # Score-only requests: the summed log P of each asked continuation after the prompt.
    sequence_logprobs: list[float] | None = None
    # Score-only requests with branches: per branch, log P(token) after it (`score_token_ids`).
    branch_logprobs: list[dict[int, float]] | None = None
    malformed: list[str] = field(default_factory=list)
    error: str | None = None
    model: str = ""
    # Score-then-continue (the cascade in place): the score response that escalated this one.
    scored: ModelResponse | None = None

    @classmethod
    def from_parsed(cls, parsed: ParsedOutput, **kwargs: Any) -> ModelResponse:
        return cls(
            response=parsed.final,
            reasoning=parsed.reasoning,
            finish_reason=parsed.finish_reason or "eos",
            messages=parsed.messages,
            malformed=parsed.malformed,
            **kwargs,
        )

    @classmethod
    def failed(
        cls, error: str, prompt_ids: list[int] | None = None, model: str = ""
    ) -> ModelResponse:
        return cls(
            None, "", "error", prompt_token_ids=list(prompt_ids or []), error=error, model=model
        )

    @property
    def final_text(self) -> str | None:
        return self.response

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.final_token_logprobs is not None:
            d["final_token_logprobs"] = {str(k): v for k, v in self.final_token_logprobs.items()}
        if self.branch_logprobs is not None:
            d["branch_logprobs"] = [{str(k): v for k, v in b.items()} for b in self.branch_logprobs]
        if self.scored is not None:
            d["scored"] = self.scored.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelResponse:
        d = dict(d)
        d["timings"] = Timings(**d.get("timings") or {})
        d["messages"] = [HarmonyMessage(**m) for m in d.get("messages") or []]
        lp = d.get("final_token_logprobs")
        if lp is not None:
            d["final_token_logprobs"] = {int(k): float(v) for k, v in lp.items()}
        if d.get("branch_logprobs") is not None:
            d["branch_logprobs"] = [
                {int(k): float(v) for k, v in b.items()} for b in d["branch_logprobs"]
            ]
        if d.get("scored") is not None:
            d["scored"] = cls.from_dict(d["scored"])
        return cls(**d)
