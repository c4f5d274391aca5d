"""A bounds-checked GGUF header parser: metadata, tensor infos, data offset.

`parse_header(path)` reads a GGUF's header through a memory map without touching tensor
data (fast on the real 12 GB files) and raises `BadModelFile` with a one-line reason on
anything malformed. It never caches: `gguf_check` (checks, the cached `read_header`) and
`gguf_cache` (the on-disk cache) build on it.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import Any

from edge_guard.errors import BadModelFile

GGUF_MAGIC = b"GGUF"
_MAX_ARRAY_DEPTH = 4

# GGUF value types.
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY = range(10)
_UINT64, _INT64, _FLOAT64 = 10, 11, 12
_U64 = struct.Struct("<Q")
_SCALAR = {
    _UINT8: "<B",
    _INT8: "<b",
    _UINT16: "<H",
    _INT16: "<h",
    _UINT32: "<I",
    _INT32: "<i",
    _FLOAT32: "<f",
    _BOOL: "<?",
    _UINT64: "<Q",
    _INT64: "<q",
    _FLOAT64: "<d",
}


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
    header_len: int = 0  # bytes of the file the header occupies (before alignment)

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

    def strings(self, count: int, keep: bool) -> list[str] | Skipped:
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
        return out if keep else Skipped(count)

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
                return Skipped(count)
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
            return items if keep else Skipped(count)
        raise BadModelFile(f"{self.path}: unknown GGUF value type {vtype}; file is corrupt")


@dataclass(frozen=True)
class Skipped:
    """An array whose elements were not kept (only its length)."""

    count: int

    def __len__(self) -> int:
        return self.count


def parse_header(path: str | os.PathLike[str], *, keep_arrays: tuple[str, ...] = ()) -> GGUFHeader:
    """Parse a GGUF header (never cached). Arrays are kept only for keys in `keep_arrays`
    (others: their length)."""
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
    return GGUFHeader(path, size, version, metadata, tensors, data_offset, cur.pos)


def _printable(name: str) -> str:
    """A name from the file, safe in a one-line message (control characters escaped)."""
    return name if name.isprintable() else repr(name)[1:-1]
