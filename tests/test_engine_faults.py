"""Fault injection: a request that raises at any stage of the engine loop fails alone.

For each stage (admission, start, decode, scoring, the parser, the response, its delivery,
each of a request's callbacks, and the loop's own bookkeeping) one bad request is
submitted among 32 good ones (one 16-request job and 16 one-request jobs). Every good
request must get the answer it gets alone (greedy), the bad one its own error (or its
caller's own exception), the loop's slots, sequences and prefix references must return
to idle, and the engine must answer afterwards. Faults are injected by patching the
function that stage calls, for the bad request only.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_helpers import alone, wait, wait_idle

from edge_guard.engine import llama_runtime as rt
from edge_guard.engine import loop as loop_module
from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.handles import Group, Handle
from edge_guard.engine.sampling import ForcedTokens, Sampler, SamplingConfig, harmony_script
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.render import PromptConfig
from edge_guard.response import ModelResponse

POLICIES = [
    f"Policy {k}: flag content about topic {k} with care and some detail." for k in range(2)
]
N_GOOD = 32


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[Engine]:
    eng = Engine(tiny_model, n_ctx=4096, n_parallel=8, n_threads=1, prefix_snapshots=False)
    yield eng
    eng.close()


def req(
    eng: Engine, text: str, policy: str = POLICIES[0], max_tokens: int = 8, **kw: Any
) -> GenerationRequest:
    p = eng.renderer.render(policy, text, PromptConfig(effort="low"))
    return GenerationRequest(
        p.token_ids, SamplingConfig(max_tokens=max_tokens), prefix_len=p.prefix_len, **kw
    )


def good_requests(eng: Engine) -> list[GenerationRequest]:
    return [
        req(eng, f"good text {i} " + "word " * (i % 5), POLICIES[i % 2], 4 + i % 9)
        for i in range(N_GOOD)
    ]


@pytest.fixture(scope="module")
def baseline(engine: Engine) -> list[list[int]]:
    """Each good request's tokens when it runs alone."""
    out = [alone(engine, r) for r in good_requests(engine)]
    assert all(r.error is None and r.output_token_ids for r in out)
    return [r.output_token_ids for r in out]


def scoring(eng: Engine, text: str, **kw: Any) -> GenerationRequest:
    base = req(eng, text)
    header = [eng.vocab.special_id("<|channel|>"), 65, eng.vocab.special_id("<|message|>")]
    return GenerationRequest(
        [*base.prompt_ids, *header],
        base.sampling,
        prefix_len=base.prefix_len,
        score_only=True,
        score_token_ids=[65, 66],
        score_sequences=[[65, 66], [67]],
        **kw,
    )


class Injected(Exception):
    """What a patched stage raises (not an EdgeGuardError: an unexpected fault)."""


def injected(*_a: Any, **_k: Any) -> Any:
    raise Injected("injected")


def seq_ids_of(batch: rt.Batch) -> set[int]:
    return {int(batch.raw.seq_id[i][0]) for i in range(batch.n)}


# Each stage: (its bad request, patches that make it fail for that request only, and what
# its caller sees: an error string, or an exception type raised by Handle.result).
Stage = Callable[[Engine, pytest.MonkeyPatch, list[Handle]], tuple[GenerationRequest, Any]]


def admit(eng: Engine, mp: pytest.MonkeyPatch, bad: list[Handle]) -> tuple[GenerationRequest, Any]:
    """Its prefix (a policy no one else uses) fails to evaluate."""
    real = rt.decode

    def decode(ctx: Any, batch: rt.Batch) -> None:
        if any(s < eng.max_prefixes for s in seq_ids_of(batch)):
            raise EdgeGuardError("decoding failed: injected")
        real(ctx, batch)

    mp.setattr(rt, "decode", decode)
    return req(eng, "bad", "Policy admit: a policy only the bad request uses."), (
        "decoding failed: injected"
    )


