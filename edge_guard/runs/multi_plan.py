"""Planning a multi-policy run: a dataset × a policy set resolved into a `MultiPlan` (its
run items one per (text, policy) pair at `idx = text_idx * P + policy_idx`, gold columns per
policy, the set's hash and mode), before anything is classified (`runs.multi` executes it)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_guard.datasets.files import Dataset, column_values, usable_dataset
from edge_guard.datasets.gold import Gold, map_gold_values, select_rows
from edge_guard.errors import EdgeGuardError
from edge_guard.policy.combined import (
    MODE_COMBINED,
    MODES,
)
from edge_guard.policy.sets import PolicySet
from edge_guard.runs.batch import (
    config_mismatch,
    default_run_name,
    run_config,
)

if TYPE_CHECKING:
    from edge_guard.classification.classifier import Classifier, RunItem


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


def is_multi_run(run: Mapping[str, Any] | None) -> bool:
    """True for a run stored by `plan_multi_run` (its config lists the policies)."""
    if not run:
        return False
    cfg = json.loads(run.get("config") or "{}")
    return isinstance(cfg.get("policies"), list)
