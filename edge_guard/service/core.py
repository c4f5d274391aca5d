"""The service's engine side: one model, one store, policies by name, and cancellable jobs.

`ServiceCore` knows nothing of HTTP. It resolves a policy name (or, when allowed, inline
policy text with the built-in parser only), keeps one `Classifier` per policy x style x
effort over the one shared backend, and runs each request as a `Job` on a worker thread.
Jobs from many requests call the backend at once; the engine batches them together. A
job can be cancelled (client gone, deadline, shutdown): results already computed stay
in the store, the rest are dropped.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_guard.classifier import Classifier
from edge_guard.classify_loop import iter_pairs
from edge_guard.engine.engine import GenerationRequest
from edge_guard.engine.sampling import DEFAULT_MAX_TOKENS, SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import Event
from edge_guard.harmony.render import DEFAULT_EFFORT, DEFAULT_STYLE
from edge_guard.policy.core import OutputSpec, Policy, list_policies, load_policy
from edge_guard.policy.sets import PolicySet, apply_threshold, list_sets, load_set
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult
from edge_guard.service.bridge import CancelledJob, ServiceBackend, job_scope
from edge_guard.store import Store

MAX_CLASSIFIERS = 64


class UnknownPolicy(EdgeGuardError):
    """A request named a policy or set the server does not have (HTTP 404)."""


class ShuttingDown(EdgeGuardError):
    """The server is stopping: no new jobs (HTTP 503)."""


class Forbidden(EdgeGuardError):
    """A request asked for something this server does not allow (HTTP 403)."""


@dataclass(frozen=True)
class Limits:
    """Per-request limits (HTTP 413 / 400 / 504)."""

    max_body_bytes: int = 4 << 20
    max_texts: int = 256
    max_text_chars: int = 64_000
    deadline_s: float = 600.0
    max_tokens: int = 8192


@dataclass
class JobSpec:
    """One request's work: texts under one or more policies, one prompt/sampling setting."""

    texts: list[str]
    policies: list[Policy]
    style: str = DEFAULT_STYLE
    effort: str = DEFAULT_EFFORT
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    use_cache: bool = True
    thresholds: dict[str, float] = field(default_factory=dict)  # a set's, per policy name


@dataclass(eq=False)
class Job:
    """A submitted JobSpec: `results[p][i]` fill in as they complete."""

    spec: JobSpec
    on_result: Callable[[int, int, ClassificationResult], None] | None = None
    on_event: Callable[[int, int, Event], None] | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    results: list[list[ClassificationResult | None]] = field(default_factory=list)
    future: Future[None] | None = None
    started: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


