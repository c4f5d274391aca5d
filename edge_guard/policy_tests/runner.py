"""Policy test suites ("pytest for policies"): run a policy's golden cases, judge, record, report.

`run_policy_tests(policy, classifier_or_options)` classifies every case through the store
(a run of kind "test", so an unchanged policy re-tests from the cache), judges each answer
against the expected one (pass / fail / undetermined), records the policy version and the
outcomes, and compares with the version tested before. `write_junit` exports a report for
CI systems. Headless: no click, no Textual.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_guard.classification.classifier import Classifier, RunItem
from edge_guard.engine.sampling import LogitsProcessor
from edge_guard.errors import EdgeGuardError
from edge_guard.policy.cases import Case, CasesError, cases_hash, filter_cases, policy_cases
from edge_guard.policy.core import OutputSpec, Policy, load_policy
from edge_guard.policy.versions import (
    FAIL,
    PASS,
    UNDETERMINED,
    PolicyVersion,
    TestRunInfo,
    VersionDiff,
    compare_runs,
    diff_versions,
    policy_history,
    previous_tested,
    record_version,
    save_test_run,
    test_runs,
)
from edge_guard.result import ClassificationResult, Verdict

__all__ = [
    "Case",
    "CaseOutcome",
    "PolicyVersion",
    "TestReport",
    "VersionDiff",
    "diff_versions",
    "judge",
    "junit_xml",
    "policy_history",
    "run_policy_tests",
    "write_junit",
]

Steering = Sequence[LogitsProcessor | None] | Callable[[Case], LogitsProcessor | None]


def got_label(result: ClassificationResult, spec: OutputSpec) -> str | None:
    """The answer in the same terms as a case's `expected` (None when undetermined)."""
    if result.verdict == Verdict.UNDETERMINED:
        return None
    if spec.kind == "json":
        return "1" if result.binary_label else "0"
    fine = result.fine_grain_label
    for label in spec.labels:
        if fine is not None and label.casefold() == str(fine).strip().casefold():
            return label
    if spec.kind == "binary" and result.binary_label is not None:  # custom parser labels
        safe = [lab for lab in spec.labels if lab not in spec.violation]
        return spec.violation[0] if result.binary_label else (safe[0] if safe else None)
    return None if fine is None else str(fine)


@dataclass
class CaseOutcome:
    case: Case
    outcome: str  # pass | fail | undetermined
    got: str | None
    result: ClassificationResult | None = None

    @property
    def final(self) -> str | None:
        resp = self.result.model_response if self.result else None
        return resp.response if resp else None

    @property
    def finish_reason(self) -> str | None:
        resp = self.result.model_response if self.result else None
        return resp.finish_reason if resp else None

    @property
    def seconds(self) -> float:
        resp = self.result.model_response if self.result else None
        if resp is None or self.result is None or self.result.cached:
            return 0.0
        return (resp.timings.prompt_ms + resp.timings.output_ms) / 1000

    def why(self) -> str:
        """One line: why this case did not pass ('' when it passed)."""
        if self.outcome == PASS:
            return ""
        if self.outcome == FAIL:
            return f"expected {self.case.expected}, got {self.got}"
        error = self.result.error if self.result else None
        detail = error or (
            f"finish {self.finish_reason}"
            if self.final is None
            else f"unparsable answer {_clip(self.final, 60)!r}"
        )
        return f"undetermined: expected {self.case.expected}, no verdict ({detail})"

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            **self.case.to_dict(),
            "outcome": self.outcome,
            "got": self.got,
            "final": self.final,
            "finish_reason": self.finish_reason,
            "verdict": str(r.verdict) if r else None,
            "cached": bool(r and r.cached),
            "error": r.error if r else None,
            "key": r.key if r else None,
        }


def judge(case: Case, result: ClassificationResult, spec: OutputSpec) -> CaseOutcome:
    got = got_label(result, spec)
    if got is None:
        return CaseOutcome(case, UNDETERMINED, None, result)
    return CaseOutcome(case, PASS if got == case.expected else FAIL, got, result)


def case_metrics(outcomes: Sequence[CaseOutcome], spec: OutputSpec) -> dict[str, Any] | None:
    """Binary/json: precision, recall, F1 over determined cases. Likert: mean abs. error."""
    done = [o for o in outcomes if o.got is not None]
    if spec.kind in ("binary", "json"):
        viol = set(spec.violation) if spec.kind == "binary" else {"1"}
        y_true = [int(o.case.expected in viol) for o in done]
        y_pred = [int(o.got in viol) for o in done]
        out: dict[str, Any] = {
            "kind": "binary",
            "determined": len(done),
            "precision": None,
            "recall": None,
            "f1": None,
        }
        if done:
            from sklearn.metrics import precision_recall_fscore_support

            p, r, f, _ = precision_recall_fscore_support(
                y_true, y_pred, average="binary", pos_label=1, zero_division=0
            )
            out.update(precision=float(p), recall=float(r), f1=float(f))
        out["tp"] = sum(t and p for t, p in zip(y_true, y_pred, strict=True))
        out["fp"] = sum(p and not t for t, p in zip(y_true, y_pred, strict=True))
        out["fn"] = sum(t and not p for t, p in zip(y_true, y_pred, strict=True))
        return out
    if spec.kind == "likert":
        errs = [abs(int(o.got) - int(o.case.expected)) for o in done if o.got.lstrip("-").isdigit()]  # type: ignore[union-attr]
        return {
            "kind": "likert",
            "determined": len(done),
            "mae": sum(errs) / len(errs) if errs else None,
            "within_one": sum(e <= 1 for e in errs) / len(errs) if errs else None,
        }
    return None


