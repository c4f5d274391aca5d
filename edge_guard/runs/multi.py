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

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_guard.datasets.files import Dataset, column_values, usable_dataset
from edge_guard.datasets.gold import Gold, map_gold_values, select_rows
from edge_guard.engine.sampling import LogitsProcessor, SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import Event
from edge_guard.policy.combined import (
    MODE_COMBINED,
    MODES,
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
    config_mismatch,
    default_run_name,
    run_config,
    run_status,
)
from edge_guard.runs.members import spread_answers

if TYPE_CHECKING:
    from edge_guard.classification.classifier import Classifier, RunItem
    from edge_guard.classification.lane import Lane

PairCallback = Callable[[RunProgress, int, int, ClassificationResult], None]
EventHook = Callable[[int, Event], None]  # (text idx, engine event)
# steer(text idx) -> a logits processor for every prompt of that text (tests and demos)
Steer = Callable[[int], LogitsProcessor | None]


def parse_label_fields(values: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    """`--label-field POLICY=COLUMN` values → {policy: column}; one bare COLUMN applies to a
    single-policy set. Unknown policies and repeated policies are one-line errors."""
    out: dict[str, str] = {}
    for v in values:
        policy, sep, column = v.partition("=")
        if not sep:
            if len(names) != 1 or len(values) != 1:
                raise EdgeGuardError(
                    f"--label-field {v!r}: with several policies write "
                    f"POLICY=COLUMN (policies: {', '.join(names)})"
                )
            policy, column = names[0], v
        policy, column = policy.strip(), column.strip()
        if policy not in names:
            raise EdgeGuardError(
                f"--label-field {v!r}: no policy {policy!r} in the set "
                f"(policies: {', '.join(names)})"
            )
        if not column:
            raise EdgeGuardError(f"--label-field {v!r}: empty column name")
        if policy in out:
            raise EdgeGuardError(f"--label-field: policy {policy!r} given twice")
        out[policy] = column
    return out


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


def check_mode(pset: PolicySet, mode: str) -> None:
    """A known mode; combined refuses thresholds (no P(violation) per policy to apply)."""
    if mode not in MODES:
        raise EdgeGuardError(f"unknown mode {mode!r}: use {' or '.join(MODES)}")
    with_thresholds = sorted(m.name for m in pset.members if m.threshold is not None)
    if mode == MODE_COMBINED and with_thresholds:
        raise EdgeGuardError(
            f"set {pset.name}: its thresholds ({', '.join(with_thresholds)}) "
            "need a P(violation) per policy, which a combined answer has not; "
            "use separate mode"
        )


def set_hash(pset: PolicySet, mode: str) -> str:
    """One hash for the run's policies (names, versions, thresholds, order) and mode."""
    parts = [mode] + [f"{m.name}={m.policy.hash}@{m.threshold}" for m in pset.members]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass
class MultiPlan:
    name: str
    dataset: Dataset
    pset: PolicySet
    mode: str
    selected: list[int]  # dataset row indices, in run order (text idx = position)
    golds: dict[str, list[Gold | None]]  # per policy, per selected text
    config: dict[str, Any]
    notes: dict[str, Any]
    done: set[int]  # done pair indices
    resumed: bool

    @property
    def n_texts(self) -> int:
        return len(self.selected)

    @property
    def n_policies(self) -> int:
        return len(self.pset.members)

    @property
    def n_items(self) -> int:
        return self.n_texts * self.n_policies

    def pair(self, t: int, p: int) -> int:
        return t * self.n_policies + p

    @property
    def todo(self) -> list[tuple[int, int]]:
        return [
            (t, p)
            for t in range(self.n_texts)
            for p in range(self.n_policies)
            if self.pair(t, p) not in self.done
        ]

    def text(self, t: int) -> Any:
        """Text t as classified: its string, or its conversation."""
        return self.dataset.rows[self.selected[t]].item

    def messages(self) -> list[str]:
        return [
            f"{k}: gold labels that do not map to its labels (kept, unscored): "
            + ", ".join(f"{v!r} ×{n}" for v, n in list(u.items())[:5])
            for k, u in (self.notes.get("unmapped_labels") or {}).items()
            if u
        ]


def plan_multi_run(
    dataset: str | Path | Dataset,
    base: Classifier,
    pset: PolicySet,
    *,
    mode: str = "separate",
    label_fields: Mapping[str, str] | None = None,
    name: str | None = None,
    text_field: str | None = None,
    id_field: str | None = None,
    limit: int | None = None,
    sample: str | None = None,
    seed: int = 0,
    kind: str = "run",
    extra_config: dict[str, Any] | None = None,
    **conversation: Any,
) -> MultiPlan:
    """Load + sample the dataset, map each policy's gold column, create or resume the run.

    `conversation`: `usable_dataset`'s messages_field / prompt_field / response_field /
    target (rows become conversations)."""
    check_mode(pset, mode)
    ds = usable_dataset(dataset, text_field=text_field, id_field=id_field, **conversation)
    fields = dict(label_fields or {})
    golds: dict[str, list[Gold | None]] = {}
    unmapped: dict[str, dict[str, int]] = {}
    for m in pset.members:
        column = fields.get(m.name)
        if column is None:
            golds[m.name] = [None] * len(ds.rows)
            continue
        golds[m.name], unmapped[m.name] = map_gold_values(
            column_values(ds, column), m.policy.output
        )
    # a balanced sample balances the "any violation" gold
    any_gold = [_any_gold([golds[n][i] for n in pset.names]) for i in range(len(ds.rows))]
    selected, sample_note = select_rows(any_gold, limit=limit, sample=sample, seed=seed)
    config = {
        **run_config(base, ds, limit=limit, sample=sample, seed=seed),
        "policy": f"set:{pset.name}",
        "policy_hash": set_hash(pset, mode),
        "label_field": json.dumps(fields, sort_keys=True),
        "mode": mode,
        "policies": pset.names,
        "policy_hashes": [m.policy.hash for m in pset.members],
        "thresholds": {m.name: m.threshold for m in pset.members},
        "n_texts": len(selected),
        **({"conversation": conversation} if conversation else {}),
        **(extra_config or {}),
    }
    mode_of = config["mode"]  # taxonomy runs plan as separate, their config says so
    name = name or default_run_name(config) + ("" if mode_of == "separate" else f"__{mode_of}")
    store = base.store
    existing = store.run(name)
    if existing is not None:
        old = json.loads(existing.get("config") or "{}")
        diff = (
            config_mismatch(old, config)
            if existing.get("kind") == kind
            else [f"kind {existing.get('kind')!r}"]
        )
        if diff:
            raise EdgeGuardError(
                f"run {name!r} already exists with a different configuration ({'; '.join(diff)}); "
                "pass --name to start a new run"
            )
    notes = {
        "malformed": len(ds.malformed),
        "n_texts": len(selected),
        "sample_note": sample_note,
        "unmapped_labels": {
            k: dict(sorted(v.items(), key=lambda kv: -kv[1])[:20]) for k, v in unmapped.items()
        },
    }
    n_items = len(selected) * len(pset.members)
    store.ensure_run(
        name,
        kind=kind,
        dataset=str(ds.path),
        policy=config["policy"],
        model=base.backend.model_ref,
        config=config,
        n_items=n_items,
        notes=notes,
    )
    store.set_run_status(name, "running", notes=notes, n_items=n_items)
    done = {
        r["idx"]
        for r in store.query(
            "SELECT ri.idx FROM run_items ri JOIN results r ON r.key = ri.key "
            "WHERE ri.run = ? AND r.error IS NULL",
            [name],
        )
    }
    sel_golds = {n: [g[i] for i in selected] for n, g in golds.items()}
    return MultiPlan(
        name, ds, pset, mode, selected, sel_golds, config, notes, done, existing is not None
    )


def _any_gold(golds: Sequence[Gold | None]) -> Gold | None:
    """The "any violation" gold: violation if any policy's is, safe if all are known safe."""
    if any(g is not None and g.violation for g in golds):
        return Gold(None, True)
    if golds and all(g is not None for g in golds):
        return Gold(None, False)
    return None


def pair_item(plan: MultiPlan, t: int, p: int) -> RunItem:
    from edge_guard.classification.classifier import RunItem

    row = plan.dataset.rows[plan.selected[t]]
    name = plan.pset.members[p].name
    gold = plan.golds[name][t]
    extra = {
        "line": row.line,
        "policy": name,
        "text_idx": t,
        "gold_violation": None if gold is None else gold.violation,
    }
    return RunItem(
        plan.name, plan.pair(t, p), row.item_id, None if gold is None else gold.label, extra
    )


# -- classifying pairs -----------------------------------------------------------------------
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


def is_multi_run(run: Mapping[str, Any] | None) -> bool:
    """True for a run stored by `plan_multi_run` (its config lists the policies)."""
    if not run:
        return False
    cfg = json.loads(run.get("config") or "{}")
    return isinstance(cfg.get("policies"), list)


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
