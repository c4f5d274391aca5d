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
from pathlib import Path
from typing import Any

from server_helpers import ServerProcess, free_port

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


class ServiceProcess(ServerProcess):
    """`edge-guard serve` (steered) on 127.0.0.1:`port`; `start()` waits for /health."""

    ready_path = "/health"
    start_timeout = 120.0

    def __init__(self, args: list[str], log: Path, *, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.port = port or free_port()
        self.argv = [sys.executable, str(Path(__file__).resolve()), "--host", "127.0.0.1",
                     "--port", str(self.port), *args]  # fmt: skip
        self.env = {**os.environ, "EDGE_GUARD_THREADS": "1",
                    **(env or {})}  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

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
