"""The engine loop: requests from many threads share one continuous batch; handles stream,
wait and cancel; several prefixes stay resident; score-only requests; failures stay local."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import DEADLINE_S, wait, wait_idle

from edge_guard.engine.engine import INTERACTIVE, Engine, GenerationRequest
from edge_guard.engine.handles import Group, Handle
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script, log_softmax
from edge_guard.harmony.parse import ContentDelta
from edge_guard.harmony.render import PromptConfig
from edge_guard.response import ModelResponse

POLICIES = [
    f"Policy {k}: flag content about topic {k} with care and some detail." for k in range(3)
]
TEXTS = ["hello there", "a longer text about nothing at all", "x", "another one", "fine"]


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[Engine]:
    eng = Engine(tiny_model, n_ctx=4096, n_parallel=8, n_threads=1, prefix_snapshots=False)
    yield eng
    eng.close()


def req(
    eng: Engine, text: str, policy: str = POLICIES[0], max_tokens: int = 12, **kw: object
) -> GenerationRequest:
    p = eng.renderer.render(policy, text, PromptConfig(effort="low"))
    return GenerationRequest(
        p.token_ids, SamplingConfig(max_tokens=max_tokens), prefix_len=p.prefix_len, **kw
    )  # type: ignore[arg-type]


def test_threads_share_one_batch_and_match_one_caller(engine: Engine) -> None:
    reqs = [req(engine, t, POLICIES[i % 2]) for i, t in enumerate(TEXTS * 2)]
    alone = [
        dict(engine.generate_many([r], n_parallel=1, timeout=DEADLINE_S))[0].output_token_ids
        for r in reqs
    ]
    engine.stats["max_active"] = 0
    got: dict[int, list[int]] = {}
    start = threading.Barrier(len(reqs))

    def worker(i: int) -> None:
        start.wait()
        got[i] = engine.generate(reqs[i], timeout=DEADLINE_S).output_token_ids

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
        assert not t.is_alive()
    assert [got[i] for i in range(len(reqs))] == alone
    assert engine.stats["max_active"] > 1  # callers' requests were decoded together
    wait_idle(engine)


def test_each_prefix_is_evaluated_once_across_callers(tiny_model: Path) -> None:
    with Engine(tiny_model, n_ctx=4096, n_parallel=4, n_threads=1, prefix_snapshots=False) as eng:
        reqs = [req(eng, t, p) for t in TEXTS for p in POLICIES]
        list(eng.generate_many(reqs, timeout=DEADLINE_S))
        list(eng.generate_many(reqs[:3], timeout=DEADLINE_S))
        assert eng.stats["prefix_evals"] == 3
        assert sum(1 for r in eng.prefixes.residents if r.tokens) == 3


def prefix_of(eng: Engine, policy: str) -> list[int]:
    r = req(eng, "t", policy)
    return list(r.prompt_ids[: r.prefix_len])


def test_more_policies_than_prefix_sequences_replace_the_least_recently_used(
    tiny_model: Path,
) -> None:
    with Engine(
        tiny_model, n_ctx=2048, n_parallel=2, n_threads=1, max_prefixes=2, prefix_snapshots=False
    ) as eng:
        out = [eng.generate(req(eng, "t", p, max_tokens=4), timeout=DEADLINE_S) for p in POLICIES]
        assert all(r.error is None for r in out)
        assert eng.stats["prefix_evals"] == 3 and eng.stats["prefix_evictions"] == 1
        held = [r.tokens for r in eng.prefixes.residents]
        assert prefix_of(eng, POLICIES[0]) not in held
        assert prefix_of(eng, POLICIES[2]) in held


def test_short_kv_budget_drops_idle_prefixes(tiny_model: Path) -> None:
    with Engine(tiny_model, n_ctx=4096, n_parallel=2, n_threads=1, prefix_snapshots=False) as probe:
        prefixes = [prefix_of(probe, p) for p in POLICIES]
    plen = len(prefixes[2])
    # the prefixes share their start (system message...): its cells are held once
    common = min(
        next((i for i, (a, b) in enumerate(zip(prefixes[0], p, strict=False)) if a != b), len(p))
        for p in prefixes[1:]
    )
    n_ctx = 2 * plen - common + 40  # two prefixes and one short text fit, three do not
    assert plen - common > 40
    with Engine(tiny_model, n_ctx=n_ctx, n_parallel=2, n_threads=1, prefix_snapshots=False) as eng:
        out = [eng.generate(req(eng, "t", p, max_tokens=4), timeout=DEADLINE_S) for p in POLICIES]
        assert [r.error for r in out] == [None, None, None]
        assert eng.stats["prefix_evictions"] >= 1
        assert eng.prefixes.n_tokens <= n_ctx
        assert prefix_of(eng, POLICIES[0]) not in [r.tokens for r in eng.prefixes.residents]


def test_cancel_a_running_request_leaves_no_stuck_sequence(engine: Engine) -> None:
    started = threading.Event()
    handle = engine.submit(
        req(engine, "long", max_tokens=4000, logits_processor=lambda _o, _l: started.set())
    )
    assert started.wait(30)
    handle.cancel()
    resp = handle.result(timeout=30)
    assert resp.error == "cancelled" and resp.finish_reason == "error"
    after = engine.generate(req(engine, "next"), timeout=DEADLINE_S)
    assert after.error is None and after.output_token_ids
    wait_idle(engine)


def test_closing_generate_many_early_cancels_the_rest(engine: Engine) -> None:
    it = engine.generate_many(
        [req(engine, t, max_tokens=400) for t in TEXTS], n_parallel=2, timeout=DEADLINE_S
    )
    next(it)
    it.close()
    wait_idle(engine)


def test_a_failing_item_fails_alone(engine: Engine) -> None:
    def nan(_out: list[int], logits: np.ndarray) -> np.ndarray:
        return np.full_like(logits, np.nan)

    reqs = [req(engine, "a"), req(engine, "b", logits_processor=nan), req(engine, "c")]
    got = dict(engine.generate_many(reqs, timeout=DEADLINE_S))
    assert got[1].error == "the model computed NaN logits (corrupt or incompatible weights)"
    assert got[0].error is None and got[2].error is None
    assert got[0].output_token_ids == engine.generate(reqs[0], timeout=DEADLINE_S).output_token_ids


def test_streaming_handle_and_asyncio_adapter(engine: Engine) -> None:
    def scripted() -> GenerationRequest:
        steer = ForcedTokens(harmony_script(engine.vocab, "1", "so it goes"))
        return req(engine, "stream me", max_tokens=60, logits_processor=steer)

    handle = engine.submit(scripted(), stream=True)
    events = list(handle.events(timeout=30))
    resp = wait(handle)
    assert resp.error is None and resp.response == "1" and resp.reasoning == "so it goes"
    deltas = [e for e in events if isinstance(e, ContentDelta)]
    assert "".join(e.text for e in deltas if e.channel == "final") == "1"
    assert "".join(e.text for e in deltas if e.channel == "analysis") == "so it goes"

    async def four_tasks() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(*(engine.submit(scripted()).wait_async() for _ in range(4)))

    again = asyncio.run(four_tasks())
    assert [r.output_token_ids for r in again] == [resp.output_token_ids] * 4


def test_score_only_gives_next_token_and_continuation_logprobs(engine: Engine) -> None:
    base = req(engine, "score this")
    prompt = list(base.prompt_ids)
    a, b, c = 65, 66, 67
    scored = engine.generate(
        GenerationRequest(
            prompt,
            prefix_len=base.prefix_len,
            score_only=True,
            score_token_ids=[a, b],
            score_sequences=[[a], [a, b], [a, b, c]],
        ),
        timeout=DEADLINE_S,
    )
    assert scored.finish_reason == "scored" and scored.output_token_ids == []
    lp = scored.final_token_logprobs
    assert lp is not None and set(lp) == {a, b}
    # the same numbers from single-token score passes over the extended prompts
    step1 = engine.generate(
        GenerationRequest(
            [*prompt, a], prefix_len=base.prefix_len, score_only=True, score_token_ids=[b]
        ),
        timeout=DEADLINE_S,
    )
    step2 = engine.generate(
        GenerationRequest(
            [*prompt, a, b], prefix_len=base.prefix_len, score_only=True, score_token_ids=[c]
        ),
        timeout=DEADLINE_S,
    )
    assert step1.final_token_logprobs and step2.final_token_logprobs
    seq = scored.sequence_logprobs
    assert seq is not None and len(seq) == 3
    assert seq[0] == lp[a]
    assert seq[1] == pytest.approx(lp[a] + step1.final_token_logprobs[b], abs=1e-3)
    want = lp[a] + step1.final_token_logprobs[b] + step2.final_token_logprobs[c]
    assert seq[2] == pytest.approx(want, abs=1e-3)
    # and the next-token log-probs are the ones a generation sees at its first step
    seen: list[np.ndarray] = []
    engine.generate(
        GenerationRequest(
            prompt,
            SamplingConfig(max_tokens=1),
            prefix_len=base.prefix_len,
            logits_processor=lambda _o, lg: seen.append(lg.copy()),
        ),
        timeout=DEADLINE_S,
    )
    first = log_softmax(seen[0])
    assert lp[a] == pytest.approx(float(first[a]), abs=1e-4)
    wait_idle(engine)


def test_empty_and_too_long_prompts_fail_at_submit(engine: Engine) -> None:
    assert engine.submit(GenerationRequest([])).result(1).error == "empty prompt"
    long = engine.submit(GenerationRequest([65] * (engine.n_ctx + 5))).result(1)
    assert long.error is not None and long.error.startswith(f"prompt is {engine.n_ctx + 5} tokens")


def test_a_callers_own_exception_reaches_that_caller(engine: Engine) -> None:
    class Stop(Exception):
        pass

    def stop(_out: list[int], _logits: np.ndarray) -> None:
        raise Stop("user pressed escape")

    reqs = [req(engine, "a", max_tokens=200), req(engine, "b", logits_processor=stop)]
    with pytest.raises(Stop, match="user pressed escape"):
        dict(engine.generate_many(reqs, timeout=DEADLINE_S))
    handle = engine.submit(req(engine, "c", logits_processor=stop))
    with pytest.raises(Stop):
        handle.result(timeout=30)
    wait_idle(engine)  # the other request of that call was cancelled, nothing is stuck


def test_warm_prefix_makes_the_requests_own_prefix_resident(tiny_model: Path) -> None:
    with Engine(tiny_model, n_ctx=4096, n_parallel=2, n_threads=1, prefix_snapshots=False) as eng:
        r = req(eng, "hello there")
        eng.warm_prefix(r)
        assert eng.stats["prefix_evals"] == 1
        assert [x.tokens for x in eng.prefixes.residents if x.tokens] == [
            prefix_of(eng, POLICIES[0])
        ]
        out = eng.generate(r, timeout=DEADLINE_S)
        assert out.error is None and out.timings.cached_tokens == r.prefix_len
        assert eng.stats["prefix_evals"] == 1  # admission found it: not evaluated again


def then(
    eng: Engine, base: GenerationRequest, header: list[int], decide: object, **kw: object
) -> GenerationRequest:
    """`base` scored after `header`, then (if `decide` says so) generated in place."""
    return GenerationRequest(
        [*base.prompt_ids, *header],
        base.sampling,
        prefix_len=base.prefix_len,
        score_only=True,
        continue_at=len(base.prompt_ids),
        escalate=decide,
        **kw,
    )  # type: ignore[arg-type]


def test_score_then_continue_generates_in_place_as_a_plain_request_would(engine: Engine) -> None:
    v = engine.vocab
    header, labels = [v.special_id("<|channel|>"), 65, v.special_id("<|message|>")], [65, 66]
    texts = ["escalate me", "keep me", "and me too", "not me"]
    bases = [req(engine, t, max_tokens=10) for t in texts]
    plain = [engine.generate(b, timeout=DEADLINE_S) for b in bases]
    scores = [
        engine.generate(
            GenerationRequest(
                [*b.prompt_ids, *header],
                prefix_len=b.prefix_len,
                score_only=True,
                score_token_ids=labels,
                score_sequences=[[65, 66], [67]],
            ),
            timeout=DEADLINE_S,
        )
        for b in bases
    ]
    seen: list[ModelResponse] = []
    up = {tuple(bases[0].prompt_ids), tuple(bases[2].prompt_ids)}

    def decide(score: ModelResponse) -> bool:
        seen.append(score)
        return tuple(score.prompt_token_ids[: -len(header)]) in up

    reqs = [
        then(engine, b, header, decide, score_token_ids=labels, score_sequences=[[65, 66], [67]])
        for b in bases
    ]
    got = dict(engine.generate_many(reqs, timeout=DEADLINE_S))
    assert len(seen) == 4
    for i in (0, 2):  # escalated: the plain generation, with the score attached
        assert got[i].output_token_ids == plain[i].output_token_ids
        assert got[i].prompt_token_ids == list(bases[i].prompt_ids)
        assert got[i].timings.prompt_tokens == len(bases[i].prompt_ids)
        assert got[i].scored is not None and got[i].scored.finish_reason == "scored"
    for i in (1, 3):  # kept: the score response alone
        assert got[i].finish_reason == "scored" and got[i].scored is None
        assert got[i].output_token_ids == []
    for i in range(4):
        score = got[i].scored or got[i]
        assert score.final_token_logprobs == pytest.approx(scores[i].final_token_logprobs, abs=1e-4)
        # batched with other sequences: parallel rounding, amplified at log P ~ -63
        assert score.sequence_logprobs == pytest.approx(scores[i].sequence_logprobs, rel=1e-3)
    wait_idle(engine)


def test_score_then_continue_needs_both_fields_and_a_header(engine: Engine) -> None:
    base = req(engine, "x")
    n = len(base.prompt_ids)
    cases = [
        GenerationRequest([*base.prompt_ids, 65], score_only=True, continue_at=n),
        GenerationRequest([*base.prompt_ids, 65], score_only=True, escalate=lambda _r: True),
        GenerationRequest(
            list(base.prompt_ids), score_only=True, continue_at=n, escalate=lambda _r: True
        ),
        GenerationRequest([*base.prompt_ids, 65], continue_at=n, escalate=lambda _r: True),
    ]
    errors = [engine.submit(c).result(5).error for c in cases]
    assert (
        errors
        == ["score-then-continue needs both continue_at and escalate"] * 2
        + ["continue_at must split a score-only prompt into a prompt and a header"] * 2
    )


def paused_big_job(eng: Engine, n: int) -> tuple[list[Handle], threading.Event]:
    """A big job submitted alone; returns once its first requests fill every slot and the
    loop is paused inside a step (its handles, and the event that lets the loop go on)."""
    paused, gate = threading.Event(), threading.Event()

    def hold(_out: object, _logits: object) -> None:  # in the loop's thread, inside a step
        if not paused.is_set() and len(eng.loop.slots) == eng.n_parallel:
            paused.set()
            gate.wait(DEADLINE_S)

    job = Group(eng.n_parallel)
    sink: queue.Queue[tuple[int, ModelResponse]] = queue.Queue()
    # Every request is queued before the loop takes any: it waits for the loop's lock (a
    # re-entrant one, so submit takes it here too). The first eight are then admitted in one
    # pass and finish in the same step. A loop that started on the first few alone would
    # stagger them, and which job gets a slot freed while the big job still holds more than
    # its share would depend on thread timing (a CI run saw that).
    with eng.loop._cv:
        handles = [
            eng.loop.submit(
                req(eng, f"big {i}", min_tokens=12, logits_processor=hold),
                group=job,
                index=i,
                sink=sink,
            )
            for i in range(n)
        ]
    try:
        assert paused.wait(DEADLINE_S)
        assert sum(h.admitted is not None for h in handles) >= eng.n_parallel
    except BaseException:
        gate.set()  # never leave the loop waiting in `hold`
        raise
    return handles, gate


def test_a_one_text_job_is_admitted_before_a_big_jobs_backlog(engine: Engine) -> None:
    handles, gate = paused_big_job(engine, 64)
    running = [h for h in handles if h.admitted is not None]
    backlog = [h for h in handles if h.admitted is None]
    one = engine.submit(req(engine, "one text"))
    gate.set()
    assert wait(one).error is None
    assert [wait(h).error for h in handles] == [None] * 64
    assert max(h.admitted for h in running) < one.admitted < min(h.admitted for h in backlog)  # type: ignore[operator,type-var]
    wait_idle(engine)


def test_interactive_jobs_go_first_and_jobs_take_turns(engine: Engine) -> None:
    handles, gate = paused_big_job(engine, 24)
    backlog = [h for h in handles if h.admitted is None]
    small = Group(engine.n_parallel)
    sink: queue.Queue[tuple[int, ModelResponse]] = queue.Queue()
    a = [
        engine.loop.submit(req(engine, f"a {i}"), group=small, index=i, sink=sink) for i in range(4)
    ]
    b = engine.submit(req(engine, "b"))
    person = engine.submit(req(engine, "typed by a person"), priority=INTERACTIVE)
    gate.set()
    for h in [*handles, *a, b, person]:
        assert wait(h).error is None
    later = sorted(h.admitted for h in [*backlog, *a, b])  # type: ignore[type-var]
    assert person.admitted is not None and person.admitted < later[0]
    big = sorted(h.admitted for h in backlog)  # type: ignore[type-var]
    assert b.admitted is not None and b.admitted < big[0]
    # the two jobs alternate: neither waits for the other's backlog
    assert [a[k].admitted < big[k + 1] for k in range(4)] == [True] * 4  # type: ignore[operator]
    assert big[0] < a[1].admitted  # type: ignore[operator]
    wait_idle(engine)


def test_a_big_job_leaves_a_slot_for_each_other_job(engine: Engine) -> None:
    """While a one-text job runs, a big job refills slots only while one stays free for it
    (its client's next text finds a slot); alone, the big job had every slot."""
    handles, gate = paused_big_job(engine, 64)
    big = handles[0].group
    held: list[int] = []

    def count(_out: object, _logits: object) -> None:  # each step of the one-text request
        held.append(sum(1 for s in engine.loop.slots.values() if s.handle.group is big))

    one = engine.submit(
        req(engine, "one text", max_tokens=60, min_tokens=60, logits_processor=count)
    )
    gate.set()
    assert wait(one).error is None and len(held) == 60
    assert held[-1] == engine.n_parallel - 2  # one slot for the one-text job, one kept free
    assert [wait(h).error for h in handles] == [None] * 64
    wait_idle(engine)
