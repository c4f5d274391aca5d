"""What the engine decides from its settings, and the numerics class it reports for the key.

`decide(path, **settings)` is the one place the engine's load-time decisions are made:
sequence slots (one when the sliding-window cache is windowed), resident prefixes, the batch
size, the GPU layers and flash attention (off without GPU layers: llama.cpp's CPU kernel is
not invariant to how a prompt is split into batches). `Engine` loads by what it returns
and keeps it (`Engine.choices`); `EngineChoices.numerics` turns it into the numerics class
of the cache key. A backend whose engine is not loaded yet (a cache hit never loads it)
asks `decide` with the same settings, so the key is the engine's own decisions either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from edge_guard.defaults import DEFAULT_PARALLEL
from edge_guard.engine import llama_runtime as rt

DEFAULT_N_BATCH = 512
# The Engine's keyword arguments that `decide` reads (the others only load: context size,
# threads, snapshots, verbosity, force).
DECIDING = (
    "n_gpu_layers",
    "flash_attn",
    "swa_full",
    "n_parallel",
    "n_batch",
    "prefix_cache",
    "max_prefixes",
)


@dataclass(frozen=True)
class EngineChoices:
    """The engine's resolved settings, as llama.cpp gets them."""

    n_parallel: int  # sequence slots
    swa_full: bool
    prefix_cache: bool
    max_prefixes: int  # prefixes resident at once
    n_batch: int  # batch = micro-batch size
    gpu_layers: int  # -1: every layer
    gpu_offload: bool  # this llama.cpp build offloads to a GPU
    n_layer: int  # the model's blocks (read only where a GPU split can matter)
    flash_attn: bool | str  # "auto" only where GPU layers exist

    @property
    def uses_gpu(self) -> bool:
        """Whether any layer runs on a GPU."""
        return self.gpu_offload and self.gpu_layers != 0

    def numerics(self, n_parallel: int | None = None) -> dict[str, Any]:
        """The numerics class (part of every cache key): what can change the output bits
        when `n_parallel` sequences (default: every slot) decode together. Several
        sequences in one batch round differently from one at a time, and so does one
        sequence beside several resident prefixes; flash attention, the batch size and the
        GPU/CPU split change the kernels. Threads and the context size (when the prompt
        fits) do not, so they are left out."""
        width = min(max(1, int(n_parallel or self.n_parallel)), self.n_parallel)
        gpu: int | str = "none"  # a CPU-only build ignores GPU layers
        if self.gpu_offload:
            n = self.gpu_layers
            gpu = "all" if n < 0 or n > self.n_layer else n
        return {
            "decode": "seq" if width == 1 and self.max_prefixes == 1 else "par",
            "flash_attn": flash_attn_word(self.flash_attn),
            "n_batch": self.n_batch,
            "gpu_layers": gpu,
        }


def flash_attn_word(value: bool | str) -> str:
    """A flash-attention setting as a word: "on", "off", or "auto" as given."""
    return value if isinstance(value, str) else "on" if value else "off"


def decide(
    model_path: str | os.PathLike[str],
    *,
    n_gpu_layers: int | str = "auto",
    flash_attn: bool | str = "auto",
    swa_full: bool = True,
    n_parallel: int = DEFAULT_PARALLEL,
    n_batch: int = DEFAULT_N_BATCH,
    prefix_cache: bool = True,
    max_prefixes: int | None = None,
) -> EngineChoices:
    """What an `Engine` given these settings for `model_path` loads with."""
    from edge_guard.gguf.check import check_model_file

    slots = max(1, int(n_parallel)) if swa_full else 1  # a windowed cache shares no prefix
    cache = prefix_cache and swa_full
    if max_prefixes is None:  # one (the strict, from-scratch cell layout) with one slot
        max_prefixes = 1 if slots == 1 else 8
    gpu_layers = rt.resolve_gpu_layers(n_gpu_layers)
    offload = rt.supports_gpu()
    if flash_attn == "auto" and (gpu_layers == 0 or not offload):
        flash_attn = False  # every layer on the CPU: see the module doc
    n_layer = 0
    if offload and gpu_layers > 0:
        n_layer = int(check_model_file(model_path).arch_key("block_count") or 0)
    return EngineChoices(
        n_parallel=slots,
        swa_full=swa_full,
        prefix_cache=cache,
        max_prefixes=max(1, int(max_prefixes)) if cache else 1,
        n_batch=max(32, int(n_batch)),
        gpu_layers=gpu_layers,
        gpu_offload=offload,
        n_layer=n_layer,
        flash_attn=flash_attn,
    )


def decide_for(model_path: str | os.PathLike[str], options: dict[str, Any]) -> EngineChoices:
    """`decide` for an `Engine`'s keyword arguments (those that only load are ignored)."""
    return decide(model_path, **{k: v for k, v in options.items() if k in DECIDING})
