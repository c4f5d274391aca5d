"""Named public datasets (ToxicChat) pulled through huggingface_hub, and where local ones live.

Any local JSONL/CSV/Parquet file is a dataset; a known name such as `toxic-chat` resolves to
the copy `edge-guard datasets pull` saved in the data dir.
"""

from __future__ import annotations

import json
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
        "toxic-chat", "lmsys/toxic-chat", "CC-BY-NC-4.0 (non-commercial use only)",
        {"toxicchat0124": "0124", "toxicchat1123": "1123"}, ("test", "train"),
        "user_input", "toxicity", "conv_id",
        "ToxicChat: real user prompts to an LLM demo, human-labelled toxicity (~7% toxic)",
        "model_output",
    ),
}  # fmt: skip
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

    ds = load_dataset(csv_path, text_field=known.text_field, label_field=known.label_field,
                      id_field=known.id_field)  # fmt: skip
    responses: dict[int, str] = {}
    if known.response_field:  # kept beside the prompt: judge the reply in its context
        exchanges = load_dataset(csv_path, prompt_field=known.text_field,
                                 response_field=known.response_field)  # fmt: skip
        responses = {r.line: r.text for r in exchanges.rows}  # text = the judged response
    out = known.local_path(config, split)
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in ds.rows:
            label = int(r.label) if str(r.label).strip().isdigit() else r.label
            row = {known.id_field: r.item_id, known.text_field: r.text}
            if known.response_field:
                row[known.response_field] = responses.get(r.line)
            row[known.label_field] = label
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return out, len(ds.rows)


def local_datasets() -> list[Path]:
    from edge_guard.datasets.files import FORMATS

    return sorted(p for p in datasets_dir().iterdir() if p.suffix in FORMATS)
