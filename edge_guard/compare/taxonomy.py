"""`compare`'s taxonomy-mode runs: every policy of a set from one prompt per text
(`edge_guard.runs.taxonomy`), stored as a multi-policy run so `compare.multi.multi_summary`
puts it beside separate mode: agreement, Cohen's κ and flips per policy.

`runs.multi_plan.plan_multi_run` plans the run (dataset, sample, gold columns, run rows: the
same as for any mode) as a separate-mode run whose config says mode "taxonomy", with the
taxonomy's own set hash (a rerun resumes it; a separate run never does); the missing
pairs are then classified here through `taxonomy_run.iter_taxonomy`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_guard.datasets.files import Dataset
from edge_guard.policy.sets import PolicySet
from edge_guard.policy.taxonomy import MODE_TAXONOMY
from edge_guard.runs.batch import RunProgress, RunSummary, run_status
from edge_guard.runs.multi import PairCallback
from edge_guard.runs.multi_plan import MultiPlan, pair_item, plan_multi_run, set_hash

if TYPE_CHECKING:
    from edge_guard.classification.classifier import Classifier


def plan_taxonomy_run(
    dataset: str | Path | Dataset, base: Classifier, pset: PolicySet, **kw: Any
) -> MultiPlan:
    """`plan_multi_run`'s plan for a taxonomy-mode run (keywords as `plan_multi_run`'s)."""
    kw.pop("mode", None)
    extra = {
        **(kw.pop("extra_config", None) or {}),
        "mode": MODE_TAXONOMY,
        "policy_hash": set_hash(pset, MODE_TAXONOMY),
    }
    plan = plan_multi_run(dataset, base, pset, mode="separate", extra_config=extra, **kw)
    return dataclasses.replace(plan, mode=MODE_TAXONOMY)


def execute_taxonomy_run(
    plan: MultiPlan, base: Classifier, *, on_result: PairCallback | None = None, steer: Any = None
) -> RunSummary:
    """Classify the plan's missing pairs in taxonomy mode (as `runs.multi.execute_multi_run`)."""
    from edge_guard.runs.taxonomy import iter_taxonomy

    store, todo = base.store, plan.todo
    progress = RunProgress(done=len(plan.done), total=plan.n_items)
    texts = [plan.text(t) for t in range(plan.n_texts)]
    items = [pair_item(plan, t, p) for t, p in todo]
    with run_status(store, plan.name, plan.notes):
        for j, result in iter_taxonomy(base, plan.pset, texts, todo, items, steer):
            progress.count(result)
            if on_result is not None:
                on_result(progress, todo[j][0], todo[j][1], result)
    return progress.summary(plan.name, plan.n_items)
