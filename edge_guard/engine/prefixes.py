"""Several prompt prefixes resident in the KV cache at once, least recently used dropped first.

Each distinct prefix (policy × style × effort × date: everything before the text) lives
in its own sequence (ids `0 .. max_prefixes-1`), evaluated once and copied into every
text's sequence that starts with it. When a new prefix does not fit the KV budget, the
least recently used prefix that no running sequence is still copying from is dropped;
when it is needed again it is evaluated again, or restored from its disk snapshot when
the cache holds nothing else (`prefix_state`).

With `max_prefixes=1` this is the strict layout: one prefix, in sequence 0, cut back or
extended as prompts change, exactly as a from-scratch evaluation lays out its cells.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_guard.engine import llama_runtime as rt
from edge_guard.engine.prefix_state import PrefixState
from edge_guard.engine.prefix_store import PrefixStore

_clock = itertools.count()


@dataclass
class Resident:
    """One resident prefix: its sequence and how many running sequences copied it."""

    state: PrefixState
    users: int = 0
    last_used: int = field(default_factory=lambda: next(_clock))

    @property
    def seq_id(self) -> int:
        return self.state.seq_id

    @property
    def tokens(self) -> list[int]:
        return self.state.tokens

    def touch(self) -> None:
        self.last_used = next(_clock)


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    """The resident prefixes of one context (driven by the engine loop's thread only)."""

    def __init__(
        self,
        ctx: Any,
        mem: Any,
        batch: rt.Batch,
        *,
        n_swa: int,
        store: PrefixStore | None,
        n_seq: int,
        max_prefixes: int,
        stats: dict[str, int],
        others_busy: Callable[[], bool],
    ) -> None:
        self._mem = mem
        self._others_busy = others_busy
        self.stats = stats
        self.entries = [
            PrefixState(
                ctx,
                mem,
                batch,
                n_swa=n_swa,
                store=store,
                n_seq=n_seq,
                stats=stats,
                seq_id=s,
                alone=lambda s=s: self._alone(s),
            )
            for s in range(max_prefixes)
        ]
        self.residents = [Resident(state) for state in self.entries]

    def _alone(self, seq_id: int) -> bool:
        """True when nothing but `seq_id` holds cells (no other prefix, no running text)."""
        if self._others_busy():
            return False
        return all(not r.tokens for r in self.residents if r.seq_id != seq_id)

    @property
    def n_tokens(self) -> int:
        """KV cells the resident prefixes hold."""
        return sum(len(r.tokens) for r in self.residents)

    def find(self, prefix: list[int]) -> Resident | None:
        for r in self.residents:
            if prefix and r.tokens == prefix:
                return r
        return None

    def acquire(self, prefix: list[int], room: int) -> tuple[Resident, float] | None:
        """A resident holding exactly `prefix` (made so if needed), or None if it cannot be
        made now: every candidate is in use, or its new cells do not fit in `room`.

        Returns the resident and the ms spent evaluating or loading it. The caller counts
        its use (`users`) and releases it when its sequence finishes.
        """
        hit = self.find(prefix)
        if hit is not None:
            hit.touch()
            return hit, 0.0
        free = [r for r in self.residents if r.users == 0]
        if not free:
            return None
        # A free sequence holding the start of `prefix` is extended; else an empty one is
        # used (the others stay resident); else the least recently used is cut back.
        grow = [r for r in free if r.tokens and _common(r.tokens, prefix) == len(r.tokens)]
        empty = [r for r in free if not r.tokens]
        if grow:
            best = max(grow, key=lambda r: len(r.tokens))
        elif empty:
            best = empty[0]
        else:
            best = min(free, key=lambda r: r.last_used)
        keep = _common(best.tokens, prefix)
        need = len(prefix) - keep
        replaced = keep < len(best.tokens)
        # Make room: drop least recently used idle prefixes (other than `best`).
        spare = room + (len(best.tokens) - keep)
        for victim in sorted(free, key=lambda r: r.last_used):
            if spare >= need:
                break
            if victim is best or not victim.tokens:
                continue
            spare += len(victim.tokens)
            victim.state.reset()
            self.stats["prefix_evictions"] = self.stats.get("prefix_evictions", 0) + 1
        if spare < need and not self._nothing_else(best):
            return None
        if replaced:
            self.stats["prefix_evictions"] = self.stats.get("prefix_evictions", 0) + 1
        try:
            if keep == 0:
                self._copy_common(best, prefix)
            ms = best.state.set(prefix)
        except BaseException:  # half evaluated: its cells and tokens no longer agree
            best.state.reset()
            raise
        best.touch()
        return best, ms

    def _copy_common(self, entry: Resident, prefix: list[int]) -> None:
        """Start `entry` from the longest leading part another resident already holds (its
        cells are shared, not evaluated again) when that part's sliding window is whole."""
        donors = [r for r in self.residents if r is not entry and r.tokens]
        if not donors:
            return
        donor = max(donors, key=lambda r: _common(r.tokens, prefix))
        n = _common(donor.tokens, prefix)
        if n == 0 or not donor.state.window_intact(n):
            return
        entry.state.reset()
        rt.seq_cp(self._mem, donor.seq_id, entry.seq_id, 0, n)
        entry.state.tokens = list(prefix[:n])

    def _nothing_else(self, entry: Resident) -> bool:
        """With nothing else in the cache a prefix is admitted whatever its size (it fails
        alone, with llama.cpp's error, if it really cannot fit)."""
        return self._alone(entry.seq_id)

    def reset(self) -> None:
        rt.memory_clear(self._mem)
        for r in self.residents:
            r.state.tokens = []
            r.users = 0
