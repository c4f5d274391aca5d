"""llama.cpp's raw decode rate for one sequence against several together, on one model.

What the cascade's cost rests on: an escalated text's reasoning tokens are decoded alone
when few texts escalate. Usage (the cascade paragraph of docs/performance.md)::

    python scripts/decode_rates.py 20b-shape.gguf [--steps 24] [--width 8]

Each sequence gets a 40-token prompt; then `--steps` decode steps are timed with one
sequence, with `--width` sequences (one token each per step), and with one again. Only
`llama_decode` is timed: no sampling, parsing or Python between steps beyond the batch.
"""

from __future__ import annotations

import argparse
import time

from edge_guard.engine import llama_runtime as rt
from edge_guard.engine.engine import Engine
from edge_guard.registry.load_guard import check_load

PROMPT = 40


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    width = max(1, args.width)
    eng = Engine(
        args.model,
        load_check=check_load,
        n_ctx=PROMPT * width + args.steps * width + 256,
        n_parallel=width,
        n_threads=args.threads,
        prefix_snapshots=False,
    )
    batch, ctx, mem = eng._batch, eng._ctx, eng._mem
    seqs = list(range(eng.max_prefixes, eng.max_prefixes + width))

    def decode(items: list[tuple[int, int, int, bool]]) -> None:
        batch.clear()
        for tok, pos, seq, want in items:
            batch.add(tok, pos, seq, want)
        rt.decode(ctx, batch)

    for s in seqs:
        decode([(100 + j, j, s, False) for j in range(PROMPT)])
    for n in (1, width, 1):
        t0 = time.perf_counter()
        for k in range(args.steps):
            decode([(200, PROMPT + k, s, True) for s in seqs[:n]])
        dt = time.perf_counter() - t0
        print(f"{n} sequence(s): {args.steps * n / dt:.2f} tok/s, {dt / args.steps:.3f} s per step")
        for s in seqs:
            rt.seq_rm(mem, s, PROMPT)
    eng.close()


if __name__ == "__main__":
    main()
