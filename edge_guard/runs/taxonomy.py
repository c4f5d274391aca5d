"""Taxonomy mode's execution: every member of a set answered from one prompt per text.

- One pass (`reasoning` none / none-empty-analysis; the cheap path): per text, ONE
  score-only request: the taxonomy prompt + the final-channel header + the tokens every
  cue starts with, and one branch per member holding the rest of its cue (``{"name":``:
  2 to 6 tokens). The taxonomy prompt's prefix (every policy) is resident; the engine
  decodes the text and every member's cue in one batch, the cues in sequences of their
  own sharing the text's KV cells (`engine.step`), and reads each cue's next-token
  log-probs of ``0`` / ``1``: P(violation), decided by `onepass.decide` with the
  member's threshold. Member k's score is the one-pass score of prompt + header + cue(k)
  evaluated alone (bit for bit in the tests).
- Full reasoning: one reasoning pass per text (`policy.taxonomy.taxonomy_policy` through a
  `Classifier`), its answer split per member (`policy.taxonomy.split_answer`).

Each member's result is its own stored row (key: the taxonomy prompt's key, the member,
the scoring), linked to its run item, so reruns and resumed runs read it back without the
model. `iter_taxonomy` has `runs.multi.iter_combined`'s signature.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_guard.classification import onepass
from edge_guard.engine.engine import GenerationRequest
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.policy.sets import PolicySet, SetMember
from edge_guard.policy.taxonomy import (
    MODE_TAXONOMY,
    SCORE_VERSION,
    check_members,
    cue_text,
    split_answer,
    taxonomy_policy,
)
from edge_guard.policy.thresholds import apply_threshold
from edge_guard.response import ModelResponse, Timings
from edge_guard.result import ClassificationResult, MultiResult
from edge_guard.settings.values import ONE_PASS_MODES

if TYPE_CHECKING:
    from edge_guard.classification.classifier import Classifier
    from edge_guard.classification.lane import Lane, RunItem
    from edge_guard.harmony.vocab import Vocab


@dataclass(frozen=True)
class Cues:
    """What the one-pass path appends to a prompt: the answer header and the tokens every
    cue starts with (`shared`), then the rest of one cue per member; `scoring` holds the
    0/1 tokens scored after a cue."""

    mode: str
    shared: tuple[int, ...]  # header + the cues' common leading tokens
    cues: tuple[tuple[str, tuple[int, ...]], ...]  # (member name, rest of its cue), set order
    scoring: onepass.LabelScoring


def make_cues(pset: PolicySet, vocab: Vocab, mode: str) -> Cues:
    """The header and cues of `pset`'s members for one-pass `mode` (binary members only)."""
    check_members(pset)
    if mode not in ONE_PASS_MODES:
        raise EdgeGuardError(
            f"the one-pass taxonomy path needs --reasoning "
            f"{' or '.join(ONE_PASS_MODES)}, not {mode!r}"
        )
    enc = vocab.encoder.encode
    full = [enc(cue_text(m.name)) for m in pset.members]
    n = 0  # the common leading tokens, leaving every cue at least one token of its own
    while all(len(ids) > n + 1 and ids[n] == full[0][n] for ids in full):
        n += 1
    cues = tuple((m.name, tuple(ids[n:])) for m, ids in zip(pset.members, full, strict=True))
    scoring = onepass.label_scoring(pset.members[0].policy.output, vocab)  # binary: "0"/"1"
    shared = (*onepass.answer_header(vocab, mode), *full[0][:n])
    return Cues(mode, shared, cues, scoring)


def warm_request(prompt_ids: Sequence[int], prefix_len: int) -> GenerationRequest:
    """A request that makes the policy prefix resident before texts extend it (so a text
    never re-evaluates the policy, and the prefix alone is what gets snapshotted)."""
    ids = list(prompt_ids[: prefix_len + 1])
    return GenerationRequest(
        ids, SamplingConfig(max_tokens=1), prefix_len=prefix_len, score_only=True
    )


def text_request(
    prompt_ids: Sequence[int],
    prefix_len: int,
    cues: Cues,
    members: Sequence[int] | None = None,
    sampling: SamplingConfig | None = None,
) -> GenerationRequest:
    """One text's score-only request: prompt + header + the cues' common start, and a
    branch per member (`members`: their indices, default all, set order) holding the rest
    of its cue. `prefix_len`: the taxonomy prompt's resident prefix (every policy)."""
    which = range(len(cues.cues)) if members is None else members
    return GenerationRequest(
        [*prompt_ids, *cues.shared],
        sampling or SamplingConfig(max_tokens=1),
        prefix_len=prefix_len,
        score_only=True,
        score_token_ids=cues.scoring.score_token_ids,
        branches=[list(cues.cues[k][1]) for k in which],
    )


