"""The engine request of one (text, policy) pair: the lane's prompt as token ids, its
sampling, label ids and event hook (a one-pass lane turns it into a score-only request)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_guard.engine.engine import GenerationRequest
from edge_guard.engine.sampling import LogitsProcessor, SamplingConfig
from edge_guard.harmony.parse import Event
from edge_guard.policy.parsers import score_token_ids


def request_for(lane: Any, item: Any, sampling: SamplingConfig | None,
                processor: LogitsProcessor | None,
                on_event: Callable[[Event], None] | None) -> GenerationRequest:  # fmt: skip
    """The full-reasoning request of `item` under `lane` (a single-policy `Classifier`)."""
    prompt = lane._prompt(item)
    return GenerationRequest(
        prompt.token_ids,
        sampling or lane.sampling,
        prefix_len=prompt.prefix_len,
        logits_processor=processor,
        score_token_ids=score_token_ids(lane.token_map()),
        on_event=on_event,
    )
