"""The local engine: a gpt-oss GGUF on llama.cpp, decoding token-id prompts into `ModelResponse`s.

Every model file is checked (`gguf_check`) before llama.cpp sees it. Prompts arrive as
token ids (never strings: llama.cpp would parse specials in them). Decoding uses
llama.cpp's batch API through llama-cpp-python's low-level bindings, driven by one
long-lived loop (`loop.EngineLoop`) that every caller submits to:

- **prefix state**: each distinct prompt prefix (system + developer message + user
  header) is evaluated once into its own sequence and copied into each text's sequence
  (a unified KV cache with a full-size sliding-window cache, so the copy is exact).
  Several stay resident (`prefixes`), least recently used dropped when the KV budget is
  short. A prefix cut back below cells llama.cpp already reused for the sliding window is
  re-evaluated. Long prefixes are snapshotted to disk (`prefix_store`) for the next
  process. Without flash attention (the CPU default), one prefix at a time
  (`max_prefixes=1`, the default with `n_parallel=1`) is bit-identical to evaluating
  each prompt from scratch;
- **parallel sequences**: up to `n_parallel` texts — from any number of callers and
  threads — decode together, one batch per step, with continuous batching as sequences
  finish. Greedy tokens match the sequential path in the tests, but not bit for bit:
  llama.cpp's CPU kernels round differently for other batch shapes and KV-cell
  placements, so a near-tie can resolve differently (random-weight synthetic models,
  whose expert routing flips on 1-ulp changes, do diverge);
- sampling on the raw logits (`sampling.Sampler`), label scores at the first token of
  the final answer, score-only requests (one forward pass: next-token and continuation
  log-probs), streaming events through the harmony parser.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from edge_guard.defaults import DEFAULT_CTX, DEFAULT_PARALLEL, env
from edge_guard.engine import llama_runtime as rt
from edge_guard.engine.choices import DEFAULT_N_BATCH, EngineChoices, decide
from edge_guard.engine.handles import BATCH, INTERACTIVE, Group, Handle, iter_completed
from edge_guard.engine.loop import EngineLoop
from edge_guard.engine.prefix_state import make_prefix_store, shared_prefix
from edge_guard.engine.prefixes import PrefixCache
from edge_guard.engine.slots import Decoder, GenerationRequest
from edge_guard.errors import EdgeGuardError
from edge_guard.gguf.check import check_model_file
from edge_guard.harmony.render import PromptRenderer
from edge_guard.harmony.vocab import Vocab
from edge_guard.response import ModelResponse

DEFAULT_N_CTX = DEFAULT_CTX


__all__ = [
    "BATCH",
    "DEFAULT_N_CTX",
    "INTERACTIVE",
    "Engine",
    "EngineChoices",
    "GenerationRequest",
    "Handle",
    "LoadPlan",
    "default_threads",
]


@dataclass(frozen=True)
class LoadPlan:
    """What the engine is about to load, as the caller's `load_check` sees it: the file and
    the settings that decide its memory (`force` asks to skip the memory check)."""

    path: str
    n_ctx: int
    n_gpu_layers: int
    swa_full: bool
    n_batch: int
    force: bool = False
    # RAM other engines of this process hold in file pages the kernel still counts as
    # available (their mapped weights): the memory check counts it as taken.
    ram_held: int = 0


class Engine:
    """A loaded gpt-oss model. Thread-safe: `submit`, `generate` and `generate_many` may be
    called from any thread at once; one loop thread decodes every request together.

    `load_check(plan)` runs just before llama.cpp loads the file: every backend passes
    `registry.load_guard.check_load` (memory fit, a child-process probe of an untrusted
    file). Without one the engine trusts the file it is given."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_gpu_layers: int | str = "auto",
        n_threads: int | None = None,
        flash_attn: bool | str = "auto",
        swa_full: bool = True,
        n_parallel: int = DEFAULT_PARALLEL,
        n_batch: int = DEFAULT_N_BATCH,
        prefix_cache: bool = True,
        prefix_snapshots: bool | None = None,
        max_prefixes: int | None = None,
        verbose: bool = False,
        force: bool = False,
        load_check: Callable[[LoadPlan], None] | None = None,
    ) -> None:
        self.model_path = os.fspath(model_path)
        self.closed = True
        header = check_model_file(self.model_path)
        self.header = header
        self.vocab = Vocab.from_gguf(self.model_path)
        self.renderer = PromptRenderer(self.vocab)
        n_ctx_train = header.arch_key("context_length") or n_ctx
        self.n_ctx = int(min(n_ctx, n_ctx_train)) if n_ctx > 0 else int(n_ctx_train)
        # Slots, resident prefixes, batch size, GPU layers, flash attention: decided in one
        # place (`choices.decide`), which the cache key reads too (`numerics`).
        self.choices = decide(
            self.model_path,
            n_gpu_layers=n_gpu_layers,
            flash_attn=flash_attn,
            swa_full=swa_full,
            n_parallel=n_parallel,
            n_batch=n_batch,
            prefix_cache=prefix_cache,
            max_prefixes=max_prefixes,
        )
        c = self.choices
        self.n_parallel, self.swa_full, self.prefix_cache = c.n_parallel, swa_full, c.prefix_cache
        self.max_prefixes, self.n_batch = c.max_prefixes, c.n_batch
        self.n_threads = n_threads or default_threads()
        gpu_layers, flash_attn = c.gpu_layers, c.flash_attn
        # The caller's guard (registry.load_guard.check_load for every backend) refuses what
        # would swap the machine to death and probes an untrusted file in a child process.
        if load_check is not None:
            load_check(
                LoadPlan(
                    self.model_path,
                    n_ctx=self.n_ctx,
                    n_gpu_layers=gpu_layers,
                    swa_full=swa_full,
                    n_batch=self.n_batch,
                    force=force,
                )
            )
        n_seq = self.max_prefixes + self.n_parallel
        self._model, self._ctx = rt.load(
            self.model_path,
            n_gpu_layers=gpu_layers,
            n_ctx=self.n_ctx,
            n_batch=self.n_batch,
            n_seq_max=n_seq,
            n_threads=self.n_threads,
            flash_attn=flash_attn,
            swa_full=swa_full,
            verbose=verbose,
        )
        self.closed = False
        self._mem = rt.memory(self._ctx)
        self.n_vocab = rt.n_vocab(self._model)
        if self.n_vocab != len(self.vocab):
            self.close()
            raise EdgeGuardError(
                f"{self.model_path}: llama.cpp sees {self.n_vocab} tokens, GGUF lists {len(self.vocab)}"
            )
        self._batch = rt.Batch(self.n_batch, n_seq)
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
        self.stats = {
            "prefix_evals": 0,
            "prefix_tokens": 0,
            "snapshot_loads": 0,
            "snapshot_saves": 0,
            "max_active": 0,
            "prefix_evictions": 0,
        }
        # The loop thread holds `lock` while it touches the context; so do reset and close.
        self.lock = threading.RLock()
        self.loop = EngineLoop(self)
        self.prefixes = PrefixCache(
            self._ctx,
            self._mem,
            self._batch,
            n_swa=self.n_swa,
            store=self.prefix_store,
            n_seq=n_seq,
            max_prefixes=self.max_prefixes,
            stats=self.stats,
            others_busy=lambda: bool(self.loop.slots),
        )
        end = self.vocab.special_id("<|end|>")
        self.stop_ids = frozenset(
            i for i in self.vocab.control_ids if rt.is_eog(self._model, i) and i != end
        ) | {self.vocab.special_id("<|return|>"), self.vocab.special_id("<|call|>")}
        self.decoder = Decoder(self.stop_ids, self.model_path, self.n_ctx)

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.close()
        lock = getattr(self, "lock", None)
        with lock if lock is not None else contextlib.nullcontext():
            self.closed = True
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
        """Forget every cached token (the next prompt is evaluated from scratch).

        Call it between requests: running sequences would lose their cells."""
        with self.lock:
            self.prefixes.reset()

    def warm_prefix(self, request: GenerationRequest) -> None:
        """Make `request`'s prefix resident now, the one its admission would use (benchmarks
        time the prefix apart from the texts). Call it between requests."""
        prefix = self.loop.prefix_of(request)
        if not prefix:
            return
        with self.lock:
            got = self.prefixes.acquire(prefix, self.n_ctx - self.prefixes.n_tokens)
        if got is None:
            raise EdgeGuardError("no free prefix sequence to hold the prefix")

    # -- llama.cpp's handles: what the loop (`loop`, `step`) decodes through ---------------
    @property
    def context(self) -> Any:
        """llama.cpp's context (None once closed)."""
        return self._ctx

    @property
    def memory(self) -> Any:
        """The context's KV memory (sequences are removed and copied through it)."""
        return self._mem

    @property
    def batch(self) -> rt.Batch:
        """The one token batch every decode step fills."""
        return self._batch

    @property
    def _prefix(self) -> list[int]:
        """The tokens the most recently used resident prefix holds."""
        live = [r for r in self.prefixes.residents if r.tokens]
        return max(live, key=lambda r: r.last_used).tokens if live else []

    def numerics(self, n_parallel: int | None = None) -> dict[str, Any]:
        """This engine's numerics class for the cache key, from what it loaded with
        (`EngineChoices.numerics`), for `n_parallel` sequences at once (default: all)."""
        return self.choices.numerics(n_parallel)

    @property
    def description(self) -> dict[str, Any]:
        return {
            "path": self.model_path,
            "n_ctx": self.n_ctx,
            "n_parallel": self.n_parallel,
            "max_prefixes": self.max_prefixes,
            "n_threads": self.n_threads,
            "swa_full": self.swa_full,
            "gpu_offload": rt.supports_gpu(),
        }

    # -- generation ------------------------------------------------------------------------
    def submit(
        self, request: GenerationRequest, *, stream: bool = False, priority: int = BATCH
    ) -> Handle:
        """Queue one request (a job of its own) from any thread; the handle streams, waits
        or cancels it. `priority`: `INTERACTIVE` for a door a person waits on."""
        return self.loop.submit(request, stream=stream, priority=priority)

    def generate(
        self,
        request: GenerationRequest | Sequence[int],
        *,
        priority: int = BATCH,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ModelResponse:
        if not isinstance(request, GenerationRequest):
            request = GenerationRequest(list(request), **kwargs)
        for _, response in self.generate_many([request], priority=priority, timeout=timeout):
            return response
        raise AssertionError("unreachable")

    def generate_many(
        self,
        requests: Iterable[GenerationRequest],
        n_parallel: int | None = None,
        priority: int = BATCH,
        timeout: float | None = None,
    ) -> Iterator[tuple[int, ModelResponse]]:
        """Complete every request; yields (input index, response) as each one finishes.

        The requests are one job: at most `n_parallel` of them run at once, and other
        callers' jobs share the batch round-robin (`admission`), `priority` first.
        Closing the iterator early cancels the requests still running; so does `timeout`
        (seconds for them all), which then raises TimeoutError.
        """
        reqs = list(requests)
        if not reqs:
            return
        width = max(1, min(n_parallel or self.n_parallel, self.n_parallel))
        group = Group(width, priority)
        hintless = [r.prompt_ids for r in reqs if r.prefix_len is None and r.prompt_ids]
        if len(hintless) > 1:
            group.shared = shared_prefix(
                hintless, [None] * len(hintless), enabled=self.prefix_cache
            )
        sink: queue.Queue[tuple[int, ModelResponse]] = queue.Queue()
        handles = [self.loop.submit(r, group=group, index=i, sink=sink) for i, r in enumerate(reqs)]
        yield from iter_completed(handles, sink, timeout)


def default_threads() -> int:
    """`$EDGE_GUARD_THREADS`, else every core (llama.cpp's threads spin: do not oversubscribe)."""
    given = env("EDGE_GUARD_THREADS") or ""
    if given.isdigit() and int(given) > 0:
        return int(given)
    return os.cpu_count() or 1
