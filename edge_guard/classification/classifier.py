"""`Classifier`: policies + text(s) → `ClassificationResult`s, through the SQLite cache.

A classifier holds one policy or several (one single-policy "lane" per policy, sharing
the backend and the store); `edge_guard.classification.loop.iter_pairs` runs every (text,
policy) pair, all misses in one backend call. `edge_guard.api` builds classifiers from
`Settings` and holds the Python `classify()`.

The cache key (`edge_guard.classification.keys`, one function for every door) hashes everything that
changes the model's output and nothing else; a hit returns without loading the model.
Each miss is committed to the store as it completes.
"""

from __future__ import annotations

import copy
import json
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from edge_guard.backends.local import Backend, EngineSettings, LocalBackend
from edge_guard.classification import onepass
from edge_guard.classification.cascade import check as cascade_check
from edge_guard.classification.cascade import first_stage_mode
from edge_guard.classification.keys import KEY_VERSION, key_fields, request_key
from edge_guard.classification.lane import RunItem
from edge_guard.classification.loop import iter_pairs
from edge_guard.classification.request import context_size, fit_for, make_fitter, prompt_for
from edge_guard.classification.truncation import Fitter, text_problem
from edge_guard.conversation import Conversation, Item, item_text
from edge_guard.engine.sampling import LogitsProcessor, SamplingConfig
from edge_guard.errors import EdgeGuardError, PolicyError
from edge_guard.harmony.parse import Event
from edge_guard.harmony.render import (
    DEFAULT_EFFORT,
    DEFAULT_STYLE,
    Prompt,
    PromptConfig,
    PromptRenderer,
)
from edge_guard.policy.core import Policy, load_policy
from edge_guard.policy.parsers import apply_scores, label_scores, label_token_map, run_parser
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult, MultiResult
from edge_guard.settings.values import check_mode, parse_bounds
from edge_guard.store import Store
from edge_guard.store.rows import parse_fields, response_fields, row_to_result, storable_text

__all__ = ["KEY_VERSION", "Classifier", "RunItem", "make_backend"]


PolicyArg = str | Path | types.ModuleType | Policy


def make_backend(
    model: str | Path | Backend | None,
    settings: EngineSettings | None = None,
    *,
    yes: bool = False,
    interactive: bool = False,
) -> Backend:
    """A backend for a model reference (manifest id, path, hf:, synth:) or a ready backend."""
    if model is not None and not isinstance(model, str | Path):
        return model
    from edge_guard import registry

    ensure = getattr(registry, "ensure_model", None)
    if ensure is not None:
        resolved = ensure(None if model is None else str(model), yes=yes, interactive=interactive)
    else:
        resolved = registry.resolve(None if model is None else str(model))
    return LocalBackend(resolved.path, model_ref=resolved.ref, settings=settings)


