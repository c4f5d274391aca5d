"""`edge-guard tui` (also `edge-guard` with no command): open the terminal UI."""

from __future__ import annotations

import click
from click.core import ParameterSource

from edge_guard.defaults import DEFAULT_CTX
from edge_guard.tui.screen_list import SCREEN_NAMES  # Textual-free: the nav bar's screens


@click.command()
@click.option(
    "--model",
    "-m",
    default=None,
    help="Model to start with (default: $EDGE_GUARD_MODEL or the registry default).",
)
@click.option("--policy", "-p", default=None, help="Policy to open in the Workbench.")
@click.option(
    "--db",
    default=None,
    type=click.Path(dir_okay=False),
    help="Result store (default: $EDGE_GUARD_HOME/edge_guard.db).",
)
@click.option(
    "--screen",
    type=click.Choice(SCREEN_NAMES),
    default=None,
    help="Screen to open first (default: workbench).",
)
@click.option(
    "--ctx", type=int, default=DEFAULT_CTX, show_default=True, help="Context size (tokens)."
)
@click.option("--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option(
    "--gpu-layers",
    default="auto",
    show_default=True,
    help="Layers to offload to the GPU ('auto' = all when the build has a GPU).",
)
def tui(
    model: str | None,
    policy: str | None,
    db: str | None,
    screen: str | None,
    ctx: int,
    threads: int | None,
    gpu_layers: str,
) -> None:
    """Open the terminal UI: policy workbench, results, runs, study, comparisons, models,
    tests and review."""
    from edge_guard.settings.resolve import resolve_settings
    from edge_guard.tui import run_tui

    ctx_ = click.get_current_context()
    given = {"ctx": ctx, "threads": threads, "gpu_layers": gpu_layers, "db": db}
    flags = {
        k: (None if ctx_.get_parameter_source(k) == ParameterSource.DEFAULT else v)
        for k, v in given.items()
    }
    settings = resolve_settings(flags, door="cli")  # the TUI's spec; its controls go over it
    run_tui(model=model, policy=policy, db=db, start=screen, settings=settings)
