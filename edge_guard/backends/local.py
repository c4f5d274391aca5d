"""Backends execute token-id prompts: the local llama.cpp engine (and, elsewhere, a server).

A backend has an identity (what goes into the cache key: the model file's sha256, or a
server's host/model/version), a vocabulary (to render prompts, available without loading
weights) and `execute()`, which yields responses as they complete.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge_guard.defaults import DEFAULT_CTX, DEFAULT_PARALLEL
from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.llama_runtime import llama_cpp_version
from edge_guard.harmony.render import PromptRenderer
from edge_guard.harmony.vocab import Vocab
from edge_guard.registry.load_guard import check_load
from edge_guard.response import ModelResponse


class Backend(Protocol):
    name: str  # "local" | "server"
    model_ref: str

    def identity(self) -> str: ...
    def engine_version(self) -> str: ...
    def vocab(self) -> Vocab: ...
    def execute(
        self, requests: Sequence[GenerationRequest], n_parallel: int | None = None
    ) -> Iterator[tuple[int, ModelResponse]]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class EngineSettings:
    """How to load a local model (not part of the cache key, except the GPU/CPU split)."""

    n_ctx: int = DEFAULT_CTX
    n_gpu_layers: int | str = "auto"
    n_threads: int | None = None
    n_parallel: int = DEFAULT_PARALLEL
    swa_full: bool = True
    flash_attn: bool | str = "auto"
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


# One loaded engine per process (a 12 GB model twice would not fit a laptop).
_ENGINE_LOCK = threading.Lock()
_ENGINE: tuple[tuple[str, tuple[int, ...], EngineSettings], Engine] | None = None


def shared_engine(path: str, settings: EngineSettings) -> Engine:
    """The process's one engine for `path` as it is now: a file replaced at the same path
    (another stamp) is loaded afresh, never answered by the old file's weights."""
    from edge_guard.store import file_stamp

    global _ENGINE
    key = (path, file_stamp(path), settings)
    with _ENGINE_LOCK:
        if _ENGINE is not None and _ENGINE[0] == key:
            return _ENGINE[1]
        if _ENGINE is not None:
            _ENGINE[1].close()
            _ENGINE = None
        engine = Engine(
            path,
            load_check=check_load,
            n_ctx=settings.n_ctx,
            n_gpu_layers=settings.n_gpu_layers,
            n_threads=settings.n_threads,
            n_parallel=settings.n_parallel,
            swa_full=settings.swa_full,
            flash_attn=settings.flash_attn,
            **settings.extra,
        )
        _ENGINE = (key, engine)
        return engine


def release_engine() -> None:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is not None:
            _ENGINE[1].close()
            _ENGINE = None


