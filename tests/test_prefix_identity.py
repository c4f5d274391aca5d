"""The policy-prefix state gives exactly the tokens a from-scratch evaluation gives (greedy).

Synthetic gpt-oss models with sliding-window layers (window 8, and a preset override with
window 32) and prompts far longer than the window; several policies alternating, a prefix
cut back after llama.cpp reused out-of-window cells, `swa_full=False`, and disk snapshots.
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_guard.engine import llama_runtime as rt
from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.prefix_store import PrefixStore
from edge_guard.engine.sampling import SamplingConfig

POLICY_WORDS = [
    "policy",
    "rule",
    "allowed",
    "content",
    "threat",
    "spam",
    "insult",
    "answer",
    "label",
    "the",
    "of",
    "and",
]


def text(seed: int, n_words: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(POLICY_WORDS) for _ in range(n_words))


def requests(
    engine: Engine, policies: list[str], n: int, seed: int = 0, max_tokens: int = 10
) -> list[GenerationRequest]:
    """`n` prompts cycling through `policies`, texts of varied length."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = engine.renderer.render(
            policies[i % len(policies)], text(seed + i, rng.randint(1, 40))
        )
        out.append(
            GenerationRequest(
                prompt.token_ids,
                SamplingConfig(max_tokens=max_tokens),
                prefix_len=prompt.prefix_len,
            )
        )
    return out


def scratch(path: Path, reqs: list[GenerationRequest]) -> list[list[int]]:
    """Every prompt evaluated from an empty cache, one at a time."""
    with Engine(
        path, n_ctx=2048, n_parallel=1, n_threads=1, prefix_cache=False, prefix_snapshots=False
    ) as eng:
        return [eng.generate(r).output_token_ids for r in reqs]


def logits_trace(eng: Engine, reqs: list[GenerationRequest]) -> list[np.ndarray]:
    """The raw logits of every step of every request, decoded one request at a time."""
    trace: list[np.ndarray] = []

    def record(_ids: object, logits: np.ndarray) -> None:
        trace.append(logits.copy())

    for r in reqs:
        eng.generate(dataclasses.replace(r, logits_processor=record))
    return trace


def scratch_trace(path: Path, reqs: list[GenerationRequest]) -> list[np.ndarray]:
    with Engine(
        path, n_ctx=2048, n_parallel=1, n_threads=1, prefix_cache=False, prefix_snapshots=False
    ) as eng:
        return logits_trace(eng, reqs)


def bit_identical(trace: list[np.ndarray], expected: list[np.ndarray]) -> bool:
    """Every step's logits equal bit for bit (same count of steps, more than a few)."""
    assert len(trace) == len(expected) > 10
    return all(
        a.dtype == b.dtype and a.tobytes() == b.tobytes()
        for a, b in zip(trace, expected, strict=True)
    )


def engine(path: Path, **kw: object) -> Engine:
    kw = {"n_ctx": 2048, "n_parallel": 4, "n_threads": 1, "prefix_snapshots": False, **kw}
    return Engine(path, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def policies() -> list[str]:
    return [f"Policy {k}. " + text(100 + k, 60 + 15 * k) for k in range(3)]


@pytest.fixture(params=[8, 32], ids=["window8", "window32"])
def windowed_model(request: pytest.FixtureRequest, tiny_model: Path, synth_model: Any) -> Path:
    return tiny_model if request.param == 8 else synth_model("tiny", sliding_window=32)


@pytest.mark.parametrize("max_prefixes", [1, 8], ids=["one-resident", "resident-set"])
def test_prefix_state_matches_scratch_with_alternating_policies(
    windowed_model: Path, policies: list[str], max_prefixes: int
) -> None:
    with engine(windowed_model, max_prefixes=max_prefixes) as eng:
        window = rt.n_swa(eng._model)
        reqs = requests(eng, policies, 9)
        assert all(r.prefix_len > 200 and len(r.prompt_ids) > r.prefix_len for r in reqs)
        assert all(r.prefix_len > 4 * window for r in reqs)
        got = []
        for i, r in enumerate(reqs):
            if i == 5:
                eng.reset_state()  # evicted: the next one starts from nothing
            resp = eng.generate(r)
            assert resp.timings.cached_tokens == r.prefix_len  # the prefix state was used
            got.append(resp.output_token_ids)
        # One resident: each call replaces the previous policy's prefix. A resident set:
        # each policy's prefix is evaluated once (and once more after the reset).
        assert eng.stats["prefix_evals"] == (9 if max_prefixes == 1 else 6)
        trace = logits_trace(eng, reqs[:3])
    assert got == scratch(windowed_model, reqs)
    expected = scratch_trace(windowed_model, reqs[:3])
    if max_prefixes == 1:
        # without flash attention on the CPU, prefix + suffix is bit-identical to one pass
        assert bit_identical(trace, expected)
    else:
        # other prefixes' cells change the attention's summation: close, not bit-identical
        # (measured: at most 0.016 on logits of magnitude ~55)
        assert all(
            np.abs(a - b).max() <= 1e-3 * np.abs(b).max()
            for a, b in zip(trace, expected, strict=True)
        )


def test_same_policy_evaluates_its_prefix_once(tiny_model: Path, policies: list[str]) -> None:
    with engine(tiny_model) as eng:
        reqs = requests(eng, policies[:1], 6)
        got = [eng.generate(r).output_token_ids for r in reqs]
        assert eng.stats["prefix_evals"] == 1
    assert got == scratch(tiny_model, reqs)


def _ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(256) for _ in range(n)]  # byte tokens only: no specials


