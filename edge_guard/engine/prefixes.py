"""Several prompt prefixes resident in the KV cache at once, least recently used dropped first.

Each distinct prefix (policy × style × effort × date: everything before the text) lives
in its own sequence (ids `0 .. max_prefixes-1`), evaluated once and copied into every
text's sequence that starts with it. A new prefix starts as a copy of the longest leading part another resident holds: those
cells are shared, and counted once toward the KV budget (`n_tokens`, `prefix_state.Cells`).
When a new prefix does not fit the KV budget, the
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
from edge_guard.engine.prefix_state import Cells, PrefixState, clip, count_cells
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
        """KV cells the resident prefixes hold (a cell several of them share counts once)."""
        return count_cells(*(r.state.cells for r in self.residents))

    def _freed(self, entry: Resident, keep: int) -> int:
        """Cells freed by cutting `entry` back to its first `keep` positions: those that no
        other resident shares."""
        others: list[Cells] = [r.state.cells for r in self.residents if r is not entry]
        now = count_cells(entry.state.cells, *others)
        return now - count_cells(clip(entry.state.cells, keep), *others)

    def _donor(self, entry: Resident, prefix: list[int]) -> tuple[Resident | None, int]:
        """The resident holding the longest leading part of `prefix` that `entry` can start
        from (its sliding window whole), and that part's length (0: none)."""
        donors = [r for r in self.residents if r is not entry and r.tokens]
        if not donors:
            return None, 0
        # the most recently used of the longest: the least recently used may be dropped
        donor = max(donors, key=lambda r: (_common(r.tokens, prefix), r.last_used))
        n = _common(donor.tokens, prefix)
        if n == 0 or not donor.state.window_intact(n):
            return None, 0
        return donor, n

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
        # Starting afresh: from the cells another resident holds of the prefix's start.
        donor, shared = self._donor(best, prefix) if keep == 0 else (None, 0)
        need = len(prefix) - keep - shared  # the new cells
        replaced = keep < len(best.tokens)
        # Make room: drop least recently used idle prefixes (other than `best` and the
        # donor), each freeing the cells no other resident shares (a cell shared by two
        # dropped ones is not counted: short, never over).
        spare = room + self._freed(best, keep)
        for victim in sorted(free, key=lambda r: r.last_used):
            if spare >= need:
                break
            if victim is best or victim is donor or not victim.tokens:
                continue
            spare += self._freed(victim, 0)
            victim.state.reset()
            self.stats["prefix_evictions"] = self.stats.get("prefix_evictions", 0) + 1
        if spare < need and donor is not None and donor.users == 0:
            spare += self._freed(donor, 0)  # the donor goes too; another may hold the start
            donor.state.reset()
            self.stats["prefix_evictions"] = self.stats.get("prefix_evictions", 0) + 1
            donor, shared = self._donor(best, prefix)
            need = len(prefix) - keep - shared
        if spare < need and not self._nothing_else(best):
            return None
        if replaced:
            self.stats["prefix_evictions"] = self.stats.get("prefix_evictions", 0) + 1
        try:
            if donor is not None:  # its cells are shared, not evaluated again
                best.state.share(donor.state, shared)
            ms = best.state.set(prefix)
        except BaseException:  # half evaluated: its cells and tokens no longer agree
            best.state.reset()
            raise
        best.touch()
        return best, ms

    def _nothing_else(self, entry: Resident) -> bool:
        """With nothing else in the cache a prefix is admitted whatever its size (it fails
        alone, with llama.cpp's error, if it really cannot fit)."""
        return self._alone(entry.seq_id)

    def reset(self) -> None:
        rt.memory_clear(self._mem)
        for r in self.residents:
            r.state.forget()
            r.users = 0