def member_response(response: ModelResponse, k: int, cue: Sequence[int]) -> ModelResponse:
    """Branch `k`'s share of a text request's response: the score response of prompt + its
    cue (the shared part counted as cached: evaluated once for every member)."""
    prompt = [*response.prompt_token_ids, *cue]
    if response.error:
        return ModelResponse.failed(response.error, prompt, response.model)
    lps = response.branch_logprobs
    t = response.timings
    n = len(response.prompt_token_ids)
    return ModelResponse(
        None,
        "",
        response.finish_reason,
        prompt_token_ids=prompt,
        timings=Timings(prompt_tokens=len(prompt), cached_tokens=n, prompt_ms=t.prompt_ms),
        final_token_logprobs=lps[k] if lps is not None and k < len(lps) else None,
        model=response.model,
    )


def member_result(
    member: SetMember, cues: Cues, response: ModelResponse, set_name: str
) -> ClassificationResult:
    """A member's one-pass result from its score response (undetermined on an error)."""
    scores = None
    if not response.error:
        scores = onepass.label_probs(member.policy.output, cues.scoring, response)
    result = onepass.decide(member.policy, scores, response, cues.mode)
    result.metadata.update({"mode": MODE_TAXONOMY, "taxonomy": set_name})
    return result


# -- through the classifier's store ----------------------------------------------------------
def taxonomy_classifier(base: Lane, pset: PolicySet) -> Classifier:
    """A full-reasoning classifier of the taxonomy policy sharing `base`'s backend, store,
    prompt, sampling and truncation (its prompt and key are the one-pass path's too)."""
    from edge_guard.runs.multi import member_classifier

    return member_classifier(base, taxonomy_policy(pset), modes=False)


def _check_base(base: Lane) -> None:
    if getattr(base, "cascade", None) is not None:
        raise EdgeGuardError(
            "taxonomy mode has no cascade: give --reasoning none (one pass "
            "for every policy) or full (one reasoning pass per text)"
        )


