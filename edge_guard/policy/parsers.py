"""Answer parsing: strict built-in parsers per output kind, label scores, and safe custom parsers.

Built-in parsers accept the whole final answer only (`"1"`, `" 1\\n"`); "first digit
anywhere" is not a parse. Label scores turn the logits at the first answer token into a
probability per label. Custom `parse()` functions are user code, run in a worker process
that can be stopped (`parser_worker`): exceptions, wrong return types and hangs (time limit)
make that item undetermined with the error recorded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from edge_guard.defaults import PARSER_TIME_LIMIT_S
from edge_guard.harmony.vocab import ContentEncoder
from edge_guard.policy.core import OutputSpec, Policy
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult, Verdict

ANSWER_WHITESPACE = " \t\r\n\x0b\x0c"
_CONFIDENCE_WORDS = {"low": 0.25, "medium": 0.5, "high": 0.9}


def label_token_map(spec: OutputSpec, encoder: ContentEncoder) -> dict[int, str] | None:
    """First-token id -> label; None if two labels share a first token (no scores then).

    The variant with a leading space is added where its first token is unambiguous.
    """
    if not spec.closed:
        return None
    out: dict[int, str] = {}
    for label in spec.labels:
        ids = encoder.encode(label)
        if not ids or ids[0] in out:
            return None
        out[ids[0]] = label
    spaced: dict[int, set[str]] = {}
    for label in spec.labels:
        ids = encoder.encode(" " + label)
        if ids:
            spaced.setdefault(ids[0], set()).add(label)
    for tok, labels in spaced.items():
        if len(labels) == 1 and tok not in out:
            out[tok] = labels.pop()
    return out


def label_scores(
    spec: OutputSpec, token_map: dict[int, str] | None, logprobs: dict[int, float] | None
) -> dict[str, Any] | None:
    """Probabilities of each label at the first answer token, normalised over the labels."""
    if token_map is None or not logprobs:
        return None
    return scores_from_logprobs(
        spec, [(label, logprobs[tok]) for tok, label in token_map.items() if tok in logprobs]
    )


def scores_from_logprobs(
    spec: OutputSpec, pairs: Sequence[tuple[str, float]]
) -> dict[str, Any] | None:
    """THE label scoring (full reasoning's first answer token, one-pass tokens or
    sequences): (label, log-prob) pairs — several per label add up — normalised over the
    labels; None when nothing finite was scored.

    Summed in log space, so labels whose probabilities underflow a float still compare
    (`label_mass` may then be 0.0)."""
    finite = [(label, float(v)) for label, v in pairs if label in spec.labels and not math.isnan(v)]
    top = max((v for _, v in finite), default=-math.inf)
    if not math.isfinite(top):
        return None
    raw = dict.fromkeys(spec.labels, 0.0)
    for label, v in finite:
        raw[label] += math.exp(v - top)  # the largest term is 1: no underflow to all zeros
    total = sum(raw.values())
    return scores_from_probs(spec, {k: v / total for k, v in raw.items()}, total * math.exp(top))


def scores_from_probs(spec: OutputSpec, probs: dict[str, float], mass: float) -> dict[str, Any]:
    """The scores kept in a result's metadata: label probabilities, their mass before
    normalising, P(violation) (policies with violation labels) and a Likert policy's
    expected rating."""
    out: dict[str, Any] = {"label_probs": probs, "label_mass": mass}
    if spec.violation:
        out["p_violation"] = sum(probs[v] for v in spec.violation)
    if spec.kind == "likert":
        out["expected_rating"] = sum(int(k) * p for k, p in probs.items())
    return out


def _result(
    label: str | None,
    spec: OutputSpec,
    response: ModelResponse,
    extra: dict[str, Any] | None = None,
) -> ClassificationResult:
    if label is None:
        return ClassificationResult(None, None, None, dict(extra or {}), response, False)
    violating = label in spec.violation
    value = float(label) if spec.kind == "likert" else (1.0 if violating else 0.0)
    return ClassificationResult(violating, label, value, dict(extra or {}), response, True)


def parse_closed(response: ModelResponse, spec: OutputSpec) -> ClassificationResult:
    """The answer, less surrounding ASCII whitespace, must be one of the labels exactly."""
    text = response.response
    if text is None:
        return _result(None, spec, response)
    answer = text.strip(ANSWER_WHITESPACE)
    if spec.kind in ("binary", "likert"):
        label = answer if answer in spec.labels else None
    else:
        wanted = answer.casefold()
        label = next((lab for lab in spec.labels if lab.casefold() == wanted), None)
    return _result(label, spec, response)


def parse_json(response: ModelResponse, spec: OutputSpec) -> ClassificationResult:
    """`{"violation": 0|1, "policy_category": ..., "confidence": ..., "rationale": ...}`."""
    text = response.response
    bad = ClassificationResult(None, None, None, {}, response, False)
    if text is None:
        return bad
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return bad
    if not isinstance(obj, dict) or "violation" not in obj:
        return bad
    v = obj["violation"]
    if isinstance(v, bool):
        v = int(v)
    if v not in (0, 1) or (isinstance(v, float) and not v.is_integer()):
        return bad
    category = obj.get("policy_category")
    confidence = obj.get("confidence")
    conf_value = (
        _CONFIDENCE_WORDS.get(str(confidence).lower())
        if isinstance(confidence, str)
        else confidence
    )
    meta = {
        "policy_category": category
        if isinstance(category, str) or category is None
        else str(category),
        "confidence": confidence,
        "confidence_value": conf_value if isinstance(conf_value, int | float) else None,
        "rationale": obj.get("rationale"),
    }
    fine = str(category) if v and category else str(int(v))
    return ClassificationResult(bool(v), fine, float(v), meta, response, True)


def builtin_parse(response: ModelResponse, spec: OutputSpec) -> ClassificationResult:
    return parse_json(response, spec) if spec.kind == "json" else parse_closed(response, spec)


class ParserTimeout(BaseException):
    """Kept for parse.py files that name it. Nothing raises it any more: a parser that
    overruns its time limit is stopped with its worker process (`parser_worker`)."""


def run_parser(
    policy: Policy, response: ModelResponse, *, time_limit: float = PARSER_TIME_LIMIT_S
) -> ClassificationResult:
    """Parse with the policy's parser; any failure of user code → undetermined + error."""
    return run_parsers(policy, [response], time_limit=time_limit)[0]


