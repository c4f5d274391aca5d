"""The per-(text, policy) loop of `Classifier.iter`: cache hits, then one backend call.

For each policy ("lane": a single-policy `Classifier` sharing the backend and store) and
each text: unusable texts become stored error results, identical keys are classified
once, stored rows are served first (a hit never loads the model). Every miss of every
policy goes to the backend in ONE `execute` call, so the engine batches all (text, policy)
pairs together; each completed pair is stored (one row per (text, policy)) as it arrives.
Cascade lanes (`edge_guard.classification.cascade`) run their two stages on their own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING

from edge_guard.classification import onepass
from edge_guard.classification.cascade import Processors, iter_cascade
from edge_guard.classification.request import item_problem, request_for
from edge_guard.conversation import Conversation, ConversationNeeded, Item, judges_problem
from edge_guard.engine.sampling import LogitsProcessor, SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import Event
from edge_guard.result import ClassificationResult

if TYPE_CHECKING:
    from edge_guard.classification.lane import Lane, RunItem


def iter_pairs(
    lanes: Sequence[Lane],
    texts: Sequence[Item],
    *,
    run_items: Sequence[Sequence[RunItem] | None] | None = None,
    samplings: Sequence[SamplingConfig] | None = None,
    logits_processors: Processors = None,
    on_event: Callable[[int, Event], None] | None = None,
) -> Iterator[tuple[int, int, ClassificationResult]]:
    """Yield (text index, lane index, result) as results become available: hits first.

    `lanes` are single-policy classifiers sharing one backend; `run_items[lane]` is that
    lane's `RunItem` per text (or None). `logits_processors` is one processor for every
    text or one per text (steering; a processor's `cache_id` keeps steered results apart).
    """
    if logits_processors is None or callable(logits_processors):
        procs: list[LogitsProcessor | None] = [logits_processors] * len(texts)
    else:
        procs = list(logits_processors)
    items: list[Sequence[RunItem] | None] = list(run_items) if run_items else [None] * len(lanes)
    for i, text in enumerate(texts):
        if not isinstance(text, str | Conversation):
            raise EdgeGuardError(f"text {i} is {type(text).__name__}, not a string")
        for lane in lanes:
            judges = getattr(lane.policy, "judges", "any")
            if judges_problem(judges, text):  # the door names the fix (`for_door`)
                raise ConversationNeeded(lane.policy.name, judges, text, i)
    misses: list[tuple[int, str, list[int]]] = []  # (lane, key, text indexes)
    for n, lane in enumerate(lanes):
        if lane.cascade is not None:  # two stages: edge_guard.classification.cascade
            alone = lane.alone()
            for i, res in iter_cascade(
                alone,
                texts,
                run_items=items[n],
                samplings=samplings,
                logits_processors=logits_processors,
                on_event=on_event,
            ):
                yield i, n, res
            continue
        groups: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            key = lane.key(text, samplings[i] if samplings else None, procs[i])
            problem = item_problem(lane, text)
            if problem:  # a lone surrogate, no fit even cut: an error for this item only
                item = items[n][i] if items[n] is not None else None  # type: ignore[index]
                yield i, n, lane.reject(text, key, problem, item)
                continue
            groups.setdefault(key, []).append(i)
        for key, idxs in groups.items():
            row = lane.store.get(key) if lane.use_cache else None
            if row is None or row.get("error"):
                misses.append((n, key, idxs))
                continue
            result = lane.result_from_row(row)
            for i in idxs:
                if items[n] is not None:
                    lane.link(items[n][i], key)  # type: ignore[index]
                yield i, n, copy.copy(result)
    if not misses:
        return
    requests = []
    for n, _key, idxs in misses:
        lane, i = lanes[n], idxs[0]
        request = request_for(
            lane,
            texts[i],
            samplings[i] if samplings else None,
            procs[i],
            partial(on_event, i) if on_event else None,
        )
        if lane.reasoning != "full":
            request = onepass.score_request(lane, request)
        requests.append(request)
    backend, parallel = lanes[0].backend, lanes[0].parallel
    for j, response in backend.execute(requests, n_parallel=parallel):
        n, key, idxs = misses[j]
        lane, text = lanes[n], texts[idxs[0]]
        result = lane.finish(response, text, key, lane.token_map())
        sampling = samplings[idxs[0]] if samplings else lane.sampling
        row = lane.result_row(result, response, text, key, sampling)
        first = items[n][idxs[0]].row(key) if items[n] is not None else None  # type: ignore[index]
        lane.store.put(row, first)
        for i in idxs[1:]:
            if items[n] is not None:
                lane.link(items[n][i], key)  # type: ignore[index]
        for i in idxs:
            yield i, n, copy.copy(result)
