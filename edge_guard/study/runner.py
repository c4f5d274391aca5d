"""Running a study: every item rated by every model (× repeats), through the store as one named run.

A study is one run of kind "study" whose items are (model, item, repeat), at index
`(model_index * n_items + item_index) * repeats + repeat`. Every rating goes through
`Classifier.iter(..., run_items=...)`, so it is committed as it completes, a rerun is free
(cache hits) and a killed study resumes where it stopped. Repeats sample with seed
`seed + repeat` at temperature > 0; repeats at temperature 0 would be identical greedy
answers, so they are refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.study.dataset import StudyItem, dataset_hash, load_dataset

DEFAULT_MODELS = ("gpt-oss-safeguard-20b:mxfp4", "gpt-oss-20b:mxfp4")
DEFAULT_POLICY = "is_good"
RUN_KIND = "study"

# steer(model_ref, item, repeat) -> a logits processor (or None): steering for tests/demos.
Steer = Callable[[str, StudyItem, int], Any]


@dataclass
class StudyConfig:
    """What defines a study (its run name defaults to a hash of these)."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    dataset: str | None = None
    policy: str = DEFAULT_POLICY
    repeats: int = 1
    temperature: float = 0.0
    seed: int = 0
    max_tokens: int | None = None
    style: str | None = None
    effort: str | None = None
    date: str | None = None
    limit: int | None = None

    def validate(self) -> None:
        if not self.models:
            raise EdgeGuardError("a study needs at least one model")
        if len(set(self.models)) != len(self.models):
            raise EdgeGuardError(f"a model is listed twice in {','.join(self.models)}")
        if self.repeats < 1:
            raise EdgeGuardError(f"--repeats must be >= 1, got {self.repeats}")
        if self.repeats > 1 and self.temperature == 0:
            raise EdgeGuardError(
                f"--repeats {self.repeats} at temperature 0 would give {self.repeats} identical "
                "greedy answers per item; pass --temperature > 0 (e.g. 0.7) to measure stability"
            )
        if self.limit is not None and self.limit < 1:
            raise EdgeGuardError(f"--limit must be >= 1, got {self.limit}")


@dataclass
class StudyRun:
    """What `run_study` did."""

    name: str
    n_total: int
    n_already: int  # done before this call (resumed)
    n_new: int  # rated in this call (cache hits included)
    n_cached: int  # of n_new, served from the cache
    n_unparsed: int  # of n_new
    items: list[StudyItem]


def item_index(model_idx: int, item_idx: int, repeat: int, n_items: int, repeats: int) -> int:
    return (model_idx * n_items + item_idx) * repeats + repeat


