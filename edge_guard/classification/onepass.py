"""One-pass scoring: a closed-answer policy decided from one forward pass, without reasoning.

The normal prompt ends with the assistant header (``<|start|>assistant``). Here it goes on
straight into the final channel, so the next token is the answer's first token:

- ``none``: ``<|channel|>final<|message|>``;
- ``none-empty-analysis``: an empty analysis message first,
  ``<|channel|>analysis<|message|><|end|><|start|>assistant<|channel|>final<|message|>``.

The engine scores that prompt once (a score-only request, no sampling): log-probs of each
label's first token when every label is one distinct token, else the summed log-probs of
each label's whole token sequence (``score_sequences``, all labels in one batch). The
probabilities are normalised over the labels (the one label scoring,
`policy.parsers.scores_from_logprobs`); the verdict is ``P(violation) >= threshold``
(``[output] threshold`` in policy.toml, default 0.5; the one rule, `policy.thresholds.violates`). Only closed output kinds (binary,
likert, labels) have a label set to score; any other kind is refused. A policy's custom
``parse()`` is not run: there is no answer text to parse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.vocab import Vocab
from edge_guard.policy.core import OutputSpec, Policy
from edge_guard.policy.parsers import label_token_map, scores_from_logprobs
from edge_guard.policy.thresholds import side_label, violates
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult, Verdict
from edge_guard.settings.values import (
    FULL,
    NONE,
    check_mode,
)

if TYPE_CHECKING:
    from edge_guard.backends.local import Backend
    from edge_guard.classification.lane import Lane
    from edge_guard.engine.engine import GenerationRequest

PATH_ONE_PASS = "one-pass"
PATH_ESCALATED = "escalated"
DEFAULT_THRESHOLD = 0.5


def check_policy(policy: Policy, mode: str) -> None:
    """One-pass modes need a closed answer: a one-line error for json (or any open kind)."""
    if mode != FULL and not policy.output.closed:
        raise EdgeGuardError(
            f"policy {policy.name}: --reasoning {mode} needs a closed output kind (binary, "
            f"likert or labels), not {policy.output.kind!r}; use --reasoning full"
        )


def threshold_of(policy: Policy) -> float:
    return float(getattr(policy.output, "threshold", DEFAULT_THRESHOLD))


def answer_header(vocab: Vocab, mode: str) -> list[int]:
    """Ids appended after a prompt ending in ``<|start|>assistant`` for a one-pass mode."""
    check_mode(mode)
    if mode == FULL:
        return []
    enc = vocab.encoder.encode
    channel, message = vocab.special_id("<|channel|>"), vocab.special_id("<|message|>")
    final = [channel, *enc("final"), message]
    if mode == NONE:
        return final
    start, end = vocab.special_id("<|start|>"), vocab.special_id("<|end|>")
    return [channel, *enc("analysis"), message, end, start, *enc("assistant"), *final]


@dataclass(frozen=True)
class LabelScoring:
    """What to ask the engine for: first-token ids (single-token labels) or sequences."""

    token_map: dict[int, str] | None  # first-token id -> label, when every label is one token
    sequences: tuple[tuple[str, tuple[int, ...]], ...]  # (label, ids) pairs otherwise

    @property
    def score_token_ids(self) -> list[int]:
        return sorted(self.token_map) if self.token_map else []

    @property
    def score_sequences(self) -> list[list[int]]:
        return [list(ids) for _, ids in self.sequences]


def label_scoring(spec: OutputSpec, vocab: Vocab) -> LabelScoring:
    """Single-token labels (and their leading-space variants, `label_token_map`):
    next-token log-probs; any multi-token label: every label's ids (and its spaced
    variant's) as sequences."""
    enc = vocab.encoder.encode
    plain = {label: enc(label) for label in spec.labels}
    if all(len(ids) == 1 for ids in plain.values()) and len(
        {ids[0] for ids in plain.values()}
    ) == len(plain):
        return LabelScoring(label_token_map(spec, vocab.encoder), ())
    seqs: list[tuple[str, tuple[int, ...]]] = []
    seen: set[tuple[int, ...]] = set()
    for label in spec.labels:
        for variant in (enc(label), enc(" " + label)):
            key = tuple(variant)
            if key and key not in seen:
                seen.add(key)
                seqs.append((label, key))
    return LabelScoring(None, tuple(seqs))


