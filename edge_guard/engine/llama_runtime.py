"""Thin, typed wrappers over llama-cpp-python's low-level bindings (model, context, batch, memory).

All `llama_cpp` imports happen inside functions so that importing edge_guard stays cheap.
llama.cpp's log lines are captured (and echoed only when verbose) so that a failed load
can be reported as one line naming llama.cpp's own reason.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import os
import sys
import threading
from importlib import metadata
from typing import Any

import numpy as np

from edge_guard.errors import BadModelFile, EdgeGuardError

_LOG: collections.deque[str] = collections.deque(maxlen=200)
_LOG_LOCK = threading.Lock()
_VERBOSE = False


def _ll() -> Any:
    import llama_cpp

    return llama_cpp


@functools.cache
def install_logger() -> Any:
    ll = _ll()

    @ll.llama_log_callback
    def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", "replace")
        with _LOG_LOCK:
            _LOG.append(line)
        if _VERBOSE:
            print(line, end="", file=sys.stderr, flush=True)

    ll.llama_log_set(_callback, ctypes.c_void_p(0))
    ll.llama_backend_init()
    return _callback  # keep a reference: the C side holds a pointer to it


def log_lines() -> list[str]:
    """llama.cpp's latest log lines (the last 200), oldest first."""
    with _LOG_LOCK:
        return list(_LOG)


def last_log_error() -> str | None:
    with _LOG_LOCK:
        for line in reversed(_LOG):
            low = line.lower()
            if "error" in low or "failed" in low or "invalid" in low:
                return line.strip()
    return None


def engine_version() -> str:
    """llama-cpp-python's version plus the system info llama.cpp reports (CPU features, GPU)."""
    ll = _ll()
    return f"llama-cpp-python {ll.__version__}"


def build_info() -> str:
    """Version + compiled features: two builds that differ here may round differently."""
    ll = _ll()
    info = ll.llama_print_system_info()
    return f"llama-cpp-python {ll.__version__}; {info.decode('utf-8', 'replace').strip()}"


@functools.cache
def supports_gpu() -> bool:
    """Whether this llama.cpp build offloads to a GPU. Before `llama_cpp` is imported (a
    command reading results a warm engine computed never needs the package: ~0.1 s), it
    is asked of the library llama-cpp-python would load, directly."""
    if "llama_cpp" not in sys.modules:
        ask = _library_function("llama_supports_gpu_offload")
        if ask is not None:
            return bool(ask())
    return bool(_ll().llama_supports_gpu_offload())


def _library_function(name: str) -> Any:
    """`name` from llama-cpp-python's shared library (the file its loader picks on Linux
    and macOS), or None where that is not known."""
    import importlib.util
    from pathlib import Path

    if os.environ.get("LLAMA_CPP_LIB_PATH") or not sys.platform.startswith(("linux", "darwin")):
        return None
    try:
        spec = importlib.util.find_spec("llama_cpp")
        roots = list(spec.submodule_search_locations or []) if spec else []
        if not roots:
            return None
        names = ["libllama.so"] + (["libllama.dylib"] if sys.platform == "darwin" else [])
        for lib in (Path(roots[0]) / "lib" / n for n in names):
            if lib.is_file():
                fn = getattr(ctypes.CDLL(str(lib)), name)
                fn.argtypes, fn.restype = [], ctypes.c_bool
                return fn
    except (OSError, AttributeError, ImportError, ValueError):
        return None
    return None


def resolve_gpu_layers(n_gpu_layers: int | str) -> int:
    """`auto` offloads every layer when this llama.cpp build has a GPU backend."""
    if n_gpu_layers == "auto":
        return -1 if supports_gpu() else 0
    try:
        return int(n_gpu_layers)
    except (TypeError, ValueError):
        raise EdgeGuardError(
            f"n_gpu_layers must be an integer or 'auto', got {n_gpu_layers!r}"
        ) from None


class _Handle:
    def __init__(self, ptr: Any, free: Any) -> None:
        self.ptr, self._free = ptr, free

    def close(self) -> None:
        if self.ptr is not None:
            self._free(self.ptr)
            self.ptr = None


def load(
    path: str,
    *,
    n_gpu_layers: int,
    n_ctx: int,
    n_batch: int,
    n_seq_max: int,
    n_threads: int,
    flash_attn: bool | str,
    swa_full: bool,
    verbose: bool,
) -> tuple[_Handle, _Handle]:
    """Load model + context. Raises `BadModelFile` with llama.cpp's reason on failure."""
    global _VERBOSE
    _VERBOSE = verbose
    ll = _ll()
    install_logger()
    mp = ll.llama_model_default_params()
    mp.n_gpu_layers = 0x7FFFFFFF if n_gpu_layers < 0 else n_gpu_layers
    model = ll.llama_model_load_from_file(path.encode("utf-8"), mp)
    if not model:
        reason = last_log_error() or "llama.cpp could not load it"
        raise BadModelFile(f"{path}: {reason}")
    cp = ll.llama_context_default_params()
    cp.n_ctx = n_ctx
    cp.n_batch = n_batch
    cp.n_ubatch = n_batch
    cp.n_seq_max = n_seq_max
    cp.kv_unified = True
    cp.swa_full = swa_full
    cp.n_threads = n_threads
    cp.n_threads_batch = n_threads
    cp.flash_attn_type = {
        "auto": ll.LLAMA_FLASH_ATTN_TYPE_AUTO,
        True: ll.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        False: ll.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }[flash_attn]
    ctx = ll.llama_init_from_model(model, cp)
    if not ctx:
        ll.llama_model_free(model)
        reason = last_log_error() or "llama.cpp could not create a context"
        raise EdgeGuardError(f"{path}: {reason} (try a smaller --ctx)")
    return _Handle(model, ll.llama_model_free), _Handle(ctx, ll.llama_free)