def test_cut_prefix_after_window_cells_were_reused(tiny_model: Path) -> None:
    """llama.cpp reuses sliding-window cells that fell out of the window; cutting the
    prefix back to a point whose window is gone must re-evaluate it, not reuse it.
    Both cut-backs give the logits of a from-scratch evaluation, bit for bit."""
    rng = random.Random(1)
    with engine(tiny_model, n_ctx=512, max_prefixes=1) as eng:
        window = rt.n_swa(eng._model)
        policy = _ids(rng, 240)

        def reqs_for(prefix: list[int], n: int, mt: int) -> list[GenerationRequest]:
            return [
                GenerationRequest(
                    prefix + _ids(rng, rng.randint(5, 60)),
                    SamplingConfig(max_tokens=mt),
                    prefix_len=len(prefix),
                )
                for _ in range(n)
            ]

        for _ in range(20):  # a small cache wraps around until early cells are reused
            list(eng.generate_many(reqs_for(policy, 16, 30), n_parallel=4))
            if rt.seq_pos_min(eng._mem, 0) > 0:
                break
        pos_min = rt.seq_pos_min(eng._mem, 0)
        assert pos_min > 0, "scenario not reproduced: llama.cpp kept every window cell"

        # 1. cut to where the window before the cut is gone: evaluated again, from 0
        cut = pos_min + 2
        short = reqs_for(policy[:cut] + _ids(rng, 30), 6, 20)
        before = eng.stats["prefix_tokens"]
        trace_short = logits_trace(eng, short[:2])  # one at a time: the cut happens here
        assert eng.stats["prefix_tokens"] - before == cut + 30
        got_short = [r.output_token_ids for _, r in sorted(eng.generate_many(short, n_parallel=4))]
        assert eng.stats["prefix_tokens"] - before == cut + 30

        # 2. back to the full policy, then cut where the window is intact: reused
        list(eng.generate_many(reqs_for(policy, 2, 4)))
        keep = len(policy) - 10
        assert rt.seq_pos_min(eng._mem, 0) <= keep - window
        long = reqs_for(policy[:keep] + _ids(rng, 30), 6, 20)
        before = eng.stats["prefix_tokens"]
        trace_long = logits_trace(eng, long[:2])  # the cut keeps the window's cells
        assert eng.stats["prefix_tokens"] - before == 30
        got_long = [r.output_token_ids for _, r in sorted(eng.generate_many(long, n_parallel=4))]
        assert eng.stats["prefix_tokens"] - before == 30
    assert got_short == scratch(tiny_model, short)
    assert got_long == scratch(tiny_model, long)
    assert bit_identical(trace_short, scratch_trace(tiny_model, short[:2]))
    assert bit_identical(trace_long, scratch_trace(tiny_model, long[:2]))


def test_windowed_swa_cache_gives_scratch_results(synth_model: Any, policies: list[str]) -> None:
    path = synth_model("tiny", sliding_window=32)
    with engine(path, swa_full=False, n_parallel=4) as eng:
        assert eng.n_parallel == 1 and not eng.prefix_cache
        reqs = requests(eng, policies, 6, seed=7, max_tokens=16)
        assert all(len(r.prompt_ids) > 200 for r in reqs)
        got = [r.output_token_ids for _, r in sorted(eng.generate_many(reqs))]
        got += [eng.generate(r).output_token_ids for r in reqs[:2]]
        trace = logits_trace(eng, reqs[:3])
    assert got == scratch(path, reqs) + scratch(path, reqs[:2])
    # A windowed cache that recycles cells gives the full cache's logits, bit for bit.
    assert bit_identical(trace, scratch_trace(path, reqs[:3]))


# -- disk snapshots ------------------------------------------------------------------------
def _outputs(eng: Engine, reqs: list[GenerationRequest], width: int) -> list[list[int]]:
    return [r.output_token_ids for _, r in sorted(eng.generate_many(reqs, n_parallel=width))]


