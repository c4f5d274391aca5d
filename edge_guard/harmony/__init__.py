"""Harmony prompt rendering and output parsing on token ids."""

from edge_guard.harmony.parse import HarmonyStreamParser, ParsedOutput, parse_output
from edge_guard.harmony.render import (
    DEFAULT_EFFORT,
    DEFAULT_STYLE,
    EFFORTS,
    STYLES,
    Prompt,
    PromptConfig,
    PromptRenderer,
)
from edge_guard.harmony.vocab import ContentEncoder, Vocab, o200k_harmony_vocab

__all__ = [
    "DEFAULT_EFFORT",
    "DEFAULT_STYLE",
    "EFFORTS",
    "STYLES",
    "ContentEncoder",
    "HarmonyStreamParser",
    "ParsedOutput",
    "Prompt",
    "PromptConfig",
    "PromptRenderer",
    "Vocab",
    "o200k_harmony_vocab",
    "parse_output",
]
