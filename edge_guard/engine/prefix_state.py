"""One prefix sequence of the engine's KV cache: a prompt prefix many texts share, kept and reused.

The prefix (system + developer message with the policy + the user header) is evaluated
once into its own sequence; each text's sequence copies it. A prefix cut back below cells
that llama.cpp already reused for the sliding window is re-evaluated, and long prefixes
evaluated from an empty cache are snapshotted to disk (`prefix_store`) for later processes
(snapshots are whole-context states: saved and restored only while the cache holds
nothing else). `prefixes.PrefixCache` keeps several of these resident.

Each sequence also knows which KV cells it holds (`cells`): a sequence started as a copy of
another's leading part shares that part's cells (llama.cpp's unified cache copies the
sequence id, not the cell), so the cells of several prefixes are counted once
(`count_cells`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

from edge_guard.engine import llama_runtime as rt
from edge_guard.engine.prefix_store import (
    MIN_PREFIX_TOKENS,
    PrefixStore,
    enabled_by_env,
    snapshot_identity,
)

# Disk snapshots of the prefix state (prefix_store): identical results, measured faster.
SNAPSHOTS_BY_DEFAULT = True

# The KV cells a sequence holds, as runs (evaluation, first position, end): positions
# [first, end) of one evaluation are one cell each, whichever sequences share them.
Cells = list[tuple[int, int, int]]
_evaluations = itertools.count(1)


def clip(cells: Cells, n: int) -> Cells:
    """The cells of positions below `n`."""
    return [(run, a, min(b, n)) for run, a, b in cells if a < n]


def count_cells(*held: Cells) -> int:
    """How many distinct KV cells these sequences hold together (shared cells once)."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for cells in held:
        for run, a, b in cells:
            if b > a:
                spans.setdefault(run, []).append((a, b))
    total = 0
    for runs in spans.values():
        end = -1
        for a, b in sorted(runs):
            if b > end:
                total += b - max(a, end)
                end = b
    return total


def shared_prefix(
    prompts: Sequence[Sequence[int]], hints: Sequence[int | None], *, enabled: bool = True
) -> list[int]:
    """The prefix to keep in sequence 0 for these prompts (each keeps >= 1 token of its own).

    One prompt: its `prefix_len` hint (the policy prefix), so the next text reuses it.
    Several: their longest common prefix, capped by the hints when every prompt has one.
    """
    if not enabled or not prompts:
        return []
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    if len(prompts) == 1:
        if hints[0] is not None:
            n = min(n, hints[0])
    else:
        for other in prompts[1:]:
            k = 0
            for a, b in zip(first[:n], other, strict=False):
                if a != b:
                    break
                k += 1
            n = k
        known = [h for h in hints if h is not None]
        if known and len(known) == len(hints):
            n = min(n, *known)
    return list(first[: max(0, n)])


def make_prefix_store(
    enabled: bool | None,
    prefix_cache: bool,
    model_path: str,
    *,
    gpu_layers: int,
    flash_attn: bool | str,
    swa_full: bool,
    n_batch: int,
) -> PrefixStore | None:
    """The on-disk snapshot store for this model and settings, or None when disabled."""
    if enabled is None:
        enabled = enabled_by_env(default=SNAPSHOTS_BY_DEFAULT)
    if not enabled or not prefix_cache:
        return None
    identity = snapshot_identity(
        model_path, gpu_layers=gpu_layers, flash_attn=flash_attn, swa_full=swa_full, n_batch=n_batch
    )
    return PrefixStore(identity=identity)


