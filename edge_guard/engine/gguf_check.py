"""Reads and checks GGUF files before llama.cpp sees them.

llama.cpp aborts the whole process on some malformed files (a gpt-oss file without
``expert_used_count``, for one), so every model goes through `check_model_file` first:
a bounds-checked header reader (fast on the real 12 GB files: it never touches tensor
data), the architecture, the hyperparameters llama.cpp requires, the tokenizer arrays,
and every tensor's data lying inside the file.
"""

from __future__ import annotations

import functools
import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import Any

from edge_guard.errors import BadModelFile

GGUF_MAGIC = b"GGUF"
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
_MAX_ARRAY_DEPTH = 4

# GGUF value types.
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY = range(10)
_UINT64, _INT64, _FLOAT64 = 10, 11, 12
_U64 = struct.Struct("<Q")
_SCALAR = {
    _UINT8: "<B", _INT8: "<b", _UINT16: "<H", _INT16: "<h", _UINT32: "<I", _INT32: "<i",
    _FLOAT32: "<f", _BOOL: "<?", _UINT64: "<Q", _INT64: "<q", _FLOAT64: "<d",
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order (ne0 first)
    type_id: int
    offset: int  # relative to the data section
    n_bytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def type_name(self) -> str:
        try:
            import gguf

            return gguf.GGMLQuantizationType(self.type_id).name
        except (ImportError, ValueError):
            return f"type{self.type_id}"


@dataclass
class GGUFHeader:
    path: str
    file_size: int
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def arch_key(self, key: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)


class _Cursor:
    """Bounds-checked little-endian reader over a memory map."""

    def __init__(self, buf: mmap.mmap | bytes, path: str) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise BadModelFile(
                f"{self.path}: GGUF header is truncated or corrupt (read past the end at byte {self.pos})"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        return self.take(n).decode("utf-8", "replace")

    def strings(self, count: int, keep: bool) -> list[str] | _Skipped:
        """A string array, read in one tight loop (the vocabularies hold ~650k strings)."""
        buf, pos, size = self.buf, self.pos, len(self.buf)
        unpack = _U64.unpack_from
        out: list[str] = []
        append = out.append
        for _ in range(count):
            if pos + 8 > size:
                raise BadModelFile(
                    f"{self.path}: GGUF header is truncated or corrupt (string array)"
                )
            (n,) = unpack(buf, pos)
            pos += 8
            end = pos + n
            if end > size:
                raise BadModelFile(
                    f"{self.path}: GGUF header is truncated or corrupt (string array)"
                )
            if keep:
                append(buf[pos:end].decode("utf-8", "replace"))
            pos = end
        self.pos = pos
        return out if keep else _Skipped(count)

    def value(self, vtype: int, keep: bool, depth: int = 0) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype = self.unpack("<I")
            count = self.unpack("<Q")
            if count > len(self.buf):
                raise BadModelFile(
                    f"{self.path}: GGUF array claims {count} elements; file is corrupt"
                )
            if etype in _SCALAR and not keep:
                self.take(struct.calcsize(_SCALAR[etype]) * count)
                return _Skipped(count)
            if etype in _SCALAR:
                size = struct.calcsize(_SCALAR[etype])
                raw = self.take(size * count)
                return list(struct.unpack(f"<{count}{_SCALAR[etype][1]}", raw))
            if etype == _STRING:
                return self.strings(count, keep)
            if depth >= _MAX_ARRAY_DEPTH:
                raise BadModelFile(
                    f"{self.path}: GGUF arrays are nested too deeply; file is corrupt"
                )
            items = [self.value(etype, keep, depth + 1) for _ in range(count)]
            return items if keep else _Skipped(count)
        raise BadModelFile(f"{self.path}: unknown GGUF value type {vtype}; file is corrupt")


@dataclass(frozen=True)
class _Skipped:
    """An array whose elements were not kept (only its length)."""

    count: int

    def __len__(self) -> int:
        return self.count


def read_header(path: str | os.PathLike[str], *, keep_arrays: tuple[str, ...] = ()) -> GGUFHeader:
    """Parse a GGUF header. Arrays are kept only for keys in `keep_arrays` (others: length)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block, /dev/zero never end
            raise BadModelFile(f"{path}: not a regular file, so not a GGUF model")
        size = st.st_size
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise BadModelFile(f"{path}: cannot read model file ({exc.strerror or exc})") from None
    with fh:
        if size < 24:
            raise BadModelFile(f"{path}: not a GGUF file (only {size} bytes)")
        if fh.read(4) != GGUF_MAGIC:
            raise BadModelFile(f"{path}: not a GGUF file (bad magic bytes)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(_Cursor(buf, path), size, keep_arrays)


def _parse(cur: _Cursor, size: int, keep_arrays: tuple[str, ...]) -> GGUFHeader:
    path = cur.path
    cur.take(4)
    version = cur.unpack("<I")
    if version not in (2, 3):
        raise BadModelFile(f"{path}: unsupported GGUF version {version}")
    n_tensors = cur.unpack("<Q")
    n_kv = cur.unpack("<Q")
    if n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise BadModelFile(f"{path}: GGUF header counts are implausible; file is corrupt")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.unpack("<I")
        metadata[key] = cur.value(vtype, keep=key in keep_arrays)
    tensors = []
    import gguf

    for _ in range(n_tensors):
        name = _printable(cur.string())
        n_dims = cur.unpack("<I")
        if n_dims > 8:
            raise BadModelFile(f"{path}: tensor {name} has {n_dims} dimensions; file is corrupt")
        shape = tuple(cur.unpack("<Q") for _ in range(n_dims))
        type_id = cur.unpack("<I")
        offset = cur.unpack("<Q")
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)]
        except (ValueError, KeyError):
            raise BadModelFile(f"{path}: tensor {name} has unknown type {type_id}") from None
        n = 1
        for d in shape:
            n *= d
        if shape and shape[0] % block:
            raise BadModelFile(f"{path}: tensor {name} rows are not a multiple of its block size")
        tensors.append(TensorInfo(name, shape, type_id, offset, n // block * type_size))
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise BadModelFile(f"{path}: invalid general.alignment {alignment!r}")
    data_offset = (cur.pos + alignment - 1) // alignment * alignment
    return GGUFHeader(path, size, version, metadata, tensors, data_offset)


def _stamp(path: str) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BadModelFile(f"{path}: cannot read model file ({exc.strerror or exc})") from None
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _checked(stamp: tuple[str, int, int]) -> GGUFHeader:
    return _check(stamp[0])


def read_vocab_arrays(path: str | os.PathLike[str]) -> tuple[list[str], list[int]]:
    """The GGUF's `tokenizer.ggml.tokens` and `token_type` arrays."""
    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")
    header = read_header(path, keep_arrays=keys)
    tokens, types = (header.metadata.get(k) for k in keys)
    if not isinstance(tokens, list) or not isinstance(types, list) or len(tokens) != len(types):
        raise BadModelFile(f"{header.path}: the GGUF has no usable tokenizer token list")
    return tokens, types


def check_model_file(path: str | os.PathLike[str]) -> GGUFHeader:
    """Raise `BadModelFile` with a one-line reason unless llama.cpp can safely load `path`.

    Results are remembered per (path, size, mtime): a file is parsed once per process.
    """
    return _checked(_stamp(os.fspath(path)))


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
        if not isinstance(header.metadata[key], list | _Skipped):
            raise BadModelFile(f"{p}: {key} is {_short(header.metadata[key])}, not an array")


def _printable(name: str) -> str:
    """A name from the file, safe in a one-line message (control characters escaped)."""
    return name if name.isprintable() else repr(name)[1:-1]


def _short(v: Any) -> str:
    text = repr(v.count) + " elements" if isinstance(v, _Skipped) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _check(path: str) -> GGUFHeader:
    header = read_header(path)
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
