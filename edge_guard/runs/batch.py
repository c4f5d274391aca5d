"""Named, resumable batch runs: a dataset × policy × model configuration classified item by item.

`plan_run` loads and samples the dataset, derives the run's configuration and name, and
creates (or resumes) the run in the store, refusing a name that already holds a different
configuration. `execute_run` classifies the items not yet done, committing each result as
it completes, so a killed or interrupted run loses at most the items in flight.
Reading a stored run back for metrics and reports is `runs.outcomes`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_guard.classification.cascade import path_fields
from edge_guard.conversation import judges_problem
from edge_guard.datasets.files import Dataset, Malformed, Row, describe_problems, usable_dataset
from edge_guard.datasets.gold import Gold, map_golds, select_rows
from edge_guard.engine.sampling import DEFAULT_MAX_TOKENS, LogitsProcessor
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.render import DEFAULT_EFFORT, DEFAULT_STYLE
from edge_guard.result import ClassificationResult
from edge_guard.runs.progress import RunProgress, RunSummary, run_status

if TYPE_CHECKING:  # the classifier (numpy, engine) is only needed to classify, not to evaluate
    from edge_guard.classification.classifier import Classifier, RunItem

# Config keys that must match to resume a run (the dataset's path may move; its bytes may not).
MATCH_KEYS = (
    "policy_hash",
    "model_identity",
    "style",
    "effort",
    "date",
    "sampling",
    "dataset_sha256",
    "text_field",
    "label_field",
    "id_field",
    "sample",
    "seed",
    "limit",
    "truncate",
    "target",
    "messages_field",
    "prompt_field",
    "response_field",
)


@dataclass
class RunPlan:
    name: str
    dataset: Dataset
    selected: list[int]  # indices into dataset.rows, in run order (run item idx = position)
    golds: list[Gold | None]  # per selected item
    config: dict[str, Any]
    notes: dict[str, Any]
    done: set[int]
    resumed: bool

    @property
    def n_items(self) -> int:
        return len(self.selected)

    @property
    def todo(self) -> list[int]:
        return [i for i in range(self.n_items) if i not in self.done]

    def row(self, idx: int) -> Row:
        return self.dataset.rows[self.selected[idx]]

    def messages(self) -> list[str]:
        """One-line notes a user should see before the run starts (skipped rows, labels)."""
        out = []
        if self.notes.get("malformed"):
            bad = [Malformed(line, reason) for line, reason in self.notes["malformed_first"]]
            msg = describe_problems(bad, self.dataset.unit, 5) or ""
            out.append(
                msg.replace(f"{len(bad)} malformed", f"{self.notes['malformed']} malformed", 1)
            )
        if self.notes.get("unmapped_labels"):
            vals = ", ".join(
                f"{k!r} ×{v}" for k, v in list(self.notes["unmapped_labels"].items())[:5]
            )
            out.append(
                f"gold labels that do not map to the policy's labels (kept, unscored): {vals}"
            )
        if self.notes.get("sample_note"):
            out.append(self.notes["sample_note"])
        return out


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"


def run_config(
    classifier: Classifier, dataset: Dataset, *, limit: int | None, sample: str | None, seed: int
) -> dict[str, Any]:
    cfg = classifier.prompt_config
    return {
        "dataset": str(dataset.path.resolve()),
        "dataset_sha256": dataset.sha256,
        "text_field": dataset.text_field,
        "label_field": dataset.label_field,
        "id_field": dataset.id_field,
        "sample": sample,
        "seed": seed if sample else None,
        "limit": limit,
        # conversation datasets only (plain-text runs keep their old config)
        **(dataset.conversation.config() if dataset.conversation is not None else {}),
        "policy": classifier.policy.name,
        "policy_hash": classifier.policy.hash,
        "model": classifier.backend.model_ref,
        "model_identity": classifier.backend.identity(),
        "style": cfg.style,
        "effort": cfg.effort,
        "date": cfg.date,
        "sampling": classifier.sampling.cache_dict(),
        # only when set, so runs created before the option existed still match
        **({"truncate": True} if getattr(classifier, "truncate", False) else {}),
        **path_fields(classifier),  # reasoning / cascade, only when not plain full reasoning
    }


def default_run_name(config: dict[str, Any]) -> str:
    """`<dataset>__<policy>__<model>` plus the non-default choices (stable across reruns)."""
    model = str(config["model"])
    if model.endswith(".gguf") or "/" in model or "\\" in model:
        model = Path(model).stem
    parts = [Path(config["dataset"]).stem, config["policy"], model]
    extra = []
    if config.get("target"):
        extra.append(f"target-{config['target']}")
    if config["limit"] is not None:
        extra.append(f"n{config['limit']}")
    if config["sample"]:
        extra.append(f"{config['sample']}-s{config['seed']}")
    if config["style"] != DEFAULT_STYLE:
        extra.append(config["style"])
    if config["effort"] != DEFAULT_EFFORT:
        extra.append(f"effort-{config['effort']}")
    s = config["sampling"]
    if s.get("temperature"):
        extra.append(f"t{s['temperature']:g}-seed{s.get('seed', 0)}")
    if s.get("max_tokens") != DEFAULT_MAX_TOKENS:
        extra.append(f"max{s.get('max_tokens')}")
    if config.get("truncate"):
        extra.append("truncate")
    return "__".join(_slug(p) for p in parts + (["-".join(extra)] if extra else []))


def _short(v: Any) -> Any:
    return v[:12] + "…" if isinstance(v, str) and len(v) > 16 else v


def config_mismatch(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [
        f"{k} {_short(old.get(k))!r} → {_short(new.get(k))!r}"
        for k in MATCH_KEYS
        if old.get(k) != new.get(k)
    ]


def plan_run(
    dataset: str | Path | Dataset,
    classifier: Classifier,
    *,
    name: str | None = None,
    text_field: str | None = None,
    label_field: str | None = None,
    id_field: str | None = None,
    limit: int | None = None,
    sample: str | None = None,
    seed: int = 0,
    kind: str = "run",
    extra_config: dict[str, Any] | None = None,
    keep_notes: tuple[str, ...] = (),
    **conversation: Any,
) -> RunPlan:
    """Load + sample the dataset and create or resume the named run (not classifying yet).

    `kind` names the run's kind ("run", "compare", ...); `extra_config` is stored with the
    run's config; `keep_notes` are note keys carried over from an existing run;
    `conversation` holds load_dataset's messages_field/prompt_field/response_field/target.
    """
    ds = usable_dataset(
        dataset, text_field=text_field, label_field=label_field, id_field=id_field, **conversation
    )
    wrong = judges_problem(getattr(classifier.policy, "judges", "any"), ds.rows[0].item)
    if wrong:
        raise EdgeGuardError(f"{ds.path}: policy {classifier.policy.name} {wrong}")
    all_golds, unmapped = map_golds(ds.rows, classifier.policy.output)
    selected, sample_note = select_rows(all_golds, limit=limit, sample=sample, seed=seed)
    config = {
        **run_config(classifier, ds, limit=limit, sample=sample, seed=seed),
        **(extra_config or {}),
    }
    name = name or default_run_name(config)
    store = classifier.store
    existing = store.run(name)
    old_notes: dict[str, Any] = {}
    if existing is not None:
        old = json.loads(existing.get("config") or "{}")
        if existing.get("kind") == kind:
            diff = config_mismatch(old, config)
        else:
            diff = [f"kind {existing.get('kind')!r}"]
        if diff:
            raise EdgeGuardError(
                f"run {name!r} already exists with a different configuration ({'; '.join(diff)}); "
                "pass --name to start a new run"
            )
        old_notes = json.loads(existing.get("notes") or "{}")
    golds = [all_golds[i] for i in selected]
    notes = {
        "malformed": len(ds.malformed),
        "malformed_first": [[m.line, m.reason] for m in ds.malformed[:20]],
        "unmapped_labels": dict(sorted(unmapped.items(), key=lambda kv: -kv[1])[:20]),
        "n_unlabelled": sum(g is None for g in golds),
        "sample_note": sample_note,
        **{k: old_notes.get(k) for k in keep_notes},
    }
    store.ensure_run(
        name,
        kind=kind,
        dataset=str(ds.path),
        policy=classifier.policy.name,
        model=classifier.backend.model_ref,
        config=config,
        n_items=len(selected),
        notes=notes,
    )
    store.set_run_status(name, "running", notes=notes, n_items=len(selected))
    done = store.ok_indices(name)  # answered without error under this run's own parse
    return RunPlan(name, ds, selected, golds, config, notes, done, existing is not None)


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return str(v)


def run_item(plan: RunPlan, idx: int) -> RunItem:
    from edge_guard.classification.classifier import RunItem

    row, gold = plan.row(idx), plan.golds[idx]
    extra = {
        "line": row.line,
        "gold_raw": _jsonable(row.label),
        "gold_violation": None if gold is None else gold.violation,
    }
    label = None if gold is None else gold.label
    return RunItem(plan.name, idx, row.item_id, label, extra)


def execute_run(
    plan: RunPlan,
    classifier: Classifier,
    *,
    steer: Callable[[int, Row], LogitsProcessor | None] | None = None,
    on_result: Callable[[RunProgress, int, ClassificationResult], None] | None = None,
) -> RunSummary:
    """Classify the plan's remaining items; Ctrl-C marks the run `interrupted` and re-raises."""
    store, todo = classifier.store, plan.todo
    progress = RunProgress(done=len(plan.done), total=plan.n_items)
    texts = [plan.row(i).item for i in todo]  # a text or a Conversation
    items = [run_item(plan, i) for i in todo]
    procs = [steer(i, plan.row(i)) for i in todo] if steer else None
    with run_status(store, plan.name, plan.notes):
        for j, result in classifier.iter(texts, run_items=items, logits_processors=procs):
            progress.count(result)
            if on_result is not None:
                on_result(progress, todo[j], result)
    return progress.summary(plan.name, plan.n_items)


def run_dataset(
    dataset: str | Path | Dataset,
    classifier: Classifier,
    *,
    name: str | None = None,
    steer: Callable[[int, Row], LogitsProcessor | None] | None = None,
    on_result: Callable[[RunProgress, int, ClassificationResult], None] | None = None,
    **plan_kw: Any,
) -> RunSummary:
    """plan_run + execute_run: classify a dataset as (or resuming) a named run."""
    plan = plan_run(dataset, classifier, name=name, **plan_kw)
    return execute_run(plan, classifier, steer=steer, on_result=on_result)
