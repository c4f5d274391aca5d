"""The command side of a warm engine: compute on the service, read the results here.

`wrap(classifier, settings)` turns a local `Classifier` (built as always, its model not
loaded) into a `WarmClassifier` when the effective keep-alive is above 0. Its `classify`
and `iter` send the texts of a call to the warm service for the classifier's model file
and engine settings (`spawn.ensure`: found, or started), which computes each label with
the same settings and stores it in the same store under the same key; the local
classifier then reads each result from the store as the service streams it — so results,
run items and printed output are exactly the in-process ones, and a label the service
stored survives the service. A policy set (`runs.multi.classify_pairs` hands its pairs to
`iter_set`) goes by its name when the service has the same set: one request runs every
(text, policy) pair in one engine call, as in-process, and the set's thresholds are
applied here as in-process. Several policies given one by one have no name the service
knows; `lanes` sends each one's texts on its own (as `policies test` runs them).

What the service cannot take goes to the local engine instead, never elsewhere: several
policies at once without a set name, a set in combined mode or one the service has
otherwise, logits processors (steering), per-text samplings, a policy with its own
parse.py the service does not have, a service that cannot start. A service that dies
during a call (killed, idle exit) is restarted once and the call goes on (stored labels
are not recomputed). `cancel_with(cancel)` (the TUI) hangs up the requests in flight
when the cancel is set, and the service cancels their engine work. `stats` counts what
happened (tests, `scripts/cli_latency.py`).
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from edge_guard.errors import EdgeGuardError
from edge_guard.settings.keep_alive import default_keep_alive
from edge_guard.warm import calls, registry, spawn
from edge_guard.warm.calls import Cancel, stats

if TYPE_CHECKING:
    from edge_guard.classification.classifier import Classifier

BATCH = 64  # texts per service call (the client's own batch)
__all__ = ["BATCH", "Cancel", "WarmClassifier", "stats", "wrap"]
# read(pair positions, here) -> (position, result): read from the store, or (here) computed
# in this process
Read = Callable[[list[int], bool], Iterator[tuple[int, Any]]]


def effective_keep_alive(settings: Any) -> float:
    value = getattr(settings, "keep_alive", None)
    return default_keep_alive() if value is None else float(value)


def wrap(classifier: Classifier, settings: Any) -> Any:
    """`classifier` routed through a warm service when that applies, else unchanged."""
    keep_alive = effective_keep_alive(settings)
    if keep_alive <= 0 or settings.backend != "local":
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
    if os.path.realpath(classifier.store.path) != spec.db:
        return classifier  # the service would store where this classifier does not read
    return WarmClassifier(classifier, settings, spec, keep_alive)


class WarmClassifier:
    """A local `Classifier` (every attribute is its) whose calls compute on a service."""

    def __init__(
        self, local: Classifier, settings: Any, spec: registry.ServiceSpec, keep_alive: float
    ) -> None:
        self.local = local
        self.settings = settings
        self.spec = spec
        self.keep_alive = keep_alive
        self.off: str | None = None  # why this classifier no longer uses the service
        self.cancel: Cancel | None = None
        self.hangup = calls.Hangup()
        self._lock = threading.Lock()
        self._http: Any = None
        self.calls = [calls.ServiceCall(self, lane.alone()) for lane in local.lanes]

    def __getattr__(self, name: str) -> Any:
        if name == "local":  # not set yet (a copy being made): never recurse
            raise AttributeError(name)
        return getattr(self.local, name)

    # -- the Classifier surface ---------------------------------------------------------
    @property
    def lanes(self) -> list[Any]:
        """One single-policy classifier per policy, each on the service too."""
        return [self] if len(self.calls) == 1 else [self._view(c.local) for c in self.calls]

    def alone(self) -> Any:
        return self if len(self.calls) == 1 else self._view(self.local.alone())

    def _view(self, local: Classifier) -> WarmClassifier:
        view = WarmClassifier(local, self.settings, self.spec, self.keep_alive)
        view.off = self.off
        if self.cancel is not None:
            view.cancel_with(self.cancel)
        return view

    def use_backend(self, backend: Any) -> None:
        """Compute with `backend` whatever runs in this process (the TUI's cancellable
        wrapper of the local engine), for every policy."""
        for lane in [self.local, *self.local.others, *(c.local for c in self.calls)]:
            lane.backend = backend

    def cancel_with(self, cancel: Cancel) -> None:
        """When `cancel` is set (any thread), hang up this classifier's requests: the
        service cancels their engine work, the call raises `cancel.check()`'s exception."""
        self.cancel = cancel
        cancel.on_set(partial(self.hangup.hang_up, for_good=True))

    def classify(self, texts: Sequence[Any], **kwargs: Any) -> list[Any]:
        if len(self.calls) > 1:  # one MultiResult per text: no set name, this process
            stats["local_calls"] += 1
            return self.local.classify(texts, **kwargs)
        out: list[Any] = [None] * len(texts)
        for i, res in self.iter(texts, **kwargs):
            out[i] = res
        return out

    def iter(
        self,
        texts: Sequence[Any],
        *,
        run_items: Any = None,
        samplings: Sequence[Any] | None = None,
        logits_processors: Any = None,
        on_event: Any = None,
    ) -> Iterator[tuple[int, Any]]:
        """(text index, result) as results come: stored ones first, then each as the
        service answers it."""
        local = self.local
        if (
            len(self.calls) > 1
            or isinstance(run_items, dict)
            or not self._servable(texts, samplings, logits_processors)
        ):
            stats["local_calls"] += 1
            yield from local.iter(
                texts,
                run_items=run_items,
                samplings=samplings,
                logits_processors=logits_processors,
                on_event=on_event,
            )
            return
        reader = self._reader(local)

        def read(js: list[int], here: bool) -> Iterator[tuple[int, Any]]:
            for k, res in (local if here else reader).iter(
                [texts[i] for i in js],
                run_items=[run_items[i] for i in js] if run_items is not None else None,
                samplings=[samplings[i] for i in js] if samplings else None,
                on_event=_shift(on_event, js) if here else None,
            ):
                yield js[k], res

        def raw(i: int, res: Any) -> Any:  # the service's own answer when no run item needs it
            return res if run_items is None else None

        pairs = [(i, 0) for i in range(len(texts))]
        yield from self._pairs(texts, pairs, [local], self.calls[0], samplings, on_event, read, raw)

    def iter_set(
        self,
        fn: Callable[..., Iterator[tuple[int, Any]]],
        pset: Any,
        texts: Sequence[Any],
        pairs: Sequence[tuple[int, int]],
        *,
        mode: str,
        items: Sequence[Any] | None = None,
        steer: Any = None,
        samplings: Sequence[Any] | None = None,
        on_event: Any = None,
    ) -> Iterator[tuple[int, Any]]:
        """`runs.multi.classify_pairs` on this classifier: `fn` (its separate or combined
        step) over (text idx, member idx) `pairs`. In separate mode, a named set the
        service has as it is here is computed there by its name and each pair read here
        through `fn` (the set's thresholds applied as in-process); anything else here."""
        lanes = [c.local for c in self.calls]
        if (
            mode != "separate"
            or steer is not None
            or on_event is not None  # streamed, a set's policies would run one by one there
            or pset.adhoc
            or [lane.policy.hash for lane in lanes] != [p.hash for p in pset.policies]
            or not self._servable(texts, samplings, None)
        ):
            stats["local_calls"] += 1
            yield from fn(self.local, pset, texts, pairs, items, steer, samplings, on_event)
            return
        reader = self._reader(self.local)

        def read(js: list[int], here: bool) -> Iterator[tuple[int, Any]]:
            its = [items[j] for j in js] if items is not None else None
            sub = [pairs[j] for j in js]
            base, events = (self.local, on_event) if here else (reader, None)
            for k, res in fn(base, pset, texts, sub, its, None, samplings, events):
                yield js[k], res

        def raw(j: int, res: Any) -> Any:
            if items is not None:
                return None
            from edge_guard.policy.thresholds import apply_threshold

            member = pset.members[pairs[j][1]]
            return apply_threshold(res, member.threshold, member.policy)

        call = calls.ServiceCall(self, self.local, pset)
        yield from self._pairs(texts, pairs, lanes, call, samplings, on_event, read, raw)

    # -- the parts ----------------------------------------------------------------------
    def _pairs(
        self,
        texts: Sequence[Any],
        pairs: Sequence[tuple[int, int]],
        lanes: Sequence[Classifier],
        call: calls.ServiceCall,
        samplings: Sequence[Any] | None,
        on_event: Any,
        read: Read,
        raw: Callable[[int, Any], Any],
    ) -> Iterator[tuple[int, Any]]:
        """(position in `pairs`, result) for each (text idx, policy idx) pair, by batches
        of BATCH texts: stored ones read first, the texts of the others sent to the
        service by `call` and each pair read as it is answered; without a service, `read`
        here. `lanes[p]` is policy p's own classifier."""
        sampling = samplings[0] if samplings else None
        names = [lane.policy.name for lane in lanes]
        chunks = _chunks(pairs)
        for c, chunk in enumerate(chunks):
            self.check_cancel()
            stored, todo = [], {}
            for j in chunk:
                t, p = pairs[j]
                if calls.stored(lanes[p], texts[t], sampling):
                    stored.append(j)
                else:
                    todo[(t, names[p])] = j
            yield from read(stored, False)  # stored labels need no service (and start none)
            sent = list(dict.fromkeys(t for t, _name in todo))
            if not sent:
                continue
            answered: dict[int, Any] = {}  # position -> the service's result
            for k, res in call.results([texts[t] for t in sent], sampling, _shift(on_event, sent)):
                pos = todo.get((sent[k], names[0] if len(names) == 1 else res.policy))
                if pos is None or pos in answered:  # a pair stored already (a set answers all)
                    continue
                answered[pos] = res
                mine = raw(pos, res) if res.error else None
                if mine is not None:
                    mine.policy = names[pairs[pos][1]]
                    yield pos, mine
                elif call.streamed:  # each as it comes
                    yield from _read_back(read, [pos], answered)
            if not call.streamed:
                yield from _read_back(
                    read, [j for j in answered if not answered[j].error], answered
                )
            if call.unanswered:  # no service (or not this set): the rest in this process
                stats["local_calls"] += 1
                left = {sent[k] for k in call.unanswered}
                rest = [j for j in todo.values() if pairs[j][0] in left]
                rest += [j for later in chunks[c + 1 :] for j in later]
                yield from read(sorted(rest), True)
                return
            missing = [j for j in todo.values() if j not in answered]
            yield from _read_back(read, missing, answered)  # never answered: read (or computed)

    def _servable(self, texts: Sequence[Any], samplings: Any, processors: Any) -> bool:
        if self.off is not None or processors is not None:
            return False
        if samplings and any(s != samplings[0] for s in samplings):
            return False
        from edge_guard.conversation import Conversation

        return bool(texts) and all(isinstance(t, str | Conversation) for t in texts)

    def _reader(self, local: Classifier) -> Classifier:
        """`local` reading the store whatever its cache policy (the service computed, and
        with --no-cache overwrote, each label), every policy of it."""
        reader = copy.copy(local)
        reader.use_cache = True
        if getattr(reader, "others", None):
            reader.others = [self._reader(o) for o in reader.others]
        return reader

    # -- the service ----------------------------------------------------------------------
    def service_http(self) -> Any:
        """The http client on this classifier's service, started if need be; None when
        none can be had (then `self.off` says why)."""
        with self._lock:
            if self.off is not None:
                return None
            if self._http is None:
                try:
                    record = spawn.ensure(self.spec, self.settings, self.keep_alive)
                except spawn.WarmStartFailed as exc:
                    self.disable(str(exc))
                    return None
                self._http = calls.client(str(record["socket"]), self.hangup)
                weakref.finalize(self, self._http.close)
            return self._http

    def lost(self, http: Any) -> None:
        """`http`'s service is gone: the next call finds or starts another."""
        with self._lock:
            if http is not None and self._http is http:
                self._http = None
                http.close()

    def gone(self, exc: Exception) -> bool:
        """True when the service is no longer there to answer (so a restart may help)."""
        import httpx

        if isinstance(exc, httpx.TransportError):
            return True
        record = registry.read_record(registry.paths_for(self.spec.key).record)
        return "HTTP 503" in str(exc) and (record is None or spawn.status(record) is None)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set:
            self.cancel.check()

    def disable(self, why: str, *, quiet: bool = False) -> None:
        note = self.off is None and not quiet
        self.off = why
        if note and sys.stderr.isatty():
            from edge_guard.sanitize import term

            print(f"note: {term(why)}; classifying in this process", file=sys.stderr)


def _read_back(read: Read, js: list[int], answered: dict[int, Any]) -> Iterator[tuple[int, Any]]:
    """The pairs `js` read from the store, marked cached as the service said."""
    if not js:
        return
    for j, out in read(js, False):
        if not out.cached:  # not in the store after all: computed here
            stats["local_misses"] += 1
        if j in answered:
            out.cached = answered[j].cached
        yield j, out


def _chunks(pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Positions of `pairs`, by runs of at most BATCH distinct texts (in text order)."""
    texts = sorted({t for t, _p in pairs})
    batch = {t: k // BATCH for k, t in enumerate(texts)}
    out: list[list[int]] = [[] for _ in range((len(texts) + BATCH - 1) // BATCH)]
    for j, (t, _p) in enumerate(pairs):
        out[batch[t]].append(j)
    return out


def _shift(on_event: Any, idxs: Sequence[int]) -> Any:
    """`on_event` for a call on `idxs` (its index k is idxs[k])."""
    if on_event is None:
        return None
    return lambda k, event: on_event(idxs[k], event)
