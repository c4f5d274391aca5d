"""Multi-policy runs: a dataset × a policy set, stored as one row per (text, policy) pair.

A run over a set of P policies keeps one run item per pair at `idx = text_idx * P +
policy_idx` (its `extra` names the policy and the text), each linked to that pair's
result row, committed as it completes; resuming (after Ctrl-C or kill -9) classifies
exactly the pairs not yet stored. Two modes:
- separate: one prompt per (text, policy), every policy's own cached result;
- combined: one prompt per text holding every policy (`policy.combined`); its one answer
  is split into a derived row per policy (key `combined.member_key`).
Gold labels come from one column per policy (`--label-field POLICY=COLUMN`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edge_guard.engine.sampling import LogitsProcessor, SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import Event
from edge_guard.policy.combined import (
    MODE_COMBINED,
    combined_policy,
    split_combined,
)
from edge_guard.policy.core import Policy
from edge_guard.policy.sets import PolicySet
from edge_guard.policy.thresholds import apply_threshold
from edge_guard.result import ClassificationResult, MultiResult
from edge_guard.runs.batch import (
    RunProgress,
    RunSummary,
    run_status,
)
from edge_guard.runs.members import spread_answers
from edge_guard.runs.multi_plan import (
    MultiPlan,
    check_mode,
    pair_item,
)

if TYPE_CHECKING:
    from edge_guard.classification.classifier import Classifier, RunItem
    from edge_guard.classification.lane import Lane

PairCallback = Callable[[RunProgress, int, int, ClassificationResult], None]
EventHook = Callable[[int, Event], None]  # (text idx, engine event)
# steer(text idx) -> a logits processor for every prompt of that text (tests and demos)
Steer = Callable[[int], LogitsProcessor | None]


def member_classifier(base: Lane, policy: Policy, *, modes: bool = True) -> Classifier:
    """A classifier for `policy` sharing `base`'s backend, store, prompt and sampling (and
    its reasoning/cascade modes unless `modes` is False: a combined prompt has no score)."""
    from edge_guard.classification.classifier import Classifier

    cfg = base.prompt_config
    extra = {k: getattr(base, k) for k in ("reasoning", "cascade") if modes and hasattr(base, k)}
    return Classifier(
        policy,
        base.backend,
        style=cfg.style,
        effort=cfg.effort,
        date=cfg.date,
        sampling=base.sampling,
        store=base.store,
        use_cache=base.use_cache,
        parallel=base.parallel,
        truncate=getattr(base, "truncate", False),
        **extra,
    )


def iter_separate(
    base: Classifier,
    pset: PolicySet,
    texts: Sequence[str],
    pairs: Sequence[tuple[int, int]],
    items: Sequence[RunItem] | None = None,
    steer: Steer | None = None,
    samplings: Sequence[SamplingConfig] | None = None,
    on_event: EventHook | None = None,
) -> Iterator[tuple[int, ClassificationResult]]:
    """(pair position, result) for each (text idx, policy idx) pair, one prompt per pair,
    the member's threshold applied (`apply_threshold`).

    Texts missing the same policies are classified together through
    `classify_loop.iter_pairs`: every miss of every policy in one backend call, so the
    engine batches all pairs (one group on a fresh run; a resumed run has a few groups).
    `samplings[t]` / `on_event(t, event)` are per text index.
    """
    from edge_guard.classification.loop import iter_pairs

    lanes = set_lanes(base, pset)
    groups: dict[tuple[int, ...], dict[int, dict[int, int]]] = {}  # policies -> text -> p -> j
    by_text: dict[int, dict[int, int]] = {}
    for j, (t, p) in enumerate(pairs):
        by_text.setdefault(t, {})[p] = j
    for t, ps in by_text.items():
        groups.setdefault(tuple(sorted(ps)), {})[t] = ps
    for pols, members in groups.items():
        ts = list(members)
        its = None
        if items is not None:
            its = [[items[members[t][p]] for t in ts] for p in pols]
        procs = [steer(t) for t in ts] if steer else None
        sams = [samplings[t] for t in ts] if samplings is not None else None
        events = (lambda k, ev, ts=ts: on_event(ts[k], ev)) if on_event is not None else None
        for k, n, result in iter_pairs(
            [lanes[p] for p in pols],
            [texts[t] for t in ts],
            run_items=its,
            logits_processors=procs,
            samplings=sams,
            on_event=events,
        ):
            m = pset.members[pols[n]]
            yield members[ts[k]][pols[n]], apply_threshold(result, m.threshold, m.policy)


def set_lanes(base: Classifier, pset: PolicySet) -> list[Classifier]:
    """One single-policy classifier per member: `base`'s own lanes when it holds exactly
    the set's policies, else new ones sharing its backend, store and settings."""
    own = getattr(base, "lanes", [base])
    if [lane.policy.hash for lane in own] == [m.policy.hash for m in pset.members]:
        return list(own)
    return [member_classifier(base, m.policy) for m in pset.members]


