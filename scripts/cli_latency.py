"""One-text `edge-guard classify` latency: cold, the call that starts a warm engine, warm.

For each model and reasoning path, in one run and in a private data dir:

- **cold**: `--keep-alive 0` (the model loads in the command's own process). One unmeasured
  call first writes the per-file caches (GGUF header and vocabulary, load probe, prefix
  snapshot) as any earlier use of the model would have; then `--cold` calls are timed;
- **start**: the first call with a keep-alive: it starts the warm engine and waits for it;
- **warm**: `--warm` calls that find the engine running.

Every call classifies a new text (no cached label) as a separate process, timed from
start to exit (medians in the table). `label` is the label's own compute time as the
engine reports it (the `timings` of the `--json` output: prompt + output milliseconds);
`warm/label` is the median over the warm calls of each call's wall time over its own
label (the issue's goal: <= 1.5 for a one-pass label on the 20b-shaped model);
`cold-label` and `warm-label` are what a call costs beyond its label (medians). Outputs
of random-weight models vary in length from text to text, hence per-call figures. The
machine's load is not controlled: compare within one run.

    python scripts/cli_latency.py                       # tiny-o200k and mini
    python scripts/cli_latency.py --model synth:20b-shape --reasoning none
    python scripts/cli_latency.py --json out.json

`--snapshot` (default on) runs a copy of the edge_guard sources, so that edits to the
checkout during the run do not restart the warm engine (its key includes the code).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
POLICY = "toxic_simple"


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one `edge-guard` process and its parsed --json output."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "edge_guard", *args],
        env=env,
        cwd=env["EDGE_GUARD_HOME"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"edge-guard {' '.join(args[:4])} failed: {proc.stderr.strip()[-500:]}")
    try:
        return wall, json.loads(proc.stdout) if proc.stdout.strip().startswith(("{", "[")) else {}
    except ValueError:
        return wall, {}


def label_seconds(out: dict[str, Any]) -> float | None:
    t = out.get("timings") or (out.get("model_response") or {}).get("timings") or {}
    if "prompt_ms" not in t:
        return None
    return (float(t.get("prompt_ms", 0)) + float(t.get("output_ms", 0))) / 1000


def classify(
    model: str, reasoning: str, max_tokens: int, keep_alive: str, env: dict[str, str]
) -> tuple[float, float | None, bool]:
    text = f"latency probe {uuid.uuid4().hex[:12]}: is this text rude or fine?"
    wall, out = run_cli(
        [
            "classify",
            "--model",
            model,
            "-p",
            POLICY,
            "--reasoning",
            reasoning,
            "--max-tokens",
            str(max_tokens),
            "--keep-alive",
            keep_alive,
            "--json",
            text,
        ],
        env,
    )
    return wall, label_seconds(out), bool(out.get("cached"))


def service_pids(env: dict[str, str]) -> list[int]:
    _, out = run_cli(["ps", "--json"], env)
    return [int(r["pid"]) for r in out] if isinstance(out, list) else []


def measure(
    model: str, reasoning: str, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    run_cli(["stop"], env)
    mt = args.max_tokens
    classify(model, reasoning, mt, "0", env)  # the per-file caches, as after any earlier use
    cold = [classify(model, reasoning, mt, "0", env) for _ in range(args.cold)]
    start = classify(model, reasoning, mt, args.keep_alive, env)
    pids = service_pids(env)
    warm = [classify(model, reasoning, mt, args.keep_alive, env) for _ in range(args.warm)]
    restarted = service_pids(env) != pids
    run_cli(["stop"], env)
    labels = [c[1] for c in warm if c[1] is not None]
    label = statistics.median(labels) if labels else None
    warm_med = statistics.median(c[0] for c in warm)
    per_call = [c[0] / c[1] for c in warm if c[1]]  # each call's wall / its own label
    over = [c[0] - c[1] for c in warm if c[1] is not None]
    cold_over = [c[0] - c[1] for c in cold if c[1] is not None]
    return {
        "model": model,
        "reasoning": reasoning,
        "max_tokens": mt,
        "cold_s": statistics.median(c[0] for c in cold),
        "cold_runs": [c[0] for c in cold],
        "start_s": start[0],
        "warm_s": warm_med,
        "warm_runs": [c[0] for c in warm],
        "label_s": label,
        "warm_over_label": statistics.median(per_call) if per_call else None,
        "warm_overhead_s": statistics.median(over) if over else None,
        "cold_overhead_s": statistics.median(cold_over) if cold_over else None,
        "warm_labels": labels,
        "cold_over_warm": statistics.median(c[0] for c in cold) / warm_med,
        "service_restarted": restarted,
        "any_cached": any(c[2] for c in cold + warm),
    }


def snapshot(dest: Path) -> Path:
    """A copy of the edge_guard package and the policies (a stable code version)."""
    for name in ("edge_guard", "policies"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'model':18} {'path':5} {'cold s':>7} {'start s':>8} {'warm s':>7} "
        f"{'label s':>8} {'warm/label':>10} {'cold-label':>10} {'warm-label':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        label = "-" if r["label_s"] is None else f"{r['label_s']:.3f}"
        ratio = "-" if r["warm_over_label"] is None else f"{r['warm_over_label']:.2f}"
        path = "one" if r["reasoning"] == "none" else "full"
        note = "  (service restarted during the warm calls)" if r["service_restarted"] else ""
        co, wo = r["cold_overhead_s"], r["warm_overhead_s"]
        lines.append(
            f"{r['model']:18} {path:5} {r['cold_s']:7.2f} {r['start_s']:8.2f} "
            f"{r['warm_s']:7.2f} {label:>8} {ratio:>10} "
            f"{'-' if co is None else f'{co:.2f}':>10} "
            f"{'-' if wo is None else f'{wo:.2f}':>10}{note}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        action="append",
        default=None,
        help="Model reference (repeatable; default synth:tiny-o200k, synth:mini).",
    )
    ap.add_argument(
        "--reasoning",
        action="append",
        choices=("none", "full"),
        default=None,
        help="Reasoning path (repeatable; default both).",
    )
    ap.add_argument("--cold", type=int, default=3, help="Timed cold calls (median).")
    ap.add_argument("--warm", type=int, default=10, help="Timed warm calls (median).")
    ap.add_argument("--max-tokens", type=int, default=32, help="Tokens for full reasoning.")
    ap.add_argument("--keep-alive", default="300", help="The warm engine's keep-alive.")
    ap.add_argument(
        "--home",
        default=None,
        help="Data dir to use (default: a temporary one; synth models are written "
        "there, except that --models-from links the ones already built).",
    )
    ap.add_argument(
        "--models-from",
        default=None,
        help="A data dir whose synth/ models to link instead of writing them.",
    )
    ap.add_argument("--no-snapshot", action="store_true", help="Run the checkout itself.")
    ap.add_argument("--json", default=None, help="Also write the rows to this file.")
    args = ap.parse_args()
    models = args.model or ["synth:tiny-o200k", "synth:mini"]
    paths = args.reasoning or ["none", "full"]
    tmp = Path(tempfile.mkdtemp(prefix="eg-latency-"))
    home = Path(args.home) if args.home else tmp / "home"
    (home / "synth").mkdir(parents=True, exist_ok=True)
    if args.models_from:
        for f in (Path(args.models_from) / "synth").glob("*.gguf"):
            if not (home / "synth" / f.name).exists():
                os.symlink(f, home / "synth" / f.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_GUARD_")}
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("CI", None)
    env["EDGE_GUARD_HOME"] = str(home)
    if os.environ.get("EDGE_GUARD_THREADS"):
        env["EDGE_GUARD_THREADS"] = os.environ["EDGE_GUARD_THREADS"]
    env["PYTHONPATH"] = str(REPO if args.no_snapshot else snapshot(tmp / "src"))
    rows = []
    try:
        for model in models:
            for reasoning in paths:
                rows.append(measure(model, reasoning, args, env))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        run_cli(["stop"], env)
        shutil.rmtree(tmp / "src", ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print(table(rows))
    print(f"\n{os.cpu_count()} CPUs, load average {load:.1f} at the end; data dir {home}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
