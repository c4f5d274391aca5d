"""TUI test fixtures: an app factory over a temp store and the synthetic o200k model, steered."""

from __future__ import annotations

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