class Classifier:
    """Classifies texts under one policy or several, one model and one prompt/sampling setup.

    `Classifier(policy, model)` or `Classifier([p1, p2], model)`: `.policy` is the first
    policy, `.policies` all of them, `.lanes` one single-policy classifier per policy.
    """

    def __init__(
        self,
        policy: PolicyArg | Sequence[PolicyArg],
        model: str | Path | Backend | None = None,
        *,
        style: str = DEFAULT_STYLE,
        effort: str = DEFAULT_EFFORT,
        date: str | None = None,
        sampling: SamplingConfig | None = None,
        store: Store | None = None,
        db: str | Path | None = None,
        use_cache: bool = True,
        parallel: int | None = None,
        engine_settings: EngineSettings | None = None,
        truncate: bool = False,
        reasoning: str = "full",
        cascade: str | tuple[float, float] | None = None,
    ) -> None:
        # Every keyword argument (first statement: locals() holds only the parameters).
        options = {k: v for k, v in locals().items() if k not in ("self", "policy", "model")}
        given = (
            [policy] if isinstance(policy, str | Path | types.ModuleType | Policy) else list(policy)
        )
        if not given:
            raise EdgeGuardError("no policy given")
        self.policy = load_policy(given[0])
        problem = text_problem(self.policy.text)
        if problem:
            raise PolicyError(f"policy {self.policy.name}: {problem}")
        self.prompt_config = PromptConfig(style=style, effort=effort, date=date).resolved()
        self.sampling = sampling or SamplingConfig()
        self.store = store or Store(db)
        self.backend = make_backend(model, engine_settings)
        self.use_cache = use_cache
        self.parallel = parallel
        if isinstance(self.backend, LocalBackend) and self.backend.identifier is None:
            self.backend.identify_with(self.store.model_identity)  # a memo by file stamp
        # Built once, on first use (`token_map`, `renderer`, `fitter`, `label_scoring`).
        self._token_map: dict[int, str] | bool | None = False
        self._renderer: PromptRenderer | None = None
        self._fitter: Fitter | None = None
        self._label_scoring: onepass.LabelScoring | None = None
        # Over-long items: cut to fit the context (classification.truncation) instead of failing.
        self.truncate = truncate
        # One-pass scoring (reasoning "none" / "none-empty-analysis") and the cascade.
        self.reasoning, self.cascade = check_mode(reasoning), parse_bounds(cascade)
        first = first_stage_mode(reasoning) if self.cascade else reasoning
        onepass.check_policy(self.policy, first)
        onepass.check_backend(self.backend, first)
        cascade_check(self.policy, self.cascade)
        # The other policies: one lane each, sharing this backend and store.
        shared = {**options, "store": self.store}
        self.others: list[Classifier] = [Classifier(p, self.backend, **shared) for p in given[1:]]
        names = [p.name for p in self.policies]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise EdgeGuardError(f"policy {', '.join(twice)} given more than once")

    @property
    def lanes(self) -> list[Classifier]:
        """One single-policy classifier per policy (this one first)."""
        return [self, *self.others]

    @property
    def policies(self) -> list[Policy]:
        return [lane.policy for lane in self.lanes]

    def alone(self) -> Classifier:
        """This classifier with its first policy only (shares backend, store and caches)."""
        if not self.others:
            return self
        view = copy.copy(self)
        view.others = []
        return view

    # -- keys and prompts (edge_guard.classification.keys, edge_guard.classification.request) -----------------------
    def key_fields(
        self,
        item: Item,
        sampling: SamplingConfig | None = None,
        processor: LogitsProcessor | None = None,
    ) -> dict[str, Any]:
        return key_fields(self, item, sampling, processor)

    def key(
        self,
        text: Item,
        sampling: SamplingConfig | None = None,
        processor: LogitsProcessor | None = None,
    ) -> str:
        """THE store key (`edge_guard.classification.keys.request_key`) of `text` under this policy."""
        return request_key(self, text, sampling, processor)

    def context_size(self) -> int | None:
        """The context the backend will use (local: --ctx capped by the trained context)."""
        return context_size(self)

    def prompt(self, item: Item) -> Prompt:
        """The full-reasoning prompt of `item` (cut to fit when truncating)."""
        return prompt_for(self, item)

    def renderer(self) -> PromptRenderer:
        """The prompt renderer over the backend's vocabulary (built once)."""
        if self._renderer is None:
            self._renderer = PromptRenderer(self.backend.vocab())
        return self._renderer

    def fitter(self) -> Fitter:
        """What cuts over-long items to the context (built once: its budget depends on the
        policy and settings)."""
        if self._fitter is None:
            self._fitter = make_fitter(self)
        return self._fitter

    def label_scoring(self) -> onepass.LabelScoring:
        """What a one-pass request scores for this policy (built once)."""
        if self._label_scoring is None:
            self._label_scoring = onepass.label_scoring(self.policy.output, self.backend.vocab())
        return self._label_scoring

    def token_map(self) -> dict[int, str] | None:
        if self._token_map is False:
            self._token_map = label_token_map(self.policy.output, self.backend.vocab().encoder)
        return self._token_map  # type: ignore[return-value]

    # -- classification --------------------------------------------------------------------
    def classify(
        self, texts: Sequence[Item], **kwargs: Any
    ) -> list[ClassificationResult] | list[MultiResult]:
        """Results in input order; with several policies, one `MultiResult` per text."""
        if self.others:
            return self.classify_multi(texts, **kwargs)
        out: list[ClassificationResult | None] = [None] * len(texts)
        for i, res in self.iter(texts, **kwargs):
            out[i] = res
        return out  # type: ignore[return-value]

    def classify_multi(self, texts: Sequence[Item], **kwargs: Any) -> list[MultiResult]:
        """One `MultiResult` per text (a result per policy, in policy order)."""
        got: list[dict[str, ClassificationResult]] = [{} for _ in texts]
        for i, name, res in self.iter_pairs(texts, **kwargs):
            got[i][name] = res
        names = [p.name for p in self.policies]
        return [
            MultiResult(item_text(t), {n: got[i][n] for n in names}) for i, t in enumerate(texts)
        ]

    def iter(
        self, texts: Sequence[Item], **kwargs: Any
    ) -> Iterator[tuple[int, ClassificationResult]]:
        """Yield (text index, result) as results become available: cache hits first.

        With several policies every (text, policy) pair is yielded (`result.policy` names
        it). Keywords as `iter_pairs`.
        """
        for i, _name, res in self.iter_pairs(texts, **kwargs):
            yield i, res

    def iter_pairs(
        self,
        texts: Sequence[Item],
        *,
        run_items: Sequence[RunItem] | dict[str, Sequence[RunItem]] | None = None,
        samplings: Sequence[SamplingConfig] | None = None,
        logits_processors: Sequence[LogitsProcessor | None] | LogitsProcessor | None = None,
        on_event: Callable[[int, Event], None] | None = None,
    ) -> Iterator[tuple[int, str, ClassificationResult]]:
        """Yield (text index, policy name, result) for every pair: cache hits first.

        `run_items`: one `RunItem` per text (one policy), or {policy name: RunItems}.
        `logits_processors` is one processor for every text or one per text (steering;
        a processor's `cache_id` keeps steered results apart in the cache).
        """
        lanes = self.lanes
        per_lane: list[Sequence[RunItem] | None] | None = None
        if isinstance(run_items, dict):
            unknown = sorted(set(run_items) - {p.name for p in self.policies})
            if unknown:
                raise EdgeGuardError(f"run items for unknown policy {', '.join(unknown)}")
            per_lane = [run_items.get(lane.policy.name) for lane in lanes]
        elif run_items is not None:
            if self.others:
                raise EdgeGuardError("several policies need run items per policy name")
            per_lane = [run_items]
        for i, n, res in iter_pairs(
            lanes,
            texts,
            run_items=per_lane,
            samplings=samplings,
            logits_processors=logits_processors,
            on_event=on_event,
        ):
            yield i, lanes[n].policy.name, res

    # -- results (the `Lane` protocol: edge_guard.classification.lane) ----------------------
    def link(self, item: RunItem, key: str) -> None:
        from edge_guard.store import utcnow

        with self.store.transaction() as db:
            db.table("run_items").upsert(
                {
                    **item.row(key),
                    "extra": json.dumps(item.extra or {}),
                    "policy_hash": self.policy.hash,  # reads this parse
                    "created_at": utcnow(),
                },
                pk=("run", "idx"),
            )

    def finish(
        self, response: ModelResponse, text: Item, key: str, token_map: dict[int, str] | None
    ) -> ClassificationResult:
        if self.reasoning != "full":
            result = onepass.finish(self, response)
        else:
            result = run_parser(self.policy, response)
            apply_scores(
                result,
                self.policy,
                label_scores(self.policy.output, token_map, response.final_token_logprobs),
            )
        result.text, result.policy, result.key = item_text(text), self.policy.name, key
        if isinstance(text, Conversation):
            result.conversation = text.canonical()
        if response.error and not result.error:
            result.error = response.error
        cut = fit_for(self, text).record
        if cut is not None:
            result.metadata.update(cut)
        return result

    def reject(
        self, text: Item, key: str, problem: str, item: RunItem | None
    ) -> ClassificationResult:
        """An error result for an unusable item, stored (so a run counts it) and retried."""
        response = ModelResponse.failed(problem, [], self.backend.model_ref)
        result = ClassificationResult(None, None, None, {}, response, False)
        result.text, result.policy, result.key = item_text(text), self.policy.name, key
        result.error = problem
        storable: Item = text
        if isinstance(text, Conversation):
            result.conversation = text.canonical()
        else:
            storable = text.encode("utf-8", "backslashreplace").decode("utf-8")
        row = self.result_row(result, response, storable, key, self.sampling)
        self.store.put(row, item.row(key) if item is not None else None)
        return result

    def result_row(
        self,
        result: ClassificationResult,
        response: ModelResponse,
        text: Item,
        key: str,
        sampling: SamplingConfig,
    ) -> dict[str, Any]:
        cfg = self.prompt_config
        return {
            "key": key,
            "run_id": None,
            "model": self.backend.identity(),
            "model_ref": self.backend.model_ref,
            "engine": self.backend.engine_version(),
            "backend": self.backend.name,
            "style": cfg.style,
            "effort": cfg.effort,
            "date": cfg.date,
            "sampling": sampling.as_dict(),
            "policy_name": self.policy.name,
            "policy_hash": self.policy.hash,
            "policy_text_hash": self.policy.text_hash,
            "text": storable_text(item_text(text), response),  # never ran: a head only
            "conversation": text.canonical() if isinstance(text, Conversation) else None,
            **response_fields(response),
            "error": result.error or response.error,
            **parse_fields(result),
        }

    def result_from_row(self, row: dict[str, Any]) -> ClassificationResult:
        # This policy version's own parse of the shared answer (`parses`): another
        # version's parse is never read or rewritten, so runs never cross.
        parse = self.store.get_parse(row["key"], self.policy.hash)
        if parse is not None and not parse.get("error"):
            result = row_to_result({**row, **parse})
        else:  # same prompt, another parser (or a stale error parse): parse the stored answer
            item: Item = row["text"]
            if row.get("conversation"):
                item = Conversation.from_json(row["conversation"])
            result = self.finish(onepass.stored_response(row), item, row["key"], self.token_map())
            fields = {
                **parse_fields(result),
                "policy_name": self.policy.name,
                "error": result.error,
            }
            self.store.put_parse(row["key"], self.policy.hash, fields)
            result.cached = True
        result.policy = self.policy.name
        return result
