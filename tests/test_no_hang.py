"""No test can hang (issue 28 item 2), checked on the suite's own settings.

Each test runs a small pytest session in a child process with the repository's
`pyproject.toml` (xdist workers, `--dist loadgroup`, `--max-worker-restart=0`, the signal
method) and the watchdog plugin (`tests/watchdog.py`), a 2 s limit and a 1 s grace:

- a test stuck in Python fails with "Timeout" and the run goes on: the rest of its xdist group
  and the other tests still run and pass;
- a test stuck where no signal handler can run (inside C; here SIGALRM blocked) ends its
  worker through the watchdog, and the run stops there, failed, naming the test, instead of hanging.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.watchdog import GRACE_ENV

ROOT = Path(__file__).resolve().parents[1]

PYTHON_HANG = """
import time

import pytest


def test_fine_first():
    pass


@pytest.mark.xdist_group("held")
def test_stuck_in_python():
    time.sleep(600)


@pytest.mark.xdist_group("held")
def test_after_it_in_its_group():
    pass


def test_fine_last():
    pass
"""

# Stuck where no signal handler can run, as in a call into C that never returns: SIGALRM is
# blocked in the main thread, so pytest-timeout's alarm never interrupts the sleep.
C_HANG = """
import signal
import time


def test_stuck_in_c():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(600)
"""


def session(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_held.py"
    test.write_text(source)
    env = {**os.environ, GRACE_ENV: "1", "PYTHONPATH": str(ROOT)}
    # the repository's own settings (addopts, the timeout method), though the file is elsewhere
    config = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT)]
    plugins = ["-p", "tests.watchdog", "-p", "no:cacheprovider"]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            *config,
            *plugins,
            "--timeout",
            "2",
            *args,
            str(test),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a hang fails this test instead of blocking the suite
    )


def test_a_test_stuck_in_python_fails_and_the_run_goes_on(tmp_path: Path) -> None:
    res = session(tmp_path, PYTHON_HANG, "-n", "2")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert re.search(r"^1 failed, 3 passed in ", out, re.M), out
    assert "Failed: Timeout (>2.0s) from pytest-timeout." in out  # with every stack


def test_a_test_stuck_in_c_ends_its_worker_and_the_run_fails(tmp_path: Path) -> None:
    res = session(tmp_path, C_HANG, "-n", "1")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert re.search(r"worker 'gw0' crashed while running '[^']*::test_stuck_in_c'", out)
    assert re.search(r"^1 failed in ", out, re.M), out  # run once, not again by a new worker
