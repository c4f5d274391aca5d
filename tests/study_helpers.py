"""Helpers for the study tests: a likert policy folder, small datasets, per-item steering."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from edge_guard.engine.sampling import ForcedTokens, harmony_script
from edge_guard.harmony.vocab import Vocab

POLICY_TEXT = "Rate how good the opinion is, 1 (not good) to 5 (good). Answer with one digit."


def write_likert_policy(folder: Path) -> Path:
    """A temporary `is_good`-like policy folder (the real one belongs to another engineer)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "policy.md").write_text(POLICY_TEXT + "\n", encoding="utf-8")
    (folder / "policy.toml").write_text(
        'name = "likert_test"\n[output]\nkind = "likert"\nmin = 1\nmax = 5\n', encoding="utf-8"
    )
    return folder


def write_dataset(path: Path, texts: Sequence[str], topics: Sequence[str] | None = None) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, text in enumerate(texts):
            row = {"id": f"i{i}", "topic": topics[i] if topics else "t", "text": text}
            fh.write(json.dumps(row) + "\n")
    return path


class Steering:
    """steer(model, item, repeat) forcing the answers in `answers[model_key][item_id]`.

    An answer is a string (same for every repeat) or a list (one per repeat). `model_key`
    is matched as a substring of the model reference.
    """

    def __init__(self, answers: Mapping[str, Mapping[str, str | list[str]]]) -> None:
        self.answers = answers
        self.vocabs: dict[str, Vocab] = {}
        self.calls = 0

    def __call__(self, model: str, item: object, repeat: int) -> ForcedTokens:
        self.calls += 1
        key = next(k for k in self.answers if k in model)
        if model not in self.vocabs:
            self.vocabs[model] = Vocab.from_gguf(model)
        answer = self.answers[key][item.id]  # type: ignore[attr-defined]
        final = answer if isinstance(answer, str) else answer[repeat]
        return ForcedTokens(harmony_script(self.vocabs[model], final, analysis="x"))
