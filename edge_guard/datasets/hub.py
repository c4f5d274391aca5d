"""Pulling the named public datasets (ToxicChat) through huggingface_hub; the local ones.

Any local JSONL/CSV/Parquet file is a dataset; a known name such as `toxic-chat` resolves to
the copy `edge-guard datasets pull` saved in the data dir. The catalogue and name -> file
resolution live in `datasets.known` (re-exported here).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# The catalogue lives in `datasets.known` (read by `datasets.files` without pulling in this module).
from edge_guard.datasets.known import (
    DEFAULT_CONFIG,
    KNOWN,
    KnownDataset,
    datasets_dir,
    resolve_dataset,
)
from edge_guard.errors import EdgeGuardError

__all__ = [
    "DEFAULT_CONFIG",
    "KNOWN",
    "KnownDataset",
    "datasets_dir",
    "local_datasets",
    "pull_dataset",
    "resolve_dataset",
]


def pull_dataset(name: str, config: str = DEFAULT_CONFIG, split: str = "test") -> tuple[Path, int]:
    """Download a known dataset through huggingface_hub and save it as JSONL; (path, rows)."""
    known = KNOWN.get(name)
    if known is None:
        raise EdgeGuardError(f"unknown dataset {name!r} (known: {', '.join(KNOWN)})")
    if config not in known.configs:
        raise EdgeGuardError(
            f"unknown config {config!r} for {name} (one of {', '.join(known.configs)})"
        )
    if split not in known.splits:
        raise EdgeGuardError(
            f"unknown split {split!r} for {name} (one of {', '.join(known.splits)})"
        )
    from edge_guard.registry import is_offline

    hint = "any local .jsonl/.csv/.parquet file works as a dataset: edge-guard run FILE --policy P"
    if is_offline():
        raise EdgeGuardError(f"offline (HF_HUB_OFFLINE is set): cannot pull {name}; {hint}")
    try:
        from huggingface_hub import hf_hub_download

        csv_path = hf_hub_download(known.repo, known.filename(config, split), repo_type="dataset")
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise EdgeGuardError(
            f"cannot download {known.repo} ({type(exc).__name__}: {first}); {hint}"
        ) from None
    from edge_guard.datasets.files import load_dataset

    ds = load_dataset(
        csv_path,
        text_field=known.text_field,
        label_field=known.label_field,
        id_field=known.id_field,
    )
    responses: dict[int, str] = {}
    if known.response_field:  # kept beside the prompt: judge the reply in its context
        exchanges = load_dataset(
            csv_path, prompt_field=known.text_field, response_field=known.response_field
        )
        responses = {r.line: r.text for r in exchanges.rows}  # text = the judged response
    out = known.local_path(config, split)
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in ds.rows:
            label = int(r.label) if str(r.label).strip().isdigit() else r.label
            row: dict[str, Any] = {known.id_field: r.item_id, known.text_field: r.text}
            if known.response_field:
                row[known.response_field] = responses.get(r.line)
            row[known.label_field] = label
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return out, len(ds.rows)


def local_datasets() -> list[Path]:
    from edge_guard.datasets.files import FORMATS

    return sorted(p for p in datasets_dir().iterdir() if p.suffix in FORMATS)
