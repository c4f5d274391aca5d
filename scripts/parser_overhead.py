"""What running a custom `parse()` in its worker process costs, against calling it in-process.

A seed-style parser (the one in docs/policies.md) parses `--n` answers four ways: in this process (how
it ran before parsers got a worker), in its worker one call each (`run_parser`, what
classify does per answer), in its worker in one batch (`run_parsers`), and the built-in
parser for reference. The worker's start (a fresh Python importing the parser's module) is
timed apart. Figures are medians over `--rounds`; the machine's load is not controlled:
compare within one run.

    python scripts/parser_overhead.py            # 1000 answers, 5 rounds
    python scripts/parser_overhead.py --n 5000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PARSE_PY = """
from edge_guard import ClassificationResult, ModelResponse

def parse(response: ModelResponse) -> ClassificationResult:
    text = response.response.strip()
    binary_label = text == "1"
    return ClassificationResult(
        binary_label=binary_label,
        fine_grain_label="1" if binary_label else "0",
        float_label=1.0 if binary_label else 0.0,
        metadata={},
        model_response=response,
        parsed_successfully=text in ("0", "1"),
    )
"""


def timed(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", dest="json_out", type=Path)
    args = ap.parse_args()

    from edge_guard.policy import parser_worker
    from edge_guard.policy.core import load_policy
    from edge_guard.policy.parsers import builtin_parse, run_parser, run_parsers
    from edge_guard.response import ModelResponse

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "seed_style"
        folder.mkdir()
        (folder / "policy.md").write_text("Output exactly `1` if the text is toxic, else `0`.")
        (folder / "parse.py").write_text(PARSE_PY)
        policy = load_policy(folder)
        fn = policy.parser
        assert fn is not None
        answers = [ModelResponse(str(i % 2), "", "return") for i in range(args.n)]
        t0 = time.perf_counter()
        run_parser(policy, answers[0])  # starts the worker
        start = time.perf_counter() - t0
        rows = {
            "in_process": timed(lambda: [fn(r) for r in answers], args.rounds),
            "worker_per_call": timed(lambda: [run_parser(policy, r) for r in answers], args.rounds),
            "worker_batch": timed(lambda: run_parsers(policy, answers), args.rounds),
            "builtin": timed(
                lambda: [builtin_parse(r, policy.output) for r in answers], args.rounds
            ),
        }
        parser_worker._POOL.close()
    base = rows["in_process"]
    print(f"{args.n} answers, median of {args.rounds} rounds; worker start {start * 1000:.0f} ms")
    print(f"{'path':<16} {'total ms':>9} {'us/answer':>10} {'x in-process':>13}")
    for name, secs in rows.items():
        per = secs / args.n * 1e6
        print(f"{name:<16} {secs * 1000:9.1f} {per:10.1f} {secs / base:13.1f}")
    if args.json_out:
        out = {"n": args.n, "rounds": args.rounds, "worker_start_s": start, "seconds": rows}
        args.json_out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
