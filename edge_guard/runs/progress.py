"""A run's progress while it executes (items done, new, cached, rates), its final summary,
and the run status around execution (done, interrupted, failed)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from edge_guard.result import ClassificationResult
from edge_guard.store import Store


@dataclass
class RunProgress:
    done: int
    total: int
    new: int = 0
    cached: int = 0
    output_tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def labels_per_s(self) -> float:
        return self.new / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.elapsed if self.elapsed > 0 else 0.0

    def count(self, result: ClassificationResult) -> None:
        """One more item done: from the cache, or new (with its output tokens)."""
        self.done += 1
        if result.cached:
            self.cached += 1
        else:
            self.new += 1
            resp = result.model_response
            self.output_tokens += resp.timings.output_tokens if resp else 0

    def summary(self, name: str, n_items: int) -> RunSummary:
        return RunSummary(
            name,
            "done",
            n_items,
            self.done,
            self.new,
            self.cached,
            round(self.elapsed, 3),
            self.labels_per_s,
            self.tokens_per_s,
            self.output_tokens,
        )


@contextlib.contextmanager
def run_status(store: Store, name: str, notes: dict[str, Any]) -> Iterator[None]:
    """Marks run `name` interrupted or failed if the body raises, else done."""
    try:
        yield
    except KeyboardInterrupt:
        store.set_run_status(name, "interrupted")
        raise
    except BaseException as exc:
        store.set_run_status(name, "failed", notes={**notes, "error": str(exc)[:500]})
        raise
    store.set_run_status(name, "done")


@dataclass
class RunSummary:
    name: str
    status: str
    n_items: int
    n_done: int
    n_new: int
    n_cached: int
    elapsed_s: float
    labels_per_s: float
    tokens_per_s: float
    output_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
