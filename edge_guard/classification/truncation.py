"""Fitting one item into the context (`--truncate`): texts cut in their middle, conversations
cut context first, so the judged message is what the model reads.

The budget for the item's content is the context less the prompt scaffolding (policy,
headers, the longest one-pass answer header, so every reasoning mode and both cascade
stages cut alike and share keys) and the output reserve (`max_tokens`, at most half the
context). An item over the budget is cut:

- **a text**: its tokens' middle is dropped for `TRUNCATION_MARKER` (head and tail kept);
- **a conversation**: the context messages (all but the judged one) are cut first, the
  longest first, each in its own middle (a message cut to nothing keeps the marker, so
  numbering and the "Classify message [n]" line stay true); only if the judged message
  alone does not fit is it cut too, in its own middle. Target `all` judges every message:
  they are cut alike.

The cut is recorded (`Fit.record`, into the result's metadata and the cache key): a cut
result never answers for the whole item. An item that cannot fit even cut (the scaffold
alone fills the context) is an error for that item (`Fit.error`), never for the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_guard.conversation import Conversation
from edge_guard.harmony.render import PromptConfig, PromptRenderer

MIN_JUDGED = 8  # fewer tokens of the judged message than this is no longer a fit
CUT_MARK = "[...]"  # a context message cut to nothing

# The marker put where `truncate_middle` cut tokens out (ordinary text, never a control id).
TRUNCATION_MARKER = "\n[...]\n"


def text_problem(text: object) -> str | None:
    """Why `text` cannot be classified, or None. Empty texts and NUL bytes are fine."""
    if not isinstance(text, str):
        return f"text is {type(text).__name__}, not a string"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"text contains an unpaired surrogate at character {exc.start} (invalid Unicode; "
            "decode input with errors='replace')"
        )
    return None


def truncate_middle(ids: list[int], budget: int, marker: list[int]) -> list[int]:
    """`ids` cut to at most `budget` tokens: head + `marker` + tail (the middle is dropped)."""
    if len(ids) <= budget:
        return ids
    room = budget - len(marker)
    if room < 2:
        return ids[: max(0, budget)]
    head = (room + 1) // 2
    return ids[:head] + marker + ids[len(ids) - (room - head) :]


@dataclass(frozen=True)
class Fit:
    """How an item fits: `ids` (its content's token ids, cut) or None when it fits as it
    is; `record` for the metadata and the key; `error` when it cannot fit at all."""

    ids: list[int] | None = None
    record: dict[str, Any] | None = None
    error: str | None = None


class Fitter:
    """Cuts items that do not fit a context of `n_ctx` tokens (see the module doc)."""

    def __init__(
        self,
        renderer: PromptRenderer,
        policy_text: str,
        config: PromptConfig,
        n_ctx: int,
        max_tokens: int,
    ) -> None:
        from edge_guard.classification.onepass import answer_header
        from edge_guard.settings.values import NONE_EMPTY_ANALYSIS

        self.encoder = renderer.encoder
        self.vocab = renderer.vocab
        header = len(answer_header(renderer.vocab, NONE_EMPTY_ANALYSIS))
        self.scaffold = len(renderer.render(policy_text, "", config)) + header
        self.reserve = min(max_tokens, n_ctx // 2)
        self.n_ctx = n_ctx
        self.budget = n_ctx - self.scaffold - self.reserve
        self.marker = self.encoder.encode(TRUNCATION_MARKER)
        self._cache: dict[Any, Fit] = {}

    def fit(self, item: str | Conversation) -> Fit:
        key = item.canonical() if isinstance(item, Conversation) else item
        hit = self._cache.get(key)
        if hit is None:
            hit = (
                self._fit_conversation(item)
                if isinstance(item, Conversation)
                else self._fit_text(item)
            )
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _too_long(self, n_tokens: int) -> Fit:
        return Fit(
            error=(
                f"prompt cannot fit a {self.n_ctx}-token context even truncated: the "
                f"policy prompt takes {self.scaffold} tokens and {self.reserve} are "
                f"kept for the answer, leaving {max(0, self.budget)} for this "
                f"{n_tokens}-token item (raise --ctx or lower --max-tokens)"
            )
        )

    def _fit_text(self, text: str) -> Fit:
        # Every token holds at least one byte: short texts need no tokenizing here.
        if len(text.encode("utf-8", "surrogatepass")) <= self.budget:
            return Fit()
        ids = self.encoder.encode(text)
        if len(ids) <= self.budget:
            return Fit()
        if self.budget < MIN_JUDGED + len(self.marker):
            return self._too_long(len(ids))
        kept = truncate_middle(ids, self.budget, self.marker)
        return Fit(
            kept,
            {
                "truncated": True,
                "truncation": "middle",
                "original_tokens": len(ids),
                "kept_tokens": len(kept),
            },
        )

    # -- conversations -----------------------------------------------------------------------
    def _fit_conversation(self, conv: Conversation) -> Fit:
        ids = self.encoder.encode(conv.render())
        if len(ids) <= self.budget:
            return Fit()
        judged = conv.judged_index
        everyone = list(range(len(conv.messages)))
        context = [i for i in everyone if i != judged] if judged is not None else []
        pieces = [self.encoder.encode(m.content) for m in conv.messages]
        caps: dict[int, int | None] = {}
        # Context first: the largest common cap (water-filling) that fits, maybe zero.
        cut = self._cap(conv, pieces, context, caps)
        judged_cut = False
        if cut is None:
            caps.update(dict.fromkeys(context, 0))
            group = [judged] if judged is not None else everyone
            cut = self._cap(conv, pieces, group, caps, floor=MIN_JUDGED)
            judged_cut = True
            if cut is None:
                return self._too_long(len(ids))
        kept_conv, kept_ids = cut
        numbers = [
            i + 1 for i in everyone if kept_conv.messages[i].content != conv.messages[i].content
        ]
        record = {
            "truncated": True,
            "truncation": "judged" if judged_cut else "context",
            "original_tokens": len(ids),
            "kept_tokens": len(kept_ids),
            "cut_messages": numbers,
            "judged_cut": judged_cut,
        }
        return Fit(kept_ids, record)

    def _cap(
        self,
        conv: Conversation,
        pieces: Sequence[list[int]],
        group: list[int],
        caps: dict[int, int | None],
        floor: int = 0,
    ) -> tuple[Conversation, list[int]] | None:
        """The conversation with `group`'s messages cut to the largest common cap (>= floor)
        that fits the budget, and its ids; None when even the floor does not fit."""
        if not group:
            return None
        longest = max(len(pieces[i]) for i in group)
        low, high, best = floor, longest, None
        while low <= high:  # binary search on the cap, each try rendered and measured
            mid = (low + high) // 2
            trial = self._cut(conv, pieces, {**caps, **dict.fromkeys(group, mid)})
            ids = self.encoder.encode(trial.render())
            if len(ids) <= self.budget:
                best, low = (trial, ids), mid + 1
            else:
                high = mid - 1
        return best

    def _cut(
        self, conv: Conversation, pieces: Sequence[list[int]], caps: dict[int, int | None]
    ) -> Conversation:
        """`conv` with message i's content cut to caps[i] tokens in its middle."""
        messages = []
        for i, m in enumerate(conv.messages):
            cap = caps.get(i)
            content = m.content
            if cap is not None and len(pieces[i]) > cap:
                content = self._cut_text(pieces[i], cap)
            messages.append({"role": m.role, "content": content})
        return Conversation(messages, conv.target)

    def _cut_text(self, ids: list[int], cap: int) -> str:
        if cap <= len(self.marker) + 1:
            return CUT_MARK
        kept = truncate_middle(ids, cap, self.marker)
        head = len(kept) - len(self.marker)
        front = (head + 1) // 2
        text = self.vocab.decode_bytes(kept[:front]).decode("utf-8", "ignore")
        tail = self.vocab.decode_bytes(kept[front + len(self.marker) :]).decode("utf-8", "ignore")
        out = text + TRUNCATION_MARKER + tail
        return out if out.strip() else CUT_MARK
