"""Helpers for the batch-run, metrics and report tests: small datasets, per-item steering,
and child runs held at a known point (so a signal lands mid-run on any machine).

A dataset row may carry a `want` field: "1" / "0" steer the synthetic model to that final
answer, anything else (e.g. "?") to an unparsable answer (undetermined).

Held runs: `HeldRun(argv)` starts a child with the write end of a pipe in `$EG_TEST_HOLD_FD`;
code in the child (a run's `on_result=hold_after(n)`, or a test policy's parse.py) writes
"held" to it and blocks until a signal ends the process. `wait_held()` returns once the
child holds, or fails with its output if it ended first: no sleep, no race.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from edge_guard.classifier import Classifier
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


def python_m(module: str, *args: str) -> list[str]:
    """argv for `python -m module ARGS` where Ctrl-C (SIGINT) works as at a terminal, even
    when the tests run with SIGINT ignored (a background job: `cmd &` in a script)."""
    boot = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")  # fmt: skip
    return [sys.executable, "-c", boot, *args]


class HeldRun:
    """A child process that holds at a known point; its output goes to `log`."""

    def __init__(self, argv: Sequence[str], log: Path, **popen_kw: Any) -> None:
        read, write = os.pipe()
        env = {
            **popen_kw.pop("env", os.environ),
            HOLD_FD_ENV: str(write),
            "PYTHONFAULTHANDLER": "1",
        }  # SIGABRT prints every thread's stack (finish)
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                         pass_fds=(write,), env=env, **popen_kw)  # fmt: skip
        os.close(write)  # only the child holds the write end: its exit reads as EOF here
        self._read = read

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_held(self) -> None:
        """Block until the child holds; fail (with its output) if it ended first."""
        with os.fdopen(self._read, "rb") as pipe:
            said = pipe.readline()
        if said != b"held\n":
            self.proc.wait(60)
            raise AssertionError(
                f"the run ended before it was held (rc {self.proc.returncode}): "
                f"{self.output()[-2000:]}"
            )

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


class SlowForced(ForcedTokens):
    """ForcedTokens that sleeps per token: a run slow enough to be killed half-way."""

    def __init__(self, script: Sequence[int], delay: float) -> None:
        super().__init__(script)
        self.delay = delay

    def __call__(self, output_ids, logits):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        return super().__call__(output_ids, logits)


def steer_by_want(vocab: Vocab, wants: dict[str, str], delay: float = 0.0
                  ) -> Callable[[int, Row], ForcedTokens]:  # fmt: skip
    """A `run_dataset(steer=...)` function reading each row's `want` (by row text)."""

    def steer(_idx: int, row: Row) -> ForcedTokens:
        want = wants.get(row.text, "?")
        final = want if want in ("0", "1") else "maybe"
        script = harmony_script(vocab, final, "thinking about it")
        return SlowForced(script, delay) if delay else ForcedTokens(script)

    return steer


def wants_of(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {r["text"]: r["want"] for r in rows}


def make_classifier(model: Path, db: Path | None = None, **kw: Any) -> Classifier:
    return Classifier("toxic_simple", model, sampling=SHORT, store=Store(db), **kw)


def run_item_rows(store: Store, run: str) -> list[dict[str, Any]]:
    return store.query("SELECT idx, key FROM run_items WHERE run = ? ORDER BY idx", [run])
