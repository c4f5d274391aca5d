"""Load benchmark of `edge-guard serve` next to an in-process run of the same texts.

    python scripts/serve_bench.py [--model synth:mini] [--clients 16] [--requests 20] [--rounds 3]

One server (`edge-guard serve` on 127.0.0.1, fresh store) and one in-process `Classifier`
(fresh store) are loaded and warmed; then each round runs, with new texts each time:
1. in-process: one `classify(texts)` call (every text in one batch);
2. server: CLIENTS threads each send REQUESTS one-text `POST /v1/moderations` requests back
   to back (loopback only, bounded).
Rounds alternate so that load from other processes on a shared machine hits both sides;
the best round of each side is compared (labels/s, ratio) with the server's p50/p95
latency, errors, and a check that every server label was stored exactly once.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_process_classifier(args: argparse.Namespace, db: Path) -> Any:
    from edge_guard.backends.local import EngineSettings
    from edge_guard.classifier import Classifier
    from edge_guard.engine.sampling import SamplingConfig
    from edge_guard.store import Store

    settings = EngineSettings(n_ctx=args.ctx, n_parallel=args.parallel)
    clf = Classifier(args.policy, args.model, sampling=SamplingConfig(max_tokens=args.max_tokens),
                     store=Store(db), parallel=args.parallel, engine_settings=settings)  # fmt: skip
    clf.classify([f"warm-up {uuid.uuid4().hex}"])  # load the model and the policy prefix
    return clf


def in_process_round(clf: Any, texts: list[str]) -> float:
    t0 = time.perf_counter()
    results = clf.classify(texts)
    wall = time.perf_counter() - t0
    assert len(results) == len(texts)
    return wall


def start_server(
    args: argparse.Namespace, db: Path, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "edge_guard", "serve", "--port", str(port), "--model",
            args.model, "--policy", args.policy, "--max-tokens", str(args.max_tokens),
            "--parallel", str(args.parallel), "--ctx", str(args.ctx), "--db", str(db)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    httpx.post(url + "/v1/moderations", json={"input": f"warm-up {uuid.uuid4().hex}"}, timeout=600)
    return proc, url


def server_round(args: argparse.Namespace, url: str, texts: list[str]) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(timeout=600) as http:
            for j in range(args.requests):
                text = texts[k * args.requests + j]
                t = time.perf_counter()
                try:
                    r = http.post(url + "/v1/moderations", json={"input": text})
                    ok = r.status_code == 200 and len(r.json()["results"]) == 1
                    err = None if ok else f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    err = f"{type(exc).__name__}: {exc}"
                with lock:
                    latencies.append(time.perf_counter() - t)
                    if err:
                        errors.append(err)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    return {"wall_s": wall, "errors": errors, "p50_s": statistics.median(latencies),
            "p95_s": latencies[max(0, int(0.95 * len(latencies)) - 1)]}  # fmt: skip


def stored_once(db: Path, texts: list[str]) -> tuple[int, int]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT text, key FROM results").fetchall()
    finally:
        conn.close()
    wanted = set(texts)
    mine = [r for r in rows if r[0] in wanted]
    return len(mine), len({r[0] for r in mine})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="synth:mini")
    ap.add_argument("--policy", default="toxic_simple")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--json", dest="json_out", default=None, help="Also write the figures here.")
    args = ap.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 200 or not 1 <= args.rounds <= 10:
        raise SystemExit("--clients 1..64, --requests 1..200, --rounds 1..10 (a bounded load)")
    n = args.clients * args.requests
    inproc_walls: list[float] = []
    rounds: list[dict[str, Any]] = []
    all_server_texts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, url = start_server(args, folder / "server.db", folder / "serve.log")
        try:
            clf = in_process_classifier(args, folder / "inproc.db")
            for r in range(args.rounds):
                run = uuid.uuid4().hex[:8]
                mine = [f"bench {run} in-process text {i}: toxic or fine?" for i in range(n)]
                theirs = [f"bench {run} server text {i}: toxic or fine?" for i in range(n)]
                inproc_walls.append(in_process_round(clf, mine))
                rounds.append(server_round(args, url, theirs))
                all_server_texts += theirs
                print(f"round {r + 1}: in-process {n / inproc_walls[-1]:.2f} labels/s, "
                      f"server {n / rounds[-1]['wall_s']:.2f} labels/s", file=sys.stderr)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        rows, distinct = stored_once(folder / "server.db", all_server_texts)
    best = min(rounds, key=lambda x: x["wall_s"])
    inproc = n / min(inproc_walls)
    server = n / float(best["wall_s"])
    errors = [e for x in rounds for e in x["errors"]]
    figures = {
        "model": args.model, "labels_per_round": n, "rounds": args.rounds,
        "clients": args.clients, "parallel": args.parallel, "max_tokens": args.max_tokens,
        "in_process_labels_per_s": round(inproc, 2), "server_labels_per_s": round(server, 2),
        "ratio": round(server / inproc, 3),
        "p50_s": round(float(best["p50_s"]), 3), "p95_s": round(float(best["p95_s"]), 3),
        "all_rounds_in_process": [round(n / w, 2) for w in inproc_walls],
        "all_rounds_server": [round(n / x["wall_s"], 2) for x in rounds],
        "errors": len(errors), "stored_rows": rows, "stored_distinct_texts": distinct,
    }  # fmt: skip
    print(json.dumps(figures, indent=2))
    for e in errors[:5]:
        print("error:", e, file=sys.stderr)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2) + "\n")
    total = n * args.rounds
    ok = not errors and rows == total and distinct == total
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
