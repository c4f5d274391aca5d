"""Waits with a deadline for the engine tests: a request that never completes fails the test
(with what it was waiting for) instead of hanging it; and the loop's idle bookkeeping."""

from __future__ import annotations

import queue
from collections.abc import Sequence

import pytest

from edge_guard.engine.engine import Engine, GenerationRequest
from edge_guard.engine.handles import Group, Handle
from edge_guard.response import ModelResponse

DEADLINE_S = 120.0


def wait(handle: Handle, timeout: float = DEADLINE_S) -> ModelResponse:
    """The handle's response (its caller's exception is raised), or the test fails."""
    if not handle._done.wait(timeout):
        pytest.fail(f"request {handle.index} did not complete within {timeout:.0f}s")
    return handle.result(0)


def run_job(
    eng: Engine,
    reqs: Sequence[GenerationRequest],
    *,
    width: int | None = None,
    timeout: float = DEADLINE_S,
) -> dict[int, ModelResponse]:
    """`reqs` as one job (like generate_many), every response within `timeout`."""
    group = Group(width or eng.n_parallel)
    sink: queue.Queue[tuple[int, ModelResponse]] = queue.Queue()
    handles = [eng.loop.submit(r, group=group, index=i, sink=sink) for i, r in enumerate(reqs)]
    return {i: wait(h, timeout) for i, h in enumerate(handles)}


def alone(eng: Engine, request: GenerationRequest, timeout: float = DEADLINE_S) -> ModelResponse:
    """`request` on its own (nothing else submitted meanwhile by this test)."""
    return run_job(eng, [request], width=1, timeout=timeout)[0]


def wait_idle(eng: Engine, timeout: float = DEADLINE_S) -> None:
    """Wait for the loop thread to end, then check every slot, sequence and prefix reference
    is back to its idle value."""
    loop = eng.loop
    thread = loop._thread
    if thread is not None:
        thread.join(timeout)
        if thread.is_alive():
            pytest.fail(f"the engine loop was still running after {timeout:.0f}s")
    assert not loop.slots
    assert sorted(loop._free) == list(range(eng.max_prefixes, eng.max_prefixes + eng.n_parallel))
    assert [r.users for r in eng.prefixes.residents] == [0] * eng.max_prefixes
    assert len(loop._queue) == 0 and not loop.busy