def start(eng: Engine, mp: pytest.MonkeyPatch, bad: list[Handle]) -> tuple[GenerationRequest, Any]:
    """Its sampler cannot be made (as np.random.default_rng(-1) once did)."""
    r = req(eng, "bad")
    mp.setattr(
        loop_module, "Sampler", lambda cfg: injected() if cfg is r.sampling else Sampler(cfg)
    )
    return r, "internal error in the engine: Injected: injected"


def decode(eng: Engine, mp: pytest.MonkeyPatch, bad: list[Handle]) -> tuple[GenerationRequest, Any]:
    """Every batch holding it fails to decode (the others are retried without it)."""
    real = rt.decode

    def fail(ctx: Any, batch: rt.Batch) -> None:
        if bad[0].seq_id in seq_ids_of(batch):
            raise EdgeGuardError("decoding failed: injected")
        real(ctx, batch)

    mp.setattr(rt, "decode", fail)
    return req(eng, "bad"), "decoding failed: injected"


def score(eng: Engine, mp: pytest.MonkeyPatch, bad: list[Handle]) -> tuple[GenerationRequest, Any]:
    r = scoring(eng, "bad")
    real = eng.decoder.score_prompt
    mp.setattr(
        eng.decoder,
        "score_prompt",
        lambda slot, lg: injected() if slot.request is r else real(slot, lg),
    )
    return r, "internal error in the engine: Injected: injected"


def parse(eng: Engine, mp: pytest.MonkeyPatch, bad: list[Handle]) -> tuple[GenerationRequest, Any]:
    r = req(eng, "bad")
    real = eng.decoder.advance

    def advance(slot: Any, logits: np.ndarray) -> bool:
        if slot.request is r:
            slot.parser.feed = injected
        return real(slot, logits)

    mp.setattr(eng.decoder, "advance", advance)
    return r, "internal error in the engine: Injected: injected"


def finish(eng: Engine, mp: pytest.MonkeyPatch, bad: list[Handle]) -> tuple[GenerationRequest, Any]:
    r = req(eng, "bad")
    real = eng.decoder.finish
    mp.setattr(eng.decoder, "finish", lambda slot: injected() if slot.request is r else real(slot))
    return r, "internal error in the engine: Injected: injected"


def logits_processor(
    eng: Engine, mp: pytest.MonkeyPatch, bad: list[Handle]
) -> tuple[GenerationRequest, Any]:
    return req(eng, "bad", logits_processor=injected), Injected


def on_event(
    eng: Engine, mp: pytest.MonkeyPatch, bad: list[Handle]
) -> tuple[GenerationRequest, Any]:
    """Its event callback raises (the answer is steered so that the parser has events)."""
    steer = ForcedTokens(harmony_script(eng.vocab, "1", "so it goes"))
    return req(eng, "bad", max_tokens=60, logits_processor=steer, on_event=injected), Injected


def escalate(
    eng: Engine, mp: pytest.MonkeyPatch, bad: list[Handle]
) -> tuple[GenerationRequest, Any]:
    base = req(eng, "bad")
    r = scoring(eng, "bad", continue_at=len(base.prompt_ids), escalate=injected)
    return r, Injected


def delivery(
    eng: Engine, mp: pytest.MonkeyPatch, bad: list[Handle]
) -> tuple[GenerationRequest, Any]:
    """Its response cannot be delivered (a waiter whose event loop is gone): it still
    completes, with its own answer."""

    def gone() -> None:
        raise RuntimeError("Event loop is closed")

    def on_submit(h: Handle) -> None:
        h._waiters.append(gone)
        h._sink = broken_sink()

    bad.append(on_submit)  # type: ignore[arg-type]
    return req(eng, "bad"), None


def loop_itself(
    eng: Engine, mp: pytest.MonkeyPatch, bad: list[Handle]
) -> tuple[GenerationRequest, Any]:
    """The loop's own code raises while it completes the bad request: the fault fails the
    request it touched, and the loop restarts with its bookkeeping restored."""

    def on_submit(h: Handle) -> None:
        real = h.complete
        fired: list[bool] = []

        def complete(response: ModelResponse) -> None:
            if not fired:
                fired.append(True)
                raise Injected("injected")
            real(response)

        h.complete = complete  # type: ignore[method-assign]

    bad.append(on_submit)  # type: ignore[arg-type]
    return req(eng, "bad"), "internal error in the engine loop: Injected: injected"


