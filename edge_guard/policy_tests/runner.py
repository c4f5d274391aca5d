"""Running a policy's test suite ("pytest for policies"): `run_policy_tests` classifies
every golden case through the store (a run of kind "test", so an unchanged policy re-tests
from the cache), judges each answer (`policy_tests.outcomes`), records the policy version
and the outcomes, and compares with the version tested before. The JUnit export is
`policy_tests.junit`. Headless: no click, no Textual.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from edge_guard.classification.classifier import Classifier, RunItem
from edge_guard.engine.sampling import LogitsProcessor
from edge_guard.errors import EdgeGuardError
from edge_guard.policy.cases import Case, CasesError, cases_hash, filter_cases, policy_cases
from edge_guard.policy.core import Policy, load_policy
from edge_guard.policy.version_diff import compare_runs
from edge_guard.policy.versions import (
    previous_tested,
    record_version,
    save_test_run,
    test_runs,
)
from edge_guard.policy_tests.outcomes import CaseOutcome, TestReport, case_metrics, judge

__all__ = ["Steering", "run_policy_tests"]

Steering = Sequence[LogitsProcessor | None] | Callable[[Case], LogitsProcessor | None]


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _processors(
    steer: Steering | None, cases: Sequence[Case]
) -> list[LogitsProcessor | None] | None:
    if steer is None:
        return None
    if callable(steer):
        return [steer(c) for c in cases]
    procs = list(steer)
    if len(procs) != len(cases):
        raise EdgeGuardError(f"{len(procs)} logits processors for {len(cases)} cases")
    return procs


def _build(policy: Any, given: Any) -> Classifier:
    """A classifier from a `Settings` or a dict of its fields (plus `sampling`, `store`)."""
    from edge_guard.api import build_classifier
    from edge_guard.settings.resolve import Settings, resolve_settings

    if isinstance(given, Settings):
        return build_classifier(policy, given)
    opts = dict(given or {})
    sampling, store = opts.pop("sampling", None), opts.pop("store", None)
    return build_classifier(policy, resolve_settings(opts), sampling=sampling, store=store)


def _is_settings(value: Any) -> bool:
    from edge_guard.settings.resolve import Settings

    return isinstance(value, Settings)


def run_policy_tests(
    policy: str | Path | Policy | None = None,
    classifier: Classifier | dict[str, Any] | None = None,
    *,
    cases: Sequence[Case] | str | Path | None = None,
    tags: Iterable[str] | None = None,
    message: str | None = None,
    logits_processors: Steering | None = None,
    on_outcome: Callable[[int, CaseOutcome], None] | None = None,
) -> TestReport:
    """Run a policy's golden cases and record the outcome.

    `classifier` is a ready `Classifier` (its policy is used when `policy` is None) or a
    `Settings`, or a dict of its fields (model, style, effort, ...; plus sampling, store).
    `cases` overrides the policy's cases file (a list of `Case` or a path); `tags` keeps
    cases having any of them. `logits_processors` steers the model per case (a list aligned
    with the cases, or a function of the case) — used with synthetic models in tests.
    `on_outcome(index, outcome)` is called as each case completes (cache hits first).
    """
    if classifier is None or isinstance(classifier, dict) or _is_settings(classifier):
        if policy is None:
            raise EdgeGuardError("run_policy_tests needs a policy or a classifier")
        clf = _build(policy, classifier)
    else:  # a Classifier, or one like it (a warm engine's: edge_guard.warm.route)
        clf = classifier
        if policy is not None and load_policy(policy).hash != clf.policy.hash:
            raise EdgeGuardError(f"the classifier's policy is not {policy}")
    pol = clf.policy
    if cases is None or isinstance(cases, str | Path):
        all_cases = policy_cases(pol, cases)
        where = str(cases or pol.cases_path)
    else:
        all_cases, where = list(cases), None
    chosen = filter_cases(all_cases, tags)
    if not chosen:
        raise CasesError(f"no cases of policy {pol.name} have the tags {', '.join(tags or [])}")
    procs = _processors(logits_processors, chosen)
    store = clf.store
    version, created = record_version(store, pol, message)
    config = {
        "model": clf.backend.identity(),
        "engine": clf.backend.engine_version(),
        "prompt": clf.prompt_config.as_dict(),
        "sampling": clf.sampling.cache_dict(),
        "steered": procs is not None,
    }
    config_hash, c_hash = _digest(config), cases_hash(chosen)
    run = f"test:{pol.name}:{version.label}:{_digest([config_hash, c_hash])[:12]}"
    store.ensure_run(
        run,
        kind="test",
        dataset=where,
        policy=pol.name,
        model=clf.backend.model_ref,
        config=config,
        n_items=len(chosen),
    )
    items = [
        RunItem(run, i, c.id, c.expected, {"note": c.note, "tags": list(c.tags)})
        for i, c in enumerate(chosen)
    ]
    outcomes: list[CaseOutcome | None] = [None] * len(chosen)
    started = time.perf_counter()
    for i, result in clf.iter([c.item for c in chosen], run_items=items, logits_processors=procs):
        outcome = outcomes[i] = judge(chosen[i], result, pol.output)
        if on_outcome is not None:
            on_outcome(i, outcome)
    done = [o for o in outcomes if o is not None]
    if len(done) != len(chosen):  # every case gets a result; a gap is never "passed"
        raise EdgeGuardError(f"{len(chosen) - len(done)} of {len(chosen)} cases got no result")
    seconds = time.perf_counter() - started
    metrics = case_metrics(done, pol.output)
    rows = [
        {
            "idx": i,
            "case_key": o.case.key,
            "case_id": o.case.id,
            "text": o.case.text,
            "expected": o.case.expected,
            "got": o.got,
            "outcome": o.outcome,
            "verdict": str(o.result.verdict) if o.result else None,
            "final": o.final,
            "result_key": o.result.key if o.result else None,
            "note": o.case.note,
            "tags": list(o.case.tags),
            "conversation": o.case.conversation.canonical() if o.case.conversation else None,
        }
        for i, o in enumerate(done)
    ]
    info = save_test_run(
        store,
        version=version,
        run=run,
        model=clf.backend.identity(),
        model_ref=clf.backend.model_ref,
        config=config,
        config_hash=config_hash,
        cases_hash=c_hash,
        rows=rows,
        metrics=metrics,
    )
    store.set_run_status(run, "done")
    report = TestReport(
        pol,
        version,
        created,
        run,
        info,
        clf.backend.model_ref,
        config,
        done,
        metrics,
        cases_path=where,
        seconds=seconds,
    )
    prev = previous_tested(store, pol.name, version)
    if prev is not None:
        prev_runs = test_runs(store, pol.name, prev.id)
        same = [r for r in prev_runs if r.config_hash == config_hash]
        report.previous = compare_runs(store, prev, version, (same or prev_runs)[0], info)
    return report
