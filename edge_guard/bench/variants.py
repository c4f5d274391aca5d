"""The timed loops of `edge-guard bench` and the figures of one variant: edge_guard's engine
cold, sequential, parallel or fed by several threads (`engine_loop`), llama-cpp-python's own
loop (`llama_cpp_loop`), a loop timed on a few texts scaled to all (`extrapolated`), one
variant's row (`variant_row`) and how many outputs differ from the reference. What to run
and the report are `bench.core`.
"""

from __future__ import annotations

import time
from typing import Any

from edge_guard.engine.engine import Engine, GenerationRequest

__all__ = [
    "Clock",
    "differing",
    "engine_loop",
    "extrapolated",
    "llama_cpp_loop",
    "round_up",
    "variant_row",
    "warm_prefix",
]


def differing(outs: list[list[int]], ref: list[list[int]], name: str) -> int:
    """How many outputs differ from the reference's greedy tokens. llama-cpp-python's loop
    exposes the tokens it evaluated (all but the last) and may run past max_tokens to
    complete a UTF-8 character."""
    short = 1 if name == "llama_cpp" else 0
    return sum(
        not (o[: len(r)] == r[: len(o)] and len(o) >= len(r) - short)
        for o, r in zip(outs, ref, strict=False)
    )


def variant_row(
    n: int,
    seconds: float,
    cpu_s: float,
    prompt_tokens: int,
    output_tokens: int,
    timed: int | None = None,
    measured_s: float | None = None,
    prefix_s: float = 0.0,
) -> dict[str, Any]:
    """One variant's figures for `n` texts; `timed` < n: the seconds are extrapolated.

    `prefix_s`: the part of `seconds` spent evaluating the policy prefix once; the
    ``steady_*`` figures leave it out (labels/hour once the prefix is resident)."""
    steady = seconds - prefix_s
    return {
        "n": n,
        "timed_texts": n if timed is None else timed,
        "seconds": seconds,
        "cpu_seconds": cpu_s,
        "measured_seconds": seconds if measured_s is None else measured_s,
        "labels_per_s": n / seconds if seconds > 0 else 0.0,
        "labels_per_hour": 3600 * n / seconds if seconds > 0 else 0.0,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "tokens_per_s": (prompt_tokens + output_tokens) / seconds if seconds > 0 else 0.0,
        "output_tokens_per_s": output_tokens / seconds if seconds > 0 else 0.0,
        "prefix_seconds": prefix_s,
        "steady_seconds": steady,
        "steady_labels_per_hour": 3600 * n / steady if steady > 0 else 0.0,
    }


def extrapolated(
    times: list[tuple[float, float]], n: int, n_out: int, prompt_tokens: int, first_apart: bool
) -> dict[str, Any]:
    """A loop timed per text, (wall, cpu) s, on len(times) of n equal-sized texts, scaled to n.

    `first_apart`: the first text also paid for something once (the first call evaluates
    the whole prefix), so only the others are averaged."""
    k = len(times)

    def scale(xs: list[float]) -> float:
        if first_apart and k > 1:
            return xs[0] + sum(xs[1:]) / (k - 1) * (n - 1)
        return sum(xs) / k * n

    wall, cpu = [t[0] for t in times], [t[1] for t in times]
    # the first text's extra time is its prefix evaluation
    prefix_s = max(0.0, wall[0] - sum(wall[1:]) / (k - 1)) if first_apart and k > 1 else 0.0
    return variant_row(
        n,
        scale(wall),
        scale(cpu),
        prompt_tokens,
        round(n_out * n / k),
        timed=k,
        measured_s=sum(wall),
        prefix_s=prefix_s,
    )


Outputs = list[list[int]]
Times = list[tuple[float, float]]


