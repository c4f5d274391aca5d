"""`edge-guard serve` stopped by SIGTERM (what `edge-guard stop` and the warm engines' life
cycle send) cleans up before it exits: uvicorn re-raises the signal after its graceful
stop, and the serve command's cleanup still runs (the socket and the store closed: the
labels are in the store's own file, not left in its write-ahead log), then the process
ends by the signal as before."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx


def test_sigterm_closes_the_store_and_the_socket(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "sock"
    folder.mkdir(mode=0o700)
    sock, db = folder / "s.sock", tmp_path / "s.db"
    argv = [sys.executable, "-m", "edge_guard", "serve", "--uds", str(sock), "--db", str(db)]
    argv += ["--model", str(tiny_model), "--ctx", "2048", "--log-level", "warning"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stderr is not None
        assert "edge-guard serve: model" in proc.stderr.readline()  # loaded; the socket listens
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=120) as http:
            body = {"text": "hello", "policy": "toxic_simple", "reasoning": "none"}
            assert http.post("http://localhost/v1/classify", json=body).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == -signal.SIGTERM  # still ended by the signal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert not sock.exists()
    assert not Path(f"{db}-wal").exists()  # closed: checkpointed into the file
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT text FROM results").fetchall() == [("hello",)]