def label_probs(
    spec: OutputSpec, scoring: LabelScoring, response: ModelResponse
) -> dict[str, Any] | None:
    """Label probabilities normalised over the labels (None when nothing was scored), by
    the one label scoring (`policy.parsers.scores_from_logprobs`, underflow-safe)."""
    pairs: list[tuple[str, float]] = []
    if scoring.token_map is not None:
        lp = response.final_token_logprobs or {}
        pairs = [(label, lp[tok]) for tok, label in scoring.token_map.items() if tok in lp]
    else:
        seq_lp: Sequence[float] | None = getattr(response, "sequence_logprobs", None)
        if seq_lp and len(seq_lp) == len(scoring.sequences):
            pairs = [(label, v) for (label, _ids), v in zip(scoring.sequences, seq_lp, strict=True)]
    return scores_from_logprobs(spec, pairs)


def decide(
    policy: Policy,
    scores: dict[str, Any] | None,
    response: ModelResponse,
    mode: str,
    threshold: float | None = None,
) -> ClassificationResult:
    """The verdict from the label probabilities: violation iff P(violation) >= threshold.

    The fine-grained label is the most probable label on the decided side (violation
    labels or the others); undetermined when there are no scores (engine error)."""
    t = threshold_of(policy) if threshold is None else threshold
    meta: dict[str, Any] = {"path": PATH_ONE_PASS, "reasoning": mode, "threshold": t}
    if scores is None:
        meta["error"] = response.error or "no label probabilities"
        return ClassificationResult(None, None, None, meta, response, False, Verdict.UNDETERMINED)
    spec = policy.output
    meta.update(scores)
    probs: dict[str, float] = scores["label_probs"]
    violating = bool(spec.violation) and violates(scores.get("p_violation", 0.0), t)
    label = side_label(spec, probs, violating)
    value = scores["expected_rating"] if spec.kind == "likert" else scores.get("p_violation")
    verdict = Verdict.VIOLATION if violating else Verdict.NO_VIOLATION
    return ClassificationResult(violating, label, value, meta, response, True, verdict)


# -- a lane's one-pass path (called from edge_guard.classification.classifier and the loop) ---
def score_request(clf: Lane, req: GenerationRequest) -> GenerationRequest:
    """A full-reasoning `GenerationRequest` turned into the score-only request of one pass."""
    from edge_guard.engine.engine import GenerationRequest

    scoring = clf.label_scoring()
    header = answer_header(clf.backend.vocab(), clf.reasoning)
    return GenerationRequest(
        list(req.prompt_ids) + header,
        req.sampling,
        prefix_len=req.prefix_len,
        on_event=req.on_event,
        score_only=True,
        score_token_ids=scoring.score_token_ids,
        score_sequences=scoring.score_sequences,
    )


def finish(clf: Lane, response: ModelResponse) -> ClassificationResult:
    """The one-pass result of a score-only response."""
    scores = label_probs(clf.policy.output, clf.label_scoring(), response)
    if response.error:
        scores = None
    result = decide(clf.policy, scores, response, clf.reasoning)
    seq = getattr(response, "sequence_logprobs", None)
    if seq is not None:  # kept for re-deciding a stored result (the store has no column)
        result.metadata["sequence_logprobs"] = list(seq)
    return result


def stored_response(row: dict[str, Any]) -> ModelResponse:
    """A stored row's response, with a one-pass row's sequence log-probs restored."""
    import json

    from edge_guard.store.rows import row_to_response

    response = row_to_response(row)
    if response.finish_reason == "scored":
        meta = json.loads(row.get("metadata") or "{}")
        if isinstance(meta.get("sequence_logprobs"), list):
            response.sequence_logprobs = meta["sequence_logprobs"]
    return response


def check_backend(backend: Backend, mode: str) -> None:
    if mode != FULL and getattr(backend, "name", "local") == "server":
        raise EdgeGuardError(
            f"--reasoning {mode} needs the local engine (score-only requests); "
            "the server backend generates only"
        )