def test_snapshot_is_saved_then_loaded_with_identical_results(
    windowed_model: Path, policies: list[str], edge_guard_home: Path
) -> None:
    with engine(windowed_model, prefix_snapshots=True) as first:
        reqs = requests(first, policies[:1], 5, seed=3)
        cold = _outputs(first, reqs, 4)
        assert first.stats["snapshot_saves"] == 1 and first.stats["prefix_evals"] == 1
    files = list((edge_guard_home / "prefix_states").glob("*.state"))
    assert len(files) == 1
    with engine(windowed_model, prefix_snapshots=True) as second:  # a new process, same policy
        warm = _outputs(second, reqs, 4)
        assert second.stats["snapshot_loads"] == 1 and second.stats["prefix_evals"] == 0
    assert cold == warm == scratch(windowed_model, reqs)
    # Bit for bit: the snapshot restores every cell at the index a fresh evaluation uses
    # (a per-sequence snapshot drops out-of-window cells and moves the rest: other rounding).
    with engine(windowed_model, prefix_snapshots=True, n_parallel=1) as third:
        warm_trace = logits_trace(third, reqs)
        assert third.stats["snapshot_loads"] == 1
    cold_trace = scratch_trace(windowed_model, reqs)
    assert len(warm_trace) == len(cold_trace) > 20
    assert bit_identical(warm_trace, cold_trace)


def test_damaged_snapshot_is_discarded(
    tiny_model: Path, policies: list[str], edge_guard_home: Path
) -> None:
    with engine(tiny_model, prefix_snapshots=True) as first:
        reqs = requests(first, policies[1:2], 3, seed=4)
        cold = _outputs(first, reqs, 2)
    (path,) = (edge_guard_home / "prefix_states").glob("*.state")
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # flip bits in the KV data: the checksum catches it
    path.write_bytes(bytes(data))
    with engine(tiny_model, prefix_snapshots=True) as second:
        assert _outputs(second, reqs, 2) == cold
        assert second.stats["snapshot_loads"] == 0 and second.stats["prefix_evals"] == 1
        assert second.stats["snapshot_saves"] == 1  # replaced by a good one
    with engine(tiny_model, prefix_snapshots=True) as third:
        assert _outputs(third, reqs, 2) == cold
        assert third.stats["snapshot_loads"] == 1


def test_snapshot_key_covers_settings_and_model(
    tiny_model: Path, synth_model: Any, policies: list[str]
) -> None:
    with engine(tiny_model, prefix_snapshots=True) as a:
        reqs = requests(a, policies[:1], 2)
        _outputs(a, reqs, 1)
    with engine(tiny_model, prefix_snapshots=True, n_batch=64) as b:  # other batch split
        _outputs(b, reqs, 1)
        assert b.stats["snapshot_loads"] == 0
    other = synth_model("tiny", seed=5)  # other weights, same vocabulary
    with engine(other, prefix_snapshots=True) as c:
        _outputs(c, reqs, 1)
        assert c.stats["snapshot_loads"] == 0


def test_short_prefixes_and_disabled_store_write_nothing(
    tiny_model: Path, edge_guard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with engine(tiny_model, prefix_snapshots=True) as eng:
        list(eng.generate_many([GenerationRequest(list(range(40)), prefix_len=30)]))
        assert eng.stats["snapshot_saves"] == 0
    monkeypatch.setenv("EDGE_GUARD_PREFIX_STORE", "0")
    with engine(tiny_model, prefix_snapshots=None) as eng:
        assert eng.prefix_store is None
    monkeypatch.setenv("EDGE_GUARD_PREFIX_STORE", "1")
    with engine(tiny_model, prefix_snapshots=None, swa_full=False) as eng:
        assert eng.prefix_store is None  # no prefix state, nothing to snapshot
    assert not list((edge_guard_home / "prefix_states").glob("*.state"))


def test_store_evicts_least_recently_used(tmp_path: Path) -> None:
    store = PrefixStore(tmp_path / "states", max_bytes=2500)
    keys = [PrefixStore.key({"m": 1}, [k]) for k in range(3)]
    for i, key in enumerate(keys[:2]):
        store.save(key, 1, bytes(1000))
        os.utime(store.path(key), (1000 + i, 1000 + i))
    assert store.load(keys[0], 1) == bytes(1000)  # used: now the most recent
    store.save(keys[2], 1, bytes(1000))  # over the bound: the least recently used goes
    assert not store.path(keys[1]).exists()
    assert store.path(keys[0]).exists() and store.path(keys[2]).exists()
    assert store.total_bytes() <= 2500 + 200
    assert store.load(keys[0], 2) is None  # a header that does not match is a miss...
    assert not store.path(keys[0]).exists()  # ...and the file is dropped