class _Scorer:
    """The one-pass path for one classifier setup: keys, requests, rows."""

    def __init__(self, base: Lane, pset: PolicySet) -> None:
        _check_base(base)
        onepass.check_backend(base.backend, base.reasoning)
        self.pset, self.clf = pset, taxonomy_classifier(base, pset)
        self.cues = make_cues(pset, base.backend.vocab(), base.reasoning)

    def key(self, item: Any, member: SetMember) -> str:
        fields = {
            **self.clf.key_fields(item),
            "taxonomy_score": {
                "v": SCORE_VERSION,
                "reasoning": self.cues.mode,
                "member": member.name,
                "cue": cue_text(member.name),
                "labels": list(member.policy.output.labels),
            },
        }
        blob = json.dumps(fields, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()

    def stored(self, key: str, member: SetMember, item: Any) -> ClassificationResult | None:
        row = self.clf.store.get(key) if self.clf.use_cache else None
        if row is None or row.get("error"):
            return None
        result = member_result(member, self.cues, onepass.stored_response(row), self.pset.name)
        return self.named(result, member, item, key, cached=True)

    def named(
        self,
        result: ClassificationResult,
        member: SetMember,
        item: Any,
        key: str,
        cached: bool = False,
    ) -> ClassificationResult:
        from edge_guard.conversation import Conversation, item_text

        result.text, result.policy, result.key = item_text(item), member.name, key
        result.cached = cached
        if isinstance(item, Conversation):
            result.conversation = item.canonical()
        response = result.model_response
        result.error = result.error or (response.error if response is not None else None)
        return result

    def save(
        self,
        result: ClassificationResult,
        response: ModelResponse,
        member: SetMember,
        item: Any,
        run_item: RunItem | None,
    ) -> None:
        row = self.clf.result_row(result, response, item, result.key or "", self.clf.sampling)
        row.update(
            {
                "policy_name": member.name,
                "policy_hash": member.policy.hash,
                "policy_text_hash": member.policy.text_hash,
                "prompt_token_ids": [],
            }
        )  # the ids follow from text + key (13 x 8k ids)
        self.clf.store.put(row, run_item.row(result.key or "") if run_item is not None else None)

    def link(self, member: SetMember, key: str, run_item: RunItem) -> None:
        from edge_guard.store import utcnow

        with self.clf.store.transaction() as db:
            db.table("run_items").upsert(
                {
                    **run_item.row(key),
                    "extra": json.dumps(run_item.extra or {}),
                    "policy_hash": member.policy.hash,
                    "created_at": utcnow(),
                },
                pk=("run", "idx"),
            )

    def reject(self, member: SetMember, item: Any, key: str, problem: str) -> ClassificationResult:
        response = ModelResponse.failed(problem, [], self.clf.backend.model_ref)
        result = onepass.decide(member.policy, None, response, self.cues.mode)
        result.metadata.update({"mode": MODE_TAXONOMY, "taxonomy": self.pset.name})
        return self.named(result, member, item, key)


def iter_scored(
    base: Lane,
    pset: PolicySet,
    texts: Sequence[Any],
    pairs: Sequence[tuple[int, int]],
    items: Sequence[RunItem] | None = None,
) -> Iterator[tuple[int, ClassificationResult]]:
    """(pair position, result) for (text idx, member idx) pairs by the one-pass path: stored
    rows first, then one request per text for its missing members, every text in one
    backend call (the engine decodes several texts together, each with its members' cues)."""
    from edge_guard.classification.truncation import text_problem
    from edge_guard.conversation import item_content

    sc = _Scorer(base, pset)
    todo: dict[int, list[tuple[int, int, str]]] = {}  # text -> [(pair position, member, key)]
    for j, (t, p) in enumerate(pairs):
        member, item = pset.members[p], texts[t]
        key = sc.key(item, member)
        problem = text_problem(item_content(item))
        if problem:  # an error for this text's pairs (stored, so a run counts it), not the batch
            res = sc.reject(member, item, key, problem)
            storable = item_content(item).encode("utf-8", "backslashreplace").decode("utf-8")
            sc.save(res, res.model_response, member, storable, items[j] if items else None)  # type: ignore[arg-type]
            yield j, apply_threshold(res, member.threshold, member.policy)
            continue
        hit = sc.stored(key, member, item)
        if hit is not None:
            if items is not None:
                sc.link(member, key, items[j])
            yield j, apply_threshold(hit, member.threshold, member.policy)
            continue
        todo.setdefault(t, []).append((j, p, key))
    order = list(todo.items())
    requests = []
    for t, wanted in order:
        prompt = sc.clf.prompt(texts[t])
        members = [p for _j, p, _key in wanted]
        requests.append(
            text_request(prompt.token_ids, prompt.prefix_len, sc.cues, members, sc.clf.sampling)
        )
    if not requests:  # every pair stored (or refused)
        return
    for n, response in base.backend.execute(requests, n_parallel=base.parallel):
        t, wanted = order[n]
        for b, (j, p, key) in enumerate(wanted):
            member, item = pset.members[p], texts[t]
            own = member_response(response, b, sc.cues.cues[p][1])
            res = sc.named(member_result(member, sc.cues, own, pset.name), member, item, key)
            sc.save(res, own, member, item, items[j] if items else None)
            yield j, apply_threshold(res, member.threshold, member.policy)


def iter_reasoned(
    base: Lane,
    pset: PolicySet,
    texts: Sequence[Any],
    pairs: Sequence[tuple[int, int]],
    items: Sequence[RunItem] | None = None,
) -> Iterator[tuple[int, ClassificationResult]]:
    """(pair position, result) per pair from one full-reasoning taxonomy answer per text."""
    from edge_guard.runs.members import spread_answers

    _check_base(base)
    clf = taxonomy_classifier(base, pset)
    order = list({t: None for t, _p in pairs})  # each text once, in first-pair order
    answers = clf.iter([texts[t] for t in order])
    yield from spread_answers(clf, pset, pairs, items, answers, split_answer)


def iter_taxonomy(
    base: Lane,
    pset: PolicySet,
    texts: Sequence[Any],
    pairs: Sequence[tuple[int, int]],
    items: Sequence[RunItem] | None = None,
    steer: Any = None,
) -> Iterator[tuple[int, ClassificationResult]]:
    """Results for (text idx, member idx) pairs in taxonomy mode, yielded as they complete:
    the one-pass path when `base` scores in one pass, else one reasoning pass per text."""
    if steer is not None:
        raise EdgeGuardError(
            "taxonomy mode cannot steer generation (no per-text logits "
            "processors); use separate mode"
        )
    if base.reasoning in ONE_PASS_MODES:
        return iter_scored(base, pset, texts, pairs, items)
    return iter_reasoned(base, pset, texts, pairs, items)


def classify_taxonomy(base: Lane, pset: PolicySet, texts: Sequence[Any]) -> list[MultiResult]:
    """One `MultiResult` per text (a result per member, set order, thresholds applied)."""
    from edge_guard.conversation import item_text

    pairs = [(t, p) for t in range(len(texts)) for p in range(len(pset.members))]
    got: list[dict[str, ClassificationResult]] = [{} for _ in texts]
    for j, res in iter_taxonomy(base, pset, texts, pairs):
        t, p = pairs[j]
        got[t][pset.members[p].name] = copy.copy(res)
    return [
        MultiResult(item_text(texts[t]), {n: got[t][n] for n in pset.names})
        for t in range(len(texts))
    ]