def n_vocab(model: _Handle) -> int:
    ll = _ll()
    return int(ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(model.ptr)))


def is_eog(model: _Handle, token: int) -> bool:
    ll = _ll()
    return bool(ll.llama_vocab_is_eog(ll.llama_model_get_vocab(model.ptr), token))


def memory(ctx: _Handle) -> Any:
    return _ll().llama_get_memory(ctx.ptr)


def memory_clear(mem: Any) -> None:
    _ll().llama_memory_clear(mem, True)


def seq_rm(mem: Any, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
    return bool(_ll().llama_memory_seq_rm(mem, seq_id, p0, p1))


def seq_cp(mem: Any, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
    _ll().llama_memory_seq_cp(mem, src, dst, p0, p1)


def seq_pos_min(mem: Any, seq_id: int) -> int:
    """Smallest position still cached for `seq_id` (-1 when empty).

    With sliding-window layers this rises as llama.cpp reuses cells that fell out of
    the window, so it tells whether a cached prefix can be cut and extended again.
    """
    return int(_ll().llama_memory_seq_pos_min(mem, seq_id))


def seq_pos_max(mem: Any, seq_id: int) -> int:
    return int(_ll().llama_memory_seq_pos_max(mem, seq_id))


def n_swa(model: _Handle) -> int:
    """The sliding-window size of the model's windowed layers (0 when it has none)."""
    return int(_ll().llama_model_n_swa(model.ptr))


def state_get(ctx: _Handle) -> bytes:
    """llama.cpp's serialized context state: every KV cell, at its index, in every cache.

    (The per-sequence variant drops cells out of the sliding window and restores the rest
    at other cache indices, which changes rounding; the whole state restores bit-exactly.)
    """
    ll = _ll()
    size = int(ll.llama_state_get_size(ctx.ptr))
    buf = (ctypes.c_ubyte * size)()
    written = int(ll.llama_state_get_data(ctx.ptr, buf, size))
    if written == 0:
        raise EdgeGuardError("llama.cpp could not serialize the context state")
    return bytes(buf[:written])


def state_set(ctx: _Handle, data: bytes) -> bool:
    """Replace the whole context state with `data` (from `state_get`); False if rejected."""
    ll = _ll()
    buf = (ctypes.c_ubyte * len(data)).from_buffer_copy(data)
    return int(ll.llama_state_set_data(ctx.ptr, buf, len(data))) > 0


class Batch:
    """A reusable llama_batch holding up to `capacity` tokens."""

    def __init__(self, capacity: int, n_seq_max: int) -> None:
        ll = _ll()
        self.capacity = capacity
        self._b = ll.llama_batch_init(capacity, 0, n_seq_max)
        self.n = 0

    def clear(self) -> None:
        self.n = 0
        self._b.n_tokens = 0

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> None:
        if self.n >= self.capacity:
            raise EdgeGuardError("internal error: batch overflow")
        b, i = self._b, self.n
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits
        self.n += 1
        b.n_tokens = self.n

    def add_shared(self, token: int, pos: int, seq_ids: list[int], logits: bool) -> None:
        """A token of several sequences at once: one KV cell they all hold (llama.cpp masks
        by the first id, so every id must see the same earlier cells)."""
        if self.n >= self.capacity:
            raise EdgeGuardError("internal error: batch overflow")
        b, i = self._b, self.n
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = len(seq_ids)
        for j, s in enumerate(seq_ids):
            b.seq_id[i][j] = s
        b.logits[i] = logits
        self.n += 1
        b.n_tokens = self.n

    def close(self) -> None:
        if self._b is not None:
            _ll().llama_batch_free(self._b)
            self._b = None

    @property
    def raw(self) -> Any:
        return self._b


def decode(ctx: _Handle, batch: Batch) -> None:
    rc = _ll().llama_decode(ctx.ptr, batch.raw)
    if rc == 1:
        raise EdgeGuardError("the KV cache is full (raise --ctx or lower --parallel)")
    if rc != 0:
        reason = last_log_error() or f"llama_decode returned {rc}"
        raise EdgeGuardError(f"decoding failed: {reason}")


def logits(ctx: _Handle, index: int, n_vocab: int, *, copy: bool = True) -> np.ndarray:
    """The logits of batch row `index`. `copy=False` returns a view of llama.cpp's own
    buffer: valid only until the next decode, and writing to it is harmless."""
    ptr = _ll().llama_get_logits_ith(ctx.ptr, index)
    if not ptr:
        raise EdgeGuardError("internal error: llama.cpp returned no logits")
    view = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
    return view.copy() if copy else view


@functools.cache
def llama_cpp_version() -> str:
    """The installed llama-cpp-python version (part of every local cache key)."""
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "unknown"
