"""Set members from one answer per text: spread each text's answer (combined or taxonomy
mode) over its (text, member) pairs, storing and linking each member's derived row."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_guard.classification.lane import Lane, RunItem
    from edge_guard.policy.core import Policy
    from edge_guard.policy.sets import PolicySet
    from edge_guard.result import ClassificationResult


def spread_answers(
    clf: Lane,
    pset: PolicySet,
    pairs: Sequence[tuple[int, int]],
    items: Sequence[RunItem] | None,
    answers: Iterable[tuple[int, ClassificationResult]],
    split: Callable[[ClassificationResult, PolicySet], dict[str, ClassificationResult]],
) -> Iterator[tuple[int, ClassificationResult]]:
    """(pair position, member result) for every pair, from one answer per text: `answers`
    yields (k, answer) for the k-th distinct text of `pairs` (first-pair order), `split`
    cuts an answer into its members' results; with run items each is stored and linked."""
    by_text: dict[int, list[int]] = {}
    for j, (t, _p) in enumerate(pairs):
        by_text.setdefault(t, []).append(j)
    order = list(by_text)
    for k, result in answers:
        parts = split(result, pset)
        for j in by_text[order[k]]:
            member = pset.members[pairs[j][1]]
            res = parts[member.name]
            if items is not None:
                store_member(clf, res, member.policy, items[j])
            yield j, res


def store_member(clf: Lane, res: ClassificationResult, policy: Policy, item: RunItem) -> None:
    """Store a member's derived row (combined mode) and link it to its run item."""
    resp = res.model_response
    if resp is None or res.key is None:
        return
    row = clf.result_row(res, resp, res.text or "", res.key, clf.sampling)
    row.update(
        {
            "policy_name": policy.name,
            "policy_hash": policy.hash,
            "policy_text_hash": policy.text_hash,
            "prompt_token_ids": [],
        }
    )
    clf.store.put(row, item.row(res.key))
