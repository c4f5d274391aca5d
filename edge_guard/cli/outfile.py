"""Where a command writes a file (an export, a report, a plot): checked before any work is done.

The folder must exist, the path must not be a folder, and an existing file is replaced only
with `--force`; each problem is a one-line user error (exit 1), never an internal error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edge_guard.errors import EdgeGuardError
from edge_guard.sanitize import term_line


def force_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--force", is_flag=True, help="Overwrite an existing output file.")(f)


def check_out(out: str | Path, force: bool) -> Path:
    """`out` as a Path, or EdgeGuardError if it cannot or may not be written."""
    path = Path(out)
    shown = term_line(path)
    if path.is_dir():
        raise EdgeGuardError(f"{shown} is a folder: give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise EdgeGuardError(f"cannot write {shown}: folder {term_line(parent)} does not exist")
    if path.exists() and not force:
        raise EdgeGuardError(f"{shown} exists: pass --force to overwrite it")
    return path
