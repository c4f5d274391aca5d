"""The store key of one (text, policy) pair: what it hashes, and THE function that hashes it.

Every door computes a result's key here (`request_key`, or `Classifier.key`, which calls
it), so the same text, policy and effective options give the same store row whichever
door computed it: the CLI, the Python API, runs, the TUI and the server alike.

The key hashes everything that changes the model's output — model identity (sha256 of
the GGUF or the server's identity), engine version, the numerics class, prompt style,
effort, date, identity line, policy text, the text (a `Conversation`: its rendering and
its canonical JSON, target included), sampling, the scored labels, the reasoning path and
cascade band, steering, and the truncation record when an item was cut — and nothing
else (not the parser: a parser edit re-parses the stored answer).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edge_guard.classification.cascade import path_fields
from edge_guard.conversation import Conversation, Item, item_content
from edge_guard.engine.sampling import LogitsProcessor, SamplingConfig

if TYPE_CHECKING:
    from edge_guard.classification.lane import Lane

KEY_VERSION = 2  # 2: the backend's numerics class joined the key (older rows miss)


def key_fields(
    lane: Lane,
    item: Item,
    sampling: SamplingConfig | None = None,
    processor: LogitsProcessor | None = None,
) -> dict[str, Any]:
    """What the key of `item` under `lane` (a single-policy `Classifier`) hashes."""
    from edge_guard.classification.request import fit_for

    s = sampling or lane.sampling
    cfg = lane.prompt_config
    fields: dict[str, Any] = {
        "v": KEY_VERSION,
        "model": lane.backend.identity(),
        "engine": lane.backend.engine_version(),
        "style": cfg.style,
        "effort": cfg.effort,
        "date": cfg.date,
        "identity": cfg.identity,
        "policy": lane.policy.text,
        "text": item_content(item),  # a conversation: its rendering (+ canonical form below)
        "sampling": s.cache_dict(),
        "score_labels": list(lane.policy.output.labels) if lane.policy.output.closed else [],
    }
    if isinstance(item, Conversation):
        fields["conversation"] = item.canonical()
    fields.update(path_fields(lane))  # one-pass / cascade results: keys of their own
    numerics = getattr(lane.backend, "numerics", None)
    if callable(numerics):  # batch width, flash attention, batch size, GPU split
        fields["numerics"] = numerics(lane.parallel)
    if processor is not None:
        # Steered outputs never share a key with free generation.
        fields["steer"] = getattr(processor, "cache_id", None) or uuid.uuid4().hex
    record = fit_for(lane, item).record
    if record is not None:  # a cut item never answers for the whole one
        fields["truncate"] = record
    return fields


def cache_key(fields: Mapping[str, Any]) -> str:
    """The sha256 of `fields` (canonical JSON): the store row's key."""
    blob = json.dumps(dict(fields), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def request_key(
    lane: Lane,
    item: Item,
    sampling: SamplingConfig | None = None,
    processor: LogitsProcessor | None = None,
) -> str:
    """THE key of `item` under `lane` (a single-policy `Classifier` built from a
    `Settings` by `api.build_classifier`), with `sampling` for this request if given."""
    return cache_key(key_fields(lane, item, sampling, processor))
