"""A GGUF's header and vocabulary tables, read once per model file (memoized and kept on disk).

Parsing a GGUF header in Python and turning its 200k token strings into bytes cost about
a second on every cold start, and both depend only on the file. `header(path)` and
`vocab_tables(path, build, build_id)` therefore remember them per file identity (real
path, device, inode, size, mtime) in this process, and keep one entry per model file
in `<data dir>/gguf_cache/`. A disk entry is used only when its identity matches *and*
the sha256 of the file's header bytes equals the one recorded (13 MB on the o200k
models, hashed in about 10 ms), so an edited file is never read through a stale entry.

A file modified in the last `RACY_S` seconds is "racy" (two writes within one clock tick
can leave size and mtime unchanged): it is parsed on every call and never cached. Disk
entries are written atomically; an unreadable, foreign or corrupt entry is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path
from typing import Any

from edge_guard.errors import BadModelFile
from edge_guard.gguf.read import GGUFHeader, Skipped, TensorInfo, parse_header

FileId = tuple[str, int, int, int, int]  # realpath, st_dev, st_ino, st_size, st_mtime_ns
Tables = tuple[list[bytes], frozenset[int]]  # token id -> bytes, control (special) ids
VOCAB_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")
CACHE_DIR = "gguf_cache"
MAGIC = b"EGGUFC02"  # bump when the parser's output or this layout changes
RACY_S = 3.0
_MEMO_SIZE = 8
_LEN = struct.Struct("<Q")

_lock = threading.Lock()
_headers: OrderedDict[FileId, GGUFHeader] = OrderedDict()
_pending: dict[FileId, tuple[object, object]] = {}  # arrays of the last parse, unchecked
stats = {"parses": 0, "disk_hits": 0}  # for tests and `scripts/cli_latency.py`


def file_id(path: str | os.PathLike[str]) -> FileId:
    """The identity a cached header or vocabulary is keyed by; `BadModelFile` if unreadable."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BadModelFile(f"{path}: cannot read model file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadModelFile(f"{path}: not a regular file, so not a GGUF model")
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def racy(fid: FileId) -> bool:
    """Modified so recently that size + mtime may not tell two versions apart."""
    return time.time_ns() - fid[4] < RACY_S * 1e9


def header(path: str | os.PathLike[str]) -> GGUFHeader:
    """The header of `path` with every array left as its length (as `parse_header`)."""
    fid = file_id(path)
    if not racy(fid):
        with _lock:
            hit = _headers.get(fid)
        if hit is not None:
            return hit
        entry = _read_entry(fid, os.fspath(path), want_vocab=False)
        if entry is not None:
            return _remember(fid, entry[0])
    head, _arrays = _parse(fid, os.fspath(path), write=True)
    return head


def vocab_tables(
    path: str | os.PathLike[str], build: Callable[[list[Any], list[Any]], Tables], build_id: str
) -> Tables:
    """`build(tokens, token_types)` of the GGUF's tokenizer arrays, cached with the header.

    `build_id` names the builder's version: an entry built by another is not used.
    """
    path = os.fspath(path)
    fid = file_id(path)
    cacheable = not racy(fid)
    if cacheable:
        entry = _read_entry(fid, path, want_vocab=True, build_id=build_id)
        if entry is not None and entry[1] is not None:
            _remember(fid, entry[0])
            return entry[1]
    with _lock:
        arrays = _pending.pop(fid, None)
    if arrays is None:
        head, arrays = _parse(fid, path, write=False)
    else:
        head = header(path)
    tokens, types = arrays
    if not isinstance(tokens, list) or not isinstance(types, list) or len(tokens) != len(types):
        raise BadModelFile(f"{path}: the GGUF has no usable tokenizer token list")
    tables = build(tokens, types)
    if cacheable:
        _write_entry(fid, head, tables, build_id)
    return tables


def clear_memo() -> None:
    """Forget what this process remembered (the disk entries stay)."""
    with _lock:
        _headers.clear()
        _pending.clear()


# -- parsing -----------------------------------------------------------------------------
def _parse(fid: FileId, path: str, *, write: bool) -> tuple[GGUFHeader, tuple[object, object]]:
    """One parse that keeps the tokenizer arrays (for a vocabulary built next; as read,
    the caller checks them)."""
    full = parse_header(path, keep_arrays=VOCAB_KEYS)
    stats["parses"] += 1
    arrays = (full.metadata.get(VOCAB_KEYS[0]), full.metadata.get(VOCAB_KEYS[1]))
    meta = dict(full.metadata)
    for key in VOCAB_KEYS:
        if isinstance(meta.get(key), list):
            meta[key] = Skipped(len(meta[key]))
    head = GGUFHeader(
        full.path,
        full.file_size,
        full.version,
        meta,
        full.tensors,
        full.data_offset,
        full.header_len,
    )
    if racy(fid) or file_id(path) != fid:  # changed while we read it: use, never keep
        return head, arrays
    _remember(fid, head)
    with _lock:
        _pending.clear()
        _pending[fid] = arrays
    if write:
        _write_entry(fid, head, None, "")
    return head, arrays


