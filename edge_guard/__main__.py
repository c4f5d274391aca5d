"""`python -m edge_guard` runs the CLI."""

from edge_guard.cli import run

run()
