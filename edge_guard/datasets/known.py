"""Known public datasets (ToxicChat): what they are, where a pulled copy lives, name -> file.

Any local JSONL/CSV/Parquet file is a dataset; a known name such as `toxic-chat` resolves to
the copy `edge-guard datasets pull` (`datasets.hub`) saved in the data dir. This module reads
no dataset file: `datasets.files` resolves names through it, `datasets.hub` pulls.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge_guard.errors import EdgeGuardError


@dataclass(frozen=True)
class KnownDataset:
    name: str
    repo: str
    license: str
    configs: dict[str, str]  # config -> folder in the repo
    splits: tuple[str, ...]
    text_field: str
    label_field: str
    id_field: str
    description: str
    response_field: str | None = None  # the model's reply, kept for `run --target assistant`

    def filename(self, config: str, split: str) -> str:
        return f"data/{self.configs[config]}/toxic-chat_annotation_{split}.csv"

    def local_path(self, config: str, split: str) -> Path:
        return datasets_dir() / f"{self.name}-{config}-{split}.jsonl"


KNOWN: dict[str, KnownDataset] = {
    "toxic-chat": KnownDataset(
        "toxic-chat",
        "lmsys/toxic-chat",
        "CC-BY-NC-4.0 (non-commercial use only)",
        {"toxicchat0124": "0124", "toxicchat1123": "1123"},
        ("test", "train"),
        "user_input",
        "toxicity",
        "conv_id",
        "ToxicChat: real user prompts to an LLM demo, human-labelled toxicity (~7% toxic)",
        "model_output",
    ),
}
DEFAULT_CONFIG = "toxicchat0124"


def datasets_dir() -> Path:
    from edge_guard.paths import data_dir

    path = data_dir() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_dataset(ref: str | os.PathLike[str]) -> Path:
    """A file path, or a known dataset name (`toxic-chat[:CONFIG[:SPLIT]]`) pulled locally."""
    p = Path(ref).expanduser()
    if p.exists():
        if p.is_dir():
            raise EdgeGuardError(f"{ref} is a folder, not a dataset file")
        return p
    name, _, rest = str(ref).partition(":")
    known = KNOWN.get(name)
    if known is None:
        raise EdgeGuardError(
            f"no such dataset file: {ref} (known datasets: {', '.join(KNOWN)}; "
            "any local .jsonl/.csv/.parquet file works)"
        )
    config, _, split = rest.partition(":")
    local = known.local_path(config or DEFAULT_CONFIG, split or "test")
    if not local.exists():
        raise EdgeGuardError(
            f"dataset {ref} is not pulled yet: run `edge-guard datasets pull {name}"
            f"{' --config ' + config if config else ''}{' --split ' + split if split else ''}`"
        )
    return local
