"""A live `edge-guard serve` for tests, with verdicts steered by markers in the text.

`python tests/service_helpers.py ARGS...` runs exactly `edge-guard serve ARGS...` after one
test-only patch: a text containing `zzviolatezz` is steered (ForcedTokens, as the other
tests steer) to answer "1", one containing `zzsafezz` to answer "0", one containing
`zzslowzz` to reason on and on, one token every SLOW_TOKEN_S (a slow model: a stream that
keeps producing tokens); other texts decode freely (greedy; cut off by --max-tokens:
undetermined). The cache key is the unsteered one, as for any request. `ServiceProcess`
starts it on a free loopback port and kills it; `steering()` patches this process (tests
that build the app in-process), `serve_in_process()` runs `edge-guard serve ARGS` here up
to the point where uvicorn would start and returns the app and its core.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from server_helpers import ServerProcess, free_port

VIOLATE, SAFE, SLOW = "zzviolatezz", "zzsafezz", "zzslowzz"
SLOW_TOKEN_S = 0.01


class _Slow:
    """Forced endless reasoning, one token every SLOW_TOKEN_S (a slow model)."""

    def __init__(self, script: list[int]) -> None:
        from edge_guard.engine.sampling import ForcedTokens

        self.forced = ForcedTokens(script)
        self.pace = threading.Event()  # never set: wait() is the model's pace

    def __call__(self, output_ids: Any, logits: Any) -> Any:
        self.pace.wait(SLOW_TOKEN_S)
        return self.forced(output_ids, logits)


def install_steering() -> Callable[[], None]:
    """Steer marked texts at the engine loop, where every path to the model passes.
    Returns the function that removes the patch."""
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
        if SLOW in text:
            request.logits_processor = _Slow(harmony_script(vocab, "1", " on" * 100_000))
        return original(self, request, **kwargs)

    EngineLoop.submit = submit  # type: ignore[method-assign]

    def undo() -> None:
        EngineLoop.submit = original  # type: ignore[method-assign]

    return undo


@contextlib.contextmanager
def steering() -> Iterator[None]:
    undo = install_steering()
    try:
        yield
    finally:
        undo()


def serve_in_process(args: list[str]) -> tuple[Any, Any]:
    """`edge-guard serve ARGS` in this process, stopped where uvicorn would start: (app,
    core). The caller shuts the core down (`core.shutdown(0)`)."""
    from click.testing import CliRunner

    import edge_guard.cli.serve_cmd as serve_cmd
    from edge_guard.cli import main

    got: dict[str, Any] = {}

    def capture(app: Any, core: Any, *_args: Any, **_kwargs: Any) -> None:
        got.update(app=app, core=core)

    original = serve_cmd.run_server
    serve_cmd.run_server = capture  # type: ignore[assignment]
    try:
        result = CliRunner().invoke(main, ["serve", *args])
    finally:
        serve_cmd.run_server = original  # type: ignore[assignment]
    if result.exit_code != 0 or "app" not in got:
        raise RuntimeError(f"serve {args}: exit {result.exit_code}: {result.output}")
    return got["app"], got["core"]


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
