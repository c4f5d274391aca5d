"""The cascade: one-pass scoring for every text, full reasoning only for the unsure ones.

Every text is scored in one pass (``none`` or ``none-empty-analysis``); a text whose
P(violation) lies in [LOW, HIGH] (bounds included), or whose one-pass score failed, goes
to full reasoning at the classifier's effort. A text with neither stage stored goes in
place: one score-then-continue request (`GenerationRequest.escalate`) scores it and, when
it escalates, generates in the same engine sequence from the prompt already evaluated
(nothing is evaluated twice). A text with a stored stage (or one whose scoring failed)
goes in two stages: the one-pass batch, then full reasoning for the escalated ones.
Both stages use their own cache keys: the
one-pass result is stored as any one-pass result, the full-reasoning result as any full
one (it *is* one, so a plain full run shares it). The cascade's decision is stored under a
third key (the full key fields plus ``reasoning`` and ``cascade``), with
``metadata["path"]`` = ``"one-pass"`` or ``"escalated"``: a cascade result never poses as
a full-reasoning one. Named runs link their items to the cascade rows.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from edge_guard.classification import onepass
from edge_guard.classification.request import item_problem, request_for
from edge_guard.conversation import Conversation, Item
from edge_guard.engine.engine import GenerationRequest
from edge_guard.engine.sampling import LogitsProcessor, SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import Event
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult
from edge_guard.settings.values import FULL, NONE, ONE_PASS_MODES

if TYPE_CHECKING:
    from edge_guard.classification.lane import Lane, RunItem
    from edge_guard.policy.core import OutputSpec, Policy

Processors = Sequence[LogitsProcessor | None] | LogitsProcessor | None


def first_stage_mode(reasoning: str) -> str:
    """The one-pass mode of a cascade: the chosen one-pass variant, else ``none``."""
    return reasoning if reasoning in ONE_PASS_MODES else NONE


def path_fields(clf: Lane) -> dict[str, Any]:
    """The classifier's extra cache-key fields: none for plain full reasoning (keys unchanged)."""
    bounds = getattr(clf, "cascade", None)
    mode = getattr(clf, "reasoning", FULL)
    if bounds is not None:
        return {"reasoning": first_stage_mode(mode), "cascade": list(bounds)}
    return {} if mode == FULL else {"reasoning": mode}


def check(policy: Policy, bounds: tuple[float, float] | None) -> None:
    if bounds is not None and not policy.output.violation:
        raise EdgeGuardError(
            f"policy {policy.name}: --cascade needs violation labels (P(violation) decides "
            "what escalates); set [output] violation"
        )


def escalates(p_violation: float | None, bounds: tuple[float, float]) -> bool:
    """Whether a one-pass score goes on to full reasoning (an unscored text always does)."""
    return p_violation is None or bounds[0] <= p_violation <= bounds[1]


def escalation(
    spec: OutputSpec, scoring: onepass.LabelScoring, bounds: tuple[float, float]
) -> Callable[[ModelResponse], bool]:
    """The engine's `escalate` callback: whether a score response's P(violation) (over
    `spec`'s labels, scored as `scoring` says) goes on to full reasoning."""

    def escalate(score: ModelResponse) -> bool:
        probs = onepass.label_probs(spec, scoring, score)
        return escalates(None if probs is None else probs["p_violation"], bounds)

    return escalate


def in_place_request(
    score: GenerationRequest, full: GenerationRequest, escalate: Callable[[ModelResponse], bool]
) -> GenerationRequest:
    """`score` (the one-pass form of `full`: its prompt plus the answer header) made to go
    on, when `escalate` says so, generating `full`'s answer in the same sequence."""
    return dataclasses.replace(
        score,
        sampling=full.sampling,
        min_tokens=full.min_tokens,
        logits_processor=full.logits_processor,
        continue_at=len(full.prompt_ids),
        escalate=escalate,
    )


def stage(clf: Lane, reasoning: str) -> Lane:
    """The classifier as one stage of the cascade (shares backend, store and caches)."""
    view = copy.copy(clf)
    view.reasoning, view.cascade = reasoning, None
    return view


