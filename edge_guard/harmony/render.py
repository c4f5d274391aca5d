"""Builds harmony prompts as token ids: scaffolding specials as ids, content as ordinary text.

Two styles:
- ``harmony``: what openai-harmony's ``render_conversation_for_completion`` produces for a
  system message (identity, knowledge cutoff, optional date, reasoning effort, channels),
  a developer message ``# Instructions\\n\\n{policy}`` and a user message.
- ``chat-template``: what the official gpt-oss Jinja chat template produces for messages
  ``[system: policy, user: text]`` (the prompt llama-server, vLLM and hosted APIs build):
  the system message always carries ``Current date:`` and the policy is followed by ``\\n\\n``.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import asdict, dataclass

from edge_guard.defaults import DEFAULT_EFFORT, DEFAULT_STYLE
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.vocab import Vocab

STYLES = ("harmony", "chat-template")
EFFORTS = ("low", "medium", "high")
DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"
CHANNELS_LINE = (
    "# Valid channels: analysis, commentary, final. Channel must be included for every message."
)

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class PromptConfig:
    """Everything besides policy and text that shapes the prompt."""

    style: str = DEFAULT_STYLE
    effort: str = DEFAULT_EFFORT
    date: str | None = None
    identity: str = DEFAULT_IDENTITY

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise EdgeGuardError(
                f"unknown prompt style {self.style!r} (choose {', '.join(STYLES)})"
            )
        if self.effort not in EFFORTS:
            raise EdgeGuardError(
                f"unknown reasoning effort {self.effort!r} (choose {', '.join(EFFORTS)})"
            )
        if self.date is not None:
            if not _DATE_RE.match(self.date):
                raise EdgeGuardError(f"date {self.date!r} is not in YYYY-MM-DD form")
            try:
                _dt.date.fromisoformat(self.date)
            except ValueError:
                raise EdgeGuardError(f"date {self.date!r} is not a calendar date") from None

    def resolved(self) -> PromptConfig:
        """The chat template always writes a date: pin today's if none was given."""
        if self.style == "chat-template" and self.date is None:
            return PromptConfig(
                self.style, self.effort, _dt.date.today().isoformat(), self.identity
            )
        return self

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt. `prefix_len` ids are shared by every text under the same policy."""

    token_ids: list[int]
    prefix_len: int
    config: PromptConfig

    def __len__(self) -> int:
        return len(self.token_ids)


class PromptRenderer:
    """Renders policy + text into token ids for one vocabulary."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.encoder = vocab.encoder
        self.START = vocab.special_id("<|start|>")
        self.MESSAGE = vocab.special_id("<|message|>")
        self.END = vocab.special_id("<|end|>")
        self._prefix_cache: dict[tuple[str, PromptConfig], list[int]] = {}

    def system_content(self, config: PromptConfig) -> str:
        lines = [config.identity, f"Knowledge cutoff: {KNOWLEDGE_CUTOFF}"]
        if config.date is not None:
            lines.append(f"Current date: {config.date}")
        return "\n".join(lines) + f"\n\nReasoning: {config.effort}\n\n{CHANNELS_LINE}"

    def developer_content(self, policy: str, config: PromptConfig) -> str | None:
        if config.style == "chat-template":
            # The template skips the developer message when the system content is empty.
            return f"# Instructions\n\n{policy}\n\n" if policy else None
        return f"# Instructions\n\n{policy}"

    def _message(self, role: str, content: str) -> list[int]:
        return [
            self.START,
            *self.encoder.encode(role),
            self.MESSAGE,
            *self.encoder.encode(content),
            self.END,
        ]

    def prefix(self, policy: str, config: PromptConfig) -> list[int]:
        """System + developer messages and the user header: the part every text shares."""
        config = config.resolved()
        key = (policy, config)
        cached = self._prefix_cache.get(key)
        if cached is None:
            cached = self._message("system", self.system_content(config))
            developer = self.developer_content(policy, config)
            if developer is not None:
                cached += self._message("developer", developer)
            cached += [self.START, *self.encoder.encode("user"), self.MESSAGE]
            if len(self._prefix_cache) > 64:
                self._prefix_cache.clear()
            self._prefix_cache[key] = cached
        return list(cached)

    def render(self, policy: str, text: str, config: PromptConfig | None = None) -> Prompt:
        config = (config or PromptConfig()).resolved()
        prefix = self.prefix(policy, config)
        ids = prefix + self.encoder.encode(text) + [self.END, self.START]
        ids += self.encoder.encode("assistant")
        return Prompt(ids, len(prefix), config)

    def display(self, prompt: Prompt) -> str:
        """The prompt as text with specials visible."""
        return self.vocab.decode(prompt.token_ids)
