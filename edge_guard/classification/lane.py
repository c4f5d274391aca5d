"""`Lane`: what the classify steps need from a single-policy classifier, as one typed protocol.

The loop (`classification.loop`), the cascade, one-pass scoring, request building and the
key (`classification.request`, `classification.keys`), the runs (`runs.multi`,
`runs.members`, `runs.taxonomy`) and the service (`service.core`, `service.openai_shape`)
work on lanes through this protocol only; `classification.classifier.Classifier` is its
one implementation. `RunItem` (where a result belongs in a named run) lives here too, as
part of the interface (`Lane.link`, `Lane.reject`).

The members, in the order a (text, policy) pair meets them:

- settings: `policy`, `prompt_config`, `sampling`, `store`, `backend`, `use_cache`,
  `parallel`, `truncate`, `reasoning`, `cascade`;
- the key: `key`, `key_fields`;
- the request: `renderer`, `prompt`, `fitter`, `context_size`, `token_map`,
  `label_scoring` (one-pass); each built once per lane;
- the result: `finish` (a response -> its result), `reject` (an unusable item -> a stored
  error result), `result_row` (a result -> its store row), `result_from_row` (a stored row
  -> this policy version's result), `link` (a stored row -> a run item);
- the whole path: `iter` (a cascade runs its stages through it), `alone`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edge_guard.backends.local import Backend
    from edge_guard.classification.onepass import LabelScoring
    from edge_guard.classification.truncation import Fitter
    from edge_guard.conversation import Item
    from edge_guard.engine.sampling import LogitsProcessor, SamplingConfig
    from edge_guard.harmony.render import Prompt, PromptConfig, PromptRenderer
    from edge_guard.policy.core import Policy
    from edge_guard.response import ModelResponse
    from edge_guard.result import ClassificationResult
    from edge_guard.store import Store


@dataclass
class RunItem:
    """Where a result belongs in a named run (batch runs, studies, comparisons, tests)."""

    run: str
    idx: int
    item_id: str | None = None
    gold: str | None = None
    extra: dict[str, Any] | None = None

    def row(self, key: str) -> dict[str, Any]:
        return {
            "run": self.run,
            "idx": self.idx,
            "item_id": self.item_id,
            "key": key,
            "gold": self.gold,
            "extra": self.extra or {},
        }


class Lane(Protocol):
    """One policy, one model and one prompt/sampling setup (see the module doc)."""

    policy: Policy
    prompt_config: PromptConfig
    sampling: SamplingConfig
    store: Store
    backend: Backend
    use_cache: bool
    parallel: int | None
    truncate: bool
    reasoning: str
    cascade: tuple[float, float] | None

    def alone(self) -> Lane:
        """This lane with its first policy only (shares backend, store and caches)."""
        ...

    # -- the key ---------------------------------------------------------------------------
    def key_fields(
        self,
        item: Item,
        sampling: SamplingConfig | None = None,
        processor: LogitsProcessor | None = None,
    ) -> dict[str, Any]: ...

    def key(
        self,
        text: Item,
        sampling: SamplingConfig | None = None,
        processor: LogitsProcessor | None = None,
    ) -> str: ...

    # -- the request -----------------------------------------------------------------------
    def renderer(self) -> PromptRenderer:
        """The prompt renderer over the backend's vocabulary (built once)."""
        ...

    def prompt(self, item: Item) -> Prompt:
        """The full-reasoning prompt of `item` (cut to fit when the lane truncates)."""
        ...

    def fitter(self) -> Fitter:
        """What cuts over-long items to the context (built once; `--truncate`)."""
        ...

    def context_size(self) -> int | None: ...

    def token_map(self) -> dict[int, str] | None:
        """First-token id -> label for the answer's label scores (None: not scorable)."""
        ...

    def label_scoring(self) -> LabelScoring:
        """What a one-pass request scores (built once)."""
        ...

    # -- results ---------------------------------------------------------------------------
    def finish(
        self, response: ModelResponse, text: Item, key: str, token_map: dict[int, str] | None
    ) -> ClassificationResult:
        """The result of `response` to `text` (stored under `key`)."""
        ...

    def reject(
        self, text: Item, key: str, problem: str, item: RunItem | None
    ) -> ClassificationResult:
        """An error result for an unusable item, stored (so a run counts it) and retried."""
        ...

    def result_row(
        self,
        result: ClassificationResult,
        response: ModelResponse,
        text: Item,
        key: str,
        sampling: SamplingConfig,
    ) -> dict[str, Any]:
        """The store row of `result`."""
        ...

    def result_from_row(self, row: dict[str, Any]) -> ClassificationResult:
        """This policy version's result from a stored row (its own parse of the answer)."""
        ...

    def link(self, item: RunItem, key: str) -> None:
        """Link the stored row `key` to a run's item."""
        ...

    def iter(
        self, texts: Sequence[Item], **kwargs: Any
    ) -> Iterator[tuple[int, ClassificationResult]]: ...
