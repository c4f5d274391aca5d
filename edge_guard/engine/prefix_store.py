"""Disk snapshots of the policy-prefix KV state, so a new process skips re-evaluating it.

Evaluating a 1,000-token policy prefix costs about a minute on a laptop CPU; its KV
state is a few MB (synthetic models) to ~100 MB (gpt-oss-20b) and loads in milliseconds. Snapshots live in `<data dir>/prefix_states/<key>.state`, where
the key hashes everything that determines the state's bytes: the model file's identity
(real path, size, mtime), the llama.cpp build (version + system info), the engine
settings that change numerics (GPU layers, flash attention, SWA cache, batch size) and
the prefix token ids. The folder is bounded (least recently used files go first).

The snapshot is the whole context state (`llama_state_get_data`) taken right after the
prefix was evaluated into an empty cache, so it restores every cell at the index a fresh
evaluation would use: results are bit-identical. (`llama_state_seq_get_data` for sequence
0 is smaller, but it drops the cells outside the sliding window and restores the others
at different cache indices; attention then sums in another order and, measured on a
synthetic model, a later greedy token changed.)

File layout: ``EGPS1\\n`` + one JSON header line (key, n_tokens, size, crc32) + data.
A file that fails any check is deleted and treated as a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_guard.defaults import PREFIX_STORE_MB, env

MAGIC = b"EGPS1\n"
DEFAULT_MAX_MB = PREFIX_STORE_MB
MIN_PREFIX_TOKENS = 64  # shorter prefixes evaluate faster than a file round trip is worth
ENV_ENABLE = "EDGE_GUARD_PREFIX_STORE"  # "0" disables snapshots
ENV_MAX_MB = "EDGE_GUARD_PREFIX_STORE_MB"


def enabled_by_env(default: bool = True) -> bool:
    value = env(ENV_ENABLE)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def file_identity(path: str | os.PathLike[str]) -> str:
    """A cheap identity for a model file: real path, size, mtime, inode and ctime (no 12 GB
    hash; a file replaced at the same path with the same size and mtime is another file)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"


def snapshot_identity(
    model_path: str, *, gpu_layers: int, flash_attn: bool | str, swa_full: bool, n_batch: int
) -> dict[str, Any]:
    """Everything besides the prefix that determines the bytes of a prefix state."""
    from edge_guard.engine import llama_runtime as rt

    return {
        "format": 2,
        "model": file_identity(model_path),
        "build": rt.build_info(),
        "gpu_layers": gpu_layers,
        "flash_attn": str(flash_attn),
        "swa_full": swa_full,
        "n_batch": n_batch,
    }


class PrefixStore:
    """A bounded folder of prefix-state snapshots keyed by content hash."""

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        max_bytes: int | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.identity = identity or {}
        if folder is None:
            from edge_guard.paths import data_dir

            folder = data_dir() / "prefix_states"
        self.folder = Path(folder)
        if max_bytes is None:
            max_bytes = int(float(env(ENV_MAX_MB) or DEFAULT_MAX_MB) * 1024 * 1024)
        self.max_bytes = max_bytes

    @staticmethod
    def key(identity: dict[str, Any], prefix: Sequence[int]) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(identity, sort_keys=True).encode())
        h.update(b"\0")
        h.update(",".join(map(str, prefix)).encode())
        return h.hexdigest()

    def key_for(self, prefix: Sequence[int]) -> str:
        return self.key(self.identity, prefix)

    def restore(self, ctx: Any, mem: Any, prefix: Sequence[int], n_seq: int) -> bool | None:
        """Replace the context state with the snapshot of `prefix` (sequence 0 only).

        None: no snapshot (state untouched); False: llama.cpp rejected it (the cache is now
        empty); True: sequence 0 holds exactly `prefix`, in the cells a fresh evaluation uses.
        """
        from edge_guard.engine import llama_runtime as rt

        data = self.load(self.key_for(prefix), len(prefix))
        if data is None:
            return None
        rt.memory_clear(mem)
        if rt.state_set(ctx, data) and _holds_exactly(mem, len(prefix), n_seq):
            return True
        rt.memory_clear(mem)
        self._remove(self.path(self.key_for(prefix)))
        return False

    def capture(self, ctx: Any, mem: Any, prefix: Sequence[int], n_seq: int) -> bool:
        """Save the context state, which must hold only `prefix` in sequence 0 (cells 0..n-1,
        as evaluated into an empty cache), unless a snapshot already exists."""
        from edge_guard.engine import llama_runtime as rt
        from edge_guard.errors import EdgeGuardError

        key = self.key_for(prefix)
        if self.path(key).exists() or not _holds_exactly(mem, len(prefix), n_seq):
            return False
        try:
            data = rt.state_get(ctx)
        except EdgeGuardError:
            return False
        return self.save(key, len(prefix), data) is not None

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.state"

    def load(self, key: str, n_tokens: int) -> bytes | None:
        """The snapshot's bytes, or None (missing or damaged: a damaged file is removed)."""
        path = self.path(key)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        data = _unpack(raw, key, n_tokens)
        if data is None:
            self._remove(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return data

    def save(self, key: str, n_tokens: int, data: bytes) -> Path | None:
        """Write atomically (temp file + rename), then trim the folder. None if it failed."""
        path = self.path(key)
        header = {"key": key, "n_tokens": n_tokens, "size": len(data), "crc32": zlib.crc32(data)}
        tmp = path.with_name(f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(MAGIC)
                fh.write(json.dumps(header).encode() + b"\n")
                fh.write(data)
            os.replace(tmp, path)
        except OSError:
            self._remove(tmp)
            return None
        self.prune(keep=path)
        return path

    def entries(self) -> list[tuple[Path, int, float]]:
        """(path, size, mtime) of every snapshot, oldest first."""
        out = []
        try:
            names = list(self.folder.glob("*.state"))
        except OSError:
            return []
        for p in names:
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((p, st.st_size, st.st_mtime))
        out.sort(key=lambda e: e[2])
        return out

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def prune(self, keep: Path | None = None) -> list[Path]:
        """Delete least recently used snapshots until the folder fits `max_bytes`."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = []
        for p, size, _ in entries:
            if total <= self.max_bytes:
                break
            if keep is not None and p == keep:
                continue
            self._remove(p)
            total -= size
            removed.append(p)
        return removed

    def clear(self) -> int:
        n = 0
        for p, _, _ in self.entries():
            self._remove(p)
            n += 1
        return n

    @staticmethod
    def _remove(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()


def _holds_exactly(mem: Any, n_tokens: int, n_seq: int) -> bool:
    """Sequence 0 holds positions 0..n-1 (every sliding-window cell too); sequences 1..n_seq-1
    hold nothing."""
    from edge_guard.engine import llama_runtime as rt

    return (
        rt.seq_pos_min(mem, 0) == 0
        and rt.seq_pos_max(mem, 0) == n_tokens - 1
        and all(rt.seq_pos_max(mem, s) < 0 for s in range(1, n_seq))
    )


def _unpack(raw: bytes, key: str, n_tokens: int) -> bytes | None:
    if not raw.startswith(MAGIC):
        return None
    end = raw.find(b"\n", len(MAGIC))
    if end < 0:
        return None
    try:
        header = json.loads(raw[len(MAGIC) : end])
    except ValueError:
        return None
    data = raw[end + 1 :]
    if (
        not isinstance(header, dict)
        or header.get("key") != key
        or header.get("n_tokens") != n_tokens
        or header.get("size") != len(data)
        or header.get("crc32") != zlib.crc32(data)
    ):
        return None
    return data
