"""The one backend every service classifier shares, with per-job cancellation.

`ServiceBackend` wraps the real backend. Its `execute()` reads the calling job's cancel
event and priority (set by `job_scope` on the job's worker thread: each execute call is
one job for the engine's round-robin admission, a one-text request an interactive one)
and, once the event is set, closes the
backend's generator, which cancels that job's queued and in-flight sequences; results
already yielded were stored by the classifier. Many jobs call `execute()` at once and the
engine batches them (a backend that is not thread-safe is serialized here instead).
"""

from __future__ import annotations

import queue
import threading
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from edge_guard.engine.engine import GenerationRequest
from edge_guard.response import ModelResponse

_local = threading.local()
CANCEL_POLL_S = 0.1


class CancelledJob(Exception):
    """Raised inside a job's thread when its cancel event is set."""


@contextmanager
def job_scope(cancel: threading.Event, priority: int | None = None) -> Iterator[None]:
    """Mark the current thread as running a job that `cancel` can stop, admitted at
    `priority` (the engine's INTERACTIVE for a one-text request; default BATCH)."""
    _local.cancel, _local.priority = cancel, priority
    try:
        yield
    finally:
        _local.cancel = _local.priority = None


def current_cancel() -> threading.Event | None:
    return getattr(_local, "cancel", None)


def current_priority() -> int | None:
    return getattr(_local, "priority", None)


def _thread_safe(backend: Any) -> bool:
    """Backends that batch concurrent callers themselves (the engine loop, HTTP servers)."""
    if getattr(backend, "thread_safe", False) or getattr(backend, "name", "") == "server":
        return True
    try:
        import edge_guard.engine.loop  # noqa: F401
    except ImportError:
        return False
    return True


class ServiceBackend:
    """Delegates to `inner`; adds cancellation, a cached vocabulary and a load() call.

    The classifier reads what the wrapped backend offers, exactly as it would unwrapped:
    its numerics class (so the server's store keys are the CLI's for the same settings)
    and its context size (for --truncate / "truncate").
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_ref = inner.model_ref
        self._vocab: Any = None
        self._serial = None if _thread_safe(inner) else threading.Lock()
        if callable(getattr(inner, "numerics", None)):  # absent stays absent (same key)
            self.numerics = inner.numerics

    def info(self) -> Any:
        """What `Classifier.context_size` reads from a non-local backend: `n_ctx`."""
        info = getattr(self.inner, "info", None)
        if callable(info):
            return info()
        return types.SimpleNamespace(n_ctx=self.context_size())

    def identity(self) -> str:
        return str(self.inner.identity())

    def engine_version(self) -> str:
        return str(self.inner.engine_version())

    def vocab(self) -> Any:
        if self._vocab is None:
            self._vocab = self.inner.vocab()
        return self._vocab

    def load(self) -> None:
        """Load the model now (the first request would otherwise pay for it)."""
        engine = getattr(self.inner, "engine", None)
        if callable(engine):
            engine()

    def context_size(self) -> int | None:
        path = getattr(self.inner, "path", None)
        settings = getattr(self.inner, "settings", None)
        if path is None or settings is None:
            return None
        from edge_guard.gguf.check import check_model_file

        train = check_model_file(path).arch_key("context_length") or 0
        n = settings.n_ctx
        return (min(n, train) if train else n) if n > 0 else (train or None)

    def execute(
        self, requests: Sequence[GenerationRequest], n_parallel: int | None = None
    ) -> Iterator[tuple[int, ModelResponse]]:
        cancel = current_cancel()
        if self._serial is not None:
            with self._serial:
                yield from self._run(requests, n_parallel, cancel)
        else:
            yield from self._run(requests, n_parallel, cancel)

    def _run(
        self,
        requests: Sequence[GenerationRequest],
        n_parallel: int | None,
        cancel: threading.Event | None,
    ) -> Iterator[tuple[int, ModelResponse]]:
        if cancel is not None and cancel.is_set():
            raise CancelledJob
        loop = self._engine_loop()
        if loop is not None and cancel is not None:
            yield from self._run_handles(loop, requests, n_parallel, cancel)
            return
        gen = self.inner.execute(requests, n_parallel=n_parallel)
        try:
            for item in gen:
                yield item
                if cancel is not None and cancel.is_set():
                    raise CancelledJob
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()

    def _engine_loop(self) -> Any:
        """The local engine's loop (submit/Handle), when the backend has one."""
        engine = getattr(self.inner, "engine", None)
        if not callable(engine) or getattr(self.inner, "name", "") != "local":
            return None
        return getattr(engine(), "loop", None)

    def _run_handles(
        self,
        loop: Any,
        requests: Sequence[GenerationRequest],
        n_parallel: int | None,
        cancel: threading.Event,
    ) -> Iterator[tuple[int, ModelResponse]]:
        """Like the engine's generate_many, but a set cancel event stops the wait at once
        (not at the next completed text) and cancels this job's queued and running requests."""
        from edge_guard.engine.loop import Group
        from edge_guard.engine.prefix_state import shared_prefix

        n = loop.engine.n_parallel
        width = max(1, min(n_parallel or n, n))
        priority = current_priority()
        group = Group(width) if priority is None else Group(width, priority)
        hintless = [r.prompt_ids for r in requests if r.prefix_len is None and r.prompt_ids]
        if len(hintless) > 1:  # as the engine's generate_many: the same cells, the same logits
            group.shared = shared_prefix(
                hintless, [None] * len(hintless), enabled=loop.engine.prefix_cache
            )
        sink: queue.Queue[tuple[int, ModelResponse]] = queue.Queue()
        handles = [loop.submit(r, group=group, index=i, sink=sink) for i, r in enumerate(requests)]
        try:
            for _ in range(len(handles)):
                while True:
                    if cancel.is_set():
                        raise CancelledJob
                    try:
                        item = sink.get(timeout=CANCEL_POLL_S)
                        break
                    except queue.Empty:
                        continue
                yield item
        finally:
            for h in handles:
                if not h.done():
                    h.cancel()

    def close(self) -> None:
        self.inner.close()