def broken_sink() -> Any:
    class Sink:
        def put(self, _item: Any) -> None:
            raise OSError("the sink is gone")

    return Sink()


STAGES: dict[str, Stage] = {
    "admit": admit,
    "start": start,
    "decode": decode,
    "score": score,
    "parse": parse,
    "finish": finish,
    "logits_processor": logits_processor,
    "on_event": on_event,
    "escalate": escalate,
    "delivery": delivery,
    "loop": loop_itself,
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_request_failing_at_any_stage_fails_alone(
    engine: Engine, baseline: list[list[int]], monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    good = good_requests(engine)
    hooks: list[Any] = []
    bad_req, expected = STAGES[stage](engine, monkeypatch, hooks)
    faults = engine.loop.faults
    job = Group(engine.n_parallel)
    sink: queue.Queue[tuple[int, ModelResponse]] = queue.Queue()
    with engine.lock:  # the loop waits: every request is queued before any is admitted
        handles = [
            engine.loop.submit(r, group=job, index=i, sink=sink) for i, r in enumerate(good[:16])
        ]
        handles += [engine.submit(r) for r in good[16:24]]
        bad = engine.submit(bad_req)
        hooks.insert(0, bad)
        for hook in hooks[1:]:
            hook(bad)
        handles += [engine.submit(r) for r in good[24:]]
    got = [wait(h) for h in handles]
    assert [r.error for r in got] == [None] * N_GOOD
    assert [r.output_token_ids for r in got] == baseline
    if isinstance(expected, type):
        with pytest.raises(expected, match="injected"):
            wait(bad)
    else:
        assert wait(bad).error == expected
    assert engine.loop.faults == faults + (stage == "loop")
    wait_idle(engine)
    # the engine answers afterwards, the bad request too once its fault is gone
    assert alone(engine, good[5]).output_token_ids == baseline[5]
    monkeypatch.undo()
    if not isinstance(expected, type):
        again = alone(engine, bad_req)
        assert again.error is None and (again.output_token_ids or again.finish_reason == "scored")
    wait_idle(engine)


def test_lost_bookkeeping_is_restored_instead_of_spinning(
    engine: Engine, baseline: list[list[int]]
) -> None:
    """Requests wait, nothing runs and nothing can be admitted (every slot lost): the loop
    restores its bookkeeping from the running sequences and answers."""
    good = good_requests(engine)
    with engine.lock:
        engine.loop._free.clear()
        for r in engine.prefixes.residents:
            r.users += 3
        handles = [engine.submit(r) for r in good[:4]]
    assert [wait(h).output_token_ids for h in handles] == baseline[:4]
    wait_idle(engine)


def test_requests_that_can_never_be_admitted_fail_and_the_loop_ends(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine.loop, "_try_admit", lambda _h: loop_module.SKIP)
    handles = [engine.submit(r) for r in good_requests(engine)[:3]]
    assert [wait(h).error for h in handles] == [loop_module.STUCK] * 3
    wait_idle(engine)  # the thread ended: it did not spin on them
    monkeypatch.undo()
    assert alone(engine, good_requests(engine)[0]).error is None


def test_an_invalid_request_fails_at_submit_and_never_reaches_the_loop(engine: Engine) -> None:
    with pytest.raises(
        EdgeGuardError, match=r"^seed must be an integer in \[0, 2\*\*63-1\], got -1$"
    ):
        SamplingConfig(seed=-1, temperature=0.7)
    forced = SamplingConfig(temperature=0.7)
    object.__setattr__(forced, "seed", -1)  # what a frozen dataclass cannot stop
    base = req(engine, "x")
    cases = {
        "seed must be an integer in [0, 2**63-1], got -1": GenerationRequest(
            base.prompt_ids, forced
        ),
        "the prompt holds a token id outside the vocabulary [0, "
        f"{engine.n_vocab})": GenerationRequest([*base.prompt_ids, engine.n_vocab]),
        "the prompt must be a list of integer token ids": GenerationRequest([1.5, 2.0]),  # type: ignore[list-item]
        "min_tokens must be an integer >= 0, got -1": GenerationRequest(
            base.prompt_ids, min_tokens=-1
        ),
        "score_token_ids holds a token id outside the vocabulary [0, "
        f"{engine.n_vocab})": GenerationRequest(base.prompt_ids, score_token_ids=[-1]),
        f"score_sequences[0] is longer than a batch ({engine.n_batch + 1} tokens)": GenerationRequest(
            base.prompt_ids, score_only=True, score_sequences=[[65] * (engine.n_batch + 2)]
        ),
        "sampling must be a SamplingConfig": GenerationRequest(base.prompt_ids, "greedy"),  # type: ignore[arg-type]
    }
    with engine.lock:  # nothing is admitted meanwhile: each fails inside submit itself
        handles = {want: engine.submit(r) for want, r in cases.items()}
        assert all(h.done() for h in handles.values())
        assert len(engine.loop._incoming) == 0
    assert {want: h.result(0).error for want, h in handles.items()} == {w: w for w in cases}
    wait_idle(engine)


def test_a_loop_fault_while_releasing_leaves_the_rest_of_that_step_whole(engine: Engine) -> None:
    """Four sequences finish in the same step; completing the first raises (a fault of the
    loop's own code): it fails, the three others are still released with their answers."""
    reqs = [req(engine, f"same step {i}", max_tokens=4, min_tokens=4) for i in range(4)]
    want = [alone(engine, r).output_token_ids for r in reqs]
    assert [len(w) for w in want] == [4] * 4
    faults = engine.loop.faults
    with engine.lock:
        # The loop thread, started by the first submit, may take that request alone before
        # the others arrive: a first request of its own keeps the four together.
        first = engine.submit(req(engine, "first"))
        handles = [engine.submit(r) for r in reqs]
        real = handles[0].complete

        def complete(response: ModelResponse) -> None:
            handles[0].complete = real  # type: ignore[method-assign]
            raise Injected("injected")

        handles[0].complete = complete  # type: ignore[method-assign]
    got = [wait(h) for h in handles]
    assert wait(first).error is None
    assert got[0].error == "internal error in the engine loop: Injected: injected"
    assert [r.output_token_ids for r in got[1:]] == want[1:]
    assert engine.loop.faults == faults + 1
    wait_idle(engine)


def test_a_prefix_that_fails_half_evaluated_is_evaluated_again(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefix longer than a batch fails at its second chunk: that request fails, others
    go on, and the prefix is later evaluated whole (not resumed over stray cells)."""
    long_policy = "Policy long: " + " ".join(f"rule {k} says be careful." for k in range(40))

    def make() -> Engine:
        return Engine(
            tiny_model, n_ctx=4096, n_parallel=4, n_threads=1, n_batch=256, prefix_snapshots=False
        )

    with make() as fresh:
        expected = alone(fresh, req(fresh, "bad", long_policy)).output_token_ids
    with make() as eng:
        bad_req = req(eng, "bad", long_policy)
        assert bad_req.prefix_len is not None and bad_req.prefix_len > 2 * eng.n_batch
        good = [req(eng, f"good {i}") for i in range(4)]
        good_want = [alone(eng, r).output_token_ids for r in good]
        real = rt.decode
        prefix_chunks: list[int] = []

        def decode(ctx: Any, batch: rt.Batch) -> None:
            if seq_ids_of(batch) and max(seq_ids_of(batch)) < eng.max_prefixes:
                prefix_chunks.append(batch.n)
                if len(prefix_chunks) == 2:
                    raise EdgeGuardError("decoding failed: injected")
            real(ctx, batch)

        monkeypatch.setattr(rt, "decode", decode)
        with eng.lock:
            bad = eng.submit(bad_req)
            handles = [eng.submit(r) for r in good]
        assert wait(bad).error == "decoding failed: injected"
        assert [wait(h).output_token_ids for h in handles] == good_want
        monkeypatch.undo()
        wait_idle(eng)
        assert alone(eng, bad_req).output_token_ids == expected