def iter_combined(
    base: Classifier,
    pset: PolicySet,
    texts: Sequence[str],
    pairs: Sequence[tuple[int, int]],
    items: Sequence[RunItem] | None = None,
    steer: Steer | None = None,
    samplings: Sequence[SamplingConfig] | None = None,
    on_event: EventHook | None = None,
) -> Iterator[tuple[int, ClassificationResult]]:
    """(pair position, result) per pair from one combined prompt per text; with run items,
    each pair's derived row is stored and linked as its text completes."""
    check_mode(pset, MODE_COMBINED)
    clf = member_classifier(base, combined_policy(pset), modes=False)
    order = list({t: None for t, _p in pairs})  # each text once, in first-pair order
    procs = [steer(t) for t in order] if steer else None
    sams = [samplings[t] for t in order] if samplings is not None else None
    events = (lambda k, ev: on_event(order[k], ev)) if on_event is not None else None
    answers = clf.iter(
        [texts[t] for t in order], logits_processors=procs, samplings=sams, on_event=events
    )
    yield from spread_answers(clf, pset, pairs, items, answers, split_combined)


def classify_pairs(
    base: Classifier,
    pset: PolicySet,
    texts: Sequence[str],
    pairs: Sequence[tuple[int, int]],
    *,
    mode: str = "separate",
    items: Sequence[RunItem] | None = None,
    steer: Steer | None = None,
    samplings: Sequence[SamplingConfig] | None = None,
    on_event: EventHook | None = None,
) -> Iterator[tuple[int, ClassificationResult]]:
    """Results for (text idx, policy idx) pairs in `mode`, yielded as they complete. A
    classifier with its own `iter_set` (a warm engine's, `edge_guard.warm.route`) runs
    them through it: it decides where each pair is computed and reads it back with `fn`."""
    fn = iter_combined if mode == MODE_COMBINED else iter_separate
    own = getattr(base, "iter_set", None)
    if own is not None:
        return own(
            fn,
            pset,
            texts,
            pairs,
            mode=mode,
            items=items,
            steer=steer,
            samplings=samplings,
            on_event=on_event,
        )
    return fn(base, pset, texts, pairs, items, steer, samplings, on_event)


def execute_multi_run(
    plan: MultiPlan,
    base: Classifier,
    *,
    on_result: PairCallback | None = None,
    steer: Steer | None = None,
) -> RunSummary:
    """Classify the plan's missing pairs; Ctrl-C marks the run `interrupted` and re-raises."""
    store, todo = base.store, plan.todo
    progress = RunProgress(done=len(plan.done), total=plan.n_items)
    texts = [plan.text(t) for t in range(plan.n_texts)]
    items = [pair_item(plan, t, p) for t, p in todo]
    with run_status(store, plan.name, plan.notes):
        for j, result in classify_pairs(
            base, plan.pset, texts, todo, mode=plan.mode, items=items, steer=steer
        ):
            progress.count(result)
            if on_result is not None:
                on_result(progress, todo[j][0], todo[j][1], result)
    return progress.summary(plan.name, plan.n_items)


def classify_set(
    base: Classifier,
    pset: PolicySet,
    texts: Sequence[Any],
    *,
    mode: str = "separate",
    steer: Steer | None = None,
    samplings: Sequence[SamplingConfig] | None = None,
    on_event: EventHook | None = None,
    run_items: Sequence[RunItem] | Mapping[str, Sequence[RunItem]] | None = None,
) -> list[MultiResult]:
    """One `MultiResult` per text: a result per member in set order, thresholds applied —
    THE path of every set (and every list of policies) at every door. Separate mode
    batches every (text, policy) pair, combined mode one prompt per text. `samplings`,
    `on_event(text idx, event)` and `run_items` ({policy name: a RunItem per text}) as
    `Classifier.iter_pairs`."""
    from edge_guard.conversation import item_text

    check_mode(pset, mode)
    pairs = [(t, p) for t in range(len(texts)) for p in range(len(pset.members))]
    items = _pair_items(pset, run_items, len(texts))
    got: list[dict[str, ClassificationResult]] = [{} for _ in texts]
    for j, res in classify_pairs(
        base,
        pset,
        texts,
        pairs,
        mode=mode,
        items=items,
        steer=steer,
        samplings=samplings,
        on_event=on_event,
    ):
        t, p = pairs[j]
        got[t][pset.members[p].name] = res
    return [
        MultiResult(item_text(x), {n: got[t][n] for n in pset.names}) for t, x in enumerate(texts)
    ]


def _pair_items(pset: PolicySet, run_items: Any, n_texts: int) -> list[RunItem] | None:
    """{policy name: a RunItem per text} as one RunItem per (text, policy) pair."""
    if run_items is None:
        return None
    if not isinstance(run_items, Mapping):
        if len(pset.members) != 1:
            raise EdgeGuardError("several policies need run items per policy name")
        run_items = {pset.members[0].name: run_items}
    if sorted(run_items) != sorted(pset.names) or any(
        len(v) != n_texts for v in run_items.values()
    ):
        raise EdgeGuardError(
            f"run items: give one per text for each policy ({', '.join(pset.names)})"
        )
    return [run_items[m.name][t] for t in range(n_texts) for m in pset.members]
