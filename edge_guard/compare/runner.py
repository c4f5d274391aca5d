"""Running a comparison: one dataset × policy through every config, each a named run.

Each config becomes a run of kind "compare" named `<comparison>/<k>:<label>` over the same
items (same dataset, fields, sample and limit), classified through the store with
`runs.execute_run`: results are committed as they complete, a rerun is served from the
cache and an interrupted comparison resumes. Configs run one after another in this
process, each with its model loaded alone, so the resource meter can attribute peak RSS
and GPU memory to each config (see `compare.resources`).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_guard.classification.classifier import Classifier
from edge_guard.compare.config import CompareConfig, check_configs
from edge_guard.datasets.files import Dataset, Row, usable_dataset
from edge_guard.engine.sampling import LogitsProcessor
from edge_guard.errors import EdgeGuardError
from edge_guard.result import ClassificationResult
from edge_guard.runs.batch import RunPlan, RunProgress, RunSummary, execute_run, plan_run
from edge_guard.settings.resolve import resolve_settings, setting_flags
from edge_guard.store import Store

RUN_KIND = "compare"
# Options that change outputs: part of the default comparison name.
_NAMED_OPTS = (
    "model",
    "style",
    "effort",
    "date",
    "temperature",
    "seed",
    "max_tokens",
    "backend",
    "url",
)

# steer(config_index, config, item_idx, row) -> a logits processor (tests and demos).
Steer = Callable[[int, CompareConfig, int, Row], LogitsProcessor | None]


@dataclass
class ConfigRun:
    index: int
    config: CompareConfig
    label: str
    run: str
    summary: RunSummary | None
    resources: dict[str, Any] | None


@dataclass
class CompareRun:
    name: str
    runs: list[ConfigRun]
    dataset: Dataset
    policy: str
    store: Store

    @property
    def run_names(self) -> list[str]:
        return [r.run for r in self.runs]

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.runs]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._:=-]+", "-", s).strip("-")[:80] or "x"


def default_name(
    dataset: Dataset,
    policy: str,
    configs: Sequence[CompareConfig],
    base: dict[str, Any],
    selection: dict[str, Any],
) -> str:
    """`compare__<dataset>__<policy>__<hash of configs and settings>` (stable across reruns)."""
    blob = json.dumps(
        {
            "configs": [c.spec() for c in configs],
            "sha": dataset.sha256,
            "opts": {k: base.get(k) for k in _NAMED_OPTS},
            **selection,
        },
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"compare__{_slug(dataset.path.stem)}__{_slug(policy)}__{digest}"


def config_run_name(name: str, index: int, label: str) -> str:
    return f"{name}/{index}:{_slug(label)}"


def plan_config_run(
    ds: Dataset,
    classifier: Classifier,
    name: str,
    meta: dict[str, Any],
    *,
    limit: int | None,
    sample: str | None,
    seed: int,
) -> RunPlan:
    """`runs.plan_run` for a run of kind "compare" (resumes; refuses another config)."""
    return plan_run(
        ds,
        classifier,
        name=name,
        limit=limit,
        sample=sample,
        seed=seed,
        kind=RUN_KIND,
        extra_config={"compare": meta},
        keep_notes=("resources",),
    )


def _model_file(classifier: Classifier) -> tuple[str | None, int | None]:
    path = getattr(classifier.backend, "path", None) or getattr(
        classifier.backend, "vocab_path", None
    )
    if path is None or not os.path.isfile(path):
        return None, None
    return str(path), os.path.getsize(path)


def run_compare(
    dataset: str | Path | Dataset,
    policy: str,
    configs: Sequence[CompareConfig],
    *,
    base_opts: dict[str, Any] | None = None,
    name: str | None = None,
    text_field: str | None = None,
    label_field: str | None = None,
    id_field: str | None = None,
    limit: int | None = None,
    sample: str | None = None,
    sample_seed: int = 0,
    steer: Steer | None = None,
    on_start: Callable[[int, str, RunPlan], None] | None = None,
    on_result: Callable[[int, RunProgress, int, ClassificationResult], None] | None = None,
    door: str = "python",
) -> CompareRun:
    """Classify `dataset` under `policy` with every config (the first is the reference).

    `base_opts` are `Settings` fields (model, style, max_tokens, db, ...; other keys are
    ignored) that each config's modifiers override; a config without a model uses
    `base_opts["model"]`. Each config's settings resolve like flags (over env/config.toml);
    a bad value is named in the terms of the caller's `door` (the compare CLI: "cli").
    """
    from edge_guard.api import build_classifier
    from edge_guard.backends.local import LocalBackend, release_engine
    from edge_guard.compare.resources import ResourceMeter

    base = dict(base_opts or {})
    labels = check_configs(configs, base.get("model"))
    ds = usable_dataset(dataset, text_field=text_field, label_field=label_field, id_field=id_field)
    selection = {
        "limit": limit,
        "sample": sample,
        "sample_seed": sample_seed if sample else None,
        "fields": [ds.text_field, ds.label_field, ds.id_field],
    }
    name = name or default_name(ds, policy, configs, base, selection)
    specs = [c.spec() for c in configs]
    done: list[ConfigRun] = []
    store: Store | None = None
    for k, (cfg, label) in enumerate(zip(configs, labels, strict=True)):
        flags = setting_flags({**base, **cfg.opts, "model": cfg.model or base.get("model")})
        classifier = build_classifier(policy, resolve_settings(flags, door=door))
        store = classifier.store
        path, size = _model_file(classifier)
        meta = {
            "name": name,
            "index": k,
            "label": label,
            "spec": specs[k],
            "configs": specs,
            "reference": labels[0],
            "model_path": path,
            "file_bytes": size,
            "backend": classifier.backend.name,
        }
        run_name = config_run_name(name, k, label)
        plan = plan_config_run(
            ds, classifier, run_name, meta, limit=limit, sample=sample, seed=sample_seed
        )
        if on_start is not None:
            on_start(k, label, plan)
        local = isinstance(classifier.backend, LocalBackend)
        meter = ResourceMeter(local=local)
        if plan.todo:
            # Baseline: Python, edge_guard and this model's tokenizer loaded; no model weights
            # (the previous config's engine is released), so peak - baseline is the model's.
            release_engine()
            classifier.backend.vocab().encoder  # noqa: B018 - load the tokenizer now
            classifier.token_map()
            gc.collect()
            meter.start()

        def _on_result(
            p: RunProgress,
            idx: int,
            res: ClassificationResult,
            k: int = k,
            meter: ResourceMeter = meter,
        ) -> None:
            meter.sample()
            if on_result is not None:
                on_result(k, p, idx, res)

        item_steer = None
        if steer is not None:
            item_steer = lambda idx, row, k=k, cfg=cfg: steer(k, cfg, idx, row)  # noqa: E731
        summary = execute_run(plan, classifier, steer=item_steer, on_result=_on_result)
        resources = plan.notes.get("resources")
        if summary.n_new > 0:
            resources = {**meter.stop(), "n_new": summary.n_new}
        classifier.backend.close()
        store.set_run_status(run_name, "done", notes={**plan.notes, "resources": resources})
        done.append(ConfigRun(k, cfg, label, run_name, summary, resources))
        del classifier, plan, meter
    assert store is not None
    return CompareRun(name, done, ds, policy, store)


def comparison_runs(store: Store, name: str) -> list[str]:
    """The run names of a stored comparison, in config order (its latest set of configs)."""
    rows = store.query(
        "SELECT name, config FROM runs WHERE kind = ? ORDER BY updated_at DESC", [RUN_KIND]
    )
    metas = [(r["name"], json.loads(r["config"] or "{}").get("compare") or {}) for r in rows]
    metas = [(n, m) for n, m in metas if m.get("name") == name]
    if not metas:
        raise EdgeGuardError(f"no comparison named {name!r} in {store.path}")
    latest = metas[0][1].get("configs")
    found = sorted((m.get("index", 0), n) for n, m in metas if m.get("configs") == latest)
    return [n for _, n in found]
