"""The local engine: a gpt-oss GGUF on llama.cpp, decoding token-id prompts into `ModelResponse`s.

Every model file is checked (`gguf_check`) before llama.cpp sees it. Prompts arrive as
token ids (never strings: llama.cpp would parse specials in them). Decoding uses
llama.cpp's batch API through llama-cpp-python's low-level bindings:

- **prefix state**: sequence 0 holds the prompt prefix every text shares (system +
  developer + user header); it is evaluated once and copied into each text's sequence
  (a unified KV cache with a full-size sliding-window cache, so the copy is exact). A
  prefix cut back below cells llama.cpp already reused for the sliding window is
  re-evaluated. Long prefixes are snapshotted to disk (`prefix_store`) for the next
  process. Without flash attention (the CPU default) all of this is bit-identical to
  evaluating each prompt from scratch;
- **parallel sequences**: up to `n_parallel` texts decode together, one batch per step,
  with continuous batching as sequences finish. Greedy tokens match the sequential path
  in the tests, but not bit for bit: llama.cpp's CPU kernels round differently for other
  batch shapes and KV-cell placements, so a near-tie can resolve differently (random-
  weight synthetic models, whose expert routing flips on 1-ulp changes, do diverge);
- sampling on the raw logits (`sampling.Sampler`), label scores at the first token of
  the final answer, streaming events through the harmony parser.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_guard.engine import llama_runtime as rt
from edge_guard.engine import safety
from edge_guard.engine.gguf_check import check_model_file
from edge_guard.engine.prefix_state import PrefixState, make_prefix_store, shared_prefix
from edge_guard.engine.sampling import LogitsProcessor, Sampler, SamplingConfig, log_softmax
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import Event, HarmonyStreamParser
from edge_guard.harmony.render import PromptRenderer
from edge_guard.harmony.vocab import Vocab
from edge_guard.response import ModelResponse, Timings

DEFAULT_N_CTX = 16384


@dataclass
class GenerationRequest:
    """One prompt to complete. `prefix_len` hints how many leading ids other prompts share."""

    prompt_ids: list[int]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    prefix_len: int | None = None
    logits_processor: LogitsProcessor | None = None
    score_token_ids: Sequence[int] = ()
    on_event: Callable[[Event], None] | None = None
    # Stop tokens are suppressed until this many tokens are out (fixed-length benchmarks).
    min_tokens: int = 0


@dataclass
class _Slot:
    seq_id: int
    index: int
    request: GenerationRequest
    parser: HarmonyStreamParser
    sampler: Sampler
    pending: list[int]
    n_past: int
    reserved: int
    cached: int
    t_start: float
    t_first: float | None = None
    output: list[int] = field(default_factory=list)
    logprobs: dict[int, float] | None = None
    last: int | None = None
    extra_prompt_ms: float = 0.0
    finish: str | None = None


class Engine:
    """A loaded gpt-oss model. Not thread-safe: use one engine per worker thread."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_gpu_layers: int | str = "auto",
        n_threads: int | None = None,
        flash_attn: bool | str = "auto",
        swa_full: bool = True,
        n_parallel: int = 8,
        n_batch: int = 512,
        prefix_cache: bool = True,
        prefix_snapshots: bool | None = None,
        verbose: bool = False,
        force: bool = False,
    ) -> None:
        self.model_path = os.fspath(model_path)
        header = check_model_file(self.model_path)
        self.header = header
        self.vocab = Vocab.from_gguf(self.model_path)
        self.renderer = PromptRenderer(self.vocab)
        n_ctx_train = header.arch_key("context_length") or n_ctx
        self.n_ctx = int(min(n_ctx, n_ctx_train)) if n_ctx > 0 else int(n_ctx_train)
        self.n_parallel = max(1, int(n_parallel))
        self.swa_full = swa_full
        self.prefix_cache = prefix_cache and swa_full
        if not swa_full:
            self.n_parallel = 1  # a windowed cache cannot share a long prefix safely
        self.n_batch = max(32, int(n_batch))
        self.n_threads = n_threads or default_threads()
        gpu_layers = rt.resolve_gpu_layers(n_gpu_layers)
        if flash_attn == "auto" and gpu_layers == 0:
            # llama.cpp's CPU flash-attention kernel is not invariant to how a prompt is
            # split into batches; without it a cached prefix gives bit-identical logits.
            flash_attn = False
        # Refuse what would swap the machine to death (unless forced), and load an
        # untrusted file in a child process first: llama.cpp aborts on some bad files.
        if not force:
            safety.check_memory(self.model_path, n_ctx=self.n_ctx, n_gpu_layers=gpu_layers,
                                swa_full=swa_full, n_ubatch=self.n_batch)  # fmt: skip
        safety.ensure_loadable(self.model_path)
        self._model, self._ctx = rt.load(
            self.model_path,
            n_gpu_layers=gpu_layers,
            n_ctx=self.n_ctx,
            n_batch=self.n_batch,
            n_seq_max=self.n_parallel + 1,
            n_threads=self.n_threads,
            flash_attn=flash_attn,
            swa_full=swa_full,
            verbose=verbose,
        )
        self._mem = rt.memory(self._ctx)
        self.n_vocab = rt.n_vocab(self._model)
        if self.n_vocab != len(self.vocab):
            self.close()
            raise EdgeGuardError(
                f"{self.model_path}: llama.cpp sees {self.n_vocab} tokens, GGUF lists {len(self.vocab)}"
            )
        self._batch = rt.Batch(self.n_batch, self.n_parallel + 1)
        self.n_swa = rt.n_swa(self._model)
        self.gpu_layers, self.flash_attn = gpu_layers, flash_attn
        self.prefix_store = make_prefix_store(
            prefix_snapshots,
            self.prefix_cache,
            self.model_path,
            gpu_layers=gpu_layers,
            flash_attn=flash_attn,
            swa_full=swa_full,
            n_batch=self.n_batch,
        )
        # Counters for tests and benchmarks; max_active: most sequences decoded together.
        self.stats = {"prefix_evals": 0, "prefix_tokens": 0, "snapshot_loads": 0,
                      "snapshot_saves": 0, "max_active": 0}  # fmt: skip
        self._state = PrefixState(self._ctx, self._mem, self._batch, n_swa=self.n_swa,
                                  store=self.prefix_store, n_seq=self.n_parallel + 1,
                                  stats=self.stats)  # fmt: skip
        end = self.vocab.special_id("<|end|>")
        self.stop_ids = frozenset(
            i for i in self.vocab.control_ids if rt.is_eog(self._model, i) and i != end
        ) | {self.vocab.special_id("<|return|>"), self.vocab.special_id("<|call|>")}
        self._stop_array = np.array(sorted(self.stop_ids), dtype=np.int64)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        for obj in ("_batch", "_ctx", "_model"):
            handle = getattr(self, obj, None)
            if handle is not None:
                handle.close()
                setattr(self, obj, None)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def reset_state(self) -> None:
        """Forget every cached token (the next prompt is evaluated from scratch)."""
        self._state.reset()

    @property
    def _prefix(self) -> list[int]:
        """The tokens sequence 0 holds (the shared prefix state)."""
        return self._state.tokens

    @property
    def description(self) -> dict[str, Any]:
        return {
            "path": self.model_path,
            "n_ctx": self.n_ctx,
            "n_parallel": self.n_parallel,
            "n_threads": self.n_threads,
            "swa_full": self.swa_full,
            "gpu_offload": rt.supports_gpu(),
        }

    # -- generation ------------------------------------------------------------------------
    def generate(self, request: GenerationRequest | Sequence[int], **kwargs: Any) -> ModelResponse:
        if not isinstance(request, GenerationRequest):
            request = GenerationRequest(list(request), **kwargs)
        for _, response in self.generate_many([request]):
            return response
        raise AssertionError("unreachable")

    def generate_many(
        self, requests: Iterable[GenerationRequest], n_parallel: int | None = None
    ) -> Iterator[tuple[int, ModelResponse]]:
        """Complete every request; yields (input index, response) as each one finishes."""
        reqs = list(requests)
        width = max(1, min(n_parallel or self.n_parallel, self.n_parallel))
        queue: list[int] = []
        for i, r in enumerate(reqs):
            if len(r.prompt_ids) == 0:
                yield i, ModelResponse.failed("empty prompt", [], self.model_path)
            elif len(r.prompt_ids) + 1 > self.n_ctx:
                yield (
                    i,
                    ModelResponse.failed(
                        f"prompt is {len(r.prompt_ids)} tokens but the context holds {self.n_ctx}"
                        " (raise --ctx, shorten the text or pass --truncate)",
                        r.prompt_ids,
                        self.model_path,
                    ),
                )
            else:
                queue.append(i)
        if not queue:
            return
        prefix = shared_prefix([reqs[i].prompt_ids for i in queue],
                               [reqs[i].prefix_len for i in queue], enabled=self.prefix_cache)  # fmt: skip
        prefix_ms = self._state.set(prefix, enabled=self.prefix_cache)
        slots: dict[int, _Slot] = {}
        free = list(range(width, 0, -1))
        try:
            while queue or slots:
                while queue and free and self._fits(reqs[queue[0]], slots):
                    slot = self._start(free.pop(), queue.pop(0), reqs)
                    slot.extra_prompt_ms, prefix_ms = prefix_ms, 0.0
                    slots[slot.seq_id] = slot
                    self.stats["max_active"] = max(self.stats["max_active"], len(slots))
                for seq_id in self._step(slots):
                    slot = slots.pop(seq_id)
                    free.append(seq_id)
                    rt.seq_rm(self._mem, seq_id)
                    yield slot.index, self._finish(slot)
        except BaseException as exc:
            for slot in slots.values():
                rt.seq_rm(self._mem, slot.seq_id)
            if isinstance(exc, EdgeGuardError | RuntimeError):
                for slot in slots.values():
                    yield (
                        slot.index,
                        ModelResponse.failed(str(exc), slot.request.prompt_ids, self.model_path),
                    )
                for i in queue:
                    yield i, ModelResponse.failed(str(exc), reqs[i].prompt_ids, self.model_path)
                return
            raise

    # -- internals -------------------------------------------------------------------------
    def _fits(self, req: GenerationRequest, slots: dict[int, _Slot]) -> bool:
        if not slots:
            return True
        used = len(self._prefix) + sum(s.reserved for s in slots.values())
        return used + self._reserve(req) <= self.n_ctx

    def _reserve(self, req: GenerationRequest) -> int:
        n = len(req.prompt_ids)
        return n - len(self._prefix) + min(req.sampling.max_tokens, self.n_ctx - n)

    def _start(self, seq_id: int, index: int, reqs: list[GenerationRequest]) -> _Slot:
        req = reqs[index]
        rt.seq_rm(self._mem, seq_id)
        cached = len(self._prefix)
        if cached:
            rt.seq_cp(self._mem, 0, seq_id)
        return _Slot(
            seq_id=seq_id,
            index=index,
            request=req,
            parser=HarmonyStreamParser(self.vocab),
            sampler=Sampler(req.sampling),
            pending=list(req.prompt_ids[cached:]),
            n_past=cached,
            reserved=self._reserve(req),
            cached=cached,
            t_start=time.perf_counter(),
        )

    def _step(self, slots: dict[int, _Slot]) -> list[int]:
        """Decode one batch for all active slots; returns the seq ids that finished."""
        batch = self._batch
        batch.clear()
        want: list[tuple[_Slot, int]] = []
        budget = self.n_batch
        for slot in slots.values():  # generating sequences first: one token each
            if not slot.pending and slot.last is not None:
                want.append((slot, batch.n))
                batch.add(slot.last, slot.n_past, slot.seq_id, True)
                slot.n_past += 1
                budget -= 1
        for slot in slots.values():
            if slot.pending and budget > 0:
                chunk, slot.pending = slot.pending[:budget], slot.pending[budget:]
                for j, tok in enumerate(chunk):
                    last = not slot.pending and j == len(chunk) - 1
                    if last:
                        want.append((slot, batch.n))
                    batch.add(tok, slot.n_past, slot.seq_id, last)
                    slot.n_past += 1
                budget -= len(chunk)
        if batch.n:
            rt.decode(self._ctx, batch)
        done = []
        for slot, idx in want:
            # A processor gets its own copy (it may keep it); otherwise read llama.cpp's
            # buffer in place: no 201k-float copy per sequence per token.
            copy = slot.request.logits_processor is not None
            if self._advance(slot, rt.logits(self._ctx, idx, self.n_vocab, copy=copy)):
                done.append(slot.seq_id)
        return done

    def _advance(self, slot: _Slot, logits: np.ndarray) -> bool:
        """Sample the next token of `slot`; True when the sequence is finished."""
        now = time.perf_counter()
        if slot.t_first is None:
            slot.t_first = now
        req = slot.request
        if np.isnan(logits.max()):  # broken weights; sampling NaNs would raise mid-batch
            raise EdgeGuardError("the model computed NaN logits (corrupt or incompatible weights)")
        if req.score_token_ids and slot.logprobs is None and slot.parser.at_final_content_start:
            lp = log_softmax(logits)
            slot.logprobs = {int(t): float(lp[t]) for t in req.score_token_ids}
        if req.logits_processor is not None:
            edited = req.logits_processor(slot.output, logits)
            if edited is not None:
                logits = edited
        if len(slot.output) < req.min_tokens:
            logits[self._stop_array] = -np.inf
        tok = slot.sampler.sample(logits)
        slot.output.append(tok)
        slot.last = tok
        events = slot.parser.feed(tok)
        if req.on_event is not None:
            for ev in events:
                req.on_event(ev)
        if slot.parser.done or tok in self.stop_ids:
            slot.finish = None if slot.parser.done else "eos"
            return True
        if len(slot.output) >= req.sampling.max_tokens or slot.n_past >= self.n_ctx:
            slot.finish = "length"
            return True
        return False

    def _finish(self, slot: _Slot) -> ModelResponse:
        end = time.perf_counter()
        parsed = slot.parser.finish(slot.finish)
        t_first = slot.t_first or end
        timings = Timings(
            prompt_tokens=len(slot.request.prompt_ids),
            cached_tokens=slot.cached,
            prompt_ms=(t_first - slot.t_start) * 1000 + slot.extra_prompt_ms,
            output_tokens=len(slot.output),
            output_ms=(end - t_first) * 1000,
        )
        return ModelResponse.from_parsed(
            parsed,
            prompt_token_ids=list(slot.request.prompt_ids),
            output_token_ids=list(slot.output),
            timings=timings,
            final_token_logprobs=slot.logprobs,
            model=self.model_path,
        )


def default_threads() -> int:
    """`$EDGE_GUARD_THREADS`, else every core (llama.cpp's threads spin: do not oversubscribe)."""
    env = os.environ.get("EDGE_GUARD_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1
