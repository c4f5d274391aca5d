"""The KV budget counts a cell once however many resident prefixes share it: a prefix started
as a copy of another's leading part holds those very cells (llama.cpp copies the sequence
id, not the cell). Counted twice, a caller whose prefix shares a long start with a running
one waits for nothing; counted short, a third caller is let in and the cache overflows.
Two callers at once, then a third, on a context sized to the exact count (the first
caller holds the loop until the others are queued: the same steps every run)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

from engine_helpers import DEADLINE_S, alone, wait, wait_idle

from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.harmony.render import PromptConfig

COMMON = "Flag any message that insults a person, mocks a group or threatens harm. " * 12
POLICY_A, POLICY_B = COMMON + "Variant A: cats.", COMMON + "Variant B: dogs."
POLICY_C = "Flag spam: unsolicited offers, links to shops, chain letters. " * 3


def common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def render(eng: Engine, policy: str, text: str) -> tuple[list[int], int]:
    p = eng.renderer.render(policy, text, PromptConfig(effort="low"))
    return p.token_ids, p.prefix_len


def test_a_shared_start_is_counted_once(tiny_o200k_model: Path) -> None:
    with Engine(
        tiny_o200k_model, n_ctx=4096, n_parallel=2, n_threads=1, prefix_snapshots=False
    ) as eng:
        ids_a, la = render(eng, POLICY_A, "x")
        ids_b, lb = render(eng, POLICY_B, "x")
        pa, pb = ids_a[:la], ids_b[:lb]
        c = common(pa, pb)
        assert c > 100
        eng.warm_prefix(GenerationRequest(ids_a, prefix_len=la))
        eng.warm_prefix(GenerationRequest(ids_b, prefix_len=lb))
        assert eng.stats["prefix_tokens"] == la + lb - c  # B evaluated only past the start
        assert eng.prefixes.n_tokens == la + lb - c
        resident_a = eng.prefixes.find(pa)
        assert resident_a is not None
        resident_a.state.reset()  # A goes: the shared cells stay, B holds them
        assert eng.prefixes.n_tokens == lb


def test_two_callers_sharing_a_start_run_together_and_a_third_waits(
    tiny_o200k_model: Path,
) -> None:
    with Engine(
        tiny_o200k_model, n_ctx=4096, n_parallel=3, n_threads=1, prefix_snapshots=False
    ) as eng:
        enc = eng.vocab.encoder.encode
        score_ids = [enc("0")[0], enc("1")[0]]
        ids_a, la = render(eng, POLICY_A, "a long generation")
        ids_b, lb = render(eng, POLICY_B, "scored")
        ids_c, lc = render(eng, POLICY_C, "scored too")
        started, go = threading.Event(), threading.Event()

        def hold(_ids: Any, _logits: Any) -> None:  # A's first token holds the loop
            if not started.is_set():
                started.set()
                assert go.wait(DEADLINE_S)

        gen = GenerationRequest(ids_a, SamplingConfig(max_tokens=48), prefix_len=la, min_tokens=48)
        score_b = GenerationRequest(
            ids_b, prefix_len=lb, score_only=True, score_token_ids=score_ids
        )
        score_c = GenerationRequest(
            ids_c, prefix_len=lc, score_only=True, score_token_ids=score_ids
        )
        want = [alone(eng, r) for r in (gen, score_b, score_c)]
        held = dataclasses.replace(gen, logits_processor=hold)
        c = common(ids_a[:la], ids_b[:lb])
        reserve_a = len(ids_a) - la + 48
        reserve_b = len(ids_b) - lb
        # exactly A's and B's cells (their shared start once) and their own reserves:
        # counted twice, B cannot start beside A; C fits beside neither
        n_ctx = la + lb - c + reserve_a + reserve_b
    with Engine(
        tiny_o200k_model, n_ctx=n_ctx, n_parallel=3, n_threads=1, prefix_snapshots=False
    ) as eng:
        assert eng.n_ctx == n_ctx
        # A runs (48 steps); B and C arrive together while it runs
        handles = [eng.submit(held)]
        assert started.wait(DEADLINE_S)
        with eng.loop._cv:  # queued at once: the loop takes both in one pass
            handles += [eng.submit(r) for r in (score_b, score_c)]
        go.set()
        got = [wait(h) for h in handles]
        assert [r.error for r in got] == [None, None, None]
        assert eng.stats["max_active"] == 2  # A and B together; C after B, never with both
        assert got[0].output_token_ids == want[0].output_token_ids
        assert [r.final_token_logprobs for r in got[1:]] == [
            r.final_token_logprobs for r in want[1:]
        ]
        assert eng.prefixes.n_tokens <= n_ctx
        wait_idle(eng)