def engine_loop(
    engine: Engine,
    reqs: list[GenerationRequest],
    name: str,
    width: int,
    n_total: int,
    prompt_total: int,
) -> tuple[dict[str, Any], Outputs]:
    """Run `reqs` through the engine. The one-text-at-a-time loops are timed per text and
    scaled to `n_total` texts; the parallel variant must be given (and timed on) them all."""
    outs: list[list[int]] = [[] for _ in reqs]
    times: list[tuple[float, float]] = []
    engine.reset_state()
    prefix_wall, prefix_cpu = 0.0, 0.0
    if name in ("parallel", "threads"):  # the prefix timed apart (the steady figures)
        prefix_wall, prefix_cpu = warm_prefix(engine, reqs)
    clock = Clock()
    if name == "cold":
        for i, req in enumerate(reqs):
            engine.reset_state()
            for _, resp in engine.generate_many([req], n_parallel=1):
                outs[i] = resp.output_token_ids
            times.append(clock.lap())
    elif name == "threads":
        submit_from_threads(engine, reqs, width, outs)
    else:
        for i, resp in engine.generate_many(reqs, n_parallel=1 if name == "sequential" else width):
            outs[i] = resp.output_token_ids
            times.append(clock.lap())  # sequential: one text each (the first also the prefix)
    n_out = sum(len(o) for o in outs)
    if name in ("parallel", "threads"):
        wall, cpu = clock.total()
        return variant_row(
            len(reqs),
            prefix_wall + wall,
            prefix_cpu + cpu,
            prompt_total,
            n_out,
            prefix_s=prefix_wall,
        ), outs
    return extrapolated(times, n_total, n_out, prompt_total, first_apart=name != "cold"), outs


def warm_prefix(engine: Engine, reqs: list[GenerationRequest]) -> tuple[float, float]:
    """Make the workload's policy prefix resident; (wall, cpu) seconds it took."""
    clock = Clock()
    engine.warm_prefix(reqs[0])
    return clock.total()


def submit_from_threads(
    engine: Engine, reqs: list[GenerationRequest], n_threads: int, outs: Outputs
) -> None:
    """`n_threads` callers at once, each generating its share of `reqs` one at a time."""
    import threading

    def caller(k: int) -> None:
        for i in range(k, len(reqs), n_threads):
            outs[i] = engine.generate(reqs[i]).output_token_ids

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Clock:
    """Wall and process-CPU time, per lap and in total."""

    def __init__(self) -> None:
        self.t0 = self.last = (time.perf_counter(), time.process_time())

    def lap(self) -> tuple[float, float]:
        now = (time.perf_counter(), time.process_time())
        lap = (now[0] - self.last[0], now[1] - self.last[1])
        self.last = now
        return lap

    def total(self) -> tuple[float, float]:
        return time.perf_counter() - self.t0[0], time.process_time() - self.t0[1]


def llama_cpp_loop(
    path: str,
    reqs: list[GenerationRequest],
    output_tokens: int,
    gpu_layers: int | str,
    n_ctx: int,
    stop_ids: list[int],
    threads: int,
) -> tuple[Times, int, Outputs]:
    """Per-text (wall, cpu) seconds, output tokens and outputs of llama-cpp-python's loop."""
    import numpy as np
    from llama_cpp import Llama, LogitsProcessorList

    from edge_guard.engine import llama_runtime as rt

    gpu = rt.resolve_gpu_layers(gpu_layers)
    llm = Llama(
        model_path=path,
        n_ctx=round_up(n_ctx, 256),
        n_batch=512,
        n_ubatch=512,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=gpu,
        flash_attn=gpu != 0,
        swa_full=True,
        verbose=False,
    )
    stops = np.array(stop_ids, dtype=np.int64)

    def no_stop(_ids: Any, scores: Any) -> Any:
        scores[stops] = -np.inf  # exactly max_tokens out, as min_tokens does in edge_guard
        return scores

    processors = LogitsProcessorList([no_stop])
    outs: list[list[int]] = []
    times: list[tuple[float, float]] = []
    n_out = 0
    clock = Clock()
    for req in reqs:
        done = llm.create_completion(
            list(req.prompt_ids),
            max_tokens=output_tokens,
            temperature=0.0,
            repeat_penalty=1.0,
            logits_processor=processors,
        )
        times.append(clock.lap())
        if not isinstance(done, dict):  # a stream: only asked for with stream=True
            raise TypeError("llama-cpp-python streamed a completion that was not asked to stream")
        k = int(done["usage"]["completion_tokens"])
        n_out += k
        start = len(req.prompt_ids)
        outs.append([int(t) for t in llm.input_ids[start : min(start + k - 1, llm.n_tokens)]])
    llm.close()
    return times, n_out, outs


def round_up(n: int, k: int) -> int:
    return (n + k - 1) // k * k
