"""`edge-guard models ...`: synthetic models (and, with the registry, pull/verify/info/fit)."""

from __future__ import annotations

import time

import click


@click.group()
def models() -> None:
    """Manage GGUF models: list, pull, verify, inspect, and write synthetic test models."""


@models.command("synth")
@click.argument("preset")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--seed", default=0, show_default=True, help="Random seed for the weights.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def synth(preset: str, out: str, seed: int, force: bool) -> None:
    """Write a synthetic random-weight gpt-oss GGUF (presets: tiny, tiny-o200k, mini, 20b-shape)."""
    import os

    from edge_guard.errors import EdgeGuardError
    from edge_guard.synth import PRESETS, write_synthetic_model

    if preset not in PRESETS:
        raise EdgeGuardError(f"unknown preset {preset!r} (choose {', '.join(PRESETS)})")
    if os.path.exists(out) and not force:
        raise EdgeGuardError(f"{out} exists (use --force to overwrite)")
    t0 = time.perf_counter()
    write_synthetic_model(out, preset, seed=seed)
    size = os.path.getsize(out)
    click.echo(
        f"wrote {out} ({preset}, seed {seed}, {size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s"
    )
