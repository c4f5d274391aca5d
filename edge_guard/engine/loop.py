"""The engine loop: one thread owns the llama.cpp context; any thread submits requests.

`EngineLoop.submit(request)` may be called from any thread (an asyncio task uses
`Handle.wait_async`) and returns a `Handle` that streams the request's events, gives its
final `ModelResponse` and can be cancelled. A single decode thread, started when work
arrives and gone when there is none, runs continuous batching across every caller
(`step`): each step decodes one token for every generating sequence plus prompt chunks
for new ones; a finished or cancelled sequence frees its slot for the next waiting
request. Waiting requests are admitted job by job, round-robin (`admission`).

Admission accounts for every KV cell: resident prefixes (`prefixes.PrefixCache`) plus,
for each running sequence, its own prompt suffix and its generation budget. A request
joins when a slot is free, its group (`generate_many` call) is under its width, its
prefix is or can be made resident, and its cells fit — or when nothing else runs.

A bad request fails alone: a request is checked at submit (`GenerationRequest.problem`),
and whatever raises while admitting, starting, decoding, scoring, finishing or calling
back for one request fails that request, returns its slot and its prefix reference, and
the loop goes on serving the others (a failed decode of several sequences is retried one
sequence at a time). A fault of the loop itself fails the requests it was working on,
restores the loop's bookkeeping from the running sequences, and the loop goes on. Each
pass of the loop either makes progress or ends the thread: it never spins.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from edge_guard.engine import llama_runtime as rt
from edge_guard.engine.admission import WaitingJobs, over_share
from edge_guard.engine.handles import BATCH, CANCELLED, Group, Handle
from edge_guard.engine.sampling import Sampler
from edge_guard.engine.slots import GenerationRequest, Slot, blame
from edge_guard.engine.step import Stepper
from edge_guard.harmony.parse import HarmonyStreamParser
from edge_guard.response import ModelResponse

if TYPE_CHECKING:
    from edge_guard.engine.engine import Engine

__all__ = ["EngineLoop", "Group", "Handle"]

log = logging.getLogger("edge_guard.engine")
ADMITTED, SKIP, BLOCK = "admitted", "skip", "block"
STUCK = "internal error: the engine could not admit this request"


class EngineLoop(Stepper):
    """Schedules every request of one `Engine` through one continuous batch."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cv = threading.Condition()
        self._incoming: list[Handle] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._reap = False  # a cancel arrived: look for cancelled requests
        self._open: set[Handle] = set()  # submitted, maybe not complete (`has_requests`)
        self._prune_at = 64
        # Owned by the loop thread (under engine.lock):
        self._queue = WaitingJobs()
        self.slots: dict[int, Slot] = {}
        self._free = self._all_seq_ids()
        self._touched: list[Handle] = []  # what the loop is working on (a fault fails these)
        self.faults = 0  # faults of the loop itself, recovered from

    # -- any thread -------------------------------------------------------------------------
    def submit(
        self,
        request: GenerationRequest,
        *,
        group: Group | None = None,
        index: int = 0,
        sink: queue.Queue[tuple[int, ModelResponse]] | None = None,
        stream: bool = False,
        priority: int = BATCH,
    ) -> Handle:
        """Queue `request` (part of `group`'s job, else a job of its own at `priority`)."""
        eng = self.engine
        handle = Handle(
            self, request, group or Group(eng.n_parallel, priority), index, sink, stream
        )
        problem = self._problem(handle)
        if problem is not None:
            handle.complete(ModelResponse.failed(problem, _ids(request), eng.model_path))
            return handle
        with self._cv:
            if self._closed:
                handle.complete(
                    ModelResponse.failed("the engine is closed", request.prompt_ids, eng.model_path)
                )
                return handle
            if len(self._open) > self._prune_at:
                self._open = {h for h in self._open if not h.done()}
                self._prune_at = max(64, 2 * len(self._open))
            self._open.add(handle)
            self._incoming.append(handle)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="edge-guard-engine", daemon=True
                )
                self._thread.start()
            self._cv.notify_all()
        return handle

    def wake(self) -> None:
        """A handle was cancelled: the loop looks for cancelled requests on its next pass."""
        with self._cv:
            self._reap = True
            self._cv.notify_all()

    def close(self) -> None:
        """Cancel everything and wait for the loop thread to end."""
        with self._cv:
            self._closed = True
            self._reap = True
            for h in self._incoming:
                h.cancelled = True
            thread = self._thread
            self._cv.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._thread is not None

    @property
    def has_requests(self) -> bool:
        """Whether a request is waiting or running (`busy` may outlive the last one)."""
        with self._cv:
            self._open = {h for h in self._open if not h.done()}
            return bool(self._open)

    def _problem(self, h: Handle) -> str | None:
        eng = self.engine
        g = h.group
        if isinstance(g.width, bool) or not isinstance(g.width, int) or g.width < 1:
            return f"a group's width must be an integer >= 1, got {g.width!r}"
        if isinstance(g.priority, bool) or not isinstance(g.priority, int):
            return f"priority must be an integer, got {g.priority!r}"
        req = h.request
        if not isinstance(req, GenerationRequest):
            return "not a GenerationRequest"
        try:
            return req.problem(eng.n_ctx, eng.n_vocab, eng.n_batch)
        except Exception as exc:  # a malformed request: it fails here, never in the loop
            return f"invalid request: {type(exc).__name__}: {exc}"

    # -- the loop thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                try:
                    self._serve()
                    return
                except BaseException as exc:  # a fault of the loop itself: restart
                    self._recover(exc)
        finally:
            with self._cv:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _serve(self) -> None:
        """Admit and decode until there is nothing left to do."""
        eng = self.engine
        while True:
            with self._cv:
                incoming, self._incoming = self._incoming, []
                reap, self._reap = self._reap, False
                closed = self._closed
                if not incoming and not self._queue and not self.slots:
                    self._thread = None
                    return
            with eng.lock:
                self._touched = incoming
                for h in incoming:
                    self._queue.add(h)
                self._touched = []
                if eng.closed:
                    self._fail_all("the engine is closed")
                    continue
                if closed:
                    for h in [*self._queue.handles(), *(s.handle for s in self.slots.values())]:
                        h.cancelled = True
                if reap or closed:
                    self._reap_cancelled()
                admitted = self._admit()
                if self.slots:
                    self._step()
                elif self._queue and not admitted:
                    self._unstick()
                self._touched = []

    def _recover(self, exc: BaseException) -> None:
        """Fail the requests a fault of the loop touched (all when it touched none still
        open), release the sequences it left finished, and restore the bookkeeping."""
        self.faults += 1
        error = f"internal error in the engine loop: {type(exc).__name__}: {exc}"
        log.error("%s (recovered)", error, exc_info=exc)
        touched, self._touched = self._touched, []
        with self.engine.lock:
            open_ = [h for h in touched if not h.done()]
            if not open_:
                with self._cv:
                    incoming, self._incoming = self._incoming, []
                open_ = [
                    *incoming,
                    *self._queue.handles(),
                    *(s.handle for s in self.slots.values()),
                ]
            for h in open_:
                _quietly(self._fail, h, error)
            for slot in [s for s in self.slots.values() if s.done]:
                _quietly(self._release, slot.seq_id)
            self._reconcile()

    def _all_seq_ids(self) -> list[int]:
        first = self.engine.max_prefixes
        return list(range(first + self.engine.n_parallel - 1, first - 1, -1))

    def _reconcile(self) -> None:
        """Free slots, prefix users and group counts recomputed from the running sequences."""
        eng = self.engine
        running = list(self.slots.values())
        self._free = [s for s in self._all_seq_ids() if s not in self.slots]
        if eng.memory is not None:
            for seq_id in self._free:
                rt.seq_rm(eng.memory, seq_id)
        for r in eng.prefixes.residents:
            r.users = sum(1 for s in running if s.resident is r)
        for g in {
            id(g): g for g in [*self._queue.jobs(), *(s.handle.group for s in running)]
        }.values():
            g.active = sum(1 for s in running if s.handle.group is g)

    def _unstick(self) -> None:
        """Requests wait, nothing runs and none could be admitted: only lost bookkeeping
        does that. Restore it and try again; requests still refused fail (no spinning)."""
        self._reconcile()
        if self._admit() or self.slots:
            return
        for h in self._queue.handles():
            self._fail(h, STUCK)

    def _fail(self, h: Handle, error: str) -> None:
        """End `h` with `error` wherever it is: running, waiting or between the two."""
        slot = self.slots.get(h.seq_id) if h.seq_id is not None else None
        if slot is not None and slot.handle is h:
            self._release(h.seq_id, error)
            return
        self._queue.remove(h)
        h.complete(ModelResponse.failed(error, h.request.prompt_ids, self.engine.model_path))

    def _fail_all(self, error: str) -> None:
        with self._cv:
            incoming, self._incoming = self._incoming, []
        for h in incoming:
            self._queue.add(h)
        for seq_id in list(self.slots):
            self._release(seq_id, error)
        for h in self._queue.handles():
            self._fail(h, error)

    def _reap_cancelled(self) -> None:
        for h in [h for h in self._queue.handles() if h.cancelled]:
            self._touched = [h]
            self._fail(h, CANCELLED)
        for seq_id, slot in list(self.slots.items()):
            if slot.handle.cancelled:
                self._touched = [slot.handle]
                self._release(seq_id, CANCELLED)
        self._touched = []

    def _release(self, seq_id: int, error: str | None = None) -> None:
        """End a running sequence: free its slot, cells and prefix reference; complete its
        handle (a response that cannot be built becomes an internal error)."""
        slot = self.slots.pop(seq_id, None)
        if slot is None:
            return
        h = slot.handle
        h.seq_id = None
        self._free.append(seq_id)
        h.group.active -= 1
        if slot.resident is not None:
            slot.resident.users -= 1
        rt.seq_rm(self.engine.memory, seq_id)
        if error is not None:
            slot.error = error
        try:
            response = self.engine.decoder.finish(slot)
        except Exception as exc:
            response = ModelResponse.failed(
                blame(h, exc), slot.request.prompt_ids, self.engine.model_path
            )
        h.complete(response)

    def prefix_of(self, req: GenerationRequest, shared: list[int] | None = None) -> list[int]:
        """The leading ids of `req` held in a resident prefix (`shared`: its group's)."""
        if not self.engine.prefix_cache:
            return []
        ids = req.prompt_ids
        n = (len(ids) if req.continue_at is None else req.continue_at) - 1
        if req.prefix_len is not None:
            return list(ids[: max(0, min(n, req.prefix_len))])
        if shared is not None:
            return list(shared[:n])
        return list(ids[:n])

    def _admit(self) -> int:
        """Admit waiting requests, job by job, while slots are free; how many left the queue
        (admitted, or failed alone while being admitted)."""
        moved = 0
        n_slots = self.engine.n_parallel
        while self._free and self._queue:
            outcome = SKIP
            jobs = self._queue.order()
            active = len({id(g) for g in jobs} | {id(s.handle.group) for s in self.slots.values()})
            for g in jobs:
                if g.active >= g.width or over_share(g, n_slots, len(self._free), active):
                    continue
                for h in g.waiting:
                    self._touched = [h]
                    try:
                        outcome = self._try_admit(h)
                    except Exception as exc:  # this request fails alone
                        self._fail(h, blame(h, exc))
                        outcome = ADMITTED
                    self._touched = []
                    if outcome != SKIP:
                        break
                if outcome != SKIP:
                    break
            if outcome != ADMITTED:
                return moved
            moved += 1
        return moved

    def _try_admit(self, h: Handle) -> str:
        eng = self.engine
        req = h.request
        prefix = self.prefix_of(req, h.group.shared)
        reserve = len(req.prompt_ids) - len(prefix) + req.generation_budget(eng.n_ctx)
        used = eng.prefixes.n_tokens + sum(s.reserved for s in self.slots.values())
        resident = eng.prefixes.find(prefix) if prefix else None
        room = eng.n_ctx - used - reserve
        if self.slots and room < 0 and (resident is not None or not prefix):
            return BLOCK  # it waits for cells, and so does everyone after it
        ms = 0.0
        if prefix and resident is None:
            got = eng.prefixes.acquire(prefix, room)
            if got is None:  # every prefix sequence is in use: others may fit
                return BLOCK if self.slots and room < len(prefix) else SKIP
            resident, ms = got
        elif resident is not None:
            resident.touch()
        self._start(h, prefix, resident, reserve, ms)
        return ADMITTED

    def _start(
        self, h: Handle, prefix: list[int], resident: Any, reserve: int, prefix_ms: float
    ) -> None:
        eng = self.engine
        req = h.request
        parser = HarmonyStreamParser(eng.vocab)  # what can fail comes before taking a slot
        sampler = Sampler(req.sampling)
        seq_id = self._free[-1]
        slot = Slot(
            seq_id=seq_id,
            handle=h,
            parser=parser,
            sampler=sampler,
            pending=list(req.prompt_ids[len(prefix) :]),
            n_past=len(prefix),
            reserved=reserve,
            cached=len(prefix),
            resident=resident,
            t_start=time.perf_counter(),
            extra_prompt_ms=prefix_ms,
            score_only=req.score_only,
        )
        self._queue.admitted(h)
        self._free.pop()
        self.slots[seq_id], h.seq_id = slot, seq_id  # _release undoes what follows
        h.group.active += 1
        if resident is not None:
            resident.users += 1
        eng.stats["max_active"] = max(eng.stats["max_active"], len(self.slots))
        rt.seq_rm(eng.memory, seq_id)  # from here on a failure releases the slot (_fail)
        if resident is not None:
            rt.seq_cp(eng.memory, resident.seq_id, seq_id)


def _quietly(fn: Any, *args: Any) -> None:
    """Recovery goes on whatever one request's cleanup raises."""
    try:
        fn(*args)
    except Exception as exc:
        log.error("engine loop recovery: %s: %s", type(exc).__name__, exc)


def _ids(request: Any) -> list[int]:
    try:
        return list(request.prompt_ids)
    except Exception:
        return []
