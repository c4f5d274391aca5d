"""Taxonomy mode: every binary member of a set in one prompt, answered as one JSON object
holding a 0/1 per member, so one evaluated prompt answers (or scores) every member.

The developer message (`taxonomy_text`) is the shared instructions, then each member
policy verbatim. The answer is one compact object naming every member once, in any
order: ``{"harassment":0,"hate/threatening":1,...}`` (1 = the text violates that policy).

- Full reasoning: the model reasons once per text and writes the object. `parse_answer`
  is strict: anything but one JSON object whose keys are exactly the member names, each
  0 or 1, makes *every* member undetermined (never "no violation").
- One pass (the cheap path, `edge_guard.runs.taxonomy`): member k's answer is cued with
  ``{"<name>":`` (`cue_text`) right after the final-channel header, and the next token's
  log-probs of ``0`` / ``1`` give its P(violation). One request per text: the prompt up
  to the header, and each member's cue as a branch of it; the engine decodes the text and
  every cue in one batch, so each member costs only its cue's few tokens. The score of
  member k is *defined* as the one-pass label score of the prompt ``render(taxonomy_text,
  text) + header + cue(k)``: evaluated alone or together with the other members, it is
  the same number (bit for bit in the tests, on models whose output matrix is quantized).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from edge_guard.errors import PolicyError
from edge_guard.policy.combined import answer_object
from edge_guard.policy.core import OutputSpec, Policy
from edge_guard.policy.sets import PolicySet
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult, Verdict

MODE_TAXONOMY = "taxonomy"
PARSER_VERSION = "taxonomy-v1"
SCORE_VERSION = 1  # the cue and label scoring of the one-pass path (part of its cache key)

HEADER = """# Several policies at once

## INSTRUCTIONS
Check the content against each of the {n} policies below, one at a time and
independently: content may violate several, one, or none of them. Each policy below
describes its own answer format; ignore those formats and answer only in the one here.

Output format: one compact JSON object on a single line and nothing else (no spaces, no
code fences), with exactly one key per policy, named exactly as written here, each set to
1 if the content violates that policy and 0 if it does not. Keys may come in any order;
give every key once. The keys: {names}.

## EXAMPLES
- Content violating only `{first}` → {{{example_hit}}}
- Content violating none → {{{example_none}}}
"""


def check_members(pset: PolicySet) -> None:
    """PolicyError unless every member is a binary (0/1) policy: the answer holds a 0/1 each."""
    bad = [m.name for m in pset.members if m.policy.output.kind != "binary"]
    if bad:
        raise PolicyError(
            f"set {pset.name}: taxonomy mode needs binary (0/1) policies; "
            f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not"
        )


def _key(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


def _example(names: Sequence[str], hit: str | None) -> str:
    return ",".join(f"{_key(n)}:{1 if n == hit else 0}" for n in names)


def taxonomy_text(pset: PolicySet) -> str:
    """The developer message: the shared instructions, then each member policy verbatim."""
    check_members(pset)
    names = pset.names
    parts = [
        HEADER.format(
            n=len(names),
            names=", ".join(_key(n) for n in names),
            first=names[0],
            example_hit=_example(names, names[0]),
            example_none=_example(names, None),
        )
    ]
    for m in pset.members:
        parts.append(f"\n## POLICY {_key(m.name)}\n\n{m.policy.text.strip()}\n")
    return "".join(parts)


def cue_text(name: str) -> str:
    """The start of an answer that is about to give member `name`'s 0/1: ``{"name":``
    (compact, so the label is the very next token)."""
    return "{" + _key(name) + ":"


def parse_answer(
    answer: str | None, names: Sequence[str]
) -> tuple[dict[str, int] | None, str | None]:
    """({name: 0 or 1} in member order, None) or (None, why the answer is unusable)."""
    obj, why = answer_object(answer)
    if obj is None:
        return None, why
    unknown = [k for k in obj if k not in names]
    if unknown:
        return None, f"unknown policy name(s) {unknown[:5]}"
    missing = [n for n in names if n not in obj]
    if missing:
        return None, f"no answer for {missing[:5]}"
    bad = [k for k, v in obj.items() if isinstance(v, bool) or v not in (0, 1)]
    if bad:
        return None, f"value of {bad[:5]} is not 0 or 1"
    return {n: int(obj[n]) for n in names}, None


def _parser(names: tuple[str, ...]) -> Any:
    def parse(response: ModelResponse) -> ClassificationResult:
        values, why = parse_answer(response.response, names)
        meta: dict[str, Any] = {"mode": MODE_TAXONOMY, "policies": list(names), "answers": values}
        if values is None:
            meta["taxonomy_error"] = why
            return ClassificationResult(None, None, None, meta, response, False)
        hit = [n for n in names if values[n] == 1]
        return ClassificationResult(
            bool(hit), json.dumps(hit, ensure_ascii=False), float(bool(hit)), meta, response, True
        )

    return parse


def taxonomy_policy(pset: PolicySet) -> Policy:
    """The set as one policy (full reasoning): taxonomy text, strict parser (hash covers both)."""
    names = tuple(pset.names)
    source = f"{PARSER_VERSION}\0" + "\0".join(f"{m.name}={m.policy.hash}" for m in pset.members)
    judged = [j for j in (m.policy.judges for m in pset.members) if j != "any"]
    return Policy(
        name=f"taxonomy:{pset.name}",
        text=taxonomy_text(pset),
        output=OutputSpec(kind="json"),
        description=f"{len(names)} policies, one answer key each: {', '.join(names)}",
        path=pset.path,
        parser=_parser(names),
        parser_source=hashlib.sha256(source.encode()).hexdigest(),
        judges=judged[0] if judged else "any",
    )


def member_key(taxonomy_key: str, name: str) -> str:
    """A stable key for one member's row derived from the taxonomy result's key."""
    return hashlib.sha256(f"{taxonomy_key}\0{MODE_TAXONOMY}\0{name}".encode()).hexdigest()


def split_answer(result: ClassificationResult, pset: PolicySet) -> dict[str, ClassificationResult]:
    """One result per member from a full-reasoning taxonomy result (a cut-off or bad answer:
    all undetermined). Each member result shares the one model response; its label is the
    member's own ("1"/"0") mapped to its verdict through the member's violation labels."""
    meta = result.metadata or {}
    values = meta.get("answers") if result.parsed_successfully and not result.undetermined else None
    out: dict[str, ClassificationResult] = {}
    for m in pset.members:
        if isinstance(values, dict) and values.get(m.name) in (0, 1):
            label = str(values[m.name])
            hit = label in m.policy.output.violation
            verdict = Verdict.VIOLATION if hit else Verdict.NO_VIOLATION
            r = ClassificationResult(
                hit, label, float(hit), {}, result.model_response, True, verdict
            )
        else:
            r = ClassificationResult(
                None, None, None, {}, result.model_response, False, Verdict.UNDETERMINED
            )
            if meta.get("taxonomy_error"):
                r.metadata["taxonomy_error"] = meta["taxonomy_error"]
        r.metadata.update(
            {"mode": MODE_TAXONOMY, "taxonomy_policy": result.policy, "reasoning": "full"}
        )
        r.text, r.policy, r.cached, r.error = result.text, m.name, result.cached, result.error
        r.conversation = result.conversation
        r.key = member_key(result.key, m.name) if result.key else None
        out[m.name] = r
    return out
