"""Branches: one score-only request, several short continuations of its prompt, each scored as
if it alone followed the prompt. The prompt's end and every branch go in ONE decode (the
branches in borrowed sequences sharing the prompt's KV cells, common leading tokens once);
without free sequences they go one at a time in the request's own sequence. Either way
each branch's log-probs are those of prompt + branch scored alone, bit for bit, and other
callers' requests running meanwhile get what they get alone (the tests fix which requests
share each step: llama.cpp rounds by where a batch puts its KV cells, and a random-weight
model turns a rounding into another answer).

On the o200k synthetic model: its output matrix is quantized (Q8_0, like every real gpt-oss
GGUF), so llama.cpp computes a logits row alike however many rows a batch asks for; the
byte-level tiny model's F16 output matrix takes another kernel for one row than for
several, which rounds differently (~1e-8) when branches share a batch."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import DEADLINE_S, alone, wait, wait_idle

from edge_guard.engine import llama_runtime as rt
from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.engine.step import branch_trie
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.render import PromptConfig
from edge_guard.response import ModelResponse

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


class Held:
    """A generation whose first token holds the engine loop (its logits processor runs on
    the loop thread) until `run` has queued the other requests at once: every run admits
    and decodes the same requests in the same steps, whatever the timing."""

    def __init__(self, eng: Engine, max_tokens: int = 24) -> None:
        p = eng.renderer.render("Another policy: flag spam.", "buy now", PromptConfig())
        self.started, self.go = threading.Event(), threading.Event()
        self.request = GenerationRequest(
            p.token_ids,
            SamplingConfig(max_tokens=max_tokens),
            prefix_len=p.prefix_len,
            min_tokens=max_tokens,
            logits_processor=self._hold,
        )

    def plain(self) -> GenerationRequest:
        """The same generation without the hold (to compute it alone)."""
        return dataclasses.replace(self.request, logits_processor=None)

    def _hold(self, _ids: Any, _logits: Any) -> None:
        if not self.started.is_set():
            self.started.set()
            assert self.go.wait(DEADLINE_S)

    def run(self, eng: Engine, others: list[GenerationRequest]) -> list[ModelResponse]:
        h = eng.submit(self.request)
        assert self.started.wait(DEADLINE_S)
        with eng.loop._cv:  # queued at once: the loop takes them in one pass
            handles = [eng.submit(r) for r in others]
        self.go.set()
        return [wait(h), *(wait(x) for x in handles)]


def score_request(eng: Engine) -> GenerationRequest:
    enc = eng.vocab.encoder.encode
    q = eng.renderer.render("Third policy: flag insults.", "you fool", PromptConfig())
    return GenerationRequest(
        q.token_ids, score_only=True, score_token_ids=[enc("0")[0], enc("1")[0]]
    )


def test_other_callers_requests_running_meanwhile_are_unaffected(tiny_o200k_model: Path) -> None:
    with Engine(
        tiny_o200k_model, n_ctx=4096, n_parallel=4, n_threads=1, prefix_snapshots=False
    ) as eng:
        br, score = branched(eng, "sunny with clouds"), score_request(eng)
        want_br = each_alone(eng, br)
        held = Held(eng)
        want_gen, want_score = alone(eng, held.plain()), alone(eng, score)
        eng.reset_state()
        eng.stats["max_active"] = 0
        # the generation runs; the score and the branched request join it (its branches
        # in the two sequences left free, the rest in later waves)
        got_gen, got_br, got_score = held.run(eng, [br, score])
        assert eng.stats["max_active"] == 3  # all three decoded together
        assert got_gen.error is None and got_gen.output_token_ids == want_gen.output_token_ids
        assert got_score.final_token_logprobs == want_score.final_token_logprobs
        assert got_br.error is None and got_br.branch_logprobs == want_br
        wait_idle(eng)


def _shared_tokens(batch: Any) -> bool:
    raw = batch.raw
    return any(raw.n_seq_id[i] > 1 for i in range(batch.n))


@pytest.mark.parametrize("times", [1, 99])
def test_a_failed_decode_of_a_wave_is_undone(
    tiny_o200k_model: Path, monkeypatch: pytest.MonkeyPatch, times: int
) -> None:
    """A decode holding a wave fails: once, the step is undone and each request retried
    alone; always, the branched request fails alone. The borrowed sequences come back
    either way, the other caller's request completes, the engine answers afterwards."""
    with Engine(
        tiny_o200k_model, n_ctx=4096, n_parallel=4, n_threads=1, prefix_snapshots=False
    ) as eng:
        br = branched(eng, "storm warning")
        want_br = each_alone(eng, br)
        real, left = rt.decode, [times]

        def decode(ctx: Any, batch: Any) -> None:
            if left[0] > 0 and _shared_tokens(batch):
                left[0] -= 1
                raise EdgeGuardError("injected")
            real(ctx, batch)

        monkeypatch.setattr(rt, "decode", decode)
        got_gen, got_br = Held(eng, max_tokens=8).run(eng, [br])
        # the step with the wave failed; then the branched request alone: ok, or failed again
        assert left[0] == (0 if times == 1 else times - 2)
        assert got_gen.error is None and len(got_gen.output_token_ids) == 8
        if times == 1:
            lps = got_br.branch_logprobs
            assert got_br.error is None and lps is not None
            assert [sorted(x) for x in lps] == [sorted(br.score_token_ids)] * len(CUES)
        else:
            assert got_br.error == "injected" and got_br.branch_logprobs is None
        wait_idle(eng)
        monkeypatch.undo()
        eng.reset_state()
        assert alone(eng, br).branch_logprobs == want_br  # nothing of it left behind
        wait_idle(eng)


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