def iter_cascade(
    clf: Lane,
    texts: Sequence[Item],
    *,
    run_items: Sequence[RunItem] | None = None,
    samplings: Sequence[SamplingConfig] | None = None,
    logits_processors: Processors = None,
    on_event: Callable[[int, Event], None] | None = None,
) -> Iterator[tuple[int, ClassificationResult]]:
    """`Classifier.iter` for a cascade classifier: stored decisions first, then the stages."""
    if clf.cascade is None:
        raise EdgeGuardError("iter_cascade needs a cascade classifier")
    bounds: tuple[float, float] = clf.cascade
    procs: list[LogitsProcessor | None]
    if logits_processors is None or callable(logits_processors):
        procs = [logits_processors] * len(texts)
    else:
        procs = list(logits_processors)
    keys: list[str] = []
    todo: list[int] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str | Conversation):
            raise EdgeGuardError(f"text {i} is {type(text).__name__}, not a string")
        key = clf.key(text, samplings[i] if samplings else None, procs[i])
        keys.append(key)
        row = clf.store.get(key) if clf.use_cache else None
        if row is None or row.get("error") or row["policy_hash"] != clf.policy.hash:
            todo.append(i)  # a policy edit: decide again from the (cached) stages
            continue
        result = clf.result_from_row(row)
        if run_items is not None:
            clf.link(run_items[i], key)
        yield i, result
    if not todo:
        return
    first, full = stage(clf, first_stage_mode(clf.reasoning)), stage(clf, FULL)
    scored: dict[int, ClassificationResult] = {}
    fresh: dict[int, tuple[str, str]] = {}  # text -> its (one-pass, full) keys: goes in place
    for i in todo:
        if not item_problem(first, texts[i]):  # else the one pass stores an error
            ks = (
                first.key(texts[i]),
                full.key(texts[i], samplings[i] if samplings else None, procs[i]),
            )
            if not first.use_cache or not (_stored(first, ks[0]) or _stored(full, ks[1])):
                fresh[i] = ks
    for i, one, res in _in_place(
        first, full, bounds, texts, fresh, keys, samplings, procs, on_event
    ):
        if one.error is not None:  # scoring failed: full reasoning below
            scored[i] = one
            continue
        yield i, _decide(clf, texts[i], keys[i], one, res, run_items, samplings, i)
    rest = [i for i in todo if i not in fresh]
    for j, res in first.iter([texts[i] for i in rest]):
        scored[rest[j]] = res
    up = [
        i for i in todo if i in scored and escalates(scored[i].metadata.get("p_violation"), bounds)
    ]
    for i in rest:
        if i not in up:
            yield i, _decide(clf, texts[i], keys[i], scored[i], None, run_items, samplings, i)
    if not up:
        return
    events = (lambda j, ev: on_event(up[j], ev)) if on_event else None
    for j, res in full.iter(
        [texts[i] for i in up],
        samplings=[samplings[i] for i in up] if samplings else None,
        logits_processors=[procs[i] for i in up],
        on_event=events,
    ):
        i = up[j]
        yield i, _decide(clf, texts[i], keys[i], scored[i], res, run_items, samplings, i)


def _stored(lane: Lane, key: str) -> bool:
    row = lane.store.get(key)
    return row is not None and not row.get("error")


def _in_place(
    first: Lane,
    full: Lane,
    bounds: tuple[float, float],
    texts: Sequence[Item],
    fresh: dict[int, tuple[str, str]],
    keys: Sequence[str],
    samplings: Sequence[SamplingConfig] | None,
    procs: Sequence[LogitsProcessor | None],
    on_event: Callable[[int, Event], None] | None,
) -> Iterator[tuple[int, ClassificationResult, ClassificationResult | None]]:
    """(i, one-pass result, full result if escalated) for each text of `fresh`, scored
    and, when unsure, reasoned in one engine sequence; each stage stored under its key."""
    if not fresh:
        return
    groups: dict[str, list[int]] = {}
    for i in fresh:
        groups.setdefault(keys[i], []).append(i)
    order = list(groups.values())
    # built here, not on the engine's thread
    escalate = escalation(first.policy.output, first.label_scoring(), bounds)
    requests = []
    for idx in order:
        i = idx[0]
        events = (lambda ev, i=i: on_event(i, ev)) if on_event else None
        base = request_for(full, texts[i], samplings[i] if samplings else None, procs[i], events)
        requests.append(in_place_request(onepass.score_request(first, base), base, escalate))
    for j, response in first.backend.execute(requests, n_parallel=first.parallel):
        i, text = order[j][0], texts[order[j][0]]
        one_key, full_key = fresh[i]
        score = response.scored if response.scored is not None else response
        one = _store(first, text, one_key, score, first.sampling)
        res = None
        if response.scored is not None:
            sampling = samplings[i] if samplings else full.sampling
            res = _store(full, text, full_key, response, sampling)
        for k in order[j]:
            yield k, copy.copy(one), copy.copy(res) if res is not None else None


def _store(
    lane: Lane, item: Item, key: str, response: ModelResponse, sampling: SamplingConfig
) -> ClassificationResult:
    """A stage's result of `response`, stored under the stage's own key."""
    result = lane.finish(response, item, key, lane.token_map())
    lane.store.put(lane.result_row(result, response, item, key, sampling))
    return result


def _decide(
    clf: Lane,
    item: Item,
    key: str,
    scored: ClassificationResult,
    full: ClassificationResult | None,
    run_items: Sequence[RunItem] | None,
    samplings: Sequence[SamplingConfig] | None,
    i: int,
) -> ClassificationResult:
    """The cascade's decision for item i: stored under its own key, linked to the run."""
    chosen = copy.copy(full if full is not None else scored)
    meta = dict(chosen.metadata)
    meta.update(
        {
            "path": onepass.PATH_ONE_PASS if full is None else onepass.PATH_ESCALATED,
            "cascade": list(clf.cascade or ()),
            "one_pass_reasoning": first_stage_mode(clf.reasoning),
            "one_pass_p_violation": scored.metadata.get("p_violation"),
            "one_pass_key": scored.key,
        }
    )
    if full is not None:
        meta["full_key"] = full.key
    chosen.metadata, chosen.key, chosen.cached = meta, key, False
    response = chosen.model_response
    if response is not None:
        sampling = samplings[i] if samplings else clf.sampling
        if isinstance(item, str):  # storable even with a lone surrogate (an error result)
            item = item.encode("utf-8", "backslashreplace").decode("utf-8")
        row = clf.result_row(chosen, response, item, key, sampling)
        clf.store.put(row, run_items[i].row(key) if run_items is not None else None)
    return chosen
