"""One step of the engine loop's continuous batch: fill the batch, decode it, use its logits.

Each step decodes one token for every generating sequence plus prompt chunks (and
score-only continuations) for the others, up to the batch size. A request with branches
adds its prompt's last chunk to the sequences of as many branches as fit (free sequences,
batch room), then each branch's tokens, common leading tokens once (`branch_trie`): the
prompt and every branch in one decode; the branches' sequences are borrowed for that step
only. A row's logits advance
its own sequence only: whatever raises while using them (NaN logits, a callback, the
parser, a score) fails that sequence alone. A decode that fails for a batch of several
sequences is undone and retried one sequence at a time, so only a sequence that fails
alone fails. A step that finds nothing to decode fails the sequences that cannot move
(a loop never spins on them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge_guard.engine import llama_runtime as rt
from edge_guard.engine.slots import CallbackError, Slot, blame

if TYPE_CHECKING:
    from edge_guard.engine.engine import Engine
    from edge_guard.engine.handles import Handle

Row = tuple[Slot, int, int, int]  # slot, batch row, continuation (-1 next token, -2 kept), token
BRANCH = -3  # a Row's continuation for a branch's last token (the branch's index in place of token)
NO_PROGRESS = "internal error: the request made no progress"
Node = tuple[int, int, list[int], list[int]]  # token, depth, its sequences, branches ending there


def branch_trie(items: Sequence[tuple[int, int, Sequence[int]]]) -> list[Node]:
    """The tokens of several branches `(branch, sequence, tokens)` as the nodes of their
    trie, depth first in first-appearance order: a leading part common to several branches
    is one node (one KV cell) held by all their sequences, and each branch's nodes come in
    order, each node's sequences a subset of its parent's (what llama.cpp's batch allows)."""

    def children(group: Sequence[tuple[int, int, Sequence[int]]], depth: int) -> list[Any]:
        by: dict[int, list[tuple[int, int, Sequence[int]]]] = {}
        for item in group:
            if len(item[2]) > depth:
                by.setdefault(int(item[2][depth]), []).append(item)
        return list(by.items())

    out: list[Node] = []
    stack = [(tok, 0, sub) for tok, sub in reversed(children(items, 0))]
    while stack:
        tok, depth, sub = stack.pop()
        ends = [k for k, _seq, toks in sub if len(toks) == depth + 1]
        out.append((tok, depth, [seq for _k, seq, _t in sub], ends))
        stack.extend((t, depth + 1, g) for t, g in reversed(children(sub, depth + 1)))
    return out


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Stepper:
    """The decoding half of `loop.EngineLoop` (which provides the attributes below)."""

    engine: Engine
    slots: dict[int, Slot]
    _touched: list[Handle]
    _free: list[int]  # free sequence ids (a step borrows some for branches, gives them back)

    def _release(self, seq_id: int, error: str | None = None) -> None:
        raise NotImplementedError

    def _step(self, only: list[Slot] | None = None) -> None:
        """Decode one batch for every running sequence (or `only` these); finish those done."""
        eng = self.engine
        slots = list(self.slots.values()) if only is None else only
        self._touched = [s.handle for s in slots]
        for slot in slots:
            if slot.wave:  # left by a fault of the loop mid-step
                self._end_wave(slot)
        saved = {s.seq_id: (s.n_past, s.pending) for s in slots}
        want, parts = self._fill(slots)
        if not parts:
            for slot in slots:
                self._release(slot.seq_id, NO_PROGRESS)
            return
        try:
            rt.decode(eng.context, eng.batch)
        except Exception as exc:
            for slot in parts:
                self._end_wave(slot)
            if len(parts) == 1:
                self._touched = [parts[0].handle]
                self._release(parts[0].seq_id, blame(parts[0].handle, exc))
                return
            for slot in parts:  # undo the step, then each sequence alone
                slot.n_past, slot.pending = saved[slot.seq_id]
                rt.seq_rm(eng.memory, slot.seq_id, slot.n_past)
            for slot in parts:
                if slot.seq_id in self.slots:
                    self._step([slot])
            return
        eng.stats["decode_calls"] = eng.stats.get("decode_calls", 0) + 1
        eng.stats["decoded_tokens"] = eng.stats.get("decoded_tokens", 0) + eng.batch.n
        finished: dict[int, str | None] = {}
        for slot, row, k, j in want:
            if slot.seq_id in finished:
                continue
            try:
                if self._apply(slot, row, k, j):
                    finished[slot.seq_id] = None
            except Exception as exc:  # NaN logits, a callback, the parser: this item only
                finished[slot.seq_id] = blame(slot.handle, exc)
        for slot in parts:  # the branches' cells and borrowed sequences go
            self._end_wave(slot)
        for seq_id, error in finished.items():  # marked first: a fault of the loop while
            slot = self.slots[seq_id]  # releasing one leaves the others to its recovery
            slot.done, slot.error = True, error
        for seq_id in finished:
            self._touched = [self.slots[seq_id].handle]
            self._release(seq_id)
        self._touched = []

    def _fill(self, slots: list[Slot]) -> tuple[list[Row], list[Slot]]:
        """Put the next tokens of `slots` in the engine's batch: the rows whose logits count
        and the slots that have rows."""
        eng = self.engine
        batch = eng.batch
        batch.clear()
        want: list[Row] = []
        parts: list[Slot] = []
        budget = eng.n_batch
        for slot in slots:  # generating sequences first: one token each
            if slot.generating and not slot.score_only and budget > 0:
                parts.append(slot)
                want.append((slot, batch.n, -1, -1))
                batch.add(slot.last, slot.n_past, slot.seq_id, True)  # type: ignore[arg-type]
                slot.n_past += 1
                budget -= 1
        for slot in slots:
            if (
                slot.pending
                and budget > 0
                and slot.request.branches
                and len(slot.pending) <= budget
            ):
                parts.append(slot)  # the prompt's end, and its branches in the same batch
                budget -= self._add_wave(slot, budget, want)
            elif slot.pending and budget > 0:
                parts.append(slot)
                chunk, slot.pending = slot.pending[:budget], slot.pending[budget:]
                resume = slot.request.continue_at
                for j, tok in enumerate(chunk):
                    last = not slot.pending and j == len(chunk) - 1
                    if last:
                        want.append((slot, batch.n, -1, -1))
                    elif resume is not None and slot.n_past == resume - 1:
                        want.append((slot, batch.n, -2, -1))  # the generation prompt's end
                        last = True
                    batch.add(tok, slot.n_past, slot.seq_id, last)
                    slot.n_past += 1
                budget -= len(chunk)
            elif not slot.pending and slot.jobs and budget >= len(slot.jobs[0][1]) - 1:
                parts.append(slot)
                k, cont = slot.jobs[0]  # score-only: one continuation's tokens, all rows wanted
                for j, tok in enumerate(cont[:-1]):
                    want.append((slot, batch.n, k, j))
                    batch.add(tok, slot.n_past + j, slot.seq_id, True)
                budget -= len(cont) - 1
            elif not slot.pending and slot.request.branches and not slot.done:
                left = self._branches_left(slot)
                if left and budget >= len(slot.request.branches[left[0]]):
                    parts.append(slot)
                    budget -= self._add_wave(slot, budget, want)
        return want, parts

    def _branches_left(self, slot: Slot) -> list[int]:
        n = len(slot.request.branches)
        done = slot.branch_lp or [None] * n
        return [k for k in range(n) if done[k] is None]

    def _add_wave(self, slot: Slot, budget: int, want: list[Row]) -> int:
        """Add what is left of `slot`'s prompt and the next branches that fit in `budget`
        (the first in the slot's own sequence, each other in a borrowed free one that
        first copies the slot's cells); returns the batch rows used."""
        eng = self.engine
        req = slot.request
        trunk, slot.pending = slot.pending, []
        room = budget - len(trunk)
        chosen: list[tuple[int, int]] = []  # (branch, sequence)
        cost = 0
        for k in self._branches_left(slot):
            branch = req.branches[k]
            new = len(branch) - max(
                (_common(branch, req.branches[c]) for c, _ in chosen), default=0
            )
            if cost + new > room or (chosen and not self._free):
                break
            chosen.append((k, self._free.pop() if chosen else slot.seq_id))
            cost += new
        slot.wave = chosen
        for _k, seq in chosen[1:]:  # shares every cell the slot's sequence holds so far
            rt.seq_cp(eng.memory, slot.seq_id, seq)
        seqs = [seq for _k, seq in chosen] or [slot.seq_id]
        batch = eng.batch
        for tok in trunk:
            batch.add_shared(tok, slot.n_past, seqs, False)
            slot.n_past += 1
        items = [(k, seq, req.branches[k]) for k, seq in chosen]
        for tok, depth, node_seqs, ends in branch_trie(items):
            for k in ends:
                want.append((slot, batch.n, BRANCH, k))
            batch.add_shared(tok, slot.n_past + depth, node_seqs, bool(ends))
        return len(trunk) + cost

    def _end_wave(self, slot: Slot) -> None:
        """Drop this step's branch cells; the borrowed sequences go back to the free ones."""
        mem = self.engine.memory
        wave, slot.wave = slot.wave, []
        back = []
        for _k, seq in wave:
            if seq == slot.seq_id:
                rt.seq_rm(mem, seq, slot.n_past)
            elif seq not in self._free and seq not in self.slots:
                rt.seq_rm(mem, seq)
                back.append(seq)
        self._free.extend(reversed(back))

    def _apply(self, slot: Slot, row: int, k: int, j: int) -> bool:
        """Use batch row `row`'s logits for `slot`; True when the slot is finished."""
        eng = self.engine
        req = slot.request
        dec = eng.decoder
        if k == BRANCH:
            return dec.score_branch(slot, j, rt.logits(eng.context, row, eng.n_vocab, copy=False))
        if k == -2:  # kept for a score-then-continue request that escalates
            slot.resume_logits = rt.logits(eng.context, row, eng.n_vocab, copy=True)
            return False
        if k >= 0:
            dec.score_continuation(slot, k, j, rt.logits(eng.context, row, eng.n_vocab, copy=False))
            if j == len(req.score_sequences[k]) - 2:  # this continuation is done: cut it off
                rt.seq_rm(eng.memory, slot.seq_id, slot.n_past)
                slot.jobs.pop(0)
                return not slot.jobs and self._scored(slot)
            return False
        if slot.score_only:
            done = dec.score_prompt(slot, rt.logits(eng.context, row, eng.n_vocab, copy=False))
            return done and self._scored(slot)
        # A processor gets its own copy (it may keep it); otherwise read llama.cpp's buffer
        # in place: no 201k-float copy per sequence per token.
        copy = req.logits_processor is not None
        return dec.advance(slot, rt.logits(eng.context, row, eng.n_vocab, copy=copy))

    def _scored(self, slot: Slot) -> bool:
        """A scored sequence: True (finished) unless its request escalates it, in which case
        it drops the header's cells and goes on generating in place."""
        req = slot.request
        if req.escalate is None:
            return True
        scored = self.engine.decoder.finish(slot)
        try:
            escalate = req.escalate(scored)
        except Exception as exc:  # the caller's own: it fails this request alone
            raise CallbackError(exc) from exc
        if not escalate:
            return True
        assert req.continue_at is not None
        rt.seq_rm(self.engine.memory, slot.seq_id, req.continue_at)
        return self.engine.decoder.continue_generating(slot, scored)