class LocalBackend:
    """A GGUF on this machine, loaded lazily (a cache hit never loads it)."""

    name = "local"

    def __init__(
        self,
        path: str | Path,
        *,
        model_ref: str | None = None,
        settings: EngineSettings | None = None,
        identity: str | None = None,
        identify: Callable[[str], str] | None = None,
    ) -> None:
        self.path = str(Path(path).resolve())
        self.model_ref = model_ref or str(path)
        self.settings = settings or EngineSettings()
        self._identify = identify  # path -> identity (a store's memo); default: hash the file
        self._identity: str | None = None
        self._stamp: tuple[int, ...] | None = None
        if identity is not None:
            self.set_identity(identity)
        self._engine_version: str | None = None

    def identity(self) -> str:
        """The model file's identity (part of every cache key), checked against the file's
        stamp on every call: a file replaced at the same path is identified again, so its
        results never take the old file's keys."""
        from edge_guard.store import file_stamp, sha256_file

        try:
            stamp: tuple[int, ...] | None = file_stamp(self.path)
        except OSError:
            stamp = None  # gone: keep what we know (loading it will fail on its own)
        if self._identity is None or (stamp is not None and stamp != self._stamp):
            self._identity = (
                self._identify(self.path)
                if self._identify is not None
                else f"sha256:{sha256_file(self.path)}"
            )
            self._stamp = stamp
        return self._identity

    def set_identity(self, identity: str, identify: Callable[[str], str] | None = None) -> None:
        """Take `identity` for the file as it is now (and `identify` to use when it changes)."""
        from edge_guard.store import file_stamp

        try:
            self._stamp = file_stamp(self.path)
        except OSError:
            self._stamp = None
        self._identity = identity
        if identify is not None:
            self._identify = identify

    def identify_with(self, identify: Callable[[str], str]) -> None:
        """Identify the file with `identify` (e.g. `Store.model_identity`, a memo)."""
        self._identify = identify

    @property
    def identifier(self) -> Callable[[str], str] | None:
        """What identifies the file when it changes (None: hash it)."""
        return self._identify

    @property
    def identity_known(self) -> bool:
        """Whether the file's identity was given or computed (else the next key hashes it)."""
        return self._identity is not None

    def engine_version(self) -> str:
        """Part of every cache key (computed once: the settings are frozen)."""
        if self._engine_version is None:
            from edge_guard.engine import llama_runtime as rt

            gpu = rt.supports_gpu() and self.settings.n_gpu_layers not in (0, "0")
            self._engine_version = f"llama-cpp-python {llama_cpp_version()}{'+gpu' if gpu else ''}"
        return self._engine_version

    def numerics(self, n_parallel: int | None = None) -> dict[str, Any]:
        """The numerics class (part of every cache key): the settings that can change the
        output bits. Several sequences in one batch round differently from one at a time;
        flash attention, the batch size and the GPU/CPU split change the kernels. Threads
        and the context size (when the prompt fits) do not, so they are left out."""
        from edge_guard.engine import llama_runtime as rt
        from edge_guard.gguf.check import check_model_file

        s = self.settings
        slots = 1 if not s.swa_full else max(1, int(s.n_parallel))  # as the engine sets it
        width = min(max(1, int(n_parallel or slots)), slots)
        # Several resident prefixes change the attention's summation (not bit-identical).
        prefixes = s.extra.get("max_prefixes") or (1 if slots == 1 else 8)
        if not s.swa_full or s.extra.get("prefix_cache") is False:
            prefixes = 1
        gpu: int | str = "none"  # a CPU-only build ignores --gpu-layers
        if rt.supports_gpu():
            n = rt.resolve_gpu_layers(s.n_gpu_layers)
            n_layer = int(check_model_file(self.path).arch_key("block_count") or 0)
            gpu = "all" if n < 0 or n > n_layer else n
        fa = s.flash_attn
        if fa == "auto" and gpu in ("none", 0):
            fa = False  # what the engine resolves it to without GPU layers
        return {
            "decode": "seq" if width == 1 and prefixes == 1 else "par",
            "flash_attn": {True: "on", False: "off"}.get(fa, str(fa)),  # type: ignore[call-overload]
            "n_batch": max(32, int(s.extra.get("n_batch", 512))),
            "gpu_layers": gpu,
        }

    def context_size(self) -> int | None:
        """The context the engine will use: --ctx capped by the trained context (0: the
        trained one)."""
        from edge_guard.gguf.check import check_model_file

        train = check_model_file(self.path).arch_key("context_length") or 0
        n = self.settings.n_ctx
        return (min(n, train) if train else n) if n > 0 else (train or None)

    def vocab(self) -> Vocab:
        from edge_guard.gguf.check import check_model_file

        check_model_file(self.path)
        return Vocab.from_gguf(self.path)

    def renderer(self) -> PromptRenderer:
        return PromptRenderer(self.vocab())

    def engine(self) -> Engine:
        return shared_engine(self.path, self.settings)

    def execute(
        self, requests: Sequence[GenerationRequest], n_parallel: int | None = None
    ) -> Iterator[tuple[int, ModelResponse]]:
        return self.engine().generate_many(requests, n_parallel=n_parallel)

    def close(self) -> None:
        release_engine()
