"""Conversation datasets: a `messages` column, or a prompt column + a response column.

- `messages`: per row a JSON list of `{role, content}` (a list in JSONL or Parquet, a JSON
  string in CSV/TSV or JSONL); auto-detected when the file has a `messages` column and no
  text field was named. Default target: `last`.
- `--prompt-field P --response-field R`: per row the conversation [user: P, assistant: R];
  default target `assistant` (judge the response in the prompt's context). With `--target`
  and no fields, a known column pair (`user_input`/`model_output`, `prompt`/`response`) is
  used: `edge-guard run toxic-chat --target assistant` judges ToxicChat's model outputs.

A row whose conversation cannot be built is malformed (with the reason), never dropped
silently. Used by `datasets.files.load_dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_guard.conversation import TARGETS, Conversation, ConversationError
from edge_guard.errors import EdgeGuardError

MESSAGES_FIELDS = ("messages",)
# (prompt, response) column pairs taken as an exchange when --target is given without fields
# (ToxicChat's user_input/model_output first).
EXCHANGE_FIELDS = (("user_input", "model_output"), ("prompt", "response"))


@dataclass(frozen=True)
class ConversationFields:
    """Where a dataset's conversations come from, and which message each row judges."""

    target: str
    messages_field: str | None = None
    prompt_field: str | None = None
    response_field: str | None = None

    @property
    def text_field(self) -> str:
        """The column reported as the dataset's text (messages, else the response)."""
        return self.messages_field or self.response_field or ""

    def config(self) -> dict[str, Any]:
        """The run-config keys (all absent for plain-text datasets)."""
        return {
            "target": self.target,
            "messages_field": self.messages_field,
            "prompt_field": self.prompt_field,
            "response_field": self.response_field,
        }

    def conversation(self, rec: dict[str, Any]) -> tuple[Conversation | None, str | None]:
        """(conversation, None), or (None, why the row is malformed)."""
        if self.messages_field is not None:
            raw = rec.get(self.messages_field)
            if raw is None or raw == "":
                return None, f"missing messages field {self.messages_field!r}"
            if not isinstance(raw, str | list):
                return None, f"messages is {type(raw).__name__}, not a JSON list"
            try:
                return Conversation.from_json(raw, self.target), None
            except ConversationError as exc:
                return None, str(exc)
        parts = []
        for what, name in (("prompt", self.prompt_field), ("response", self.response_field)):
            value = rec.get(name or "")
            if value is None:
                return None, f"missing {what} field {name!r}"
            if not isinstance(value, str):
                return None, f"{what} is {type(value).__name__}, not a string"
            if not value.strip():
                return None, f"empty {what}"
            parts.append(value)
        try:
            return Conversation.exchange(parts[0], parts[1], self.target), None
        except ConversationError as exc:
            return None, str(exc)


def conversation_fields(
    columns: list[str],
    path: Path,
    *,
    text_field: str | None,
    messages_field: str | None,
    prompt_field: str | None,
    response_field: str | None,
    target: str | None,
) -> ConversationFields | None:
    """How a dataset makes conversations (None: a plain-text dataset). One-line errors."""
    if target is not None and target not in TARGETS:
        raise EdgeGuardError(f"--target {target!r} is not one of {', '.join(TARGETS)}")

    def need(name: str, flag: str) -> str:
        if name not in columns:
            raise EdgeGuardError(
                f"{path}: no {flag} field {name!r} (fields: {', '.join(columns) or 'none'})"
            )
        return name

    if prompt_field is not None or response_field is not None:
        if prompt_field is None or response_field is None:
            raise EdgeGuardError("--prompt-field and --response-field go together")
        if messages_field is not None or text_field is not None:
            raise EdgeGuardError(
                "--prompt-field/--response-field replace --text-field and --messages-field"
            )
        return ConversationFields(
            target or "assistant",
            prompt_field=need(prompt_field, "prompt"),
            response_field=need(response_field, "response"),
        )
    if messages_field is None and text_field is None:
        lower = {c.lower(): c for c in columns}
        messages_field = next((lower[c] for c in MESSAGES_FIELDS if c in lower), None)
    if messages_field is not None:
        if text_field is not None:
            raise EdgeGuardError("--messages-field replaces --text-field")
        return ConversationFields(target or "last", messages_field=need(messages_field, "messages"))
    pair = next((p for p in EXCHANGE_FIELDS if p[0] in columns and p[1] in columns), None)
    if target is not None and text_field is None and pair is not None:
        return ConversationFields(target, prompt_field=pair[0], response_field=pair[1])
    if target is not None:
        raise EdgeGuardError(
            f"{path}: --target needs a conversation dataset (a messages column, or "
            "--prompt-field and --response-field)"
        )
    return None