def run_parsers(
    policy: Policy, responses: Sequence[ModelResponse], *, time_limit: float = PARSER_TIME_LIMIT_S
) -> list[ClassificationResult]:
    """`run_parser` for several responses at once (one message to the parser's worker).

    Built-in parsers run here. A custom `parse()` runs in a worker process
    (`parser_worker`): one that raises, returns something other than a
    ClassificationResult, or does not return within `time_limit` seconds (it is then
    stopped) makes that response's result undetermined with the error recorded."""
    if policy.parser is None:
        return [builtin_parse(r, policy.output) for r in responses]
    from edge_guard.policy.parser_worker import parser_ref, run_in_worker

    ref = parser_ref(policy.parser)
    if ref is None:  # a built-in parser, or one with no module file: called here
        outcomes = [_call_here(policy.parser, r) for r in responses]
    else:
        outcomes = run_in_worker(ref, responses, time_limit)
    return [_checked(policy, r, o, time_limit) for r, o in zip(responses, outcomes, strict=True)]


def _call_here(fn: Callable[[Any], Any], response: ModelResponse) -> tuple[str, Any]:
    try:
        result = fn(response)
    except (Exception, SystemExit) as exc:  # sys.exit() in a parser must not end the batch
        return ("raised", f"{type(exc).__name__}: {exc}")
    return ("ok", result)


def _checked(
    policy: Policy, response: ModelResponse, outcome: tuple[str, Any], time_limit: float
) -> ClassificationResult:
    where = f"policy {policy.name}: parse()"
    tag, result = outcome
    if tag == "timeout":
        return _failed(response, f"{where} did not return within {time_limit:g} s")
    if tag == "raised":
        return _failed(response, f"{where} raised {result}")
    if tag == "type":
        return _failed(response, f"{where} returned {result}, not ClassificationResult")
    if tag != "ok":  # its worker died or could not load it; a result that cannot travel
        return _failed(response, f"{where}: {result}")
    if not isinstance(result, ClassificationResult):
        return _failed(
            response, f"{where} returned {type(result).__name__}, not ClassificationResult"
        )
    if result.model_response is None:
        result.model_response = response
    if response.response is None:
        result.verdict = Verdict.UNDETERMINED  # a cut-off answer is never a verdict
    return result


def _failed(response: ModelResponse, error: str) -> ClassificationResult:
    res = ClassificationResult(None, None, None, {"parser_error": error}, response, False)
    res.error = error
    return res


def apply_scores(
    result: ClassificationResult, policy: Policy, scores: dict[str, Any] | None
) -> None:
    """Put label scores into the result: `float_label` for built-in parsers, metadata always."""
    if not scores:
        return
    result.metadata.update(scores)
    if policy.parser is not None:
        return
    if policy.output.kind == "likert":
        result.float_label = scores["expected_rating"]
    elif "p_violation" in scores:
        result.float_label = scores["p_violation"]


def score_token_ids(token_map: dict[int, str] | None) -> Sequence[int]:
    return sorted(token_map) if token_map else ()
