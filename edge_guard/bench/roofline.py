"""The roofline of `edge-guard bench`: llama.cpp's own prompt and generation rates on the
engine's context, with no sampling, parsing or Python in the timed calls."""

from __future__ import annotations

import time
from typing import Any

from edge_guard.engine.engine import Engine, GenerationRequest

ROOFLINE_DEFINITION = (
    "roofline_s = prefix_s + n * mean_suffix_tokens / suffix_tok_s + n * output_tokens / "
    "gen_tok_s, with llama.cpp-only timings from this run: prefix_s = evaluating the policy "
    "prefix once; suffix_tok_s = prompt rate of `parallel` texts' suffixes in one batch on "
    "the cached prefix; gen_tok_s = tokens/s decoding `parallel` sequences one token each "
    "per step (no sampling, parsing or Python in the timed calls; best of 3 runs)"
)


def measure_roofline(
    engine: Engine, reqs: list[GenerationRequest], n_out: int, repeats: int = 3
) -> dict[str, Any]:
    """llama.cpp's own rates on `engine`'s context: prefix, batched suffixes, batched decode.

    Each phase is timed `repeats` times from the same state and the fastest kept (the
    ideal is the least disturbed run). Rates from wall time; `cpu` holds the same from
    process CPU time (robust on a busy machine when run with one thread)."""
    from edge_guard.engine import llama_runtime as rt

    prefix = list(reqs[0].prompt_ids[: reqs[0].prefix_len])
    batch, ctx, mem = engine.batch, engine.context, engine.memory
    seqs = list(range(1, len(reqs) + 1))

    def run(items: list[tuple[int, int, int, bool]], step: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, len(items), step):
            batch.clear()
            for tok, pos, seq, want in items[start : start + step]:
                batch.add(tok, pos, seq, want)
            rt.decode(ctx, batch)
        return time.perf_counter() - t0, time.process_time() - c0

    pending = [
        (tok, pos, s, pos == len(r.prompt_ids) - 1)
        for s, r in zip(seqs, reqs, strict=True)
        for pos, tok in enumerate(r.prompt_ids)
        if pos >= len(prefix)
    ]
    token = reqs[0].prompt_ids[-1]
    steps = [
        (token, len(r.prompt_ids) + k, s, True)
        for k in range(n_out)
        for s, r in zip(seqs, reqs, strict=True)
    ]
    timings: list[tuple[tuple[float, float], ...]] = []
    for _ in range(max(1, repeats)):
        engine.reset_state()
        prefix_t = run([(tok, j, 0, False) for j, tok in enumerate(prefix)], engine.n_batch)
        for s in seqs:
            rt.seq_cp(mem, 0, s)
        suffix_t = run(pending, engine.n_batch)
        gen_t = run(steps, len(seqs))
        timings.append((prefix_t, suffix_t, gen_t))
    engine.reset_state()

    def rates(i: int) -> dict[str, float]:
        prefix_s, suffix_s, gen_s = (min(t[k][i] for t in timings) for k in range(3))
        return {
            "prefix_s": prefix_s,
            "prompt_tok_s": len(prefix) / prefix_s,
            "suffix_tok_s": len(pending) / suffix_s,
            "gen_tok_s": len(steps) / gen_s,
        }

    return {"prefix_tokens": len(prefix), **rates(0), "gen_batch": len(seqs), "cpu": rates(1)}