def _remember(fid: FileId, head: GGUFHeader) -> GGUFHeader:
    with _lock:
        _headers[fid] = head
        _headers.move_to_end(fid)
        while len(_headers) > _MEMO_SIZE:
            _headers.popitem(last=False)
    return head


# -- disk entries ------------------------------------------------------------------------
def _entry_path(real: str) -> Path:
    from edge_guard.paths import data_dir

    name = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return data_dir() / CACHE_DIR / f"{name}.bin"


def _header_digest(path: str, length: int) -> str | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read(length)
    except OSError:
        return None
    return hashlib.sha256(data).hexdigest() if len(data) == length else None


def _encode_value(value: Any) -> Any:
    return {"skipped": value.count} if isinstance(value, Skipped) else value


def _decode_value(value: Any) -> Any:
    return Skipped(int(value["skipped"])) if isinstance(value, dict) else value


def _write_entry(fid: FileId, head: GGUFHeader, tables: Tables | None, build_id: str) -> None:
    """Write (atomically) the entry for `fid`; failures only cost a parse next time."""
    digest = _header_digest(fid[0], head.header_len)
    if digest is None:
        return
    doc: dict[str, Any] = {
        "id": list(fid),
        "header_sha256": digest,
        "version": head.version,
        "data_offset": head.data_offset,
        "header_len": head.header_len,
        "metadata": {k: _encode_value(v) for k, v in head.metadata.items()},
        "tensors": [[t.name, list(t.shape), t.type_id, t.offset, t.n_bytes] for t in head.tensors],
        "vocab": None,
    }
    parts: list[bytes] = []
    if tables is not None:
        token_bytes, control = tables
        lengths = array("I", (len(b) for b in token_bytes))
        ctl = array("I", sorted(control))
        blob = b"".join(token_bytes)
        doc["vocab"] = {
            "n": len(token_bytes),
            "n_control": len(ctl),
            "blob": len(blob),
            "build": build_id,
        }
        parts = [lengths.tobytes(), ctl.tobytes(), blob]
    try:
        text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        target = _entry_path(fid[0])
        target.parent.mkdir(mode=0o700, exist_ok=True)
    except (OSError, ValueError, TypeError):  # read-only data dir, odd metadata: no entry
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(MAGIC + _LEN.pack(len(text)) + text)
            for part in parts:
                out.write(part)
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)


def _read_entry(
    fid: FileId, path: str, *, want_vocab: bool, build_id: str = ""
) -> tuple[GGUFHeader, Tables | None] | None:
    """The entry for `fid` if it exists, matches and its header bytes still hash the same."""
    try:
        raw = _entry_path(fid[0]).read_bytes()
    except OSError:
        return None
    try:
        if raw[:8] != MAGIC:
            return None
        (n,) = _LEN.unpack_from(raw, 8)
        doc = json.loads(raw[16 : 16 + n])
        if not isinstance(doc, dict) or tuple(doc["id"]) != fid:
            return None
        vocab = doc.get("vocab") if want_vocab else None
        if want_vocab and (not isinstance(vocab, dict) or vocab.get("build") != build_id):
            return None
        head = GGUFHeader(
            path,
            fid[3],
            int(doc["version"]),
            {str(k): _decode_value(v) for k, v in doc["metadata"].items()},
            [
                TensorInfo(str(t[0]), tuple(int(d) for d in t[1]), int(t[2]), int(t[3]), int(t[4]))
                for t in doc["tensors"]
            ],
            int(doc["data_offset"]),
            int(doc["header_len"]),
        )
        if _header_digest(path, head.header_len) != doc["header_sha256"]:
            return None
        tables = _tables(raw, 16 + n, vocab) if isinstance(vocab, dict) else None
    except (ValueError, KeyError, TypeError, IndexError, struct.error):
        return None
    stats["disk_hits"] += 1
    return head, tables


def _tables(raw: bytes, pos: int, vocab: dict[str, Any]) -> Tables:
    n, n_control, n_blob = int(vocab["n"]), int(vocab["n_control"]), int(vocab["blob"])
    lengths = array("I")
    lengths.frombytes(raw[pos : pos + 4 * n])
    pos += 4 * n
    control = array("I")
    control.frombytes(raw[pos : pos + 4 * n_control])
    pos += 4 * n_control
    blob = raw[pos : pos + n_blob]
    if len(lengths) != n or len(control) != n_control or len(blob) != n_blob:
        raise ValueError("truncated entry")
    if sum(lengths) != n_blob or any(c >= n for c in control):
        raise ValueError("inconsistent entry")
    ends = list(accumulate(lengths))
    starts = [0, *ends[:-1]]
    return [blob[a:b] for a, b in zip(starts, ends, strict=True)], frozenset(control)
