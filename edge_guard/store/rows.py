"""Conversion between classification results and `results` table rows (JSON columns included)."""

from __future__ import annotations

import json
from typing import Any

from edge_guard.harmony.parse import HarmonyMessage
from edge_guard.response import ModelResponse, Timings
from edge_guard.result import ClassificationResult, Verdict

# An item that never ran keeps this much of its text (a 50 MB text rejected as too long
# must not store 50 MB, nor its prompt ids).
UNRUN_TEXT_CHARS = 4096


def never_ran(response: ModelResponse) -> bool:
    """An error before the model produced anything (too long, rejected, server refused)."""
    return (
        bool(response.error)
        and response.response is None
        and not response.reasoning
        and not response.output_token_ids
    )


def storable_text(text: str, response: ModelResponse) -> str:
    """The text to store: an item that never ran keeps its first UNRUN_TEXT_CHARS only."""
    if len(text) <= UNRUN_TEXT_CHARS or not never_ran(response):
        return text
    return (
        text[:UNRUN_TEXT_CHARS] + f"… [{len(text) - UNRUN_TEXT_CHARS} more characters not stored]"
    )


def response_fields(response: ModelResponse) -> dict[str, Any]:
    """The model-output columns of a row."""
    t = response.timings
    logprobs = {str(k): v for k, v in (response.final_token_logprobs or {}).items()}
    return {
        # an item that never ran: nothing heavy (the ids follow from text + key anyway)
        "prompt_token_ids": [] if never_ran(response) else response.prompt_token_ids,
        "output_token_ids": response.output_token_ids,
        "reasoning": response.reasoning,
        "final": response.response,
        "messages": [m.__dict__ for m in response.messages],
        "malformed": response.malformed,
        "final_token_logprobs": logprobs or None,
        "finish_reason": response.finish_reason,
        "prompt_tokens": t.prompt_tokens,
        "cached_tokens": t.cached_tokens,
        "prompt_ms": t.prompt_ms,
        "output_tokens": t.output_tokens,
        "output_ms": t.output_ms,
    }


def parse_fields(result: ClassificationResult) -> dict[str, Any]:
    """The parse columns of a row (what a parser edit rewrites)."""
    return {
        "verdict": str(result.verdict),
        "binary_label": None if result.binary_label is None else int(bool(result.binary_label)),
        "fine_grain_label": result.fine_grain_label,
        "float_label": result.float_label,
        "parsed": int(bool(result.parsed_successfully)),
        "label_probs": result.metadata.get("label_probs"),
        "metadata": jsonable(result.metadata),
    }


def jsonable(obj: Any) -> Any:
    """`obj` if JSON can hold it, else a copy with unserialisable values as their repr."""
    try:
        json.dumps(obj)
        return obj
    except (TypeError, ValueError):
        return json.loads(json.dumps(obj, default=repr))


def row_to_response(row: dict[str, Any]) -> ModelResponse:
    lp = json.loads(row["final_token_logprobs"]) if row.get("final_token_logprobs") else None
    return ModelResponse(
        response=row["final"],
        reasoning=row["reasoning"] or "",
        finish_reason=row["finish_reason"] or "eos",
        prompt_token_ids=json.loads(row["prompt_token_ids"] or "[]"),
        output_token_ids=json.loads(row["output_token_ids"] or "[]"),
        messages=[HarmonyMessage(**m) for m in json.loads(row["messages"] or "[]")],
        timings=Timings(
            row["prompt_tokens"] or 0,
            row["cached_tokens"] or 0,
            row["prompt_ms"] or 0.0,
            row["output_tokens"] or 0,
            row["output_ms"] or 0.0,
        ),
        final_token_logprobs={int(k): v for k, v in lp.items()} if lp else None,
        malformed=json.loads(row.get("malformed") or "[]"),
        error=row.get("error"),
        model=row.get("model_ref") or "",
    )


def row_to_result(row: dict[str, Any]) -> ClassificationResult:
    """The stored parse of a row, as a result (cached=True)."""
    bl = row["binary_label"]
    result = ClassificationResult(
        None if bl is None else bool(bl),
        row["fine_grain_label"],
        row["float_label"],
        json.loads(row["metadata"] or "{}"),
        row_to_response(row),
        bool(row["parsed"]),
        Verdict(row["verdict"]),
    )
    result.text, result.key, result.cached = row["text"], row["key"], True
    result.conversation = row.get("conversation")
    result.error = row.get("error")
    return result
