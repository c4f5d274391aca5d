"""Combined mode: every policy of a set in one developer message, one strict-JSON answer.

The model answers `{"violations": ["spam"]}` (the names of the violated policies, [] for
none). `parse_violations` is strict: anything but one JSON object whose only key is
`violations`, holding a list of distinct member names, makes *every* policy undetermined
(never "no violation"). `combined_policy(pset)` wraps the set as one `Policy` so the
classifier runs it as one prompt per text (and caches it like any policy);
`split_combined` turns that one result into a result per member policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from edge_guard.policy.core import OutputSpec, Policy
from edge_guard.policy.sets import PolicySet
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult, Verdict

PARSER_VERSION = "combined-v1"
MODE_SEPARATE, MODE_COMBINED = "separate", "combined"
MODES = (MODE_SEPARATE, MODE_COMBINED)
KEY = "violations"

HEADER = """# Several policies at once

## INSTRUCTIONS
Check the user message against each of the {n} policies below, one at a time and
independently: a message may violate several, one, or none of them. Each policy below
describes its own answer format; ignore those formats and answer only in the one here.

Output format: one JSON object on a single line and nothing else (no code fences):
{{"violations": [<the names of the policies the message violates>]}}
Use the policy names exactly as written here: {names}. Name each violated policy once;
answer {{"violations": []}} when the message violates none of them.

## EXAMPLES
- A message violating only `{first}` → {{"violations": ["{first}"]}}
- A message violating none → {{"violations": []}}
"""


def combined_text(pset: PolicySet) -> str:
    """The developer message: the shared instructions, then each member policy verbatim."""
    names = [m.name for m in pset.members]
    parts = [HEADER.format(n=len(names), names=", ".join(f"`{n}`" for n in names), first=names[0])]
    for m in pset.members:
        parts.append(f"\n## POLICY `{m.name}`\n\n{m.policy.text.strip()}\n")
    return "".join(parts)


class DuplicateKey(ValueError):
    """A JSON answer that gives one key twice (which value counts would be a guess)."""


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads` object hook: the object, or `DuplicateKey` for a repeated key."""
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise DuplicateKey(k)
        seen[k] = v
    return seen


def answer_object(answer: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """(the final answer as a JSON object, None) or (None, why it is not one): cut off,
    not JSON, a repeated key, or not an object."""
    if answer is None:
        return None, "no complete final answer"
    try:
        obj = json.loads(answer, object_pairs_hook=no_duplicate_keys)
    except DuplicateKey as exc:
        return None, f"key {exc.args[0]!r} appears more than once"
    except (json.JSONDecodeError, RecursionError):
        return None, "answer is not JSON"
    if not isinstance(obj, dict):
        return None, "answer is not a JSON object"
    return obj, None


def parse_violations(
    answer: str | None, names: Sequence[str]
) -> tuple[list[str] | None, str | None]:
    """(violated names in answer order, None) or (None, why the answer is unusable)."""
    obj, why = answer_object(answer)
    if obj is None:
        return None, why
    if set(obj) != {KEY}:
        extra = sorted(set(obj) - {KEY})
        return None, (f"unexpected key(s) {extra}" if extra else f"no {KEY!r} key")
    value = obj[KEY]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None, f"{KEY!r} is not a list of policy names"
    known = set(names)
    unknown = [v for v in value if v not in known]
    if unknown:
        return None, f"unknown policy name(s) {unknown[:5]}"
    if len(set(value)) != len(value):
        dups = sorted({v for v in value if value.count(v) > 1})
        return None, f"policy name(s) {dups} listed more than once"
    return list(value), None


def member_verdicts(answer: str | None, names: Sequence[str]) -> dict[str, Verdict]:
    """Each member's verdict from a combined answer (all undetermined when it is unusable)."""
    violated, _why = parse_violations(answer, names)
    if violated is None:
        return {n: Verdict.UNDETERMINED for n in names}
    return {n: Verdict.VIOLATION if n in violated else Verdict.NO_VIOLATION for n in names}


def _parser(names: tuple[str, ...]) -> Any:
    def parse(response: ModelResponse) -> ClassificationResult:
        violated, why = parse_violations(response.response, names)
        if violated is None:
            meta: dict[str, Any] = {
                "mode": MODE_COMBINED,
                "policies": list(names),
                "violations": None,
                "combined_error": why,
            }
            return ClassificationResult(None, None, None, meta, response, False)
        meta = {"mode": MODE_COMBINED, "policies": list(names), "violations": violated}
        label = json.dumps(violated, ensure_ascii=False)
        return ClassificationResult(
            bool(violated), label, float(bool(violated)), meta, response, True
        )

    return parse


def combined_policy(pset: PolicySet) -> Policy:
    """The set as one policy: combined text, strict `violations` parser (hash covers both)."""
    names = tuple(pset.names)
    source = f"{PARSER_VERSION}\0" + "\0".join(f"{m.name}={m.policy.hash}" for m in pset.members)
    judged = [j for j in (getattr(m.policy, "judges", "any") for m in pset.members) if j != "any"]
    extra: dict[str, Any] = (
        {"judges": judged[0]} if judged and hasattr(pset.members[0].policy, "judges") else {}
    )
    return Policy(
        name=f"combined:{pset.name}",
        text=combined_text(pset),
        output=OutputSpec(kind="json"),
        description=f"{len(names)} policies in one prompt: {', '.join(names)}",
        path=pset.path,
        parser=_parser(names),
        parser_source=hashlib.sha256(source.encode()).hexdigest(),
        **extra,  # what the members judge (a set's members judge the same input)
    )


def split_combined(
    result: ClassificationResult, pset: PolicySet
) -> dict[str, ClassificationResult]:
    """One result per member from a combined result (a cut-off or bad answer: all undetermined).

    The stored combined row holds `metadata.violations`; a result read back from the
    cache is re-split the same way. Each member result shares the one model response.
    """
    meta = result.metadata or {}
    violated = meta.get(KEY) if result.parsed_successfully and not result.undetermined else None
    if isinstance(violated, list):
        verdicts = {
            n: Verdict.VIOLATION if n in violated else Verdict.NO_VIOLATION for n in pset.names
        }
    else:
        verdicts = {n: Verdict.UNDETERMINED for n in pset.names}
    out: dict[str, ClassificationResult] = {}
    for name, verdict in verdicts.items():
        det = verdict != Verdict.UNDETERMINED
        hit = verdict == Verdict.VIOLATION
        r = ClassificationResult(
            hit if det else None,
            ("1" if hit else "0") if det else None,
            (1.0 if hit else 0.0) if det else None,
            {
                "mode": MODE_COMBINED,
                "combined_policy": result.policy,
                **(
                    {"combined_error": meta["combined_error"]} if meta.get("combined_error") else {}
                ),
            },
            result.model_response,
            det,
            verdict,
        )
        r.text, r.policy, r.cached, r.error = result.text, name, result.cached, result.error
        r.key = member_key(result.key, name) if result.key else None
        out[name] = r
    return out


def member_key(combined_key: str, name: str) -> str:
    """A stable key for one member's row derived from the combined result's key."""
    return hashlib.sha256(f"{combined_key}\0{name}".encode()).hexdigest()
