"""Checks GGUF files before llama.cpp sees them.

llama.cpp aborts the whole process on some malformed files (a gpt-oss file without
``expert_used_count``, for one), so every model goes through `check_model_file` first:
the bounds-checked header (`gguf_read`, read once per file identity by `gguf_cache`),
the architecture, the hyperparameters llama.cpp requires, the tokenizer arrays, and
every tensor's data lying inside the file.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

from edge_guard.errors import BadModelFile
from edge_guard.gguf import cache as gguf_cache
from edge_guard.gguf.cache import FileId
from edge_guard.gguf.read import GGUF_MAGIC, GGUFHeader, Skipped, TensorInfo, parse_header

__all__ = [
    "GGUF_MAGIC",
    "GGUFHeader",
    "TensorInfo",
    "check_model_file",
    "read_header",
    "read_vocab_arrays",
]
ARCH = "gpt-oss"
REQUIRED_ARCH_KEYS = (
    "context_length",
    "embedding_length",
    "block_count",
    "attention.head_count",
    "attention.layer_norm_rms_epsilon",
    "expert_feed_forward_length",
    "attention.sliding_window",
    "expert_count",
    "expert_used_count",
)
REQUIRED_TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
)
LAYER_TENSORS = (
    "attn_norm.weight",
    "post_attention_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "attn_sinks.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_exps.weight",
    "ffn_up_exps.weight",
    "ffn_down_exps.weight",
)
GLOBAL_TENSORS = ("token_embd.weight", "output_norm.weight")
# Integer hyperparameters: (key, smallest, largest). Out-of-range values make llama.cpp
# divide by zero or allocate without bound, and block_count sizes lists built here.
ARCH_INT_RANGES = (
    ("context_length", 0, 1 << 24),
    ("embedding_length", 1, 1 << 20),
    ("block_count", 1, 4096),
    ("attention.head_count", 1, 1 << 12),
    ("attention.head_count_kv", 1, 1 << 12),
    ("attention.key_length", 1, 1 << 16),
    ("attention.value_length", 1, 1 << 16),
    ("expert_feed_forward_length", 1, 1 << 20),
    ("attention.sliding_window", 0, 1 << 24),
    ("expert_count", 1, 4096),
    ("expert_used_count", 1, 4096),
)
_CHECKED_MEMO = 8
_checked: OrderedDict[FileId, GGUFHeader] = OrderedDict()
_checked_lock = threading.Lock()


def read_header(path: str | os.PathLike[str], *, keep_arrays: tuple[str, ...] = ()) -> GGUFHeader:
    """Parse a GGUF header. Arrays are kept only for keys in `keep_arrays` (others: length).

    Without `keep_arrays` the header is read once per file identity (`gguf_cache`: this
    process, then the disk entry); with them the file is parsed each time.
    """
    if keep_arrays:
        return parse_header(path, keep_arrays=keep_arrays)
    return gguf_cache.header(path)


def read_vocab_arrays(path: str | os.PathLike[str]) -> tuple[list[str], list[int]]:
    """The GGUF's `tokenizer.ggml.tokens` and `token_type` arrays."""
    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")
    header = parse_header(path, keep_arrays=keys)
    tokens, types = (header.metadata.get(k) for k in keys)
    if not isinstance(tokens, list) or not isinstance(types, list) or len(tokens) != len(types):
        raise BadModelFile(f"{header.path}: the GGUF has no usable tokenizer token list")
    return tokens, types


def check_model_file(path: str | os.PathLike[str]) -> GGUFHeader:
    """Raise `BadModelFile` with a one-line reason unless llama.cpp can safely load `path`.

    The header is read once per file identity (`gguf_cache`) and a file that passed is
    remembered by it in this process; a file modified seconds ago is checked every time.
    """
    fid = gguf_cache.file_id(path)
    with _checked_lock:
        hit = _checked.get(fid)
    if hit is not None and not gguf_cache.racy(fid):
        return hit
    header = _check(gguf_cache.header(path))
    if not gguf_cache.racy(fid):
        with _checked_lock:
            _checked[fid] = header
            while len(_checked) > _CHECKED_MEMO:
                _checked.popitem(last=False)
    return header


