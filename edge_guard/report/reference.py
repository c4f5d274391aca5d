"""Published reference figures to show beside ours when the same benchmark was run.

Copied (a few numbers only) from the project's reference notes; each block names its source.
Values are as reported: OpenAI's F1 in percent, the seed's P/R/F1/parse as fractions.
"""

from __future__ import annotations

import re

OPENAI_SOURCE = (
    "gpt-oss-safeguard technical report (OpenAI, 2025-10-29): F1 on public moderation "
    "benchmarks, OpenAI-run with unpublished prompts"
)
# model -> (OpenAI Mod 2022 F1, ToxicChat F1), percent.
OPENAI_F1: dict[str, tuple[float, float]] = {
    "gpt-oss-safeguard-120b": (82.9, 79.3),
    "gpt-oss-safeguard-20b": (82.9, 79.9),
    "gpt-oss-120b": (80.4, 76.7),
    "gpt-oss-20b": (78.7, 75.9),
}

SEED_SOURCE = (
    "the seed workspace's own results (DNGros/gptossexp-workspace): ToxicChat toxicchat0124 "
    "test, natural sample of 2000 (7.1% toxic), hosted inference, medium reasoning; parse "
    "failures were counted as non-toxic (compare with our 'undetermined = safe' column)"
)
SEED_N = 2000
# policy -> (approx. policy length in chars, {model: (precision, recall, F1, parse rate)})
SEED_TOXICCHAT: dict[str, tuple[int, dict[str, tuple[float, float, float, float]]]] = {
    "toxic_chat_claude_1": (
        3000,
        {
            "gpt-oss-20b": (0.590, 0.431, 0.498, 0.923),
            "gpt-oss-safeguard-20b": (0.882, 0.375, 0.526, 0.998),
        },
    ),
    "toxic_simple": (
        270,
        {
            "gpt-oss-20b": (0.582, 0.600, 0.591, 0.938),
            "gpt-oss-safeguard-20b": (0.809, 0.581, 0.676, 0.996),
        },
    ),
    "toxic_known_dataset": (
        560,
        {
            "gpt-oss-20b": (0.497, 0.525, 0.511, 0.922),
            "gpt-oss-safeguard-20b": (0.689, 0.694, 0.692, 0.992),
        },
    ),
}
SEED_NOTES = (
    "Base vs safeguard agreement on the same 2000 items: 94-96%, Cohen's kappa about 0.5.",
    "The same hosted configuration gave F1 .737 one month and .652 the next (hosted drift).",
)

BENCHMARKS = {"toxic-chat": re.compile(r"toxic[-_]?chat", re.IGNORECASE)}


def detect_benchmark(dataset: str | None) -> str | None:
    """'toxic-chat' when a dataset path/name looks like ToxicChat, else None."""
    if not dataset:
        return None
    return next((name for name, pat in BENCHMARKS.items() if pat.search(dataset)), None)


def model_family(model_ref: str | None) -> str | None:
    """'gpt-oss-safeguard-20b' for 'gpt-oss-safeguard-20b:mxfp4' or a path naming it."""
    if not model_ref:
        return None
    s = model_ref.lower().replace("_", "-")
    for fam in sorted(OPENAI_F1, key=len, reverse=True):
        if fam in s:
            return fam
    return None
