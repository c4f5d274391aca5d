"""Helpers for the batch-run, metrics and report tests: small datasets, per-item steering,
and child runs held at a known point (so a signal lands mid-run on any machine).

A dataset row may carry a `want` field: "1" / "0" steer the synthetic model to that final
answer, anything else (e.g. "?") to an unparsable answer (undetermined).

Held runs: `HeldRun(argv)` starts a child with the write end of a pipe in `$EG_TEST_HOLD_FD`;
code in the child (a run's `on_result=hold_after(n)`, or `hold_after_stored(n)` put in a
CLI child by `python_m(..., hold_after_items=n)`) writes "held" to it and blocks until a
signal ends the process. `wait_held()` returns once the child holds, or fails with its output if it
ended first: no sleep, no race. `HoldPipe` is that pipe alone, for children started
elsewhere (a steered `edge-guard serve`: tests/service_helpers.py writes its events there).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from edge_guard.classification.classifier import Classifier
from edge_guard.datasets.files import Row
from edge_guard.engine.sampling import ForcedTokens, SamplingConfig, harmony_script
from edge_guard.harmony.vocab import Vocab
from edge_guard.store import Store

SHORT = SamplingConfig(max_tokens=64)


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def labelled_rows(n: int, *, hostile_every: int = 0) -> list[dict[str, Any]]:
    """n rows: gold label, and a `want` making the verdict right, wrong or undetermined."""
    rows = []
    for i in range(n):
        label = int(i % 3 == 0)
        want = str(label) if i % 5 else str(1 - label)  # every 5th item is misclassified
        if i % 7 == 6:
            want = "?"  # undetermined
        text = f"message number {i}"
        if hostile_every and i % hostile_every == 0:
            text = f"<script>alert({i})</script> & <b>bold</b> | pipe"
        rows.append({"id": f"item-{i}", "text": text, "label": label, "want": want})
    return rows


HOLD_FD_ENV = "EG_TEST_HOLD_FD"
REPO = Path(__file__).resolve().parent.parent


def hold_here() -> NoReturn:
    """In a child of `HeldRun`: say "held", then block until a signal ends the process."""
    os.write(int(os.environ[HOLD_FD_ENV]), b"held\n")
    while True:
        time.sleep(3600)  # a signal's handler (SIGINT: KeyboardInterrupt) ends this


def hold_after(n: int) -> Callable[..., None]:
    """An `on_result` callback that holds the run once `n` results are stored."""
    count = 0

    def on_result(*_args: Any) -> None:
        nonlocal count
        count += 1
        if count == n:
            hold_here()

    return on_result


def hold_after_stored(n: int) -> None:
    """In a child of `HeldRun`: hold (`hold_here`) right after its n-th run item is committed
    (`Store.put` with a run item), whatever stores it (a CLI run, a TUI job). The hold is
    in the consumer loop, so exactly n items are stored, however fast the model, and it
    does not depend on where parse() runs."""
    from edge_guard.store import Store

    put = Store.put
    count = 0

    def held_put(self: Store, row: dict[str, Any], run_item: dict[str, Any] | None = None) -> None:
        nonlocal count
        put(self, row, run_item)
        if run_item is not None:
            count += 1
            if count == n:
                hold_here()

    Store.put = held_put  # type: ignore[method-assign]


def python_m(module: str, *args: str, hold_after_items: int | None = None) -> list[str]:
    """argv for `python -m module ARGS` where Ctrl-C (SIGINT) works as at a terminal, even
    when the tests run with SIGINT ignored (a background job: `cmd &` in a script); with
    `hold_after_items=n`, a `HeldRun` child that holds once n run items are stored."""
    hold = ""
    if hold_after_items is not None:
        hold = (
            f"sys.path.insert(0, {str(REPO)!r}); from tests.runs_helpers import "
            f"hold_after_stored; hold_after_stored({hold_after_items}); "
        )
    boot = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"{hold}runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", boot, *args]


class PipeClosed(AssertionError):
    """Every writer of a `HoldPipe` is gone (the child ended) before the awaited line."""


class HoldPipe:
    """A pipe a child reports on, one line per event. Its write end goes to the child as
    `$EG_TEST_HOLD_FD` (`child_env()`, with `pass_fds=(pipe.write_fd,)`); `started()`
    closes it here once the child has its copy, so that the child's exit reads as EOF.
    `wait_for(prefix)` blocks until a line starting with `prefix` (earlier lines are kept
    in `lines`): the child's own report, never a guess at how long something takes."""

    def __init__(self) -> None:
        self._read, self.write_fd = os.pipe()
        self._buf = b""
        self.lines: list[str] = []

    def child_env(self) -> dict[str, str]:
        return {HOLD_FD_ENV: str(self.write_fd)}

    def started(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.started()
        if self._read >= 0:
            os.close(self._read)
            self._read = -1

    def wait_for(self, prefix: str, timeout: float = 120) -> str:
        """The next line starting with `prefix`. Fails when the child ends first
        (`PipeClosed`) or after `timeout` s without it: a bound for a broken build (the
        event never comes), not a pace the test relies on."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                line = raw.decode("utf-8", "replace")
                self.lines.append(line)
                if line.startswith(prefix):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise AssertionError(
                    f"no {prefix!r} line within {timeout:g} s (lines so far: {self.lines[-5:]})"
                )
            chunk = os.read(self._read, 4096)
            if not chunk:
                raise PipeClosed(f"the child ended before {prefix!r} (lines: {self.lines[-5:]})")
            self._buf += chunk


class HeldRun:
    """A child process that holds at a known point; its output goes to `log`."""

    def __init__(self, argv: Sequence[str], log: Path, **popen_kw: Any) -> None:
        self.pipe = HoldPipe()
        env = {
            **popen_kw.pop("env", os.environ),
            **self.pipe.child_env(),
            "PYTHONFAULTHANDLER": "1",
        }  # SIGABRT prints every thread's stack (finish)
        self.log = log
        try:
            with open(log, "wb") as out:
                self.proc = subprocess.Popen(
                    list(argv),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(self.pipe.write_fd,),
                    env=env,
                    **popen_kw,
                )
        finally:
            self.pipe.started()  # only the child holds the write end: its exit reads as EOF

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_held(self, timeout: float = 240) -> None:
        """Block until the child holds; fail (with its output) if it ended first."""
        try:
            self.pipe.wait_for("held", timeout)
        except PipeClosed:
            self.proc.wait(60)
            raise AssertionError(
                f"the run ended before it was held (rc {self.proc.returncode}): "
                f"{self.output()[-2000:]}"
            ) from None
        except AssertionError as exc:  # not held in time: its threads' stacks say where it is
            with contextlib.suppress(AssertionError):
                self.finish(0.01)
            raise AssertionError(f"{exc}: {self.output()[-6000:]}") from None
        finally:
            self.pipe.close()

    def finish(self, timeout: float = 120) -> int:
        """The child's exit status; fails with its threads' stacks if it does not end."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler writes the stacks to the log
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            raise AssertionError(
                f"the child did not end within {timeout} s: {self.output()[-6000:]}"
            ) from None


def steer_by_want(vocab: Vocab, wants: dict[str, str]) -> Callable[[int, Row], ForcedTokens]:
    """A `run_dataset(steer=...)` function reading each row's `want` (by row text)."""

    def steer(_idx: int, row: Row) -> ForcedTokens:
        want = wants.get(row.text, "?")
        final = want if want in ("0", "1") else "maybe"
        return ForcedTokens(harmony_script(vocab, final, "thinking about it"))

    return steer


def wants_of(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {r["text"]: r["want"] for r in rows}


def make_classifier(model: Path, db: Path | None = None, **kw: Any) -> Classifier:
    return Classifier("toxic_simple", model, sampling=SHORT, store=Store(db), **kw)


def run_item_rows(store: Store, run: str) -> list[dict[str, Any]]:
    return store.query("SELECT idx, key FROM run_items WHERE run = ? ORDER BY idx", [run])
