"""`edge-guard bench` of two source trees, alternately in one run: the ratio of each variant.

    git worktree add --detach /tmp/before COMMIT
    python scripts/bench_ab.py /tmp/before [--after DIR] [--rounds 3] -- --synth mini \\
        --variants parallel,threads --n 64

Each round runs the bench once per tree (ABBA order across rounds, so that a trend in the
machine's load hits both), each in its own process with the tree first on PYTHONPATH and
the same virtual environment. It prints, per variant, each tree's labels/s (median of the
rounds) and after/before (1.0 = unchanged), by wall time and by the process's CPU time
(labels per CPU-second: steadier than wall time on a machine other work shares).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def run_bench(tree: Path, bench_args: list[str]) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    argv = [sys.executable, "-m", "edge_guard", "bench", *bench_args, "--json"]
    out = subprocess.run(argv, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench in {tree} failed ({out.returncode}): {out.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(out.stdout[out.stdout.index("{") :])
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path, help="The source tree to compare against.")
    ap.add_argument("--after", type=Path, default=HERE, help="Default: this checkout.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", dest="json_out", default=None, help="Also write the figures here.")
    args, rest = ap.parse_known_args()
    bench_args = [a for a in rest if a != "--"]
    if not 1 <= args.rounds <= 10:
        raise SystemExit("--rounds 1..10")
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for name, tree in trees.items():
        if not (tree / "edge_guard" / "__init__.py").is_file():
            raise SystemExit(f"{name}: {tree} holds no edge_guard package")
    rates: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    cpu_rates: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    for r in range(args.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for name in order:
            report = run_bench(trees[name], bench_args)
            for variant, row in report["results"].items():
                if isinstance(row, dict) and "labels_per_s" in row and variant != "roofline":
                    rates[name].setdefault(variant, []).append(float(row["labels_per_s"]))
                    per_cpu = row["n"] / row["cpu_seconds"] if row.get("cpu_seconds") else 0.0
                    cpu_rates[name].setdefault(variant, []).append(per_cpu)
            got = {v: round(x[-1], 2) for v, x in rates[name].items()}
            print(f"round {r + 1} {name}: {got}", file=sys.stderr)
    figures: dict[str, Any] = {"bench_args": bench_args, "rounds": args.rounds, "variants": {}}
    for variant in rates["after"]:
        row: dict[str, Any] = {}
        for label, table in (("labels_per_s", rates), ("labels_per_cpu_s", cpu_rates)):
            before = statistics.median(table["before"].get(variant, [0.0]))
            after = statistics.median(table["after"][variant])
            row[label] = {
                "before": round(before, 2),
                "after": round(after, 2),
                "after_over_before": round(after / before, 3) if before else None,
                "all_before": [round(x, 2) for x in table["before"].get(variant, [])],
                "all_after": [round(x, 2) for x in table["after"][variant]],
            }
        figures["variants"][variant] = row
    print(json.dumps(figures, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
