"""Token sampling on raw logits (numpy): greedy by default, seeded temperature/top-k/top-p.

Sampling lives here rather than in llama.cpp's sampler chain so that logits processors
(steering, label scoring) see and edit the real logits, and so that every sequence of a
parallel batch samples exactly as it would alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np

from edge_guard.defaults import DEFAULT_MAX_TOKENS
from edge_guard.errors import EdgeGuardError

if TYPE_CHECKING:
    from edge_guard.harmony.vocab import Vocab

# (output ids so far, logits) -> logits (may edit in place and return None).
LogitsProcessor = Callable[[Sequence[int], np.ndarray], "np.ndarray | None"]

SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings; part of every cache key. temperature 0 = greedy.

    Checked when made (`problem()`): temperature a finite number >= 0, top_p in (0, 1],
    top_k an integer >= 0 (0: no cut), seed an integer in [0, 2**63-1] (a negative seed
    is an error, not a random one: every seeded result can be reproduced), max_tokens an
    integer >= 1. Integer-like values (numpy ints) are stored as Python ints.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    max_tokens: int = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        for name in ("top_k", "seed", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, Integral) and not isinstance(value, bool | int):
                object.__setattr__(self, name, int(value))
        problem = self.problem()
        if problem is not None:
            raise EdgeGuardError(problem)

    def problem(self) -> str | None:
        """The first invalid field as a one-line error naming it, or None when valid."""
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                return f"{name} must be a number, got {value!r}"
            if not math.isfinite(value):
                return f"{name} must be a finite number, got {value!r}"
        for name in ("top_k", "seed", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                return f"{name} must be an integer, got {value!r}"
        if self.temperature < 0:
            return f"temperature must be >= 0, got {self.temperature}"
        if not 0 < self.top_p <= 1:
            return f"top_p must be in (0, 1], got {self.top_p}"
        if self.top_k < 0:
            return f"top_k must be >= 0, got {self.top_k}"
        if not 0 <= self.seed <= SEED_MAX:
            return f"seed must be an integer in [0, 2**63-1], got {self.seed}"
        if self.max_tokens < 1:
            return f"max_tokens must be >= 1, got {self.max_tokens}"
        return None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def cache_dict(self) -> dict[str, float | int]:
        """The settings that change the output (the seed is irrelevant when greedy)."""
        d = self.as_dict()
        if self.greedy:
            d.pop("seed")
            d.pop("top_p")
            d.pop("top_k")
        return d


class Sampler:
    """Samples one sequence's tokens; owns that sequence's random generator."""

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config
        self._rng = np.random.default_rng(config.seed) if not config.greedy else None

    def sample(self, logits: np.ndarray) -> int:
        if self._rng is None:
            return int(np.argmax(logits))
        cfg = self.config
        scaled = logits.astype(np.float64) / cfg.temperature
        if cfg.top_k and cfg.top_k < scaled.size:
            kth = np.partition(scaled, -cfg.top_k)[-cfg.top_k]
            scaled[scaled < kth] = -np.inf
        scaled -= scaled.max()
        probs = np.exp(scaled)
        probs /= probs.sum()
        if cfg.top_p < 1.0:
            # Sort only the plausible tokens when they already hold top_p of the mass
            # (exact, and ~100x cheaper than sorting a 201k vocabulary every step).
            cand = np.flatnonzero(probs >= probs.max() * 1e-9)
            if probs[cand].sum() < cfg.top_p:
                cand = np.arange(probs.size)
            order = cand[np.argsort(-probs[cand], kind="stable")]
            cum = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cum, cfg.top_p)) + 1]
            mask = np.zeros_like(probs)
            mask[keep] = probs[keep]
            probs = mask / mask.sum()
        return int(self._rng.choice(probs.size, p=probs))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max()
    return x - np.log(np.exp(x).sum())


class ForcedTokens:
    """A logits processor that makes the model emit a scripted token sequence.

    The decode loop stays real (every token is still evaluated by llama.cpp); only the
    choice is steered. After the script ends, sampling is left alone.
    """

    def __init__(self, script: Sequence[int]) -> None:
        self.script = list(script)
        self.cache_id = "forced:" + ",".join(map(str, self.script))

    def __call__(self, output_ids: Sequence[int], logits: np.ndarray) -> np.ndarray:
        step = len(output_ids)
        if step < len(self.script):
            forced = np.full_like(logits, -np.inf)
            forced[self.script[step]] = 0.0
            return forced
        return logits


class BiasTokens:
    """A logits processor adding fixed biases to some token ids (e.g. to steer an answer)."""

    def __init__(self, bias: dict[int, float]) -> None:
        self.bias = dict(bias)
        self.cache_id = "bias:" + ",".join(f"{k}={v}" for k, v in sorted(self.bias.items()))

    def __call__(self, output_ids: Sequence[int], logits: np.ndarray) -> np.ndarray:
        for tok, b in self.bias.items():
            logits[tok] += b
        return logits


def harmony_script(
    vocab: Vocab, final: str, analysis: str = "ok", channel: str = "final"
) -> list[int]:
    """Token ids of a well-formed completion: analysis message, then `final` on `channel`.

    Used with `ForcedTokens` to steer synthetic models in tests and demos.
    """
    sid = vocab.special_id
    enc = vocab.encoder.encode
    return [
        sid("<|channel|>"),
        *enc("analysis"),
        sid("<|message|>"),
        *enc(analysis),
        sid("<|end|>"),
        sid("<|start|>"),
        *enc("assistant"),
        sid("<|channel|>"),
        *enc(channel),
        sid("<|message|>"),
        *enc(final),
        sid("<|return|>"),
    ]
