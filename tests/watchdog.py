"""No test can hang: the second line of defence behind pytest-timeout (a pytest plugin).

pytest-timeout (`timeout`, `timeout_method = "signal"` in pyproject.toml) fails a test that
runs past its limit and the run goes on with the next test. Its signal only acts when the
main thread runs Python again; a test stuck inside C (a llama.cpp call that never returns,
a regex that never ends) never gets there. For that case every test runs under
`faulthandler.dump_traceback_later(limit + grace, exit=True)`: a C-level watchdog thread
that needs no GIL prints every thread's stack and ends the process. Under pytest-xdist that
is a crashed worker, and `--max-worker-restart=0` (addopts) ends the run there, failed,
naming the test: never a hang, and never the crashed test re-run by a replacement worker
(pytest-xdist 3.8 re-queues it, and under `--dist loadgroup` a replaced worker can wait
forever: pytest-xdist issues 1323, 1327, 1378).

The grace is `EDGE_GUARD_TEST_WATCHDOG_GRACE` seconds (default 60): the time pytest-timeout
has to fail the test first. A test with no limit (`timeout = 0`) has no watchdog.
"""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Iterator
from typing import IO

import pytest

GRACE_ENV = "EDGE_GUARD_TEST_WATCHDOG_GRACE"
_STDERR: list[IO[str]] = []  # a copy of the real stderr: capture replaces fd 2 during tests


def pytest_configure(config: pytest.Config) -> None:
    try:
        fd = os.dup(sys.__stderr__.fileno() if sys.__stderr__ else 2)
    except (OSError, ValueError):
        return
    _STDERR.append(os.fdopen(fd, "w"))


def pytest_unconfigure(config: pytest.Config) -> None:
    while _STDERR:
        _STDERR.pop().close()


def limit_of(item: pytest.Item) -> float:
    """The item's pytest-timeout limit in seconds (its mark, else --timeout, else the ini)."""
    mark = item.get_closest_marker("timeout")
    if mark is not None:
        value = mark.args[0] if mark.args else mark.kwargs.get("timeout")
        if value is not None:
            return float(value)
    given = item.config.getoption("timeout", None)
    if given is not None:
        return float(given)
    return float(item.config.getini("timeout") or 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    limit = limit_of(item)
    armed = limit > 0 and bool(_STDERR)
    if armed:
        grace = float(os.environ.get(GRACE_ENV) or 60)
        faulthandler.dump_traceback_later(limit + grace, exit=True, file=_STDERR[0])
    try:
        yield
    finally:
        if armed:
            faulthandler.cancel_dump_traceback_later()
