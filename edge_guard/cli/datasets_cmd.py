"""`edge-guard datasets pull | list`: fetch a known dataset (ToxicChat) through
huggingface_hub into the data dir as JSONL, and list the known and the local datasets.
"""

from __future__ import annotations

import json
from typing import Any

import click

from edge_guard.sanitize import term


@click.group()
def datasets() -> None:
    """Pull and list datasets (any local .jsonl/.csv/.parquet file also works with `run`)."""


@datasets.command()
@click.argument("name", type=click.Choice(["toxic-chat"]))
@click.option("--config", default="toxicchat0124", show_default=True)
@click.option("--split", default="test", show_default=True)
def pull(name: str, config: str, split: str) -> None:
    """Download a known dataset through huggingface_hub into the data dir, as JSONL."""
    from edge_guard.datasets.hub import KNOWN, pull_dataset

    known = KNOWN[name]
    click.echo(term(f"{known.repo} is licensed {known.license}"), err=True)
    path, n = pull_dataset(name, config, split)
    click.echo(
        f"saved {n} rows to {path} (text field {known.text_field}, label "
        f"{known.label_field}); run it with: edge-guard run {name} --policy POLICY"
    )


@datasets.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Known datasets (with licenses) and the local files pulled into the data dir."""
    from edge_guard.datasets.hub import KNOWN, datasets_dir, local_datasets

    known = [
        {
            "name": k.name,
            "repo": k.repo,
            "license": k.license,
            "configs": list(k.configs),
            "splits": list(k.splits),
            "description": k.description,
        }
        for k in KNOWN.values()
    ]
    local: list[dict[str, Any]] = [
        {"path": str(p), "bytes": p.stat().st_size} for p in local_datasets()
    ]
    if as_json:
        click.echo(json.dumps({"known": known, "local": local, "dir": str(datasets_dir())}))
        return
    click.echo("known datasets:")
    for k in known:
        click.echo(
            f"  {k['name']:<12} {k['repo']}  configs {', '.join(k['configs'])}; "
            f"splits {', '.join(k['splits'])}"
        )
        click.echo(f"  {'':<12} {k['description']}")
        click.echo(f"  {'':<12} license: {k['license']}")
    click.echo(f"local datasets in {datasets_dir()}:")
    for f in local:
        click.echo(f"  {f['path']}  ({f['bytes'] / 1e6:.1f} MB)")
    if not local:
        click.echo("  (none; any .jsonl/.csv/.parquet file works: edge-guard run FILE --policy P)")
