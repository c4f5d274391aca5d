"""`/v1/moderations` as OpenAI's moderation endpoint for the openai-moderation set (issue 29).

- `input_texts`: OpenAI's `input` — a string, a list of strings, or a list of content parts
  (`{"type": "text", "text": ...}`, one input whose text parts are joined by newlines). An
  image part is a 400 saying that only text is supported.
- A request that resolves to a set whose members are exactly OpenAI's 13 category keys
  (`OPENAI_CATEGORIES`) runs in taxonomy mode (`edge_guard.runs.taxonomy`): with the
  server's `--reasoning none` (or none-empty-analysis) every category is scored from one
  evaluated prompt per text; with full reasoning one reasoning pass per text answers all
  13. A server started with `--cascade` runs the set in separate mode (taxonomy mode has no
  cascade).
- `shape`: `categories`, `category_scores` and `category_applied_input_types` carry exactly
  the 13 keys (`["text"]` each); our extras stay in their own fields. A category decided by
  full reasoning has no measured P(violation): its score is the model's 0/1 answer. An
  undetermined category is `null` in both and listed in `undetermined` (and `flagged` is
  true: fail closed).
- `preload_taxonomy`: the taxonomy prompt's prefix evaluated once at start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from edge_guard.policy.sets import PolicySet, SetMember
from edge_guard.result import ClassificationResult, Verdict
from edge_guard.service.schemas import FieldError, ModerationResult

if TYPE_CHECKING:
    from edge_guard.classification.lane import Lane
    from edge_guard.policy.core import Policy
    from edge_guard.service.core import JobSpec, ServiceCore

OPENAI_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
TEXT_ONLY = (
    "only text input is supported: this server moderates text, not images (send the "
    "text parts, or a string)"
)


def input_texts(raw: Any) -> list[str]:
    """The texts of OpenAI's `input` (one per result); image parts are refused (400)."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list):
        raise FieldError("input", "must be a string, a list of strings or a list of content parts")
    if all(isinstance(x, str) for x in raw):
        return list(raw)
    texts = []
    for i, part in enumerate(raw):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("image_url", "image", "input_image"):
            raise FieldError(f"input[{i}]", TEXT_ONLY)
        if kind != "text" or not isinstance(part.get("text"), str):
            raise FieldError(
                f"input[{i}]",
                'a content part must be {"type": "text", "text": '
                '"..."} (strings and parts cannot be mixed)',
            )
        texts.append(part["text"])
    return ["\n".join(texts)]


def is_openai(names: list[str]) -> bool:
    return sorted(names) == sorted(OPENAI_CATEGORIES)


def taxonomy_set(spec: Any) -> PolicySet | None:
    """The set to run in taxonomy mode for a `/v1/moderations` `JobSpec`, or None (separate)."""
    return openai_set(spec.policies, spec.thresholds, spec.settings.cascade)


def openai_set(
    policies: list[Policy], thresholds: dict[str, float], cascade: Any
) -> PolicySet | None:
    """`policies` as a taxonomy-mode set when they are OpenAI's 13 categories (no cascade)."""
    if not is_openai([p.name for p in policies]) or cascade:
        return None
    members = tuple(SetMember(p.name, p, thresholds.get(p.name)) for p in policies)
    return PolicySet("openai-moderation", members, thresholds=dict(thresholds))


def iter_job(base: Lane, spec: JobSpec) -> Iterator[tuple[int, int, ClassificationResult]]:
    """(text index, member index, result) of a taxonomy-mode `JobSpec` (its `policy_set`)."""
    from edge_guard.runs.taxonomy import iter_taxonomy

    pset = spec.policy_set
    assert pset is not None
    pairs = [(t, p) for t in range(len(spec.texts)) for p in range(len(pset.members))]
    for j, res in iter_taxonomy(base, pset, spec.texts, pairs):
        t, p = pairs[j]
        yield t, p, res


def shape(result: ModerationResult, results: list[ClassificationResult]) -> ModerationResult:
    """OpenAI's shape for the 13 categories: every key present, a decided category always
    has a score (full reasoning's is its 0/1 answer), undetermined ones stay null."""
    scores = dict(result.category_scores)
    for res in results:
        name = res.policy or ""
        if scores.get(name) is None and res.verdict != Verdict.UNDETERMINED:
            scores[name] = 1.0 if res.verdict == Verdict.VIOLATION else 0.0
    return result.model_copy(update={"category_scores": scores})


def preload_taxonomy(core: ServiceCore, clf: Lane) -> bool:
    """Evaluate the default set's taxonomy prompt prefix once, when the default set runs in
    taxonomy mode; False (nothing done) otherwise."""
    from edge_guard.policy.taxonomy import taxonomy_text
    from edge_guard.runs.taxonomy import warm_request

    policies, thresholds = core.resolve(None)
    pset = openai_set(policies, thresholds, core.settings.cascade)
    if pset is None:
        return False
    prompt = clf.renderer().render(taxonomy_text(pset), "", clf.prompt_config)
    for _ in core.backend.execute([warm_request(prompt.token_ids, prompt.prefix_len)]):
        pass
    return True