class PrefixState:
    """Keeps sequence `seq_id` holding exactly one prefix.

    `alone()` tells whether the cache holds nothing but this sequence: only then may the
    whole cache be cleared or replaced by a snapshot (sequence 0 only: snapshots are
    taken of sequence 0 evaluated into an empty cache).
    """

    def __init__(
        self,
        ctx: Any,
        mem: Any,
        batch: rt.Batch,
        *,
        n_swa: int,
        store: PrefixStore | None,
        n_seq: int,
        stats: dict[str, int],
        seq_id: int = 0,
        alone: Any = None,
    ) -> None:
        self._ctx, self._mem, self._batch = ctx, mem, batch
        self.n_swa, self.store, self.n_seq, self.stats = n_swa, store, n_seq, stats
        self.seq_id = seq_id
        self._alone = alone or (lambda: True)
        self.tokens: list[int] = []
        self.cells: Cells = []

    def reset(self) -> None:
        """Forget this sequence's tokens (the whole cache when it holds nothing else)."""
        self._clear()

    def _clear(self) -> None:
        if self._alone():
            rt.memory_clear(self._mem)
        else:
            rt.seq_rm(self._mem, self.seq_id)
        self.forget()

    def forget(self) -> None:
        """The sequence holds nothing (its cells were removed, or the cache cleared)."""
        self.tokens, self.cells = [], []

    def share(self, donor: PrefixState, n: int) -> None:
        """Hold `donor`'s first `n` positions: its very cells, copied by sequence id."""
        self.reset()
        rt.seq_cp(self._mem, donor.seq_id, self.seq_id, 0, n)
        self.tokens, self.cells = list(donor.tokens[:n]), clip(donor.cells, n)

    def set(self, prefix: list[int], *, enabled: bool = True) -> float:
        """Make the sequence hold exactly `prefix`; returns the ms spent evaluating/loading it."""
        if not enabled:
            self.reset()
            return 0.0
        keep = 0
        for a, b in zip(self.tokens, prefix, strict=False):
            if a != b:
                break
            keep += 1
        # Cutting sequence 0 back: with sliding-window layers llama.cpp may already have
        # reused the cells of positions that were out of the window as seen from the old
        # end, but tokens after `keep` need the window before `keep`: check it is whole.
        if keep < len(self.tokens) and (
            not rt.seq_rm(self._mem, self.seq_id, keep) or not self.window_intact(keep)
        ):
            self._clear()
            keep = 0
        self.tokens, self.cells = prefix[:keep], clip(self.cells, keep)
        todo = prefix[keep:]
        if not todo:
            return 0.0
        t0 = time.perf_counter()
        if self._load_snapshot(prefix, len(todo)):
            self.tokens, self.cells = list(prefix), [(next(_evaluations), 0, len(prefix))]
            return (time.perf_counter() - t0) * 1000
        if self.tokens != prefix[:keep]:  # a failed load emptied sequence 0
            keep, todo = 0, prefix
        n_batch = self._batch.capacity
        run = next(_evaluations)
        for start in range(0, len(todo), n_batch):
            chunk = todo[start : start + n_batch]
            self._batch.clear()
            for j, tok in enumerate(chunk):
                self._batch.add(tok, keep + start + j, self.seq_id, False)
            rt.decode(self._ctx, self._batch)
            self.stats["decode_calls"] = self.stats.get("decode_calls", 0) + 1
            self.stats["decoded_tokens"] = self.stats.get("decoded_tokens", 0) + len(chunk)
            self.cells = [*clip(self.cells, keep), (run, keep, keep + start + len(chunk))]
        self.tokens = list(prefix)
        self.stats["prefix_evals"] += 1
        self.stats["prefix_tokens"] += len(todo)
        ms = (time.perf_counter() - t0) * 1000
        if keep == 0:
            self._save_snapshot(prefix)
        return ms

    def window_intact(self, keep: int) -> bool:
        """True when sequence 0 still holds every position tokens after `keep` attend to."""
        if keep == 0 or self.n_swa <= 0:
            return True
        return rt.seq_pos_min(self._mem, self.seq_id) <= max(0, keep - self.n_swa)

    def _load_snapshot(self, prefix: list[int], n_todo: int) -> bool:
        """Load sequence 0 from a snapshot of exactly `prefix` (worth it for long prefixes).

        Only states evaluated from an empty cache are saved, and they are loaded into an
        empty sequence 0, so the cache holds the same cells as a from-scratch evaluation.
        """
        if (
            self.store is None
            or n_todo < MIN_PREFIX_TOKENS
            or self.seq_id != 0
            or not self._alone()
        ):
            return False
        restored = self.store.restore(self._ctx, self._mem, prefix, self.n_seq)
        if restored is None:
            return False
        if not restored:
            self.forget()  # sequence 0 was emptied
            return False
        self.stats["snapshot_loads"] += 1
        return True

    def _save_snapshot(self, prefix: list[int]) -> None:
        if (
            self.store is not None
            and self.seq_id == 0
            and len(prefix) >= MIN_PREFIX_TOKENS
            and self.store.capture(self._ctx, self._mem, prefix, self.n_seq)
        ):
            self.stats["snapshot_saves"] += 1
