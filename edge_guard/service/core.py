"""The service's engine side: one model, one store, policies by name, and cancellable jobs.

`ServiceCore` knows nothing of HTTP. It holds the server's `Settings` (its flags, the
environment and config.toml: the defaults of every request), resolves policy and set
names (`catalog`), builds one `Classifier` per policy x request settings through
`edge_guard.api.build_classifier` over the one shared backend, and runs each request as a
`Job` on a worker thread. Jobs from many requests call the backend at once; the engine
batches them together. A job can be cancelled (client gone, deadline, shutdown): results
already computed stay in the store, the rest are dropped.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from edge_guard.backends.local import Backend, LocalBackend
from edge_guard.classification.classifier import Classifier
from edge_guard.classification.loop import iter_pairs
from edge_guard.conversation import Item, item_text
from edge_guard.engine.engine import BATCH, INTERACTIVE, GenerationRequest
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import Event
from edge_guard.policy.core import Policy
from edge_guard.policy.sets import PolicySet
from edge_guard.policy.thresholds import apply_threshold
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult
from edge_guard.service.bridge import CancelledJob, ServiceBackend, job_scope
from edge_guard.service.catalog import Catalog, Forbidden, UnknownPolicy, inline_policy
from edge_guard.settings.resolve import Settings
from edge_guard.store import Store

MAX_CLASSIFIERS = 64
__all__ = [
    "Forbidden",
    "Job",
    "JobSpec",
    "Limits",
    "ServiceCore",
    "ShuttingDown",
    "UnknownPolicy",
    "failed_result",
]


class ShuttingDown(EdgeGuardError):
    """The server is stopping: no new jobs (HTTP 503)."""


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
    """One request's work: texts (or conversations) under one or more policies, with the
    request's settings (the server's, overridden per request) and sampling."""

    texts: list[Item]
    policies: list[Policy]
    settings: Settings
    sampling: SamplingConfig  # settings.sampling() plus the request's top_p/top_k
    thresholds: dict[str, float] = field(default_factory=dict)  # a set's, per policy name
    policy_set: PolicySet | None = None  # run in taxonomy mode (service/openai_shape.py)


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
    """Everything a request needs besides HTTP: settings, policies, classifiers, the jobs."""

    def __init__(
        self,
        backend: Backend,
        store: Store,
        settings: Settings,
        *,
        default_policies: Sequence[str] = (),
        default_set: str | None = None,
        allow_inline: bool = False,
        limits: Limits | None = None,
        workers: int = 64,
        observer: Any = None,
    ) -> None:
        self.store = store
        if isinstance(backend, LocalBackend) and not backend.identity_known:
            backend.set_identity(store.model_identity(backend.path))  # cached file hash
        self.backend = ServiceBackend(backend)
        self.settings = settings  # every request's defaults
        self.allow_inline = allow_inline
        self.limits = limits or Limits()
        self.observer = observer  # metrics sink: .job_started/.job_done/.result(...)
        self.catalog = Catalog()
        self.default_set = default_set
        self._classifiers: OrderedDict[tuple[Any, ...], Classifier] = OrderedDict()
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
    def policy(self, name: str) -> Policy:
        """A policy by name (never a path from a request); a default set's own members
        (which its file may name by path) first."""
        if self.default_set is not None:
            for member in self.policy_set(self.default_set).policies:
                if member.name == name:
                    return member
        return self.catalog.policy(name)

    def set_names(self) -> list[str]:
        return self.catalog.set_names()

    def policy_names(self) -> list[str]:
        return sorted(self.catalog.policy_paths())

    def policy_set(self, name: str) -> PolicySet:
        return self.catalog.policy_set(name)

    def resolve(self, name: str | None) -> tuple[list[Policy], dict[str, float]]:
        """A policy or set name -> (its policies, per-policy thresholds); None -> defaults.
        A policy and a set of the same name: the policy (as `edge-guard classify -p`)."""
        if name is None or name == "":
            if self.default_set is not None:
                return self.resolve(self.default_set)
            if not self.default_policies:
                raise UnknownPolicy("no policy named and the server has no default (--policy)")
            return [self.policy(n) for n in self.default_policies], {}
        if name not in self.catalog.policy_paths() and name in self.catalog.set_paths():
            ps = self.policy_set(name)
            return ps.policies, dict(ps.thresholds)
        return [self.policy(name)], {}

    def inline_policy(self, text: str, output: dict[str, Any] | None = None) -> Policy:
        """Client-supplied policy text: only with --allow-inline-policies; built-in parser."""
        if not self.allow_inline:
            raise Forbidden("inline policies are off on this server (--allow-inline-policies)")
        return inline_policy(text, output)

    def classifier(
        self,
        policy: Policy,
        settings: Settings | None = None,
        sampling: SamplingConfig | None = None,
    ) -> Classifier:
        """The classifier for `policy` under `settings` (default: the server's), built as
        every caller builds one (`api.build_classifier`); kept for the next request."""
        from edge_guard.api import build_classifier

        settings = settings or self.settings
        sampling = sampling or settings.sampling()
        # The chat template pins today's date when none is set: a new day, a new classifier.
        today = _dt.date.today() if settings.date is None else None
        key = (policy.hash, policy.name, settings, sampling, today)
        with self._lock:
            clf = self._classifiers.get(key)
            if clf is not None:
                self._classifiers.move_to_end(key)
                return clf
        clf = build_classifier(
            policy, settings, backend=self.backend, store=self.store, sampling=sampling
        )
        with self._lock:
            self._classifiers[key] = clf
            while len(self._classifiers) > MAX_CLASSIFIERS:
                self._classifiers.popitem(last=False)
        return clf

    def preload(self) -> None:
        """Build each default policy's classifier with the server's settings (refusing at
        start what a request would be refused), load the model and evaluate each prompt
        prefix once."""
        clfs = [self.classifier(self.policy(name)) for name in self.default_policies]
        self.backend.load()
        from edge_guard.service.openai_shape import preload_taxonomy

        if clfs and preload_taxonomy(self, clfs[0]):  # one prompt for the set's policies
            return
        for clf in clfs:
            prompt = clf.renderer().render(clf.policy.text, "", clf.prompt_config)
            req = GenerationRequest(
                prompt.token_ids, SamplingConfig(max_tokens=1), prefix_len=prompt.prefix_len
            )
            for _ in self.backend.execute([req]):
                pass

    # -- jobs ----------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        if self.closing:
            raise ShuttingDown("the server is shutting down")
        spec = job.spec
        job.results = [[None] * len(spec.texts) for _ in spec.policies]
        # Build classifiers here (policy errors surface before the job is queued).
        clfs = [self.classifier(p, spec.settings, spec.sampling) for p in spec.policies]
        with self._lock:
            self._jobs.add(job)
        if self.observer is not None:
            self.observer.job_started(len(spec.texts) * len(spec.policies))
        job.future = self._pool.submit(self._run, job, clfs)
        return job

    def _run(self, job: Job, clfs: list[Classifier]) -> None:
        spec = job.spec
        lanes = clfs  # the request's sampling and cache policy are the classifiers' own
        try:
            with job_scope(job.cancel_event, _priority(spec)):
                if spec.policy_set is not None:  # taxonomy mode: service/openai_shape.py
                    from edge_guard.service.openai_shape import iter_job

                    for i, p, res in iter_job(lanes[0], spec):
                        self._record(job, p, i, res)
                        if job.cancelled:
                            break
                    return
                if job.on_event is None or len(lanes) == 1:
                    # Every (text, policy) pair in one backend call.
                    pairs = iter_pairs(lanes, spec.texts, on_event=_bind_events(job.on_event, 0))
                    for i, p, res in pairs:
                        self._record(job, p, i, res)
                        if job.cancelled:
                            break
                    return
                for p, lane in enumerate(lanes):  # streamed reasoning: one policy at a time
                    for i, res in lane.iter(spec.texts, on_event=_bind_events(job.on_event, p)):
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
        policy = job.spec.policies[p]
        res = apply_threshold(res, job.spec.thresholds.get(policy.name), policy)
        job.results[p][i] = res
        if self.observer is not None:
            self.observer.result(res)
        if job.on_result is not None:
            job.on_result(p, i, res)

    def engine_parallel(self) -> int | None:
        """Sequences the local engine decodes at once (a request's `parallel` cap)."""
        settings = getattr(self.backend.inner, "settings", None)
        n = getattr(settings, "n_parallel", None)
        return int(n) if isinstance(n, int) else None

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
        """The model as clients see it: its reference, never a file path (a path's name)."""
        b = self.backend
        return {
            "model": public_ref(b.model_ref),
            "identity": b.identity(),
            "engine": b.engine_version(),
            "backend": b.name,
        }


def public_ref(ref: str) -> str:
    """A model reference safe to show clients: a .gguf path becomes its file name."""
    if ref.startswith(("hf:", "synth:")) or not any(c in ref for c in "/\\"):
        return ref
    return ref.replace("\\", "/").rsplit("/", 1)[-1]


def _priority(spec: JobSpec) -> int:
    """One text (a person waiting on an answer): the engine admits it before batch work."""
    return INTERACTIVE if len(spec.texts) == 1 else BATCH


def _bind_events(
    cb: Callable[[int, int, Event], None] | None, p: int
) -> Callable[[int, Event], None] | None:
    return None if cb is None else (lambda i, ev: cb(p, i, ev))


def failed_result(item: Item, policy: Policy, error: str) -> ClassificationResult:
    """An undetermined result for an item that was never computed (cancelled, deadline)."""
    resp = ModelResponse.failed(error)
    res = ClassificationResult(None, None, None, {}, resp, False)
    res.text, res.policy, res.error = item_text(item), policy.name, error
    return res
