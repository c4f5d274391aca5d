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

    python scripts/serve_bench.py --mixed [--model synth:tiny] [--big-texts 256]

The mixed workload (fair share, issue 26): CLIENTS threads send one-text requests back to
back, alone, then beside one more client that sends BIG-TEXTS-text jobs back to back;
rounds alternate. It reports the one-text p50/p95 latency of each (all rounds pooled) and
p95 beside / p95 alone (goal <= 2).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
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
    from edge_guard.classification.classifier import Classifier
    from edge_guard.engine.sampling import SamplingConfig
    from edge_guard.store import Store

    settings = EngineSettings(n_ctx=args.ctx, n_parallel=args.parallel)
    clf = Classifier(
        args.policy,
        args.model,
        sampling=SamplingConfig(max_tokens=args.max_tokens),
        store=Store(db),
        parallel=args.parallel,
        engine_settings=settings,
    )
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
    argv = [
        sys.executable,
        "-m",
        "edge_guard",
        "serve",
        "--port",
        str(port),
        "--model",
        args.model,
        "--policy",
        args.policy,
        "--max-tokens",
        str(args.max_tokens),
        "--parallel",
        str(args.parallel),
        "--ctx",
        str(args.ctx),
        "--db",
        str(db),
    ]
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
    return {
        "wall_s": wall,
        "errors": errors,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[max(0, int(0.95 * len(latencies)) - 1)],
    }


