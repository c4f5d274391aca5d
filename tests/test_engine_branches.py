"""Branches: one score-only request, several short continuations of its prompt, each scored as
if it alone followed the prompt. The prompt's end and every branch go in ONE decode (the
branches in borrowed sequences sharing the prompt's KV cells, common leading tokens once);
without free sequences they go one at a time in the request's own sequence. Either way
each branch's log-probs are those of prompt + branch scored alone, bit for bit, and other
callers' requests running meanwhile get what they get alone.

On the o200k synthetic model: its output matrix is quantized (Q8_0, like every real gpt-oss
GGUF), so llama.cpp computes a logits row alike however many rows a batch asks for; the
byte-level tiny model's F16 output matrix takes another kernel for one row than for
several, which rounds differently (~1e-8) when branches share a batch."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_helpers import DEADLINE_S, alone, wait, wait_idle

from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.engine.step import branch_trie
from edge_guard.harmony.render import PromptConfig

POLICY = "Flag anything about the weather. " * 6
# shared leading tokens, a duplicate, one a prefix of another, a single token
CUES = ['{"alpha":', '{"alpha/beta":', '{"gamma":', '{"gamma":', '{"alp', "x"]


@pytest.fixture(scope="module")
def engine(tiny_o200k_model: Path) -> Iterator[Engine]:
    eng = Engine(tiny_o200k_model, n_ctx=4096, n_parallel=8, n_threads=1, prefix_snapshots=False)
    yield eng
    eng.close()


def branched(eng: Engine, text: str, cues: list[str] = CUES) -> GenerationRequest:
    enc = eng.vocab.encoder.encode
    p = eng.renderer.render(POLICY, text, PromptConfig(effort="low"))
    return GenerationRequest(
        p.token_ids,
        SamplingConfig(max_tokens=1),
        prefix_len=p.prefix_len,
        score_only=True,
        score_token_ids=[enc("0")[0], enc("1")[0]],
        branches=[enc(c) for c in cues],
    )


def each_alone(eng: Engine, req: GenerationRequest) -> list[dict[int, float]]:
    """Each branch's log-probs from prompt + branch scored on its own, from scratch (the
    prompt evaluated, then the branch)."""
    out = []
    for b in req.branches:
        eng.reset_state()
        ids = [*req.prompt_ids, *b]
        r = alone(
            eng,
            GenerationRequest(
                ids,
                score_only=True,
                score_token_ids=req.score_token_ids,
                prefix_len=len(req.prompt_ids),
            ),
        )
        assert r.error is None and r.final_token_logprobs is not None
        out.append(r.final_token_logprobs)
    eng.reset_state()
    return out


def trie_tokens(req: GenerationRequest) -> int:
    return len(branch_trie([(k, k, b) for k, b in enumerate(req.branches)]))


def test_the_prompt_and_every_branch_go_in_one_decode(engine: Engine) -> None:
    req = branched(engine, "is it going to rain tomorrow?")
    want = each_alone(engine, req)
    assert len({tuple(sorted(w.items())) for w in want}) == 5  # 6 branches, one duplicate
    engine.warm_prefix(req)  # the policy prefix resident: what is left is the text
    before = dict(engine.stats)
    got = alone(engine, req)
    assert got.error is None and got.branch_logprobs == want  # bit for bit
    assert engine.stats["decode_calls"] - before.get("decode_calls", 0) == 1
    trunk = len(req.prompt_ids) - (req.prefix_len or 0)
    # the common leading tokens of the branches are evaluated once
    assert trie_tokens(req) < sum(len(b) for b in req.branches)
    assert engine.stats["decoded_tokens"] - before.get("decoded_tokens", 0) == trunk + trie_tokens(
        req
    )
    t = got.timings
    assert t.prompt_tokens == len(req.prompt_ids) + sum(len(b) for b in req.branches)
    assert t.cached_tokens == req.prefix_len
    wait_idle(engine)  # every borrowed sequence is back, no cell left behind


@pytest.mark.parametrize(("n_parallel", "decodes"), [(1, 6), (3, 2)])
def test_short_of_sequences_branches_go_in_waves(
    tiny_o200k_model: Path, n_parallel: int, decodes: int
) -> None:
    """One slot: each branch alone in the request's own sequence (6 decodes); three slots:
    two waves (the request's sequence and two borrowed ones... then the rest)."""
    with Engine(
        tiny_o200k_model, n_ctx=4096, n_parallel=n_parallel, n_threads=1, prefix_snapshots=False
    ) as eng:
        req = branched(eng, "wind and hail")
        want = each_alone(eng, req)
        eng.warm_prefix(req)
        before = eng.stats.get("decode_calls", 0)
        got = alone(eng, req)
        assert got.error is None and got.branch_logprobs == want
        assert eng.stats["decode_calls"] - before == decodes
        wait_idle(eng)


def test_another_callers_requests_running_meanwhile_are_unaffected(tiny_o200k_model: Path) -> None:
    with Engine(
        tiny_o200k_model, n_ctx=4096, n_parallel=4, n_threads=1, prefix_snapshots=False
    ) as eng:
        enc = eng.vocab.encoder.encode
        p = eng.renderer.render("Another policy: flag spam.", "buy now", PromptConfig())
        gen = GenerationRequest(
            p.token_ids, SamplingConfig(max_tokens=24), prefix_len=p.prefix_len, min_tokens=24
        )
        q = eng.renderer.render("Third policy: flag insults.", "you fool", PromptConfig())
        score = GenerationRequest(
            q.token_ids, score_only=True, score_token_ids=[enc("0")[0], enc("1")[0]]
        )
        br = branched(eng, "sunny with clouds")
        want_br = each_alone(eng, br)
        want_gen, want_score = alone(eng, gen), alone(eng, score)
        eng.reset_state()
        eng.stats["max_active"] = 0
        # The generation is admitted first and runs 24 steps; the branched request and the
        # score arrive while it runs (the loop waits for the lock the test holds).
        with eng.lock:
            h_gen = eng.submit(gen)
            h_br = eng.submit(br)
            h_score = eng.submit(score)
        got_gen, got_br, got_score = wait(h_gen), wait(h_br), wait(h_score)
        assert eng.stats["max_active"] == 3  # all three were decoded together
        assert got_gen.error is None and got_gen.output_token_ids == want_gen.output_token_ids
        assert got_score.final_token_logprobs == want_score.final_token_logprobs
        assert got_br.branch_logprobs == want_br
        wait_idle(eng)


def test_callers_on_many_threads_each_get_their_own_branches(engine: Engine) -> None:
    reqs = [branched(engine, t, CUES[k:] + CUES[:k]) for k, t in enumerate(["a", "bb", "ccc"])]
    want = [each_alone(engine, r) for r in reqs]
    got: dict[int, list[dict[int, float]] | None] = {}
    start = threading.Barrier(len(reqs))

    def worker(i: int) -> None:
        start.wait()
        got[i] = engine.generate(reqs[i], timeout=DEADLINE_S).branch_logprobs

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
        assert not t.is_alive()
    assert [got[i] for i in range(len(reqs))] == want
    wait_idle(engine)


def test_bad_branches_fail_at_submit(engine: Engine) -> None:
    req = branched(engine, "t")
    cases = {
        "branches are scored alone": GenerationRequest(req.prompt_ids, branches=[[1]]),
        "must hold 1 to": GenerationRequest(req.prompt_ids, score_only=True, branches=[[]]),
        "outside the vocabulary": GenerationRequest(
            req.prompt_ids, score_only=True, branches=[[10**9]]
        ),
        "the context holds": GenerationRequest(
            req.prompt_ids, score_only=True, branches=[[1] * 500] * 9
        ),
    }
    for why, bad in cases.items():
        r = engine.generate(bad, timeout=DEADLINE_S)
        assert r.error is not None and why in r.error, (why, r.error)