@dataclass
class TestReport:
    """The outcome of one `run_policy_tests` call (what the CLI prints and the TUI shows)."""

    __test__ = False  # not a pytest class

    policy: Policy
    version: PolicyVersion
    new_version: bool
    run: str
    test_run: TestRunInfo
    model_ref: str
    config: dict[str, Any]
    outcomes: list[CaseOutcome]
    metrics: dict[str, Any] | None
    previous: VersionDiff | None = None
    cases_path: str | None = None
    seconds: float = 0.0  # wall time of the run
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(o.outcome == outcome for o in self.outcomes)

    @property
    def passed(self) -> int:
        return self.count(PASS)

    @property
    def failed(self) -> int:
        return self.count(FAIL)

    @property
    def undetermined(self) -> int:
        return self.count(UNDETERMINED)

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def ok(self) -> bool:
        """True when every case passed (undetermined counts as a failure)."""
        return self.passed == self.total

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def cached(self) -> int:
        return sum(bool(o.result and o.result.cached) for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.name,
            "version": self.version.to_dict(),
            "new_version": self.new_version,
            "run": self.run,
            "test_run_id": self.test_run.id,
            "model": self.model_ref,
            "config": self.config,
            "cases_path": self.cases_path,
            "total": self.total,
            "passed": self.passed,
            "failed": self.failed,
            "undetermined": self.undetermined,
            "pass_rate": self.pass_rate,
            "ok": self.ok,
            "cached": self.cached,
            "seconds": self.seconds,
            "metrics": self.metrics,
            "cases": [o.to_dict() for o in self.outcomes],
            "previous": self.previous.to_dict() if self.previous else None,
        }


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _processors(
    steer: Steering | None, cases: Sequence[Case]
) -> list[LogitsProcessor | None] | None:
    if steer is None:
        return None
    if callable(steer):
        return [steer(c) for c in cases]  # type: ignore[call-arg]
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
    if isinstance(classifier, Classifier):
        clf = classifier
        if policy is not None and load_policy(policy).hash != clf.policy.hash:
            raise EdgeGuardError(f"the classifier's policy is not {policy}")
    else:
        if policy is None:
            raise EdgeGuardError("run_policy_tests needs a policy or a classifier")
        clf = _build(policy, classifier)
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
        outcomes[i] = judge(chosen[i], result, pol.output)
        if on_outcome is not None:
            on_outcome(i, outcomes[i])  # type: ignore[arg-type]
    done: list[CaseOutcome] = outcomes  # type: ignore[assignment]
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


# -- JUnit XML -----------------------------------------------------------------------------
_XML_BAD = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(s: object) -> str:
    """Text safe for XML 1.0 (control characters from model output become \\xNN)."""
    return _XML_BAD.sub(lambda m: f"\\x{ord(m.group()):02x}", str(s))


def junit_xml(report: TestReport) -> ET.Element:
    """One <testsuite> per report, one <testcase> per case; undetermined = failure."""
    n_fail = report.failed + report.undetermined
    seconds = f"{report.seconds:.3f}"
    root = ET.Element(
        "testsuites",
        name="edge-guard policies test",
        tests=str(report.total),
        failures=str(n_fail),
        errors="0",
        time=seconds,
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name=_x(f"policies.{report.policy.name}"),
        tests=str(report.total),
        failures=str(n_fail),
        errors="0",
        skipped="0",
        time=seconds,
        timestamp=report.test_run.created_at,
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (
        ("policy", report.policy.name),
        ("version", report.version.label),
        ("policy_hash", report.version.hash),
        ("model", report.model_ref),
        ("run", report.run),
        ("undetermined", report.undetermined),
    ):
        ET.SubElement(props, "property", name=k, value=_x(v))
    for o in report.outcomes:
        tc = ET.SubElement(
            suite,
            "testcase",
            classname=_x(f"policies.{report.policy.name}"),
            name=_x(o.case.name),
            time=f"{o.seconds:.3f}",
        )
        if o.outcome == PASS:
            continue
        kind = "WrongAnswer" if o.outcome == FAIL else "Undetermined"
        el = ET.SubElement(tc, "failure", message=_x(o.why()), type=kind)
        el.text = _x(
            f"expected: {o.case.expected}\ngot: {o.got if o.got is not None else '(none)'}\n"
            f"final answer: {o.final!r}\nfinish: {o.finish_reason}\n"
            f"note: {o.case.note}\ntext: {o.case.text}\n"
        )
    return root


def write_junit(report: TestReport, path: str | Path) -> Path:
    """Write the JUnit XML atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = ET.ElementTree(junit_xml(report))
    ET.indent(tree)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            tree.write(fh, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
