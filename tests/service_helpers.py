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

Events, for tests that act at a known point instead of after a sleep: a server started
with `ServiceProcess(..., events=HoldPipe())` (tests/runs_helpers.py) writes one line per
event to the pipe. A `zzslowzz` text says `slow TAG` at its first token (its job is
running); a `zzholdzz` text says `held TAG` at its first token and then holds the engine
(every job) until the process is killed (without the pipe it answers "1"); a job with a
marked text says `done TAG` once it has ended (finished or cancelled; no longer counted
in /health's jobs_in_flight). TAG is the two words before the marker in its (first marked)
text: "impatient 3" for "impatient 3 zzslowzz".

`ServiceProcess(..., grace_s=S)`: running requests get S seconds after SIGTERM instead of
serve's 8 (a test of what happens after the grace period need not wait the full period).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from server_helpers import ServerProcess, free_port

VIOLATE, SAFE, SLOW, HOLD = "zzviolatezz", "zzsafezz", "zzslowzz", "zzholdzz"
SLOW_TOKEN_S = 0.01
GRACE_ENV = "EG_TEST_GRACE_S"  # the steered server's grace period after SIGTERM (seconds)


def _events_fd() -> int | None:
    from runs_helpers import HOLD_FD_ENV

    fd = os.environ.get(HOLD_FD_ENV)
    return int(fd) if fd else None


def _say(line: str) -> None:
    """One event line to the test's pipe, if it gave one (a test that has gone: dropped)."""
    fd = _events_fd()
    if fd is not None:
        with contextlib.suppress(OSError):
            os.write(fd, (line + "\n").encode())


def tag(text: str, marker: str) -> str:
    """The two words before `marker` in `text` (an event's TAG)."""
    return " ".join(re.findall(r"[\w-]+", text.split(marker)[0])[-2:])


class _Slow:
    """Forced endless reasoning, one token every SLOW_TOKEN_S (a slow model); says
    `slow TAG` at its first token."""

    def __init__(self, script: list[int], tag: str) -> None:
        from edge_guard.engine.sampling import ForcedTokens

        self.forced = ForcedTokens(script)
        self.pace = threading.Event()  # never set: wait() is the model's pace
        self.tag, self.started = tag, False

    def __call__(self, output_ids: Any, logits: Any) -> Any:
        if not self.started:
            self.started = True
            _say(f"slow {self.tag}")
        self.pace.wait(SLOW_TOKEN_S)
        return self.forced(output_ids, logits)


class _Hold:
    """Says `held TAG` at the first token, then holds the engine loop until the process is
    killed; answers "1" (as `zzviolatezz`) in a server without an event pipe."""

    def __init__(self, script: list[int], tag: str) -> None:
        from edge_guard.engine.sampling import ForcedTokens

        self.forced = ForcedTokens(script)
        self.tag = tag

    def __call__(self, output_ids: Any, logits: Any) -> Any:
        if _events_fd() is not None:
            _say(f"held {self.tag}")
            threading.Event().wait()  # never set: held until kill -9
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
            request.logits_processor = _Slow(
                harmony_script(vocab, "1", " on" * 100_000), tag(text, SLOW)
            )
        if HOLD in text:
            request.logits_processor = _Hold(harmony_script(vocab, "1", "steered"), tag(text, HOLD))
        return original(self, request, **kwargs)

    EngineLoop.submit = submit  # type: ignore[method-assign]

    def undo() -> None:
        EngineLoop.submit = original  # type: ignore[method-assign]

    return undo


def report_marked_jobs() -> None:
    """Say `done TAG` when a job with a `zzslowzz` / `zzholdzz` text has ended (this
    process's ServiceCore: the steered server)."""
    from edge_guard.service.core import ServiceCore

    original = ServiceCore._run

    def run(self: ServiceCore, job: Any, clfs: Any) -> None:
        try:
            original(self, job, clfs)
        finally:
            for text in map(str, job.spec.texts):
                marker = next((m for m in (SLOW, HOLD) if m in text), None)
                if marker is not None:
                    _say(f"done {tag(text, marker)}")
                    break

    ServiceCore._run = run  # type: ignore[method-assign]


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

    def __init__(
        self,
        args: list[str],
        log: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        events: Any = None,
        grace_s: float | None = None,
    ) -> None:
        """`events`: a `runs_helpers.HoldPipe` the server writes its events to (above);
        `grace_s`: the grace period running requests get after SIGTERM (default: serve's)."""
        self.port = port or free_port()
        self.argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        self.env = {
            **os.environ,
            "EDGE_GUARD_THREADS": "1",
            **(env or {}),
            **(events.child_env() if events else {}),
            **({GRACE_ENV: str(grace_s)} if grace_s is not None else {}),
        }
        self.events = events
        self.pass_fds = (events.write_fd,) if events else ()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float | None = None) -> ServiceProcess:
        try:
            return super().start(timeout)
        finally:
            if self.events is not None:
                self.events.started()  # the server has its copy: its exit reads as EOF

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
    report_marked_jobs()
    if os.environ.get(GRACE_ENV):
        import edge_guard.cli.serve_cmd as serve_cmd

        serve_cmd.GRACE_S = float(os.environ[GRACE_ENV])
    from edge_guard.cli import run

    run(["serve", *sys.argv[1:]])