def _check_hyperparameters(header: GGUFHeader) -> None:
    """Types and ranges of the values llama.cpp sizes buffers and divides by."""
    p = header.path
    for key, lo, hi in ARCH_INT_RANGES:
        full = f"{ARCH}.{key}"
        if full not in header.metadata:
            continue
        v = header.metadata[full]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise BadModelFile(f"{p}: {full} is {_short(v)}; expected an integer in {lo}..{hi}")
    eps = header.arch_key("attention.layer_norm_rms_epsilon")
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not 0 < eps < 1:
        raise BadModelFile(f"{p}: {ARCH}.attention.layer_norm_rms_epsilon is {_short(eps)}")
    if header.arch_key("block_count") > len(header.tensors):
        raise BadModelFile(
            f"{p}: {ARCH}.block_count is {header.arch_key('block_count')} but the file has "
            f"only {len(header.tensors)} tensors"
        )
    for key in REQUIRED_TOKENIZER_KEYS[1:]:
        if not isinstance(header.metadata[key], list | Skipped):
            raise BadModelFile(f"{p}: {key} is {_short(header.metadata[key])}, not an array")


def _short(v: Any) -> str:
    text = repr(v.count) + " elements" if isinstance(v, Skipped) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(header: GGUFHeader) -> GGUFHeader:
    p = header.path
    arch = header.architecture
    if arch is None:
        raise BadModelFile(f"{p}: GGUF has no general.architecture")
    if arch != ARCH:
        raise BadModelFile(f"{p}: architecture is {arch!r}, edge_guard needs a {ARCH!r} model")
    missing = [f"{ARCH}.{k}" for k in REQUIRED_ARCH_KEYS if f"{ARCH}.{k}" not in header.metadata]
    missing += [k for k in REQUIRED_TOKENIZER_KEYS if k not in header.metadata]
    if missing:
        raise BadModelFile(f"{p}: GGUF lacks required key(s) {', '.join(missing)}")
    _check_hyperparameters(header)
    n_expert, n_used = header.arch_key("expert_count"), header.arch_key("expert_used_count")
    if not (isinstance(n_expert, int) and isinstance(n_used, int) and 0 < n_used <= n_expert):
        raise BadModelFile(f"{p}: invalid expert counts ({n_used} used of {n_expert})")
    if len(header.metadata["tokenizer.ggml.merges"]) == 0:
        raise BadModelFile(f"{p}: tokenizer.ggml.merges is empty")
    n_vocab = len(header.metadata["tokenizer.ggml.tokens"])
    if len(header.metadata["tokenizer.ggml.token_type"]) != n_vocab:
        raise BadModelFile(f"{p}: tokenizer token and token_type arrays differ in length")
    names = {t.name: t for t in header.tensors}
    n_layer = header.arch_key("block_count")
    expected = list(GLOBAL_TENSORS)
    if isinstance(n_layer, int):
        expected += [f"blk.{i}.{t}" for i in range(n_layer) for t in LAYER_TENSORS]
    absent = [n for n in expected if n not in names]
    if absent:
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        raise BadModelFile(f"{p}: GGUF lacks tensor {absent[0]}{more}")
    embd = names["token_embd.weight"]
    if len(embd.shape) != 2 or embd.shape[1] != n_vocab:
        raise BadModelFile(
            f"{p}: token_embd has {embd.shape} but the vocabulary has {n_vocab} tokens"
        )
    for t in header.tensors:
        end = header.data_offset + t.offset + t.n_bytes
        if end > header.file_size:
            raise BadModelFile(
                f"{p}: tensor {t.name} data ends at byte {end} but the file has {header.file_size}"
                " (truncated download?)"
            )
    return header
