"""The engine loop: one thread owns the llama.cpp context; any thread submits requests.

`EngineLoop.submit(request)` may be called from any thread (an asyncio task uses
`Handle.wait_async`) and returns a `Handle` that streams the request's events, gives its
final `ModelResponse` and can be cancelled. A single decode thread, started when work
arrives and gone when there is none, runs continuous batching across every caller:
each step decodes one token for every generating sequence plus prompt chunks for new
ones; a finished or cancelled sequence frees its slot for the next waiting request. A
score-then-continue sequence (the cascade in place) keeps its generation prompt's last
logits while it scores, and when its request escalates it goes on generating in its slot.

Admission accounts for every KV cell: resident prefixes (`prefixes.PrefixCache`) plus,
for each running sequence, its own prompt suffix and its generation budget. A request
joins when a slot is free, its group (`generate_many` call) is under its width, its
prefix is or can be made resident, and its cells fit — or when nothing else runs.
A failure (NaN logits, a callback that raises) fails only its own request; a failed
decode fails the sequences that were in that batch.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from edge_guard.engine import llama_runtime as rt
from edge_guard.engine.handles import CANCELLED, Group, Handle
from edge_guard.engine.sampling import Sampler
from edge_guard.engine.slots import GenerationRequest, Slot
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import HarmonyStreamParser
from edge_guard.response import ModelResponse

if TYPE_CHECKING:
    from edge_guard.engine.engine import Engine


class EngineLoop:
    """Schedules every request of one `Engine` through one continuous batch."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cv = threading.Condition()
        self._incoming: list[Handle] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        # Owned by the loop thread (under engine.lock):
        self._waiting: list[Handle] = []
        self.slots: dict[int, Slot] = {}
        first = engine.max_prefixes
        self._free = list(range(first + engine.n_parallel - 1, first - 1, -1))

    # -- any thread -------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, *, group: Group | None = None, index: int = 0,
               sink: queue.Queue[tuple[int, ModelResponse]] | None = None,
               stream: bool = False) -> Handle:  # fmt: skip
        eng = self.engine
        handle = Handle(self, request, group or Group(eng.n_parallel), index, sink, stream)
        problem = self._problem(request)
        if problem is not None:
            handle.complete(ModelResponse.failed(problem, request.prompt_ids, eng.model_path))
            return handle
        with self._cv:
            if self._closed:
                handle.complete(ModelResponse.failed("the engine is closed", request.prompt_ids,
                                                     eng.model_path))  # fmt: skip
                return handle
            self._incoming.append(handle)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="edge-guard-engine",
                                                daemon=True)  # fmt: skip
                self._thread.start()
            self._cv.notify_all()
        return handle

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def close(self) -> None:
        """Cancel everything and wait for the loop thread to end."""
        with self._cv:
            self._closed = True
            for h in self._incoming:
                h.cancelled = True
            thread = self._thread
            self._cv.notify_all()
        if thread is not None and thread is not threading.current_thread():
            running = list(self.slots.values())  # one C-level copy: safe against the loop
            for h in [*list(self._waiting), *(s.handle for s in running)]:
                h.cancelled = True
            thread.join()

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._thread is not None

    def _problem(self, req: GenerationRequest) -> str | None:
        n_ctx = self.engine.n_ctx
        if len(req.prompt_ids) == 0:
            return "empty prompt"
        if len(req.prompt_ids) + 1 > n_ctx:
            return (f"prompt is {len(req.prompt_ids)} tokens but the context holds {n_ctx}"
                    " (raise --ctx, shorten the text or pass --truncate)")  # fmt: skip
        if req.score_only and any(len(s) == 0 for s in req.score_sequences):
            return "an empty continuation cannot be scored"
        if (req.continue_at is None) != (req.escalate is None):
            return "score-then-continue needs both continue_at and escalate"
        if req.continue_at is not None and not (
            req.score_only and 0 < req.continue_at < len(req.prompt_ids)
        ):
            return "continue_at must split a score-only prompt into a prompt and a header"
        return None

    # -- the loop thread --------------------------------------------------------------------
    def _run(self) -> None:
        eng = self.engine
        try:
            while True:
                with self._cv:
                    self._waiting.extend(self._incoming)
                    self._incoming.clear()
                    if not self._waiting and not self.slots:
                        self._thread = None
                        return
                with eng.lock:
                    if eng.closed:
                        self._fail_all("the engine is closed")
                        continue
                    self._reap_cancelled()
                    self._admit()
                    if self.slots:
                        self._step()
        except BaseException as exc:  # a bug: no caller may wait forever
            self._fail_all(f"internal error in the engine loop: {type(exc).__name__}: {exc}")
            with self._cv:
                self._thread = None

    def _fail_all(self, error: str) -> None:
        with self._cv:
            self._waiting.extend(self._incoming)
            self._incoming.clear()
        for seq_id in list(self.slots):
            self._release(seq_id, error)
        for h in self._waiting:
            h.complete(ModelResponse.failed(error, h.request.prompt_ids, self.engine.model_path))
        self._waiting.clear()

    def _reap_cancelled(self) -> None:
        for h in [h for h in self._waiting if h.cancelled]:
            self._waiting.remove(h)
            h.complete(ModelResponse.failed(CANCELLED, h.request.prompt_ids,
                                            self.engine.model_path))  # fmt: skip
        for seq_id, slot in list(self.slots.items()):
            if slot.handle.cancelled:
                self._release(seq_id, CANCELLED)

    def _release(self, seq_id: int, error: str | None = None) -> None:
        """End a running sequence: free its cells and slot; complete its handle."""
        slot = self.slots.pop(seq_id)
        rt.seq_rm(self.engine._mem, seq_id)
        self._free.append(seq_id)
        slot.handle.group.active -= 1
        if slot.resident is not None:
            slot.resident.users -= 1
        if error is not None:
            slot.error = error
        try:
            response = self.engine.decoder.finish(slot)
        except Exception as exc:
            response = ModelResponse.failed(f"internal error: {exc}", slot.request.prompt_ids,
                                            self.engine.model_path)  # fmt: skip
        slot.handle.complete(response)

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

    def _admit(self) -> None:
        eng = self.engine
        for h in list(self._waiting):
            if not self._free:
                return
            if h.group.active >= h.group.width:
                continue
            req = h.request
            prefix = self.prefix_of(req, h.group.shared)
            reserve = len(req.prompt_ids) - len(prefix) + req.generation_budget(eng.n_ctx)
            used = eng.prefixes.n_tokens + sum(s.reserved for s in self.slots.values())
            resident = eng.prefixes.find(prefix) if prefix else None
            room = eng.n_ctx - used - reserve
            if self.slots and room < 0 and (resident is not None or not prefix):
                return  # FIFO: a request that does not fit waits, and so do those after it
            ms = 0.0
            if prefix and resident is None:
                got = eng.prefixes.acquire(prefix, room)
                if got is None:
                    if self.slots and room < len(prefix):
                        return
                    continue  # every prefix sequence is in use: later requests may fit
                resident, ms = got
            elif resident is not None:
                resident.touch()
            self._waiting.remove(h)
            self._start(h, prefix, resident, reserve, ms)

    def _start(self, h: Handle, prefix: list[int], resident: Any, reserve: int,
               prefix_ms: float) -> None:  # fmt: skip
        eng = self.engine
        seq_id = self._free.pop()
        rt.seq_rm(eng._mem, seq_id)
        if resident is not None:
            rt.seq_cp(eng._mem, resident.seq_id, seq_id)
            resident.users += 1
        req = h.request
        slot = Slot(
            seq_id=seq_id,
            handle=h,
            parser=HarmonyStreamParser(eng.vocab),
            sampler=Sampler(req.sampling),
            pending=list(req.prompt_ids[len(prefix) :]),
            n_past=len(prefix),
            reserved=reserve,
            cached=len(prefix),
            resident=resident,
            t_start=time.perf_counter(),
            extra_prompt_ms=prefix_ms,
            score_only=req.score_only,
        )
        h.group.active += 1
        self.slots[seq_id] = slot
        eng.stats["max_active"] = max(eng.stats["max_active"], len(self.slots))

    def _step(self) -> None:
        """Decode one batch for every running sequence; finish those that are done."""
        eng = self.engine
        batch = eng._batch
        batch.clear()
        want: list[tuple[Slot, int, int, int]] = []  # slot, batch row, continuation, token
        budget = eng.n_batch
        for slot in self.slots.values():  # generating sequences first: one token each
            if slot.generating and not slot.score_only:
                want.append((slot, batch.n, -1, -1))
                batch.add(slot.last, slot.n_past, slot.seq_id, True)  # type: ignore[arg-type]
                slot.n_past += 1
                budget -= 1
        for slot in self.slots.values():
            if slot.pending and budget > 0:
                chunk, slot.pending = slot.pending[:budget], slot.pending[budget:]
                resume = slot.request.continue_at
                for j, tok in enumerate(chunk):
                    last = not slot.pending and j == len(chunk) - 1
                    if last:
                        want.append((slot, batch.n, -1, -1))
                    elif resume is not None and slot.n_past == resume - 1:
                        want.append((slot, batch.n, -2, -1))  # the generation prompt's end
                        last = True
                    batch.add(tok, slot.n_past, slot.seq_id, last)
                    slot.n_past += 1
                budget -= len(chunk)
            elif not slot.pending and slot.jobs and budget >= len(slot.jobs[0][1]) - 1:
                k, cont = slot.jobs[0]  # score-only: one continuation's tokens, all rows wanted
                for j, tok in enumerate(cont[:-1]):
                    want.append((slot, batch.n, k, j))
                    batch.add(tok, slot.n_past + j, slot.seq_id, True)
                budget -= len(cont) - 1
        if batch.n == 0:
            return
        try:
            rt.decode(eng._ctx, batch)
        except EdgeGuardError as exc:
            for slot in {id(s): s for s, *_ in want}.values():
                self._release(slot.seq_id, str(exc))
            return
        finished: dict[int, str | None] = {}
        for slot, row, k, j in want:
            if slot.seq_id in finished:
                continue
            try:
                if self._apply(slot, row, k, j):
                    finished[slot.seq_id] = None
            except Exception as exc:  # NaN logits or a callback: this item only
                if isinstance(exc, EdgeGuardError | RuntimeError):
                    finished[slot.seq_id] = str(exc)
                else:  # a caller's own exception (e.g. the TUI's Cancelled): re-raised to it
                    slot.handle.exception = exc
                    finished[slot.seq_id] = f"{type(exc).__name__}: {exc}"
        for seq_id, error in finished.items():
            self._release(seq_id, error)

    def _apply(self, slot: Slot, row: int, k: int, j: int) -> bool:
        """Use batch row `row`'s logits for `slot`; True when the slot is finished."""
        eng = self.engine
        req = slot.request
        dec = eng.decoder
        if k == -2:  # kept for a score-then-continue request that escalates
            slot.resume_logits = rt.logits(eng._ctx, row, eng.n_vocab, copy=True)
            return False
        if k >= 0:
            dec.score_continuation(slot, k, j, rt.logits(eng._ctx, row, eng.n_vocab, copy=False))
            if j == len(req.score_sequences[k]) - 2:  # this continuation is done: cut it off
                rt.seq_rm(eng._mem, slot.seq_id, slot.n_past)
                slot.jobs.pop(0)
                return not slot.jobs and self._scored(slot)
            return False
        if slot.score_only:
            done = dec.score_prompt(slot, rt.logits(eng._ctx, row, eng.n_vocab, copy=False))
            return done and self._scored(slot)
        # A processor gets its own copy (it may keep it); otherwise read llama.cpp's buffer
        # in place: no 201k-float copy per sequence per token.
        copy = req.logits_processor is not None
        return dec.advance(slot, rt.logits(eng._ctx, row, eng.n_vocab, copy=copy))

    def _scored(self, slot: Slot) -> bool:
        """A scored sequence: True (finished) unless its request escalates it, in which case
        it drops the header's cells and goes on generating in place."""
        req = slot.request
        if req.escalate is None:
            return True
        scored = self.engine.decoder.finish(slot)
        if not req.escalate(scored):
            return True
        assert req.continue_at is not None
        rt.seq_rm(self.engine._mem, slot.seq_id, req.continue_at)
        return self.engine.decoder.continue_generating(slot, scored)
