"""Load benchmark of `edge-guard serve` next to an in-process run of the same texts.

    python scripts/serve_bench.py [--model synth:mini] [--clients 16] [--requests 20]

1. In-process: one `Classifier.classify(texts)` call (all texts in one batch), fresh store.
2. Server: `edge-guard serve` on 127.0.0.1 (fresh store), then CLIENTS threads each send
   REQUESTS one-text `POST /v1/moderations` requests back to back (loopback only, bounded).
Reports labels/s for both, the ratio, request latency p50/p95, errors, and checks that
every label was stored exactly once. Texts are unique per run (nothing is cached).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_process(args: argparse.Namespace, texts: list[str], db: Path) -> float:
    from edge_guard.backends.local import EngineSettings, release_engine
    from edge_guard.classifier import Classifier
    from edge_guard.engine.sampling import SamplingConfig
    from edge_guard.store import Store

    settings = EngineSettings(n_ctx=args.ctx, n_parallel=args.parallel)
    clf = Classifier(args.policy, args.model, sampling=SamplingConfig(max_tokens=args.max_tokens),
                     store=Store(db), parallel=args.parallel, engine_settings=settings)  # fmt: skip
    clf.classify([f"warm-up {uuid.uuid4().hex}"])  # load the model and the policy prefix
    t0 = time.perf_counter()
    results = clf.classify(texts)
    wall = time.perf_counter() - t0
    assert len(results) == len(texts)
    release_engine()
    return wall


def serve(args: argparse.Namespace, texts: list[str], db: Path, log: Path) -> dict[str, object]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "edge_guard", "serve", "--port", str(port), "--model",
            args.model, "--policy", args.policy, "--max-tokens", str(args.max_tokens),
            "--parallel", str(args.parallel), "--ctx", str(args.ctx), "--db", str(db)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # warm-up request (policy prefix already preloaded by serve)
        httpx.post(url + "/v1/moderations", json={"input": f"warm-up {uuid.uuid4().hex}"},
                   timeout=600)  # fmt: skip
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
    finally:
        proc.terminate()
        proc.wait(timeout=60)
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
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--json", dest="json_out", default=None, help="Also write the figures here.")
    args = ap.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 200:
        raise SystemExit("--clients 1..64, --requests 1..200 (a bounded loopback load)")
    run = uuid.uuid4().hex[:8]
    n = args.clients * args.requests
    texts = [f"bench {run} text {i}: is this message toxic or fine?" for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ.setdefault("EDGE_GUARD_HOME", str(folder / "home"))
        inproc_wall = in_process(args, texts, folder / "inproc.db")
        srv = serve(args, texts, folder / "server.db", folder / "serve.log")
        rows, distinct = stored_once(folder / "server.db", texts)
    inproc = n / inproc_wall
    server = n / float(srv["wall_s"])  # type: ignore[arg-type]
    figures = {
        "model": args.model, "labels": n, "clients": args.clients, "parallel": args.parallel,
        "max_tokens": args.max_tokens, "in_process_labels_per_s": round(inproc, 2),
        "server_labels_per_s": round(server, 2), "ratio": round(server / inproc, 3),
        "p50_s": round(float(srv["p50_s"]), 3), "p95_s": round(float(srv["p95_s"]), 3),  # type: ignore[arg-type]
        "errors": len(srv["errors"]), "stored_rows": rows, "stored_distinct_texts": distinct,  # type: ignore[arg-type]
    }  # fmt: skip
    print(json.dumps(figures, indent=2))
    for e in list(srv["errors"])[:5]:  # type: ignore[call-overload]
        print("error:", e, file=sys.stderr)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2) + "\n")
    ok = figures["errors"] == 0 and rows == n and distinct == n
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
