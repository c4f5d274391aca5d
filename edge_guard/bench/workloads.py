"""Named `edge-guard bench` workloads: the sizes and variants behind `--workload NAME`.

- ``mini``: the CI-sized run (the ``mini`` synthetic model, a 1000-token policy, 64-token
  texts, 16 output tokens), every variant;
- ``laptop``: gpt-oss-20b's exact shapes (the 12 GB ``20b-shape`` synthetic model) with
  realistic lengths: a ~600-token policy, ~64-token texts and 128 reasoning tokens per
  text (stop tokens suppressed; ``--output-tokens 512`` for the long case), every variant,
  a short run by default (the slow one-at-a-time loops on 2 texts, roofline phases once,
  the generation rate timed over 32 steps);
- ``moderation`` / ``moderation-laptop``: every category of the openai-moderation set per
  text — one one-pass label, 13 separate one-pass labels, the text once against all 13
  with no cue (the floor), taxonomy mode's cheap path and full reasoning combined
  (`bench/moderation.py`) — on the mini model (its context widened to hold the 13
  policies) or the 20b-shape model.

A workload fills in only the options not given on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_guard.bench.moderation import VARIANTS as MODERATION_VARIANTS
from edge_guard.bench.onepass import ONE_PASS_VARIANTS
from edge_guard.errors import EdgeGuardError

_FULL = ("cold", "llama_cpp", "sequential", "parallel")
_ALL = ",".join((*_FULL, *ONE_PASS_VARIANTS))

WORKLOADS: dict[str, dict[str, Any]] = {
    "mini": {
        "synth": "mini",
        "policy_tokens": 1000,
        "text_tokens": 64,
        "output_tokens": 16,
        "n": 64,
        "baseline_n": 10,
        "variants": _ALL,
    },
    "laptop": {
        "synth": "20b-shape",
        "policy_tokens": 600,
        "text_tokens": 64,
        "output_tokens": 128,
        "n": 10,  # 10% and 30% of 10 texts escalate exactly 1 and 3
        "baseline_n": 2,
        "variants": _ALL,
        "roofline_repeats": 1,
        "roofline_steps": 32,
    },
    "moderation": {
        "synth": "mini",
        "moderation_set": "openai-moderation",
        "text_tokens": 64,
        "output_tokens": 16,
        "n": 8,
        "parallel": 16,
        "variants": ",".join(MODERATION_VARIANTS),
    },
    "moderation-laptop": {
        "synth": "20b-shape",
        "moderation_set": "openai-moderation",
        "text_tokens": 64,
        "output_tokens": 128,
        "n": 3,
        "parallel": 16,
        "variants": ",".join(MODERATION_VARIANTS),
    },
}


def apply_workload(name: str | None, params: Mapping[str, Any], given: set[str]) -> dict[str, Any]:
    """`params` with the workload's values for every option not in `given`."""
    out = dict(params)
    if name is None:
        return out
    preset = WORKLOADS.get(name)
    if preset is None:
        raise EdgeGuardError(f"unknown workload {name!r} (choose {', '.join(WORKLOADS)})")
    for key, value in preset.items():
        if key not in given:
            out[key] = value
    if "model" in given:  # --model replaces the workload's synthetic model
        out["synth"] = None
    return out