def default_run_name(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return f"study-{identity['policy']}-{hashlib.sha256(blob).hexdigest()[:10]}"


def _classifier_factory(
    cfg: StudyConfig, store: Any, engine_settings: Any, parallel: int | None, settings: Any = None
) -> Callable[[str], Any]:
    """Classifiers built from `settings` (default: env/config.toml) with the study's prompt."""
    from edge_guard.api import build_classifier
    from edge_guard.classification.classifier import make_backend
    from edge_guard.settings.resolve import resolve_settings

    base = settings if settings is not None else resolve_settings({"parallel": parallel})
    changes = {
        "style": cfg.style,
        "effort": cfg.effort,
        "date": cfg.date,
        "max_tokens": cfg.max_tokens,
        "parallel": parallel,
    }
    base = base.replace(**{k: v for k, v in changes.items() if v is not None})

    def make(model: str) -> Any:
        s = base.replace(model=model)
        backend = make_backend(model, engine_settings) if engine_settings is not None else None
        return build_classifier(cfg.policy, s, backend=backend, store=store)

    return make


def run_study(
    config: StudyConfig,
    *,
    name: str | None = None,
    store: Any = None,
    db: str | Path | None = None,
    classifier_factory: Callable[[str], Any] | None = None,
    engine_settings: Any = None,
    parallel: int | None = None,
    settings: Any = None,
    steer: Steer | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> StudyRun:
    """Rate every item with every model (resuming run `name`); returns counts.

    `classifier_factory(model_ref) -> Classifier` lets the CLI build classifiers from its
    shared options; by default each model gets a classifier built from `settings` (a
    `Settings`; default: env/config.toml) with the config's prompt settings.
    `on_progress(done, total, model)` is called after each rating.
    """
    from edge_guard.classification.classifier import RunItem
    from edge_guard.engine.sampling import DEFAULT_MAX_TOKENS, SamplingConfig
    from edge_guard.store import Store

    config.validate()
    items = load_dataset(config.dataset, limit=config.limit)
    store = store or Store(db)
    factory = classifier_factory or _classifier_factory(
        config, store, engine_settings, parallel, settings
    )
    classifiers: dict[str, Any] = {}

    def classifier(model: str) -> Any:
        if model not in classifiers:
            classifiers[model] = factory(model)
        return classifiers[model]

    first = classifier(config.models[0])
    policy = first.policy
    if policy.output.kind != "likert":
        raise EdgeGuardError(
            f"policy {policy.name} answers {policy.output.kind!r}; a study needs a likert policy "
            '([output] kind = "likert" in policy.toml)'
        )
    prompt = first.prompt_config
    max_tokens = config.max_tokens or first.sampling.max_tokens or DEFAULT_MAX_TOKENS
    identity = {
        "models": list(config.models),
        "dataset_hash": dataset_hash(items),
        "n_items": len(items),
        "policy": policy.name,
        "policy_text_hash": policy.text_hash,
        "style": prompt.style,
        "effort": prompt.effort,
        "date": prompt.date,
        "repeats": config.repeats,
        "temperature": config.temperature,
        "seed": config.seed,
        "max_tokens": max_tokens,
    }
    name = name or default_run_name(identity)
    labels = [int(x) for x in policy.output.labels]
    run_config = {
        **identity,
        "scale": [min(labels), max(labels)],
        "dataset": str(config.dataset) if config.dataset else "(packaged)",
        "study": asdict(config),
    }
    n_total = len(config.models) * len(items) * config.repeats
    existing = store.run(name)
    if existing is not None:
        _check_resume(name, existing, identity)
    store.ensure_run(
        name,
        kind=RUN_KIND,
        dataset=run_config["dataset"],
        policy=policy.name,
        model=",".join(config.models),
        config=run_config,
        n_items=n_total,
    )
    done = store.done_indices(name)
    n_already = len(done & set(range(n_total)))
    result = StudyRun(name, n_total, n_already, 0, 0, 0, items)
    progress = n_already
    try:
        for m, model in enumerate(config.models):
            todo = [
                (i, r)
                for i in range(len(items))
                for r in range(config.repeats)
                if item_index(m, i, r, len(items), config.repeats) not in done
            ]
            if not todo:
                continue
            clf = classifier(model)
            samplings = [
                SamplingConfig(
                    temperature=config.temperature, seed=config.seed + r, max_tokens=max_tokens
                )
                for _i, r in todo
            ]
            run_items = [
                RunItem(
                    name,
                    item_index(m, i, r, len(items), config.repeats),
                    items[i].id,
                    extra={
                        "model": model,
                        "item": items[i].id,
                        "topic": items[i].topic,
                        "repeat": r,
                    },
                )
                for i, r in todo
            ]
            procs = [steer(model, items[i], r) for i, r in todo] if steer else None
            texts = [items[i].item for i, _r in todo]  # a text or a Conversation
            for _j, res in clf.iter(
                texts, run_items=run_items, samplings=samplings, logits_processors=procs
            ):
                result.n_new += 1
                result.n_cached += bool(res.cached)
                result.n_unparsed += (
                    rating_of(res.fine_grain_label, res.parsed_successfully, str(res.verdict))
                    is None
                )
                progress += 1
                if on_progress:
                    on_progress(progress, n_total, model)
    except BaseException:  # Ctrl-C, a cancel from the TUI, an engine error: resumable
        store.set_run_status(name, "interrupted")
        raise
    complete = len(store.done_indices(name) & set(range(n_total))) == n_total
    store.set_run_status(name, "done" if complete else "incomplete")
    return result


def _check_resume(name: str, existing: dict[str, Any], identity: dict[str, Any]) -> None:
    if existing.get("kind") != RUN_KIND:
        raise EdgeGuardError(
            f"run {name!r} exists and is a {existing.get('kind')!r} run, not a study; "
            "pick another --name"
        )
    try:
        old = json.loads(existing.get("config") or "{}")
    except json.JSONDecodeError:
        old = {}
    changed = sorted(k for k in identity if old.get(k) != identity[k])
    if changed:
        raise EdgeGuardError(
            f"study {name!r} was run with a different {', '.join(changed)}; resume it with the "
            "same settings or pass a new --name"
        )


def rating_of(label: str | None, parsed: Any, verdict: str | None) -> int | None:
    """The integer rating of a parsed likert answer, else None (unparsed)."""
    if not parsed or verdict == "undetermined" or label is None:
        return None
    try:
        return int(label)
    except (TypeError, ValueError):
        return None
