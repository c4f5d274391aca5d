"""The `edge-guard` command line: a click group whose errors become one-line messages.

Each command group lives in its own module and is registered lazily in `COMMANDS`, so
`edge-guard --help` does not import llama.cpp, numpy-heavy or Textual code.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys
from typing import Any

import click

from edge_guard.defaults import env
from edge_guard.errors import EdgeGuardError
from edge_guard.sanitize import term

# SQLite result codes that are the user's to fix: READONLY, CANTOPEN, FULL (disk full).
_STORE_USER_ERRORS = (8, 14, 13)

# command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "prompt": "edge_guard.cli.prompt_cmd:prompt",
    "models": "edge_guard.cli.models_cmd:models",
    "classify": "edge_guard.cli.classify_cmd:classify",
    "policies": "edge_guard.cli.policies_cmd:policies",
    "cache": "edge_guard.cli.cache_cmd:cache",
    "bench": "edge_guard.cli.bench_cmd:bench",
    "run": "edge_guard.cli.run_cmd:run",
    "eval": "edge_guard.cli.eval_cmd:eval_",
    "report": "edge_guard.cli.eval_cmd:report",
    "datasets": "edge_guard.cli.datasets_cmd:datasets",
    "study": "edge_guard.cli.study_cmd:study",
    "tui": "edge_guard.cli.tui_cmd:tui",
    "compare": "edge_guard.cli.compare_cmd:compare",
    "serve": "edge_guard.cli.serve_cmd:serve",
    "ps": "edge_guard.cli.warm_cmd:ps",
    "stop": "edge_guard.cli.warm_cmd:stop",
    "review": "edge_guard.cli.review_cmd:review",
}


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it is used (or listed in help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module, attr = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgeGuardError as exc:  # in the CLI's terms where the error has its own
            fail(exc.for_door("cli") if hasattr(exc, "for_door") else str(exc), exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as exc:
            if isinstance(exc, sqlite3.OperationalError) and (
                getattr(exc, "sqlite_errorcode", 0) & 0xFF in _STORE_USER_ERRORS
            ):
                fail(
                    f"cannot write the result store: {exc} (check the file's permissions and "
                    "free space, or pass --db to use another file)"
                )
            if env("EDGE_GUARD_DEBUG"):
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            fail(
                f"internal error: {type(exc).__name__}: {first} "
                "(set EDGE_GUARD_DEBUG=1 for a traceback)",
                2,
            )


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {term(message)}", err=True)
    sys.exit(code)


def run(argv: list[str] | None = None) -> None:
    """The `edge-guard` console script: `main`, with click's usage errors (a bad option
    value, an unknown command) as one `error: ...` line and exit status 2 instead of
    click's usage block. Tests drive `main` itself with click's CliRunner."""
    try:
        rv = main.main(args=argv, prog_name="edge-guard", standalone_mode=False)
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path if exc.ctx else 'edge-guard'} --help')"
        fail(" ".join(exc.format_message().split()) + where, exc.exit_code)
    except click.ClickException as exc:
        fail(" ".join(exc.format_message().split()), exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    # Without standalone mode click returns the exit code of `ctx.exit(n)` (--help, --version).
    sys.exit(rv if type(rv) is int else 0)


@click.group(cls=LazyGroup, invoke_without_command=True)
@click.version_option(package_name="edge-guard")
@click.pass_context
def main(ctx: click.Context) -> None:
    """edge_guard: classify text against your policies with gpt-oss-safeguard, offline.

    Run without a command to open the TUI.
    """
    if ctx.invoked_subcommand is None:
        tui = main.get_command(ctx, "tui")
        if tui is None:
            click.echo(ctx.get_help())
            return
        ctx.invoke(tui)
