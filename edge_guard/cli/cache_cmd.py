"""`edge-guard cache stats | clear | export | repair`: look after the result store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_guard.cli.options import db_option
from edge_guard.cli.outfile import check_out, force_option
from edge_guard.errors import EdgeGuardError
from edge_guard.sanitize import csv_row, term_json, term_line

EXPORT_COLUMNS = (
    "key",
    "created_at",
    "model",
    "model_ref",
    "engine",
    "backend",
    "style",
    "effort",
    "date",
    "sampling",
    "policy_name",
    "policy_hash",
    "text",
    "verdict",
    "binary_label",
    "fine_grain_label",
    "float_label",
    "parsed",
    "label_probs",
    "final",
    "reasoning",
    "finish_reason",
    "error",
    "prompt_tokens",
    "cached_tokens",
    "prompt_ms",
    "output_tokens",
    "output_ms",
)


@click.group()
def cache() -> None:
    """Inspect, export and clear cached results."""


def _where(model: str | None, policy: str | None) -> tuple[str, list[str]]:
    clauses, params = [], []
    if model:
        clauses.append("(model = ? OR model_ref = ?)")
        params += [model, model]
    if policy:
        clauses.append("policy_name = ?")
        params.append(policy)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@cache.command()
@db_option
@click.option("--json", "as_json", is_flag=True)
def stats(db: str | None, as_json: bool) -> None:
    """Counts by model, policy and verdict."""
    from edge_guard.store import Store

    store = Store(db)
    total = store.query("SELECT count(*) AS n FROM results")[0]["n"]
    by = store.query(
        "SELECT model_ref, policy_name, verdict, count(*) AS n FROM results "
        "GROUP BY model_ref, policy_name, verdict ORDER BY n DESC"
    )
    runs = store.query("SELECT count(*) AS n FROM runs")[0]["n"]
    size = Path(store.path).stat().st_size if store.path != ":memory:" else 0
    if as_json:
        click.echo(
            term_json(
                {"db": store.path, "results": total, "runs": runs, "bytes": size, "groups": by}
            )
        )
        return
    click.echo(f"{term_line(store.path)}: {total} results, {runs} runs, {size / 1e6:.1f} MB")
    for r in by:
        verdict, policy = r["verdict"] or "-", term_line(r["policy_name"] or "-")
        click.echo(f"  {r['n']:>7}  {verdict:<13} {policy:<16} {term_line(r['model_ref'] or '-')}")


@cache.command()
@db_option
@click.option("--model", default=None, help="Only results of this model (identity or reference).")
@click.option("--policy", default=None, help="Only results of this policy name.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def clear(db: str | None, model: str | None, policy: str | None, yes: bool) -> None:
    """Delete cached results (runs keep their names; their items are removed)."""
    from edge_guard.store import Store

    store = Store(db)
    where, params = _where(model, policy)
    n = store.query(f"SELECT count(*) AS n FROM results{where}", params)[0]["n"]
    if n == 0:
        click.echo("nothing to clear")
        return
    if not yes:
        click.confirm(f"delete {n} cached results from {store.path}?", abort=True)
    with store.transaction() as tx:
        tx.execute(f"DELETE FROM run_items WHERE key IN (SELECT key FROM results{where})", params)
        tx.execute(f"DELETE FROM results{where}", params)
    click.echo(f"deleted {n} results")


@cache.command()
@click.argument("out", type=click.Path(dir_okay=False))
@db_option
@click.option("--model", default=None)
@click.option("--policy", default=None)
@force_option
def export(out: str, db: str | None, model: str | None, policy: str | None, force: bool) -> None:
    """Export results to OUT (.jsonl, .csv or .parquet; CSV cells that a spreadsheet would run
    as formulas get a leading ')."""
    from edge_guard.store import Store

    check_out(out, force)
    store = Store(db)
    where, params = _where(model, policy)
    rows = store.query(
        f"SELECT {', '.join(EXPORT_COLUMNS)} FROM results{where} ORDER BY created_at", params
    )
    write_rows(rows, Path(out))
    click.echo(f"wrote {len(rows)} results to {term_line(out)}")


@cache.command()
@db_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def repair(db: str | None, yes: bool) -> None:
    """Move a damaged store (with its -wal/-shm) aside and start a fresh one; nothing is deleted."""
    from edge_guard.paths import default_db_path
    from edge_guard.store import check_store, repair_store

    path = Path(db) if db else default_db_path()
    if not path.exists():
        click.echo(f"{path} does not exist; nothing to repair")
        return
    problem = check_store(path)
    if problem is None:
        click.echo(f"{path} is healthy; nothing to repair")
        return
    click.echo(f"{path} is damaged: {problem}", err=True)
    if not yes:
        click.confirm(f"move {path} aside and start a fresh store?", abort=True, err=True)
    aside = repair_store(path)
    click.echo(
        f"moved the damaged store to {aside} (kept; `sqlite3 {aside} .recover` may "
        f"salvage rows); a fresh store is at {path}"
    )


def write_rows(rows: list[dict[str, object]], out: Path) -> None:
    """Write rows as JSONL, CSV or Parquet, via a temporary file (never a half-written one).
    CSV cells go through `sanitize.csv_cell` (no spreadsheet formulas)."""
    import os

    suffix = out.suffix.lower()
    tmp = out.with_name(out.name + ".partial")
    if suffix == ".jsonl":
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif suffix == ".csv":
        import csv

        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else list(EXPORT_COLUMNS))
            w.writeheader()
            w.writerows(csv_row(r) for r in rows)
    elif suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise EdgeGuardError("Parquet export needs pyarrow (pip install pyarrow)") from None
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        raise EdgeGuardError(
            f"unknown export format {suffix or '(none)'}: use .jsonl, .csv or .parquet"
        )
    os.replace(tmp, out)