def one_text_clients(args: argparse.Namespace, url: str, tag: str) -> tuple[list[float], list[str]]:
    """CLIENTS threads, each sending REQUESTS one-text requests back to back."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(timeout=600) as http:
            for j in range(args.requests):
                t = time.perf_counter()
                err = post(http, url, [f"mixed {tag} client {k} text {j}: toxic or fine?"])
                with lock:
                    latencies.append(time.perf_counter() - t)
                    if err:
                        errors.append(err)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return latencies, errors


def post(http: httpx.Client, url: str, texts: list[str]) -> str | None:
    """One moderation request; its error, or None."""
    try:
        r = http.post(
            url + "/v1/moderations", json={"input": texts if len(texts) > 1 else texts[0]}
        )
        if r.status_code == 200 and len(r.json()["results"]) == len(texts):
            return None
        return f"HTTP {r.status_code}: {r.text[:200]}"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"


def mixed_round(args: argparse.Namespace, url: str, with_big: bool) -> dict[str, Any]:
    """The one-text clients alone, or beside a client sending big jobs back to back (it
    starts first; when the one-text clients are done it hangs up, which cancels its job)."""
    tag = uuid.uuid4().hex[:8]
    stop, sent = threading.Event(), threading.Event()
    big: dict[str, Any] = {"jobs": 0, "done": 0, "errors": [], "conn": None}
    host, port = url.removeprefix("http://").split(":")

    def big_client() -> None:
        while not stop.is_set():
            texts = [
                f"mixed {tag} big job {big['jobs']} text {i}: toxic or fine?"
                for i in range(args.big_texts)
            ]
            conn = http.client.HTTPConnection(host, int(port), timeout=3600)
            big["conn"], big["jobs"] = conn, big["jobs"] + 1
            try:
                conn.request(
                    "POST",
                    "/v1/moderations",
                    json.dumps({"input": texts}),
                    {"Content-Type": "application/json"},
                )
                sent.set()
                reply = conn.getresponse()
                reply.read()
                if reply.status == 200:
                    big["done"] += 1
                elif not stop.is_set():
                    big["errors"].append(f"big job: HTTP {reply.status}")
            except OSError as exc:
                if not stop.is_set():
                    big["errors"].append(f"big job: {type(exc).__name__}: {exc}")
            finally:
                conn.close()

    thread = threading.Thread(target=big_client)
    if with_big:
        thread.start()
        sent.wait()
        time.sleep(0.5)  # its texts reach the engine's queue before the one-text clients start
    latencies, errors = one_text_clients(args, url, tag)
    stop.set()
    if with_big:
        conn = big["conn"]
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # hang up: the server cancels that job
        thread.join()
        time.sleep(1.0)  # the cancelled job's sequences leave the engine before the next round
    return {
        "latencies": latencies,
        "errors": errors + big["errors"],
        "big_jobs": big["jobs"],
        "big_jobs_done": big["done"],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest rank


def mixed_main(args: argparse.Namespace) -> None:
    alone: list[float] = []
    beside: list[float] = []
    errors: list[str] = []
    big_jobs = big_done = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, url = start_server(args, folder / "server.db", folder / "serve.log")
        try:
            for r in range(args.rounds):
                for with_big in (False, True):
                    got = mixed_round(args, url, with_big)
                    (beside if with_big else alone).extend(got["latencies"])
                    errors += got["errors"]
                    big_jobs += got["big_jobs"]
                    big_done += got.get("big_jobs_done", 0)
                    print(
                        f"round {r + 1} {'beside the big job' if with_big else 'alone'}: "
                        f"p95 {percentile(got['latencies'], 0.95):.3f}s",
                        file=sys.stderr,
                    )
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    figures = {
        "model": args.model,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "rounds": args.rounds,
        "parallel": args.parallel,
        "max_tokens": args.max_tokens,
        "big_texts": args.big_texts,
        "big_jobs_sent": big_jobs,
        "big_jobs_completed": big_done,
        "alone_p50_s": round(statistics.median(alone), 3),
        "alone_p95_s": round(percentile(alone, 0.95), 3),
        "beside_p50_s": round(statistics.median(beside), 3),
        "beside_p95_s": round(percentile(beside, 0.95), 3),
        "p95_ratio": round(percentile(beside, 0.95) / percentile(alone, 0.95), 2),
        "errors": len(errors),
    }
    print(json.dumps(figures, indent=2))
    for e in errors[:5]:
        print("error:", e, file=sys.stderr)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2) + "\n")
    sys.exit(0 if not errors else 1)


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
    ap.add_argument(
        "--mixed",
        action="store_true",
        help="One-text latency alone and beside a client sending big jobs.",
    )
    ap.add_argument("--big-texts", type=int, default=256, help="Texts per big job (--mixed).")
    args = ap.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 200 or not 1 <= args.rounds <= 10:
        raise SystemExit("--clients 1..64, --requests 1..200, --rounds 1..10 (a bounded load)")
    if not 1 <= args.big_texts <= 256:
        raise SystemExit("--big-texts 1..256 (the server's --max-texts)")
    if args.mixed:
        mixed_main(args)
        return
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
                print(
                    f"round {r + 1}: in-process {n / inproc_walls[-1]:.2f} labels/s, "
                    f"server {n / rounds[-1]['wall_s']:.2f} labels/s",
                    file=sys.stderr,
                )
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        rows, distinct = stored_once(folder / "server.db", all_server_texts)
    best = min(rounds, key=lambda x: x["wall_s"])
    inproc = n / min(inproc_walls)
    server = n / float(best["wall_s"])
    errors = [e for x in rounds for e in x["errors"]]
    figures = {
        "model": args.model,
        "labels_per_round": n,
        "rounds": args.rounds,
        "clients": args.clients,
        "parallel": args.parallel,
        "max_tokens": args.max_tokens,
        "in_process_labels_per_s": round(inproc, 2),
        "server_labels_per_s": round(server, 2),
        "ratio": round(server / inproc, 3),
        "p50_s": round(float(best["p50_s"]), 3),
        "p95_s": round(float(best["p95_s"]), 3),
        "all_rounds_in_process": [round(n / w, 2) for w in inproc_walls],
        "all_rounds_server": [round(n / x["wall_s"], 2) for x in rounds],
        "errors": len(errors),
        "stored_rows": rows,
        "stored_distinct_texts": distinct,
    }
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
