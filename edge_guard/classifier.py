"""`classify()`: policy + text(s) → `ClassificationResult`s, through the SQLite cache.

The cache key hashes everything that changes the model's output — model identity
(sha256 of the GGUF or the server's identity), engine version, prompt style, effort,
date, identity line, policy text, the text (a `Conversation`: its rendering and its
canonical JSON, target included), sampling settings and the scored labels — and nothing
else (not the parser: a parser edit re-parses the stored answer). A hit returns without
loading the model. Each miss is committed to the store as it completes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import types
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_guard import onepass
from edge_guard.backends.local import Backend, EngineSettings, LocalBackend
from edge_guard.cascade import check as cascade_check
from edge_guard.cascade import first_stage_mode, iter_cascade, parse_bounds, path_fields
from edge_guard.conversation import Conversation, Item, item_content, item_text, judges_problem
from edge_guard.engine import safety
from edge_guard.engine.engine import GenerationRequest
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
from edge_guard.policy.parsers import (
    apply_scores,
    label_scores,
    label_token_map,
    run_parser,
    score_token_ids,
)
from edge_guard.response import ModelResponse
from edge_guard.result import ClassificationResult
from edge_guard.store import Store
from edge_guard.store.rows import parse_fields, response_fields, row_to_result

KEY_VERSION = 1


@dataclass
class RunItem:
    """Where a result belongs in a named run (batch runs, studies, comparisons, tests)."""

    run: str
    idx: int
    item_id: str | None = None
    gold: str | None = None
    extra: dict[str, Any] | None = None

    def row(self, key: str) -> dict[str, Any]:
        return {"run": self.run, "idx": self.idx, "item_id": self.item_id, "key": key,
                "gold": self.gold, "extra": self.extra or {}}  # fmt: skip


def make_backend(model: str | Path | Backend | None, settings: EngineSettings | None = None,
                 *, yes: bool = False, interactive: bool = False) -> Backend:  # fmt: skip
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
    """Classifies texts under one policy, model and prompt/sampling configuration."""

    def __init__(
        self,
        policy: str | Path | types.ModuleType | Policy,
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
        self.policy = load_policy(policy)
        problem = safety.text_problem(self.policy.text)
        if problem:
            raise PolicyError(f"policy {self.policy.name}: {problem}")
        self.prompt_config = PromptConfig(style=style, effort=effort, date=date).resolved()
        self.sampling = sampling or SamplingConfig()
        self.store = store or Store(db)
        self.backend = make_backend(model, engine_settings)
        self.use_cache = use_cache
        self.parallel = parallel
        if isinstance(self.backend, LocalBackend) and self.backend._identity is None:
            self.backend.set_identity(self.store.model_identity(self.backend.path))
        self._token_map: dict[int, str] | bool | None = False
        self._renderer_obj: PromptRenderer | None = None
        # Over-long texts: cut to fit the context (middle dropped) instead of failing.
        self.truncate = truncate
        self._truncator: safety.Truncator | None = None
        # One-pass scoring (reasoning "none" / "none-empty-analysis") and the cascade.
        self.reasoning, self.cascade = onepass.check_mode(reasoning), parse_bounds(cascade)
        first = first_stage_mode(reasoning) if self.cascade else reasoning
        onepass.check_policy(self.policy, first)
        onepass.check_backend(self.backend, first)
        cascade_check(self.policy, self.cascade)

    # -- keys ------------------------------------------------------------------------------
    def key_fields(self, item: Item, sampling: SamplingConfig | None = None,
                   processor: LogitsProcessor | None = None) -> dict[str, Any]:  # fmt: skip
        text = item_content(item)  # a conversation: its rendering (+ canonical form below)
        s = sampling or self.sampling
        cfg = self.prompt_config
        fields = {
            "v": KEY_VERSION,
            "model": self.backend.identity(),
            "engine": self.backend.engine_version(),
            "style": cfg.style,
            "effort": cfg.effort,
            "date": cfg.date,
            "identity": cfg.identity,
            "policy": self.policy.text,
            "text": text,
            "sampling": s.cache_dict(),
            "score_labels": list(self.policy.output.labels) if self.policy.output.closed else [],
        }
        if isinstance(item, Conversation):
            fields["conversation"] = item.canonical()
        fields.update(path_fields(self))  # one-pass / cascade results: keys of their own
        if processor is not None:
            # Steered outputs never share a key with free generation.
            fields["steer"] = getattr(processor, "cache_id", None) or uuid.uuid4().hex
        cut = self._cut(text)[1]
        if cut is not None:
            fields["truncate"] = cut
        return fields

    # -- over-long texts -------------------------------------------------------------------
    def context_size(self) -> int | None:
        """The context the backend will use (local: --ctx capped by the trained context)."""
        b = self.backend
        if isinstance(b, LocalBackend):
            from edge_guard.engine.gguf_check import check_model_file

            train = check_model_file(b.path).arch_key("context_length") or 0
            n = b.settings.n_ctx
            return (min(n, train) if train else n) if n > 0 else (train or None)
        info = getattr(b, "info", None)
        n_ctx = getattr(info(), "n_ctx", None) if callable(info) else None
        return int(n_ctx) if n_ctx else None

    def _cut(self, text: str) -> tuple[list[int] | None, dict[str, Any] | None]:
        """(kept text ids, truncation record) for an over-long text when truncating."""
        if not self.truncate or safety.text_problem(text):
            return None, None
        if self._truncator is None:
            n_ctx = self.context_size()
            if n_ctx is None:
                raise EdgeGuardError("--truncate needs the context size; the backend reports none")
            self._truncator = safety.Truncator(self._renderer(), self.policy.text,
                                               self.prompt_config, n_ctx,
                                               self.sampling.max_tokens)  # fmt: skip
        return self._truncator.cut(text)

    def _prompt(self, item: Item) -> Prompt:
        text = item_content(item)
        renderer = self._renderer()
        kept = self._cut(text)[0]
        if kept is None:
            return renderer.render(self.policy.text, text, self.prompt_config)
        base = renderer.render(self.policy.text, "", self.prompt_config)
        n = base.prefix_len
        return Prompt(base.token_ids[:n] + kept + base.token_ids[n:], n, base.config)

    def key(self, text: Item, sampling: SamplingConfig | None = None,
            processor: LogitsProcessor | None = None) -> str:  # fmt: skip
        blob = json.dumps(
            self.key_fields(text, sampling, processor), sort_keys=True, ensure_ascii=False
        )
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()

    def token_map(self) -> dict[int, str] | None:
        if self._token_map is False:
            self._token_map = label_token_map(self.policy.output, self.backend.vocab().encoder)
        return self._token_map  # type: ignore[return-value]

    # -- classification --------------------------------------------------------------------
    def classify(self, texts: Sequence[Item], **kwargs: Any) -> list[ClassificationResult]:
        out: list[ClassificationResult | None] = [None] * len(texts)
        for i, res in self.iter(texts, **kwargs):
            out[i] = res
        return out  # type: ignore[return-value]

    def iter(
        self,
        texts: Sequence[Item],
        *,
        run_items: Sequence[RunItem] | None = None,
        samplings: Sequence[SamplingConfig] | None = None,
        logits_processors: Sequence[LogitsProcessor | None] | LogitsProcessor | None = None,
        on_event: Callable[[int, Event], None] | None = None,
    ) -> Iterator[tuple[int, ClassificationResult]]:
        """Yield (index, result) as results become available: cache hits first.

        `logits_processors` is one processor for every text or one per text (steering;
        a processor's `cache_id` keeps steered results apart in the cache).
        """
        if self.cascade is not None:  # two stages: edge_guard.cascade
            yield from iter_cascade(self, texts, run_items=run_items, samplings=samplings,
                                    logits_processors=logits_processors, on_event=on_event)  # fmt: skip
            return
        if logits_processors is None or callable(logits_processors):
            procs: list[LogitsProcessor | None] = [logits_processors] * len(texts)  # type: ignore[list-item]
        else:
            procs = list(logits_processors)
        groups: dict[str, list[int]] = {}
        judges = getattr(self.policy, "judges", "any")
        for i, text in enumerate(texts):
            if not isinstance(text, str | Conversation):
                raise EdgeGuardError(f"text {i} is {type(text).__name__}, not a string")
            wrong = judges_problem(judges, text)
            if wrong:
                raise EdgeGuardError(f"policy {self.policy.name} {wrong} (item {i})")
            key = self.key(text, samplings[i] if samplings else None, procs[i])
            problem = safety.text_problem(item_content(text))
            if problem:  # e.g. a lone surrogate: an error for this item, not the batch
                item = run_items[i] if run_items is not None else None
                yield i, self._reject(text, key, problem, item)
                continue
            groups.setdefault(key, []).append(i)
        misses: list[tuple[str, list[int]]] = []
        for key, idxs in groups.items():
            row = self.store.get(key) if self.use_cache else None
            if row is None or row.get("error"):
                misses.append((key, idxs))
                continue
            result = self._from_row(row)
            for i in idxs:
                if run_items is not None:
                    self._link(run_items[i], key)
                yield i, copy.copy(result)
        if not misses:
            return
        token_map = self.token_map()
        requests = []
        for _key, idxs in misses:
            i = idxs[0]
            prompt = self._prompt(texts[i])
            requests.append(
                GenerationRequest(
                    prompt.token_ids,
                    samplings[i] if samplings else self.sampling,
                    prefix_len=prompt.prefix_len,
                    logits_processor=procs[i],
                    score_token_ids=score_token_ids(token_map),
                    on_event=(lambda ev, i=i: on_event(i, ev)) if on_event else None,
                )
            )
        if self.reasoning != "full":
            requests = [onepass.score_request(self, r) for r in requests]
        for j, response in self.backend.execute(requests, n_parallel=self.parallel):
            key, idxs = misses[j]
            text = texts[idxs[0]]
            result = self._finish(response, text, key, token_map)
            sampling = samplings[idxs[0]] if samplings else self.sampling
            row = self._row(result, response, text, key, sampling)
            first = run_items[idxs[0]].row(key) if run_items is not None else None
            self.store.put(row, first)
            for i in idxs[1:]:
                if run_items is not None:
                    self._link(run_items[i], key)
            for i in idxs:
                yield i, copy.copy(result)

    def _renderer(self) -> PromptRenderer:
        if self._renderer_obj is None:
            self._renderer_obj = PromptRenderer(self.backend.vocab())
        return self._renderer_obj

    def _link(self, item: RunItem, key: str) -> None:
        from edge_guard.store import utcnow

        with self.store.transaction() as db:
            db["run_items"].upsert({**item.row(key), "extra": json.dumps(item.extra or {}),
                                    "created_at": utcnow()}, pk=("run", "idx"))  # fmt: skip

    def _finish(self, response: ModelResponse, text: Item, key: str,
                token_map: dict[int, str] | None) -> ClassificationResult:  # fmt: skip
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
        cut = self._cut(item_content(text))[1]
        if cut is not None:
            result.metadata.update(cut)
        return result

    def _reject(self, text: str, key: str, problem: str,
                item: RunItem | None) -> ClassificationResult:  # fmt: skip
        """An error result for an unusable text, stored (so a run counts it) and retried."""
        response = ModelResponse.failed(problem, [], self.backend.model_ref)
        result = ClassificationResult(None, None, None, {}, response, False)
        result.text, result.policy, result.key, result.error = text, self.policy.name, key, problem
        storable = text.encode("utf-8", "backslashreplace").decode("utf-8")
        row = self._row(result, response, storable, key, self.sampling)
        self.store.put(row, item.row(key) if item is not None else None)
        return result

    def _row(self, result: ClassificationResult, response: ModelResponse, text: Item, key: str,
             sampling: SamplingConfig) -> dict[str, Any]:  # fmt: skip
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
            "text": item_text(text),
            "conversation": text.canonical() if isinstance(text, Conversation) else None,
            **response_fields(response),
            "error": result.error or response.error,
            **parse_fields(result),
        }

    def _from_row(self, row: dict[str, Any]) -> ClassificationResult:
        if row["policy_hash"] == self.policy.hash:
            result = row_to_result(row)
        else:  # same prompt, edited parser: re-parse the stored answer
            item: Item = row["text"]
            if row.get("conversation"):
                item = Conversation.from_json(row["conversation"])
            result = self._finish(onepass.stored_response(row), item, row["key"], self.token_map())
            fields = {**parse_fields(result), "policy_hash": self.policy.hash,
                      "policy_name": self.policy.name}  # fmt: skip
            self.store.update_parse(row["key"], fields)
            result.cached = True
            result.error = row.get("error")
        result.policy = self.policy.name
        return result


def classify(
    text: Item | Sequence[Item],
    policy: str | Path | types.ModuleType | Policy,
    model: str | Path | Backend | None = None,
    **kwargs: Any,
) -> ClassificationResult | list[ClassificationResult]:
    """Classify one text or `Conversation` (→ one result) or a list (→ results in order)."""
    iter_keys = ("run_items", "samplings", "logits_processors", "on_event")
    iter_kwargs = {k: kwargs.pop(k) for k in iter_keys if k in kwargs}
    classifier = Classifier(policy, model, **kwargs)
    if isinstance(text, str | Conversation):
        return classifier.classify([text], **iter_kwargs)[0]
    return classifier.classify(list(text), **iter_kwargs)
