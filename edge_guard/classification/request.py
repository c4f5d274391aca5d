"""The engine request of one (text, policy) pair: the lane's prompt as token ids (fitted to
the context when truncating, `edge_guard.classification.truncation`), its sampling, label ids and event
hook (a one-pass lane turns it into a score-only request)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from edge_guard.classification.truncation import Fit, Fitter, text_problem
from edge_guard.conversation import Item, item_content
from edge_guard.engine.engine import GenerationRequest
from edge_guard.engine.sampling import LogitsProcessor, SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import Event
from edge_guard.harmony.render import Prompt, PromptConfig, PromptRenderer
from edge_guard.policy.parsers import score_token_ids

if TYPE_CHECKING:
    from edge_guard.classification.lane import Lane

NO_CUT = Fit()


def request_for(
    lane: Lane,
    item: Item,
    sampling: SamplingConfig | None,
    processor: LogitsProcessor | None,
    on_event: Callable[[Event], None] | None,
) -> GenerationRequest:
    """The full-reasoning request of `item` under `lane` (a single-policy `Classifier`)."""
    prompt = lane.prompt(item)
    return GenerationRequest(
        prompt.token_ids,
        sampling or lane.sampling,
        prefix_len=prompt.prefix_len,
        logits_processor=processor,
        score_token_ids=score_token_ids(lane.token_map()),
        on_event=on_event,
    )


def context_size(lane: Lane) -> int | None:
    """The context the lane's backend will use (local: --ctx capped by the trained one;
    a backend wrapped by the TUI or the server answers through its wrapper)."""
    b = lane.backend
    own = getattr(b, "context_size", None)
    if callable(own):
        return own()
    info = getattr(b, "info", None)
    n_ctx = getattr(info(), "n_ctx", None) if callable(info) else None
    return int(n_ctx) if n_ctx else None


def make_fitter(lane: Lane) -> Fitter:
    """A `Fitter` for the lane's context, policy and settings (the lane keeps it:
    `Lane.fitter`)."""
    n_ctx = lane.context_size()
    if n_ctx is None:
        raise EdgeGuardError("--truncate needs the context size; the backend reports none")
    return Fitter(
        lane.renderer(),
        lane.policy.text,
        lane.prompt_config,
        n_ctx,
        lane.sampling.max_tokens,
    )


def fit_for(lane: Lane, item: Item) -> Fit:
    """How `item` fits the lane's context (nothing cut unless the lane truncates)."""
    if not lane.truncate or text_problem(item_content(item)):
        return NO_CUT
    return lane.fitter().fit(item)


def item_problem(lane: Lane, item: Item) -> str | None:
    """Why `item` cannot be classified by `lane` (an error for this item only), or None."""
    return text_problem(item_content(item)) or fit_for(lane, item).error


def prompt_for(lane: Lane, item: Item) -> Prompt:
    """The full-reasoning prompt of `item` (cut to fit when the lane truncates)."""
    fit = fit_for(lane, item)
    return build_prompt(lane.renderer(), lane.policy.text, lane.prompt_config, item, fit)


def build_prompt(
    renderer: PromptRenderer,
    policy_text: str,
    config: PromptConfig | None,
    item: Item,
    fit: Fit = NO_CUT,
) -> Prompt:
    """THE prompt of `item` (what `classify` sends and `edge-guard prompt` shows): the
    rendering, with the fitted content when `fit` cut it."""
    if fit.ids is None:
        return renderer.render(policy_text, item_content(item), config)
    base = renderer.render(policy_text, "", config)  # `fit.ids` as the user message
    n = base.prefix_len
    return Prompt(base.token_ids[:n] + fit.ids + base.token_ids[n:], n, base.config)
