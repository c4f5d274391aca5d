"""A live `edge-guard serve` for tests, with verdicts steered by markers in the text.

`python tests/service_helpers.py ARGS...` runs exactly `edge-guard serve ARGS...` after one
test-only patch: a text containing `zzviolatezz` is steered (ForcedTokens, as the other
tests steer) to answer "1", one containing `zzsafezz` to answer "0"; other texts decode
freely (greedy; cut off by --max-tokens: undetermined). The cache key is the unsteered
one, as for any request. `ServiceProcess` starts it on a free loopback port and kills it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from server_helpers import free_port

VIOLATE, SAFE = "zzviolatezz", "zzsafezz"


def install_steering() -> None:
    """Steer marked texts at the engine loop, where every path to the model passes."""
    from edge_guard.engine.loop import EngineLoop
    from edge_guard.engine.sampling import ForcedTokens, harmony_script
    from edge_guard.harmony.vocab import Vocab

    original = EngineLoop.submit
    vocabs: dict[str, Any] = {}

    def submit(self: EngineLoop, request: Any, **kwargs: Any) -> Any:
        path = self.engine.model_path
        vocab = vocabs.get(path) or vocabs.setdefault(path, Vocab.from_gguf(path))
        text = vocab.decode(request.prompt_ids[request.prefix_len or 0 :])
        for marker, answer in ((VIOLATE, "1"), (SAFE, "0")):
            if marker in text:
                request.logits_processor = ForcedTokens(harmony_script(vocab, answer, "steered"))
        return original(self, request, **kwargs)

    EngineLoop.submit = submit  # type: ignore[method-assign]


class ServiceProcess:
    """`edge-guard serve` (steered) on 127.0.0.1:`port`; `start()` waits for /health."""

    def __init__(self, args: list[str], log: Path, *, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.port = port or free_port()
        self.argv = [sys.executable, str(Path(__file__).resolve()), "--host", "127.0.0.1",
                     "--port", str(self.port), *args]  # fmt: skip
        self.env = {**os.environ, "EDGE_GUARD_THREADS": "1",
                    **(env or {})}  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ServiceProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not start in {timeout} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status (kill -9 after `timeout`)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)


if __name__ == "__main__":
    install_steering()
    from edge_guard.cli import run

    run(["serve", *sys.argv[1:]])
