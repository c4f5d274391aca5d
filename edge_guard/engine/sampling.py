"""Token sampling on raw logits (numpy): greedy by default, seeded temperature/top-k/top-p.

Sampling lives here rather than in llama.cpp's sampler chain so that logits processors
(steering, label scoring) see and edit the real logits, and so that every sequence of a
parallel batch samples exactly as it would alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from edge_guard.errors import EdgeGuardError

# (output ids so far, logits) -> logits (may edit in place and return None).
LogitsProcessor = Callable[[Sequence[int], np.ndarray], "np.ndarray | None"]

DEFAULT_MAX_TOKENS = 4096


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings; part of every cache key. temperature 0 = greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    max_tokens: int = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise EdgeGuardError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise EdgeGuardError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise EdgeGuardError(f"top_k must be >= 0, got {self.top_k}")
        if self.max_tokens < 1:
            raise EdgeGuardError(f"max_tokens must be >= 1, got {self.max_tokens}")

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
    vocab: object, final: str, analysis: str = "ok", channel: str = "final"
) -> list[int]:
    """Token ids of a well-formed completion: analysis message, then `final` on `channel`.

    Used with `ForcedTokens` to steer synthetic models in tests and demos.
    """
    sid = vocab.special_id  # type: ignore[attr-defined]
    enc = vocab.encoder.encode  # type: ignore[attr-defined]
    return [
        sid("<|channel|>"), *enc("analysis"), sid("<|message|>"), *enc(analysis), sid("<|end|>"),
        sid("<|start|>"), *enc("assistant"), sid("<|channel|>"), *enc(channel), sid("<|message|>"),
        *enc(final), sid("<|return|>"),
    ]  # fmt: skip
