"""`edge-guard ps` and `edge-guard stop`: the warm engines of this user, listed and ended.

A warm engine is an `edge-guard serve` on a private Unix socket that a classifying
command started (`edge_guard.warm`); it exits by itself after its keep-alive without a
request. `ps` shows each one's model, engine settings, store, memory and idle time;
`stop` ends them (all, or those whose key or model is given).
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from edge_guard.sanitize import term, term_json


def keep_alive_option(f: Any) -> Any:
    """`--keep-alive` for the commands that use a warm engine (classify, run, ...)."""
    return click.option(
        "--keep-alive",
        default=None,
        metavar="DURATION",
        help="Keep the model loaded in a warm engine this long after the last request "
        "(300, 90s, 5m; 0 = load it in this process). Default: $EDGE_GUARD_KEEP_ALIVE, "
        "config.toml [engine] keep_alive, else 5m (0 under CI and pytest).",
    )(f)


def _rows() -> list[dict[str, Any]]:
    from edge_guard.warm import registry, spawn

    rows = []
    for path, record in registry.live_records():
        st = spawn.status(record, timeout=3.0)
        spec = record["spec"]
        rows.append(
            {
                "key": spec["key"],
                "pid": record["pid"],
                "model": record.get("model"),
                "model_path": spec["model_path"],
                "settings": {k: spec[k] for k in ("ctx", "gpu_layers", "threads", "parallel")},
                "db": spec["db"],
                "keep_alive_s": record.get("keep_alive_s"),
                "started": record.get("started"),
                "rss_bytes": st.get("rss_bytes") if st else None,
                "idle_s": st.get("idle_s") if st else None,
                "in_flight": st.get("in_flight") if st else None,
                "answering": st is not None,
                "socket": record["socket"],
                "log": record.get("log"),
                "record": str(path),
            }
        )
    return rows


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def ps(as_json: bool) -> None:
    """List the warm engines running for this user (model, settings, memory, idle time)."""
    from edge_guard.settings.keep_alive import format_seconds

    rows = _rows()
    if as_json:
        click.echo(term_json(rows))
        return
    if not rows:
        click.echo("no warm engines running")
        return
    click.echo(
        f"{'KEY':16}  {'PID':>7}  {'MEMORY':>9}  {'IDLE':>6}  {'EXITS IN':>8}  MODEL / SETTINGS"
    )
    for r in rows:
        idle = r["idle_s"]
        left = None if idle is None or not r["keep_alive_s"] else r["keep_alive_s"] - idle
        s = r["settings"]
        settings = (
            f"ctx {s['ctx']}, gpu layers {s['gpu_layers']}, threads "
            f"{s['threads'] or 'auto'}, parallel {s['parallel'] or 'default'}"
        )
        busy = f" ({r['in_flight']} running)" if r["in_flight"] else ""
        click.echo(
            f"{r['key']:16}  {r['pid']:>7}  {_size(r['rss_bytes']):>9}  "
            f"{'?' if idle is None else format_seconds(idle):>6}  "
            f"{'?' if left is None else format_seconds(max(0.0, left)):>8}  "
            f"{term(str(r['model']))}{busy}"
        )
        click.echo(
            f"{'':16}  {'':>7}  {'':>9}  {'':>6}  {'':>8}  {settings}; store {term(r['db'])}"
        )


@click.command()
@click.argument("which", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print what was stopped as JSON.")
def stop(which: tuple[str, ...], as_json: bool) -> None:
    """Stop warm engines: all of them, or those whose KEY or model is given."""
    from edge_guard.warm import registry, spawn

    records = registry.live_records()
    chosen = [
        (p, r)
        for p, r in records
        if not which
        or any(w in (r["spec"]["key"], r.get("model"), r["spec"]["model_path"]) for w in which)
    ]
    unknown = [
        w
        for w in which
        if not any(
            w in (r["spec"]["key"], r.get("model"), r["spec"]["model_path"]) for _, r in records
        )
    ]
    if unknown:
        from edge_guard.errors import EdgeGuardError

        raise EdgeGuardError(f"no warm engine {unknown[0]!r} is running (edge-guard ps lists them)")
    stopped = []
    for path, record in chosen:
        t0 = time.monotonic()
        spawn.stop(record, path)
        stopped.append(
            {
                "key": record["spec"]["key"],
                "pid": record["pid"],
                "model": record.get("model"),
                "seconds": round(time.monotonic() - t0, 2),
            }
        )
    if as_json:
        click.echo(json.dumps(stopped))
        return
    if not stopped:
        click.echo("no warm engines running")
    for s in stopped:
        click.echo(f"stopped {s['key']} (pid {s['pid']}, {term(str(s['model']))})")
