"""TUI test fixtures: an app factory over a temp store and the synthetic o200k model, steered;
waits that end on the app's own events (`until`, `settle`), never after a fixed delay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from edge_guard.backends.local import EngineSettings
from edge_guard.engine.sampling import ForcedTokens, harmony_script
from edge_guard.tui.app import EdgeGuardApp
from edge_guard.tui.jobs import default_classifier_factory

# One CPU thread and a small context: fast on a busy 2-core machine.
TEST_ENGINE = EngineSettings(n_ctx=4096, n_threads=1, n_parallel=4)

SIZE = (140, 42)
# How long a wait may take before the test fails (a model run on a busy machine included);
# pytest-timeout's per-test limit is above it, so a wait that never ends fails here, by name.
WAIT_S = 120.0


async def until(
    pilot: Any, condition: Callable[[], Any], what: str, timeout: float = WAIT_S
) -> None:
    """Wait until `condition()` holds: checked once the app has handled what the test just
    did, then each time the event loop has run (worker threads' results, timers); fails
    naming `what` after `timeout` s. Elapsed time decides nothing: a slow machine only
    takes longer to get there."""
    from textual.css.query import NoMatches

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await pilot.pause(0)  # every message queued so far handled (no CPU-idle wait)
    while True:
        try:
            if condition():
                return
        except NoMatches:  # the widget is not mounted yet (a screen switch in flight)
            pass
        if loop.time() >= deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        await asyncio.sleep(0.02)  # the app's tasks run meanwhile; this is only how often we look


async def settle(pilot: Any, timeout: float = WAIT_S) -> None:
    """Wait until the app is quiet: no worker running, no message waiting in the queue of
    the app, its screen or any widget on it, and none being handled (a bubbling message, a
    worker's result, a handler that starts another worker)."""
    app = pilot.app

    def quiet() -> bool:
        nodes = [app, *app.screen.walk_children(with_self=True)]
        return all(w.is_finished for w in app.workers) and all(
            n._message_queue.empty() for n in nodes
        )

    while True:
        await until(pilot, quiet, "the app to handle its messages and end its workers", timeout)
        await pilot.pause(0)  # a handler still running when the queues emptied has ended
        if quiet():
            return


def steer_to(final: str | Callable[[str], str], analysis: str = "The text is checked.") -> Any:
    """A steering hook: every text gets a well-formed analysis + final answer `final`
    (or `final(text)`), so verdicts are deterministic on a random-weight model."""

    def steer(clf: Any, texts: Sequence[str]) -> list[ForcedTokens]:
        vocab = clf.backend.vocab()
        out = []
        for t in texts:
            answer = final(t) if callable(final) else final
            out.append(ForcedTokens(harmony_script(vocab, final=answer, analysis=analysis)))
        return out

    return steer


def shown(widget: Any) -> str:
    """The plain text a Static shows (Rich renderables rendered 200 columns wide)."""
    import io

    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
    console.print(widget.content)
    return console.export_text()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tui.db"


@pytest.fixture
def make_app(db_path: Path, tiny_o200k_model: Path) -> Callable[..., EdgeGuardApp]:
    """make_app(final="1", analysis=..., **app_kwargs) -> EdgeGuardApp on the tiny model."""

    def make(
        final: str | Callable[[str], str] | None = "1",
        analysis: str = "The text is checked.",
        **kw: Any,
    ) -> EdgeGuardApp:
        kw.setdefault("db", db_path)
        kw.setdefault("model", str(tiny_o200k_model))
        kw.setdefault("policy", "toxic_simple")
        if "steer" not in kw:
            kw["steer"] = steer_to(final, analysis) if final is not None else None
        kw.setdefault("classifier_factory", factory)
        return EdgeGuardApp(**kw)

    return make


@pytest.fixture
def anyio_backend() -> str:
    """Pilot tests run on asyncio (anyio's pytest plugin drives the async tests)."""
    return "asyncio"


def factory(
    policy: Any, options: Any, *, store: Any, use_cache: bool = True, settings: Any = None
) -> Any:
    """The app's default classifier factory with the test engine settings."""
    return default_classifier_factory(
        policy,
        options,
        store=store,
        use_cache=use_cache,
        engine_settings=TEST_ENGINE,
        settings=settings,
    )
