"""End-to-end decoding through real llama.cpp on the synthetic `tiny` and `tiny-o200k` models."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_helpers import DEADLINE_S

from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script
from edge_guard.harmony.parse import ContentDelta, MessageEnd, MessageStart
from edge_guard.harmony.render import PromptConfig
from edge_guard.response import ModelResponse

N_CTX = 2048
POLICY = "# Toxicity\n\nAnswer 1 if the message is toxic, 0 if it is not."
TEXTS = [
    "hi",
    "Is this message toxic? I do not think so.",
    "A longer message about the weather, the sea, the mountains and the city at night. " * 3,
    "日本語のテキストと emoji 😀 and code `x = 1` " * 6,
]
GREEDY = SamplingConfig(max_tokens=12)


@pytest.fixture(scope="module", params=["tiny", "tiny-o200k"])
def engine(
    request: pytest.FixtureRequest, tiny_model: Path, tiny_o200k_model: Path
) -> Iterator[Engine]:
    path = tiny_model if request.param == "tiny" else tiny_o200k_model
    # One thread: llama.cpp's spinning thread pool degrades badly on a busy 2-core machine.
    eng = Engine(path, n_ctx=N_CTX, n_parallel=4, n_threads=1)
    yield eng
    eng.close()


def ids(engine: Engine, *parts: str) -> list[int]:
    out: list[int] = []
    for part in parts:
        if part.startswith("<|") and engine.vocab.has_special(part):
            out.append(engine.vocab.special_id(part))
        else:
            out += engine.vocab.encoder.encode(part)
    return out


def prompt(engine: Engine, text: str, policy: str = POLICY) -> GenerationRequest:
    rendered = engine.renderer.render(policy, text, PromptConfig(effort="low"))
    return GenerationRequest(rendered.token_ids, sampling=GREEDY, prefix_len=rendered.prefix_len)


def script(engine: Engine, reasoning: str = "thinking about it", answer: str = "1") -> list[int]:
    return harmony_script(engine.vocab, answer, reasoning)


def test_load(engine: Engine) -> None:
    assert engine.n_vocab == len(engine.vocab)
    assert engine.n_ctx == N_CTX
    sid = engine.vocab.special_id
    assert {sid("<|return|>"), sid("<|call|>")} <= engine.stop_ids
    assert sid("<|end|>") not in engine.stop_ids  # the model goes on from analysis to final
    assert engine.header.architecture == "gpt-oss"
    assert engine.description["n_ctx"] == N_CTX


def test_greedy_generation(engine: Engine) -> None:
    req = prompt(engine, "hello there")
    r = engine.generate(req, timeout=DEADLINE_S)
    assert r.error is None
    assert 1 <= len(r.output_token_ids) <= GREEDY.max_tokens
    assert r.prompt_token_ids == req.prompt_ids
    assert r.finish_reason in ("length", "eos", "return", "call")
    if r.finish_reason == "length":
        assert len(r.output_token_ids) == GREEDY.max_tokens
    assert r.timings.prompt_tokens == len(req.prompt_ids)
    assert r.timings.output_tokens == len(r.output_token_ids)
    assert all(0 <= t < engine.n_vocab for t in r.output_token_ids)


def test_greedy_is_deterministic(engine: Engine) -> None:
    a = engine.generate(prompt(engine, "same text twice"), timeout=DEADLINE_S)
    engine.generate(
        prompt(engine, "something else in between", policy="Other policy."), timeout=DEADLINE_S
    )
    b = engine.generate(prompt(engine, "same text twice"), timeout=DEADLINE_S)
    assert a.output_token_ids == b.output_token_ids


def test_forced_script_gives_answer_reasoning_and_scores(engine: Engine) -> None:
    sc = script(engine)
    label_ids = [engine.vocab.encoder.encode("0")[0], engine.vocab.encoder.encode("1")[0]]
    req = prompt(engine, "you are an idiot")
    req.sampling = SamplingConfig(max_tokens=200)
    req.logits_processor = ForcedTokens(sc)
    req.score_token_ids = label_ids
    r = engine.generate(req, timeout=DEADLINE_S)
    assert r.response == "1"
    assert r.reasoning == "thinking about it"
    assert r.finish_reason == "return"
    # Decoding stopped at <|return|>, well before max_tokens.
    assert r.output_token_ids == sc
    assert r.malformed == []
    lp = r.final_token_logprobs
    assert lp is not None and set(lp) == set(label_ids)
    # Scores come from the model's own logits, not the forced ones (which are -inf but one).
    assert all(math.isfinite(v) and v < 0 for v in lp.values())


def test_scores_are_a_distribution(engine: Engine) -> None:
    req = prompt(engine, "score everything")
    req.logits_processor = ForcedTokens(script(engine))
    req.score_token_ids = range(engine.n_vocab)
    req.sampling = SamplingConfig(max_tokens=64)
    r = engine.generate(req, timeout=DEADLINE_S)
    assert r.final_token_logprobs is not None
    assert len(r.final_token_logprobs) == engine.n_vocab
    total = math.fsum(math.exp(v) for v in r.final_token_logprobs.values())
    assert total == pytest.approx(1.0, abs=1e-6)


def test_no_scores_without_final(engine: Engine) -> None:
    req = prompt(engine, "x")
    req.score_token_ids = [engine.vocab.encoder.encode("1")[0]]
    req.logits_processor = ForcedTokens(ids(engine, "<|channel|>", "analysis", "<|message|>"))
    req.sampling = SamplingConfig(max_tokens=5)
    assert engine.generate(req, timeout=DEADLINE_S).final_token_logprobs is None


def test_max_tokens_truncation(engine: Engine) -> None:
    req = prompt(engine, "cut me off")
    req.logits_processor = ForcedTokens(script(engine))
    req.sampling = SamplingConfig(max_tokens=5)
    r = engine.generate(req, timeout=DEADLINE_S)
    assert r.finish_reason == "length" and r.truncated
    assert r.response is None
    assert len(r.output_token_ids) == 5


def test_final_cut_mid_answer_has_no_response(engine: Engine) -> None:
    sc = script(engine, answer="1 because it insults")
    req = prompt(engine, "cut in the answer")
    req.logits_processor = ForcedTokens(sc)
    req.sampling = SamplingConfig(max_tokens=len(sc) - 2)
    r = engine.generate(req, timeout=DEADLINE_S)
    assert r.finish_reason == "length"
    assert r.response is None
    assert r.messages[-1].channel == "final" and not r.messages[-1].complete


def test_forced_call(engine: Engine) -> None:
    sc = ids(
        engine,
        " to=functions.lookup",
        "<|channel|>",
        "commentary",
        "<|message|>",
        '{"q": 1}',
        "<|call|>",
    )
    req = prompt(engine, "call a tool")
    req.logits_processor = ForcedTokens(sc)
    req.sampling = SamplingConfig(max_tokens=100)
    r = engine.generate(req, timeout=DEADLINE_S)
    assert r.finish_reason == "call"
    assert r.response is None
    assert r.output_token_ids == sc
    assert r.messages[0].recipient == "functions.lookup"
    assert r.messages[0].text == '{"q": 1}'


def test_streaming_events_reconstruct_the_answer(engine: Engine) -> None:
    events: list[object] = []
    req = prompt(engine, "stream it")
    req.logits_processor = ForcedTokens(script(engine, "step one; step two", "safe 😀 ok"))
    req.sampling = SamplingConfig(max_tokens=100)
    req.on_event = events.append
    r = engine.generate(req, timeout=DEADLINE_S)
    assert r.response == "safe 😀 ok"
    final = "".join(e.text for e in events if isinstance(e, ContentDelta) and e.channel == "final")
    analysis = "".join(
        e.text for e in events if isinstance(e, ContentDelta) and e.channel == "analysis"
    )
    assert final == r.response
    assert analysis == r.reasoning == "step one; step two"
    assert sum(isinstance(e, MessageStart) for e in events) == 2
    assert sum(isinstance(e, MessageEnd) for e in events) == 2


def _run_each(engine: Engine, reqs: list[GenerationRequest]) -> list[ModelResponse]:
    return [engine.generate(r, timeout=DEADLINE_S) for r in reqs]


def test_prefix_parallel_and_scratch_are_identical(engine: Engine) -> None:
    reqs = [prompt(engine, t) for t in TEXTS]
    assert engine.header.arch_key("attention.sliding_window") == 8
    assert all(len(r.prompt_ids) - r.prefix_len > 8 for r in reqs[1:])  # beyond the window

    # 1. one at a time, each reusing the policy's prefix state
    engine.reset_state()
    one_by_one = _run_each(engine, reqs)
    assert all(r.timings.cached_tokens > 0 for r in one_by_one[1:])

    # 2. all together, in parallel sequences, after a different policy took the state
    engine.generate(
        prompt(engine, "evict", policy="A different policy entirely."), timeout=DEADLINE_S
    )
    together = dict(engine.generate_many(reqs, timeout=DEADLINE_S))
    assert sorted(together) == list(range(len(reqs)))

    # 3. from scratch, no prefix state at all
    engine.prefix_cache = False
    try:
        engine.reset_state()
        scratch = _run_each(engine, reqs)
    finally:
        engine.prefix_cache = True
        engine.reset_state()
    assert all(r.timings.cached_tokens == 0 for r in scratch)

    for i in range(len(reqs)):
        assert len(one_by_one[i].output_token_ids) >= 2
        assert one_by_one[i].output_token_ids == scratch[i].output_token_ids, TEXTS[i]
        assert together[i].output_token_ids == scratch[i].output_token_ids, TEXTS[i]


def test_parallel_width_does_not_change_outputs(engine: Engine) -> None:
    reqs = [prompt(engine, t) for t in TEXTS]
    wide = dict(engine.generate_many(reqs, timeout=DEADLINE_S))
    narrow = dict(engine.generate_many(reqs, n_parallel=1, timeout=DEADLINE_S))
    assert [wide[i].output_token_ids for i in range(len(reqs))] == [
        narrow[i].output_token_ids for i in range(len(reqs))
    ]


def test_seeded_sampling_is_reproducible(engine: Engine) -> None:
    def request(seed: int, **kw: float) -> GenerationRequest:
        req = prompt(engine, "sample me")
        req.sampling = SamplingConfig(temperature=1.5, seed=seed, max_tokens=8, **kw)  # type: ignore[arg-type]
        return req

    def sample(seed: int, **kw: float) -> list[int]:
        return engine.generate(request(seed, **kw), timeout=DEADLINE_S).output_token_ids

    greedy = engine.generate(prompt(engine, "sample me"), timeout=DEADLINE_S).output_token_ids[:8]
    first = sample(7)
    assert sample(7) == first
    assert sample(7, top_p=0.9, top_k=50) == sample(7, top_p=0.9, top_k=50)
    outputs = {tuple(first), *(tuple(sample(seed)) for seed in (1, 2))}
    assert len(outputs) > 1  # the seed really drives the sampler
    assert any(list(o) != greedy for o in outputs)
    # In a parallel batch, a sequence samples exactly as it would alone.
    batch = dict(engine.generate_many([request(7), request(1)], timeout=DEADLINE_S))
    assert batch[0].output_token_ids == first
    assert batch[1].output_token_ids == sample(1)


def test_too_long_prompt_fails_alone(engine: Engine) -> None:
    long_text = " ".join(f"w{i}" for i in range(N_CTX))
    reqs = [prompt(engine, "short one"), prompt(engine, long_text), prompt(engine, "another")]
    assert len(reqs[1].prompt_ids) > N_CTX
    results = dict(engine.generate_many(reqs, timeout=DEADLINE_S))
    bad = results[1]
    assert bad.finish_reason == "error" and bad.response is None
    assert bad.error is not None and "\n" not in bad.error
    assert f"the context holds {N_CTX}" in bad.error
    for i in (0, 2):
        assert results[i].error is None
        assert len(results[i].output_token_ids) == GREEDY.max_tokens
    # The survivors decode exactly as they would alone.
    assert (
        results[2].output_token_ids == engine.generate(reqs[2], timeout=DEADLINE_S).output_token_ids
    )


def test_empty_prompt_fails(engine: Engine) -> None:
    r = engine.generate([], timeout=DEADLINE_S)
    assert r.finish_reason == "error" and r.error == "empty prompt"


def test_generate_accepts_plain_ids(engine: Engine) -> None:
    req = prompt(engine, "plain ids")
    a = engine.generate(req.prompt_ids, sampling=GREEDY, timeout=DEADLINE_S)
    b = engine.generate(req, timeout=DEADLINE_S)
    assert a.output_token_ids == b.output_token_ids


def test_n_ctx_is_capped_by_the_training_context(tiny_model: Path) -> None:
    with Engine(tiny_model, n_ctx=1_000_000, n_threads=1, n_parallel=1) as big:
        assert big.n_ctx == 4096  # the tiny preset's context_length
    with Engine(tiny_model, n_ctx=0, n_threads=1, n_parallel=1) as default:
        assert default.n_ctx == 4096
