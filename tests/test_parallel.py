"""Parallel sequences give the sequential, from-scratch tokens (greedy), and are the default.

24+ prompts of varied length under two policies; free generations truncated by max_tokens
mid-batch, steered ones ending early at different steps, one prompt too long for the
context among them, and a small context that admits fewer sequences than `n_parallel`.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import DEADLINE_S

from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.sampling import BiasTokens, ForcedTokens, SamplingConfig, harmony_script
from edge_guard.response import ModelResponse

N_CTX = 4096
WORDS = [
    "the",
    "user",
    "said",
    "hello",
    "please",
    "review",
    "this",
    "message",
    "about",
    "spam",
    "and",
    "threats",
    "now",
]


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def workload(eng: Engine) -> list[GenerationRequest]:
    rng = random.Random(3)
    policies = [f"Policy {k}: " + _text(rng, 40 + 20 * k) for k in range(2)]
    answer_ids = [eng.vocab.encoder.encode(a)[0] for a in ("0", "1")]
    reqs = []
    for i in range(26):
        prompt = eng.renderer.render(policies[i % 2], _text(rng, rng.randint(1, 45)))
        steer = None
        if i % 3 == 0:  # a well-formed answer, ending (<|return|>) at a step that varies
            steer = ForcedTokens(harmony_script(eng.vocab, str(i % 2), "why " * (i % 7)))
        reqs.append(
            GenerationRequest(
                prompt.token_ids,
                SamplingConfig(max_tokens=rng.choice([1, 3, 8, 17, 30, 60])),
                prefix_len=prompt.prefix_len,
                logits_processor=steer,
                score_token_ids=answer_ids,
            )
        )
    long_ids = eng.renderer.render(policies[0], _text(rng, 900)).token_ids
    assert len(long_ids) > N_CTX
    reqs.insert(11, GenerationRequest(long_ids, SamplingConfig(max_tokens=4)))
    return reqs


def summary(resp) -> tuple:  # type: ignore[no-untyped-def]
    lp = resp.final_token_logprobs
    return (
        resp.output_token_ids,
        resp.finish_reason,
        resp.response,
        resp.error is not None,
        None if lp is None else sorted(lp),
    )


Reference = tuple[list[GenerationRequest], list[ModelResponse]]


@pytest.fixture(scope="module")
def reference(tiny_model: Path) -> Reference:
    with Engine(
        tiny_model,
        n_ctx=N_CTX,
        n_parallel=1,
        n_threads=1,
        prefix_cache=False,
        prefix_snapshots=False,
    ) as eng:
        reqs = workload(eng)
        return reqs, [eng.generate(r, timeout=DEADLINE_S) for r in reqs]


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_parallel_matches_sequential_from_scratch(
    tiny_model: Path, reference: Reference, width: int
) -> None:
    reqs, expected = reference
    with Engine(tiny_model, n_ctx=N_CTX, n_parallel=8, n_threads=1, prefix_snapshots=False) as eng:
        order = []
        got: dict[int, object] = {}
        for i, resp in eng.generate_many(reqs, n_parallel=width, timeout=DEADLINE_S):
            order.append(i)
            got[i] = resp
        assert eng.stats["max_active"] == width
    assert sorted(order) == list(range(len(reqs)))
    for i, (want, resp) in enumerate(
        zip(expected, [got[i] for i in range(len(reqs))], strict=True)
    ):
        assert summary(resp) == summary(want), f"request {i}"
        if want.final_token_logprobs:
            a = np.array([want.final_token_logprobs[k] for k in sorted(want.final_token_logprobs)])
            got_lp = resp.final_token_logprobs  # type: ignore[attr-defined]
            b = np.array([got_lp[k] for k in sorted(got_lp)])
            # Not bit-identical: llama.cpp's CPU matmuls round differently for other batch
            # shapes (a step decodes 1 vs `width` tokens); tokens are identical regardless.
            np.testing.assert_allclose(a, b, rtol=2e-3)
    # the workload really covers what it claims
    finishes = {r.finish_reason for r in expected}
    assert {"length", "return"} <= finishes
    assert expected[11].error and "context" in expected[11].error
    assert got[11].error == expected[11].error  # type: ignore[attr-defined]
    lengths = [len(r.output_token_ids) for r in expected if r.finish_reason == "return"]
    assert len(set(lengths)) > 3  # steered answers end at different steps
    if width > 1:  # finished sequences are replaced while others still run
        assert order != sorted(order)


def test_small_context_admits_fewer_sequences(tiny_model: Path, reference: Reference) -> None:
    reqs, expected = reference
    head = reqs[0].prompt_ids[: reqs[0].prefix_len]
    keep = [i for i, r in enumerate(reqs) if r.prompt_ids[: r.prefix_len] == head][:10]
    sub = [reqs[i] for i in keep]
    prefix = min(r.prefix_len or 0 for r in sub)
    need = max(len(r.prompt_ids) - prefix + r.sampling.max_tokens for r in sub)
    n_ctx = max(len(r.prompt_ids) for r in sub) + 2 * need + 8
    with Engine(tiny_model, n_ctx=n_ctx, n_parallel=8, n_threads=1, prefix_snapshots=False) as eng:
        got = dict(eng.generate_many(sub, timeout=DEADLINE_S))
        assert 1 < eng.stats["max_active"] < 8  # the KV cache limited admission
    for j, i in enumerate(keep):
        assert summary(got[j]) == summary(expected[i]), f"request {i}"
        assert got[j].error is None


def test_min_tokens_suppresses_stop_tokens(tiny_model: Path) -> None:
    with Engine(tiny_model, n_ctx=N_CTX, n_parallel=2, n_threads=1, prefix_snapshots=False) as eng:
        ret = eng.vocab.special_id("<|return|>")
        prompt = eng.renderer.render("Policy.", "hello")
        eager = BiasTokens({ret: 1000.0})  # the model wants to stop at once
        free = eng.generate(
            GenerationRequest(
                prompt.token_ids, SamplingConfig(max_tokens=9), logits_processor=eager
            ),
            timeout=DEADLINE_S,
        )
        forced = eng.generate(
            GenerationRequest(
                prompt.token_ids, SamplingConfig(max_tokens=9), logits_processor=eager, min_tokens=5
            ),
            timeout=DEADLINE_S,
        )
    assert free.output_token_ids == [ret]
    assert len(forced.output_token_ids) == 6 and forced.output_token_ids[-1] == ret
    assert not set(forced.output_token_ids[:5]) & eng.stop_ids


def test_classifier_decodes_a_list_in_parallel_by_default(tiny_model: Path, tmp_path: Path) -> None:
    from edge_guard.backends.local import EngineSettings, LocalBackend, release_engine
    from edge_guard.classification.classifier import Classifier
    from edge_guard.cli.options import build_classifier

    texts = [f"message number {i} " + "spam " * (i % 5) for i in range(10)]
    results = {}
    for width in (None, 1):
        backend = LocalBackend(tiny_model, settings=EngineSettings(n_ctx=4096, n_threads=1))
        clf = Classifier(
            "toxic_simple",
            backend,
            db=tmp_path / "store.db",
            use_cache=False,
            sampling=SamplingConfig(max_tokens=12),
            parallel=width,
        )
        results[width] = [
            (r.model_response.output_token_ids, r.verdict) for r in clf.classify(texts)
        ]
        stats = backend.engine().stats
        assert stats["max_active"] == (8 if width is None else 1)
        release_engine()
    assert results[None] == results[1]
    # the CLI's classifying commands (classify, run, study, compare) default to 8 sequences
    clf = build_classifier("toxic_simple", {"model": str(tiny_model), "db": str(tmp_path / "c.db")})
    assert clf.parallel is None and clf.backend.settings.n_parallel == 8