class ServiceCore:
    """Everything a request needs besides HTTP: policies, classifiers, the job pool."""

    def __init__(self, backend: Any, store: Store, *, default_policies: Sequence[str] = (),
                 default_set: str | None = None, allow_inline: bool = False,
                 parallel: int | None = None, limits: Limits | None = None,
                 workers: int = 64, observer: Any = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS) -> None:  # fmt: skip
        self.store = store
        if getattr(backend, "_identity", "") is None and hasattr(backend, "set_identity"):
            backend.set_identity(store.model_identity(backend.path))  # cached file hash
        self.backend = ServiceBackend(backend)
        self.max_tokens = max_tokens  # default for requests that set none (moderations)
        self.allow_inline = allow_inline
        self.parallel = parallel
        self.limits = limits or Limits()
        self.observer = observer  # metrics sink: .job_started/.job_done/.result(...)
        self._policies: dict[str, Policy] = {}
        self._sets: dict[str, PolicySet] = {}
        self.default_set = default_set
        self._classifiers: OrderedDict[tuple[str, str, str], Classifier] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eg-job")
        self._jobs: set[Job] = set()
        self.closing = False
        self.drain_deadline = float("inf")  # after it, running jobs are cancelled
        if default_set is not None:
            if default_policies:
                raise EdgeGuardError("give default policies or a default set, not both")
            default_policies = self.policy_set(default_set).names
        self.default_policies = list(default_policies)
        for name in self.default_policies:
            self.policy(name)

    # -- policies ------------------------------------------------------------------------
    def catalog(self) -> dict[str, Path]:
        """Policy names a request may use: what `edge-guard policies list` shows."""
        out: dict[str, Path] = {}
        for p in list_policies():
            out.setdefault(p.stem if p.is_file() else p.name, p)
        return out

    def policy(self, name: str) -> Policy:
        """A policy by name only (never a path from a request); loaded once."""
        with self._lock:
            if name in self._policies:
                return self._policies[name]
        if self.default_set is not None:  # the set's own members may be paths in its file
            for member in self.policy_set(self.default_set).policies:
                if member.name == name:
                    return member
        path = self.catalog().get(name)
        if path is None:
            raise UnknownPolicy(f"policy {name!r} not found (GET /v1/policies lists them)")
        policy = load_policy(path)
        with self._lock:
            self._policies[name] = policy
            return policy

    def set_names(self) -> list[str]:
        return sorted(p.stem for p in list_sets())

    def policy_set(self, name: str) -> PolicySet:
        """A policy set by name (policies/sets/NAME.toml on the search path); loaded once."""
        with self._lock:
            if name in self._sets:
                return self._sets[name]
        if name not in self.set_names():
            raise UnknownPolicy(f"policy or set {name!r} not found (GET /v1/policies lists them)")
        found = load_set(name)
        with self._lock:
            self._sets[name] = found
            return found

    def resolve(self, name: str | None) -> tuple[list[Policy], dict[str, float]]:
        """A policy or set name -> (its policies, per-policy thresholds); None -> defaults.
        A policy and a set of the same name: the policy (as `edge-guard classify -p`)."""
        if name is None or name == "":
            if self.default_set is not None:
                return self.resolve(self.default_set)
            if not self.default_policies:
                raise UnknownPolicy("no policy named and the server has no default (--policy)")
            return [self.policy(n) for n in self.default_policies], {}
        if name not in self.catalog() and name in self.set_names():
            ps = self.policy_set(name)
            thresholds = {m.name: m.threshold for m in ps.members if m.threshold is not None}
            return ps.policies, thresholds
        return [self.policy(name)], {}

    def inline_policy(self, text: str, output: dict[str, Any] | None = None,
                      name: str = "inline") -> Policy:  # fmt: skip
        """Client-supplied policy text: only with --allow-inline-policies; built-in parser."""
        if not self.allow_inline:
            raise Forbidden("inline policies are off on this server (--allow-inline-policies)")
        if not text.strip():
            raise EdgeGuardError("policy_text is empty")
        spec = OutputSpec.from_dict(dict(output or {}), "policy_output")
        return Policy(name=name, text=text, output=spec)

    def classifier(self, policy: Policy, style: str, effort: str) -> Classifier:
        key = (policy.hash, style, effort)
        with self._lock:
            clf = self._classifiers.get(key)
            if clf is not None:
                self._classifiers.move_to_end(key)
                return clf
        clf = Classifier(policy, self.backend, style=style, effort=effort, store=self.store,
                         parallel=self.parallel)  # fmt: skip
        with self._lock:
            self._classifiers[key] = clf
            while len(self._classifiers) > MAX_CLASSIFIERS:
                self._classifiers.popitem(last=False)
        return clf

    def preload(self, style: str = DEFAULT_STYLE, effort: str = DEFAULT_EFFORT) -> None:
        """Load the model and evaluate each default policy's prompt prefix once."""
        self.backend.load()
        for name in self.default_policies:
            clf = self.classifier(self.policy(name), style, effort)
            prompt = clf._renderer().render(clf.policy.text, "", clf.prompt_config)
            req = GenerationRequest(prompt.token_ids, SamplingConfig(max_tokens=1),
                                    prefix_len=prompt.prefix_len)  # fmt: skip
            for _ in self.backend.execute([req]):
                pass

    # -- jobs ----------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        if self.closing:
            raise ShuttingDown("the server is shutting down")
        spec = job.spec
        job.results = [[None] * len(spec.texts) for _ in spec.policies]
        # Build classifiers here (policy errors surface before the job is queued).
        clfs = [self.classifier(p, spec.style, spec.effort) for p in spec.policies]
        with self._lock:
            self._jobs.add(job)
        if self.observer is not None:
            self.observer.job_started(len(spec.texts) * len(spec.policies))
        job.future = self._pool.submit(self._run, job, clfs)
        return job

    def _run(self, job: Job, clfs: list[Classifier]) -> None:
        spec = job.spec
        lanes = clfs if spec.use_cache else [_uncached(c) for c in clfs]
        samplings = [spec.sampling] * len(spec.texts)
        try:
            with job_scope(job.cancel_event):
                if job.on_event is None or len(lanes) == 1:
                    # Every (text, policy) pair in one backend call.
                    pairs = iter_pairs(lanes, spec.texts, samplings=samplings,
                                       on_event=_bind_events(job.on_event, 0))  # fmt: skip
                    for i, p, res in pairs:
                        self._record(job, p, i, res)
                        if job.cancelled:
                            break
                    return
                for p, lane in enumerate(lanes):  # streamed reasoning: one policy at a time
                    for i, res in lane.iter(spec.texts, samplings=samplings,
                                            on_event=_bind_events(job.on_event, p)):  # fmt: skip
                        self._record(job, p, i, res)
                        if job.cancelled:
                            return
        except CancelledJob:
            pass
        finally:
            with self._lock:
                self._jobs.discard(job)
            if self.observer is not None:
                self.observer.job_done(len(spec.texts) * len(spec.policies), job.results)

    def _record(self, job: Job, p: int, i: int, res: ClassificationResult) -> None:
        res = apply_threshold(res, job.spec.thresholds.get(job.spec.policies[p].name))
        job.results[p][i] = res
        if self.observer is not None:
            self.observer.result(res)
        if job.on_result is not None:
            job.on_result(p, i, res)

    def active_jobs(self) -> int:
        with self._lock:
            return len(self._jobs)

    def begin_shutdown(self, grace_s: float) -> None:
        """SIGTERM/Ctrl-C: take no new jobs; running ones may finish for `grace_s`."""
        self.closing = True
        self.drain_deadline = min(self.drain_deadline, time.monotonic() + grace_s)

    def draining_over(self) -> bool:
        return self.closing and time.monotonic() > self.drain_deadline

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop taking jobs, let running ones finish for `grace_s`, cancel the rest."""
        self.closing = True
        deadline = time.monotonic() + grace_s
        while self.active_jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def info(self) -> dict[str, Any]:
        b = self.backend
        return {"model": b.model_ref, "identity": b.identity(), "engine": b.engine_version(),
                "backend": b.name}  # fmt: skip


def _bind_events(cb: Callable[[int, int, Event], None] | None,
                 p: int) -> Callable[[int, Event], None] | None:  # fmt: skip
    return None if cb is None else (lambda i, ev: cb(p, i, ev))


def _uncached(clf: Classifier) -> Classifier:
    """A shallow copy of `clf` that recomputes (and overwrites) instead of reading the store."""
    import copy

    other = copy.copy(clf)
    other.use_cache = False
    return other


def failed_result(text: str, policy: Policy, error: str) -> ClassificationResult:
    """An undetermined result for an item that was never computed (cancelled, deadline)."""
    resp = ModelResponse.failed(error)
    res = ClassificationResult(None, None, None, {}, resp, False)
    res.text, res.policy, res.error = text, policy.name, error
    return res


def iter_done(job: Job) -> Iterator[tuple[int, int, ClassificationResult]]:
    for p, row in enumerate(job.results):
        for i, res in enumerate(row):
            if res is not None:
                yield p, i, res
