"""The command side of a warm engine: compute on the service, read the results here.

`wrap(classifier, settings)` turns a local `Classifier` (built as always, its model not
loaded) into a `WarmClassifier` when the effective keep-alive is above 0. Its `classify`
and `iter` send the texts of a call to the warm service for the classifier's model file
and engine settings (`spawn.ensure`: found, or started), which computes each label with
the same settings and stores it in the same store under the same key; then the local
classifier reads every result from the store — so results, run items and printed output
are exactly the in-process ones, and a label the service stored survives the service.

What the service cannot take goes to the local engine instead, never elsewhere: several
policies or a set, logits processors, per-text samplings, a policy with its own parse.py
the service does not have, a service that cannot start. A service that dies during a
call (killed, idle exit) is restarted once and the call goes on (stored labels are not
recomputed). `stats` counts what happened (tests, `scripts/cli_latency.py`).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from edge_guard.errors import EdgeGuardError
from edge_guard.settings.keep_alive import default_keep_alive
from edge_guard.warm import registry, spawn

if TYPE_CHECKING:
    from edge_guard.classification.classifier import Classifier

BATCH = 64  # texts per service call (the client's own batch)
stats = {"remote_calls": 0, "local_calls": 0, "restarts": 0, "local_misses": 0}


def effective_keep_alive(settings: Any) -> float:
    value = getattr(settings, "keep_alive", None)
    return default_keep_alive() if value is None else float(value)


def wrap(classifier: Classifier, settings: Any) -> Any:
    """`classifier` routed through a warm service when that applies, else unchanged."""
    keep_alive = effective_keep_alive(settings)
    if keep_alive <= 0 or settings.backend != "local" or classifier.others:
        return classifier
    if settings.db and (settings.db == ":memory:" or settings.db.startswith("file:")):
        return classifier  # a store no other process can open
    path = getattr(classifier.backend, "path", None)
    if getattr(classifier.backend, "name", "") != "local" or path is None:
        return classifier
    try:
        import fcntl  # noqa: F401  (no warm engines where there is no flock)

        spec = registry.spec_for(settings, classifier.backend.model_ref, path)
    except (ImportError, OSError, EdgeGuardError):
        return classifier
    return WarmClassifier(classifier, settings, spec, keep_alive)


class WarmClassifier:
    """A local `Classifier` (every attribute is its) whose calls compute on a service."""

    def __init__(
        self, local: Any, settings: Any, spec: registry.ServiceSpec, keep_alive: float
    ) -> None:
        self.local = local
        self.settings = settings
        self.spec = spec
        self.keep_alive = keep_alive
        self._remote: Any = None
        self.off: str | None = None  # why this classifier no longer uses the service

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    # -- the Classifier surface ---------------------------------------------------------
    def classify(self, texts: Sequence[Any], **kwargs: Any) -> list[Any]:
        out: list[Any] = [None] * len(texts)
        for i, res in self.iter(texts, **kwargs):
            out[i] = res
        return out

    def iter(
        self,
        texts: Sequence[Any],
        *,
        run_items: Sequence[Any] | None = None,
        samplings: Sequence[Any] | None = None,
        logits_processors: Any = None,
        on_event: Any = None,
    ) -> Iterator[tuple[int, Any]]:
        kwargs = {
            "run_items": run_items,
            "samplings": samplings,
            "logits_processors": logits_processors,
            "on_event": on_event,
        }
        if not self._servable(texts, run_items, samplings, logits_processors):
            stats["local_calls"] += 1
            yield from self.local.iter(texts, **kwargs)
            return
        reader = copy.copy(self.local)
        reader.use_cache = True  # the service computed (and, with --no-cache, overwrote)
        for start in range(0, len(texts), BATCH):
            chunk = list(texts[start : start + BATCH])
            sampling = samplings[start : start + BATCH] if samplings else None
            items = run_items[start : start + BATCH] if run_items is not None else None
            todo = self._misses(chunk, sampling)
            got: dict[int, Any] | None = {}
            if todo:  # stored labels need no service (and start none)
                got = self._compute(
                    [chunk[i] for i in todo], _pick(sampling, todo), _offset(on_event, start, todo)
                )
            if got is None:  # the service is out of reach: this chunk and the rest here
                stats["local_calls"] += 1
                rest = {
                    k: (v[start:] if k in ("run_items", "samplings") and v else v)
                    for k, v in kwargs.items()
                }
                for i, res in self.local.iter(list(texts[start:]), **rest):
                    yield start + i, res
                return
            got = {todo[j]: res for j, res in got.items()}
            yield from self._read(reader, chunk, got, sampling, items, start)

    # -- the parts ----------------------------------------------------------------------
    def _servable(
        self, texts: Sequence[Any], run_items: Any, samplings: Any, processors: Any
    ) -> bool:
        if self.off is not None or processors is not None or isinstance(run_items, dict):
            return False
        if samplings and any(s != samplings[0] for s in samplings):
            return False
        from edge_guard.conversation import Conversation

        return bool(texts) and all(isinstance(t, str | Conversation) for t in texts)

    def _misses(self, chunk: list[Any], samplings: Any) -> list[int]:
        """Indexes of `chunk` whose label is not stored yet (all of them for a cascade,
        whose stages the service decides, or without the cache)."""
        local = self.local
        if not local.use_cache or local.cascade is not None:
            return list(range(len(chunk)))
        out = []
        for i, text in enumerate(chunk):
            try:
                row = local.store.get(local.key(text, samplings[i] if samplings else None))
            except EdgeGuardError:  # an unusable text: the service answers it as it should
                row = None
            if row is None or row.get("error"):
                out.append(i)
        return out

    def _compute(self, chunk: list[Any], samplings: Any, on_event: Any) -> dict[int, Any] | None:
        """Have the service compute (and store) `chunk`: {index: its result}, or None when
        no service can be had (then `self.off` says why)."""
        import httpx

        for attempt in (0, 1):
            remote = self._service()
            if remote is None:
                return None
            try:
                got = dict(remote.iter(chunk, samplings=samplings, on_event=on_event))
                stats["remote_calls"] += 1
                return got
            except (httpx.TransportError, EdgeGuardError) as exc:
                if not self._gone(exc) or attempt:
                    if isinstance(exc, httpx.TransportError):
                        self._disable(f"the warm engine failed: {exc}")
                        return None
                    raise
                stats["restarts"] += 1
                self._remote = None  # died (killed, idle exit): the next one takes over
        return None

    def _gone(self, exc: Exception) -> bool:
        """True when the service is no longer there to answer (so a restart may help)."""
        import httpx

        if isinstance(exc, httpx.TransportError):
            return True
        record = registry.read_record(registry.paths_for(self.spec.key).record)
        return "HTTP 503" in str(exc) and (record is None or spawn.status(record) is None)

    def _read(
        self,
        reader: Any,
        chunk: list[Any],
        got: dict[int, Any],
        samplings: Any,
        items: Any,
        start: int,
    ) -> Iterator[tuple[int, Any]]:
        """The chunk's results as the local classifier reads them from the store (those
        the service answered with an error: its result, or with run items, computed here)."""
        ok = [i for i in range(len(chunk)) if i not in got or not got[i].error]
        for j, res in reader.iter(
            [chunk[i] for i in ok], run_items=_pick(items, ok), samplings=_pick(samplings, ok)
        ):
            i = ok[j]
            if not res.cached:  # not in the store after all: computed here (a key mismatch)
                stats["local_misses"] += 1
            if i in got:
                res.cached = got[i].cached
            yield start + i, res
        bad = [i for i in range(len(chunk)) if i not in set(ok)]
        if bad and items is None:
            for i in bad:
                yield start + i, got[i]
        elif bad:
            stats["local_calls"] += 1
            for j, res in self.local.iter(
                [chunk[i] for i in bad],
                run_items=_pick(items, bad),
                samplings=_pick(samplings, bad),
            ):
                yield start + bad[j], res

    def _service(self) -> Any:
        """The `RemoteClassifier` on this classifier's service, started if need be."""
        if self._remote is not None or self.off is not None:
            return self._remote
        from edge_guard.backends.server_client import RemoteClassifier

        try:
            record = spawn.ensure(self.spec, self.settings, self.keep_alive)
        except spawn.WarmStartFailed as exc:
            self._disable(str(exc))
            return None
        s, local = self.settings, self.local
        try:
            self._remote = RemoteClassifier(
                local.policy,
                "http://localhost",
                style=s.style,
                effort=s.effort,
                date=s.date,
                reasoning=s.reasoning,
                cascade=s.cascade,
                truncate=s.truncate,
                parallel=s.parallel,
                sampling=local.sampling,
                use_cache=local.use_cache,
                timeout=None,  # type: ignore[arg-type]  # a long batch is not a dead service
                http=spawn.http_client(str(record["socket"])),
            )
        except EdgeGuardError as exc:  # e.g. a parse.py the service does not have
            self._disable(str(exc), quiet=True)
        return self._remote

    def _disable(self, why: str, *, quiet: bool = False) -> None:
        self.off = why
        self._remote = None
        if not quiet and sys.stderr.isatty():
            from edge_guard.sanitize import term

            print(f"note: {term(why)}; classifying in this process", file=sys.stderr)


def _pick(values: Sequence[Any] | None, idxs: list[int]) -> list[Any] | None:
    return None if values is None else [values[i] for i in idxs]


def _offset(on_event: Any, start: int, idxs: list[int]) -> Any:
    """`on_event` for a service call on `idxs` of the chunk that starts at `start`."""
    if on_event is None:
        return None
    return lambda i, event: on_event(start + idxs[i], event)
