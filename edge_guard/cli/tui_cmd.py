"""`edge-guard tui` (also `edge-guard` with no command): open the terminal UI."""

from __future__ import annotations

import click

SCREEN_NAMES = ("workbench", "results", "runs", "study", "compare", "models", "tests")


@click.command()
@click.option("--model", "-m", default=None,
              help="Model to start with (default: $EDGE_GUARD_MODEL or the registry default).")  # fmt: skip
@click.option("--policy", "-p", default=None, help="Policy to open in the Workbench.")
@click.option("--db", default=None, type=click.Path(dir_okay=False),
              help="Result store (default: $EDGE_GUARD_HOME/edge_guard.db).")  # fmt: skip
@click.option("--screen", type=click.Choice(SCREEN_NAMES), default=None,
              help="Screen to open first (default: workbench).")  # fmt: skip
def tui(model: str | None, policy: str | None, db: str | None, screen: str | None) -> None:
    """Open the terminal UI: policy workbench, results, runs, study, comparisons, models."""
    from edge_guard.tui import run_tui

    run_tui(model=model, policy=policy, db=db, start=screen)
