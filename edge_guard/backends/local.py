"""Backends execute token-id prompts: the local llama.cpp engine (and, elsewhere, a server).

A backend has an identity (what goes into the cache key: the model file's sha256, or a
server's host/model/version), a vocabulary (to render prompts, available without loading
weights) and `execute()`, which yields responses as they complete.

Local engines are shared: one per (model file as it is now, engine settings), used by
every backend that asks for it. Backends with other settings get engines of their own,
side by side, as long as the memory check of each load passes with the engines already
loaded counted; an engine closes once no backend holds it and no request runs on it, never
under a request. The cache key's numerics class is the engine's own decisions
(`engine.choices`), whether it is loaded yet or not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge_guard.defaults import DEFAULT_CTX, DEFAULT_PARALLEL
from edge_guard.engine.choices import EngineChoices, decide_for
from edge_guard.engine.engine import Engine, GenerationRequest, LoadPlan
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


# -- the engines of this process (see the module doc) ----------------------------------------
# (path, file stamp, the Engine's keyword arguments as (name, repr) pairs)
EngineKey = tuple[str, tuple[int, ...], tuple[tuple[str, str], ...]]


@dataclass(eq=False)
class _Loaded:
    engine: Engine
    holders: weakref.WeakSet[LocalBackend] = field(default_factory=weakref.WeakSet)
    calls: int = 0  # `execute` calls under way (from before their requests are queued)

    def in_use(self) -> bool:
        return self.calls > 0 or self.engine.loop.has_requests


_LOCK = threading.RLock()  # (a finalizer that gc.collect runs may come back in)
_LOADED: dict[EngineKey, _Loaded] = {}


def engine_options(settings: EngineSettings) -> dict[str, Any]:
    """The `Engine` keyword arguments for `settings` (what a backend loads with)."""
    return {
        "n_ctx": settings.n_ctx,
        "n_gpu_layers": settings.n_gpu_layers,
        "n_threads": settings.n_threads,
        "n_parallel": settings.n_parallel,
        "swa_full": settings.swa_full,
        "flash_attn": settings.flash_attn,
        **settings.extra,
    }


def engine_key(path: str, stamp: tuple[int, ...], settings: EngineSettings) -> EngineKey:
    """Which engine a backend of `settings` gets for `path` at `stamp`: every keyword the
    engine loads with counts (`extra` too: its batch size, prefixes...)."""
    options = engine_options(settings)
    return (path, stamp, tuple(sorted((k, repr(v)) for k, v in options.items())))


def shared_engine(
    path: str,
    settings: EngineSettings,
    holder: LocalBackend | None = None,
    *,
    calling: bool = False,
) -> Engine:
    """The engine for `path` as it is now under `settings`: the one loaded, else a new one
    beside the others (a file replaced at the same path, another stamp, is loaded afresh:
    never answered by the old file's weights). `holder` holds it from now on and lets go
    of any other; `calling`: a call starts on it (`call_ended` when it ends). Raises
    `DoesNotFit` (one line) when it would not fit beside the engines in use."""
    from edge_guard.store import file_stamp

    key = engine_key(path, file_stamp(path), settings)
    with _LOCK:
        if holder is not None:
            for k, other in _LOADED.items():
                if k != key:
                    other.holders.discard(holder)
        _close(keep=key)
        loaded = _LOADED.get(key)
        if loaded is None:
            loaded = _LOADED[key] = _Loaded(_load(key, settings))
        if holder is not None:
            loaded.holders.add(holder)
        loaded.calls += calling
        return loaded.engine


def call_ended(engine: Engine) -> None:
    """A call `shared_engine(..., calling=True)` started on `engine` is over."""
    with _LOCK:
        for loaded in _LOADED.values():
            if loaded.engine is engine and loaded.calls > 0:
                loaded.calls -= 1
        _close()


def _close(keep: EngineKey | None = None, held_too: bool = False) -> int:
    """Close the engines (but `keep`'s) no request runs on and no backend holds (with
    `held_too`, held ones as well: their backends load them again on their next call)."""
    gone = [
        k
        for k, loaded in _LOADED.items()
        if k != keep and not loaded.in_use() and (held_too or not loaded.holders)
    ]
    for k in gone:
        _LOADED.pop(k).engine.close()
    return len(gone)


def _mapped_bytes(key: EngineKey, loaded: _Loaded) -> int:
    """RAM an engine's weights take from its mapped file (the layers left on the CPU)."""
    c, size = loaded.engine.choices, key[1][0]
    if not c.uses_gpu:
        return size
    if c.gpu_layers < 0 or c.gpu_layers >= c.n_layer:
        return 0
    return size * (c.n_layer - c.gpu_layers) // max(1, c.n_layer)


def _load(key: EngineKey, settings: EngineSettings) -> Engine:
    """A new engine for `key`, its memory checked with the engines already loaded counted;
    when it does not fit, the ones no request runs on make way (never one in use)."""
    from edge_guard.registry.errors import DoesNotFit

    path, stamp, _options = key
    while True:
        # Another file's weights are mapped pages the kernel counts as available; the same
        # file's are shared with the new engine.
        held = sum(
            _mapped_bytes(k, loaded) for k, loaded in _LOADED.items() if k[:2] != (path, stamp)
        )

        def load_check(plan: LoadPlan, held: int = held) -> None:
            check_load(dataclasses.replace(plan, ram_held=held))

        try:
            return Engine(path, load_check=load_check, **engine_options(settings))
        except DoesNotFit as exc:
            if not _LOADED:
                raise
            gc.collect()  # backends only a reference cycle kept: their engines can go
            if _close(keep=key, held_too=True):
                continue
            names = ", ".join(sorted({Path(k[0]).name for k in _LOADED}))
            raise DoesNotFit(
                f"{exc} (beside {len(_LOADED)} engine(s) of this process running requests "
                f"now: {names}; try again when they finish)"
            ) from None


def loaded_engines() -> list[Engine]:
    """The engines loaded in this process now."""
    with _LOCK:
        return [loaded.engine for loaded in _LOADED.values()]


def release_engine() -> None:
    """Close every engine of this process that no request runs on (frees their memory now;
    a backend still holding one loads it again on its next call)."""
    with _LOCK:
        _close(held_too=True)


def let_go(holder: LocalBackend) -> None:
    """`holder` holds no engine any more; one no backend holds and no request runs on closes."""
    with _LOCK:
        for loaded in _LOADED.values():
            loaded.holders.discard(holder)
        _close()


class _Call:
    """The responses of one `execute` call; the engine counts as in use until it ends
    (exhausted, failed, closed or dropped)."""

    def __init__(self, engine: Engine, responses: Iterator[tuple[int, ModelResponse]]) -> None:
        self.engine: Engine | None = engine
        self.responses = responses

    def __iter__(self) -> _Call:
        return self

    def __next__(self) -> tuple[int, ModelResponse]:
        try:
            return next(self.responses)
        except BaseException:
            self.end()
            raise

    def close(self) -> None:
        """Stop early: the requests still running are cancelled."""
        try:
            close = getattr(self.responses, "close", None)
            if close is not None:
                close()
        finally:
            self.end()

    def end(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            call_ended(engine)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # (at interpreter exit the module may be gone)
            self.close()


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
        self._engine: Engine | None = None  # the engine this backend holds (shared_engine)

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
            gpu = self.choices().uses_gpu
            self._engine_version = f"llama-cpp-python {llama_cpp_version()}{'+gpu' if gpu else ''}"
        return self._engine_version

    def choices(self) -> EngineChoices:
        """What the engine decides (slots, prefixes, batch size, GPU layers, flash
        attention): the loaded engine's own, else what it will decide when loaded (the
        same function, `engine.choices.decide`)."""
        held = self._engine
        if held is not None and not held.closed and self._holds_current():
            return held.choices
        return decide_for(self.path, engine_options(self.settings))

    def numerics(self, n_parallel: int | None = None) -> dict[str, Any]:
        """The numerics class (part of every cache key): the engine's own
        (`EngineChoices.numerics`), for `n_parallel` sequences at once."""
        return self.choices().numerics(n_parallel)

    def _holds_current(self) -> bool:
        """Whether the engine held is for the file as it is now (not a replaced one)."""
        from edge_guard.store import file_stamp

        try:
            stamp = file_stamp(self.path)
        except OSError:
            return False
        loaded = _LOADED.get(engine_key(self.path, stamp, self.settings))  # (no lock: a load
        return loaded is not None and loaded.engine is self._engine  # may hold it for long)

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
        """The engine for this file as it is now and these settings (loaded on first use,
        shared with every backend of the same settings; held until `close`)."""
        self._engine = shared_engine(self.path, self.settings, holder=self)
        return self._engine

    def execute(
        self, requests: Sequence[GenerationRequest], n_parallel: int | None = None
    ) -> Iterator[tuple[int, ModelResponse]]:
        engine = shared_engine(self.path, self.settings, holder=self, calling=True)
        self._engine = engine
        return _Call(engine, engine.generate_many(requests, n_parallel=n_parallel))

    def close(self) -> None:
        """Let go of the engine: closed when no other backend holds it and no request runs
        on it (a later call loads it again)."""
        self._engine = None
        let_go(self)
