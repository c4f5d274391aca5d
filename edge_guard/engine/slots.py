"""One running sequence of the engine loop: its request, what it still has to evaluate, and
what it produced — sampled tokens, label scores, (score-only) continuation log-probs, or
the label scores after each of several branches of one prompt; a score-then-continue
sequence (the cascade in place) turns from scoring to generating."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_guard.engine.sampling import LogitsProcessor, Sampler, SamplingConfig, log_softmax
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import Event, HarmonyStreamParser
from edge_guard.response import ModelResponse, Timings

if TYPE_CHECKING:
    from edge_guard.engine.prefixes import Resident


class CallbackError(Exception):
    """A request's own callback (logits processor, on_event, escalate) raised `original`.

    It fails that request alone; the loop re-raises `original` to the request's caller
    (e.g. the TUI's own Cancelled) unless it is an EdgeGuardError or RuntimeError, whose
    message becomes the request's error."""

    def __init__(self, original: Exception) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original


def blame(handle: Any, exc: BaseException) -> str:
    """The error of a request that raised `exc`. A caller's own exception (from its
    callback) is also kept on the handle, to be re-raised to that caller."""
    if isinstance(exc, CallbackError):
        orig = exc.original
        if isinstance(orig, EdgeGuardError | RuntimeError):
            return str(orig)
        handle.exception = orig
        return f"{type(orig).__name__}: {orig}"
    if isinstance(exc, EdgeGuardError):
        return str(exc)
    return f"internal error in the engine: {type(exc).__name__}: {exc}"


def _ids_problem(name: str, ids: Sequence[int], n_vocab: int) -> str | None:
    """A one-line error when `ids` are not token ids of this vocabulary."""
    if len(ids) == 0:
        return None
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        return f"{name} must be a list of integer token ids"
    if int(arr.min()) < 0 or int(arr.max()) >= n_vocab:
        return f"{name} holds a token id outside the vocabulary [0, {n_vocab})"
    return None


@dataclass
class GenerationRequest:
    """One prompt to complete. `prefix_len` hints how many leading ids other prompts share.

    `score_only`: no generation; one forward pass over the prompt gives the log-probs of
    `score_token_ids` as the next token, and of each continuation in `score_sequences`
    (multi-token labels), in `ModelResponse.sequence_logprobs`.

    Score, then maybe generate (the cascade in place): with `score_only`, `continue_at` and
    `escalate`, `prompt_ids[:continue_at]` is a generation prompt and the rest an answer
    header to score. Once scored, `escalate(score response)` decides: False ends the request
    with the score response; True drops the header's cells and generates from the
    generation prompt's own last logits (computed in the same pass) in the same sequence,
    so nothing is evaluated twice. That response carries the score response as `scored`.

    Branches (score-only): each of `branches` is a short continuation of the prompt, scored
    as if it alone followed the prompt: the next-token log-probs of `score_token_ids` after
    its last token, in `ModelResponse.branch_logprobs[k]`. The prompt is evaluated once; the
    branches go in the same batch as the prompt's last chunk, each in a sequence of its own
    sharing the prompt's cells (leading tokens common to several branches evaluated once),
    as many at once as free sequences allow, the rest in the next steps. With no free
    sequence (one slot) they go one at a time in the request's own sequence, right after
    the prompt: bit for bit the scores of the prompt + that branch evaluated alone.
    """

    prompt_ids: list[int]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    prefix_len: int | None = None
    logits_processor: LogitsProcessor | None = None
    score_token_ids: Sequence[int] = ()
    on_event: Callable[[Event], None] | None = None
    # Stop tokens are suppressed until this many tokens are out (fixed-length benchmarks).
    min_tokens: int = 0
    score_only: bool = False
    score_sequences: Sequence[Sequence[int]] = ()
    continue_at: int | None = None
    escalate: Callable[[ModelResponse], bool] | None = None
    branches: Sequence[Sequence[int]] = ()

    def problem(self, n_ctx: int, n_vocab: int, n_batch: int) -> str | None:
        """Why this request cannot run on a context of `n_ctx` cells, or None: checked again
        at submit (whatever the door checked), so nothing invalid reaches the loop."""
        if not isinstance(self.sampling, SamplingConfig):
            return "sampling must be a SamplingConfig"
        bad = self.sampling.problem()  # again: a frozen config can still be forced
        if bad is not None:
            return bad
        if len(self.prompt_ids) == 0:
            return "empty prompt"
        bad = _ids_problem("the prompt", self.prompt_ids, n_vocab)
        if bad is None:
            bad = _ids_problem("score_token_ids", self.score_token_ids, n_vocab)
        for k, cont in enumerate(self.score_sequences):
            if bad is None:
                bad = _ids_problem(f"score_sequences[{k}]", cont, n_vocab)
            if bad is None and len(cont) > n_batch + 1:
                bad = f"score_sequences[{k}] is longer than a batch ({n_batch + 1} tokens)"
        for k, branch in enumerate(self.branches):
            if bad is None:
                bad = _ids_problem(f"branches[{k}]", branch, n_vocab)
            if bad is None and not 0 < len(branch) <= n_batch:
                bad = f"branches[{k}] must hold 1 to {n_batch} tokens (a batch)"
        if bad is not None:
            return bad
        for name in ("prefix_len", "min_tokens", "continue_at"):
            value = getattr(self, name)
            if value is None and name != "min_tokens":
                continue
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                return f"{name} must be an integer >= 0, got {value!r}"
        for name in ("logits_processor", "on_event", "escalate"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                return f"{name} must be callable"
        if len(self.prompt_ids) + 1 > n_ctx:
            return (
                f"prompt is {len(self.prompt_ids)} tokens but the context holds {n_ctx}"
                " (raise --ctx, shorten the text or pass --truncate)"
            )
        if self.score_only and any(len(s) == 0 for s in self.score_sequences):
            return "an empty continuation cannot be scored"
        if self.branches:
            if not self.score_only or self.score_sequences or self.continue_at is not None:
                return (
                    "branches are scored alone: score_only, without score_sequences or continue_at"
                )
            if len(self.prompt_ids) + self.branch_tokens > n_ctx:
                return (
                    f"prompt and branches are {len(self.prompt_ids) + self.branch_tokens} "
                    f"tokens but the context holds {n_ctx} (raise --ctx)"
                )
        if (self.continue_at is None) != (self.escalate is None):
            return "score-then-continue needs both continue_at and escalate"
        if self.continue_at is not None and not (
            self.score_only and 0 < self.continue_at < len(self.prompt_ids)
        ):
            return "continue_at must split a score-only prompt into a prompt and a header"
        return None

    @property
    def branch_tokens(self) -> int:
        """The tokens of every branch (the most cells they hold at once)."""
        return sum(len(b) for b in self.branches)

    def generation_budget(self, n_ctx: int) -> int:
        """KV cells this request needs beyond its prompt."""
        if not self.score_only:
            return min(self.sampling.max_tokens, n_ctx - len(self.prompt_ids))
        if self.branches:
            return self.branch_tokens
        scoring = max((len(s) for s in self.score_sequences), default=0)
        if self.continue_at is None:
            return scoring
        header = len(self.prompt_ids) - self.continue_at  # its cells are reused when generating
        generating = min(self.sampling.max_tokens, n_ctx - self.continue_at) - header
        return max(scoring, generating)


@dataclass
class Slot:
    seq_id: int
    handle: Any  # loop.Handle
    parser: HarmonyStreamParser
    sampler: Sampler
    pending: list[int]
    n_past: int
    reserved: int
    cached: int
    resident: Resident | None
    t_start: float
    t_first: float | None = None
    output: list[int] = field(default_factory=list)
    logprobs: dict[int, float] | None = None
    last: int | None = None
    extra_prompt_ms: float = 0.0
    finish: str | None = None
    error: str | None = None
    done: bool = False  # finished, to be released
    # score-only: summed log-probs per continuation, and the continuations still to evaluate
    seq_logprobs: list[float] | None = None
    jobs: list[tuple[int, list[int]]] = field(default_factory=list)
    # score-then-continue: still scoring?, the generation prompt's last logits, the score
    score_only: bool = False
    resume_logits: np.ndarray | None = None
    scored: ModelResponse | None = None
    # branches: each branch's scores once read, and this step's wave (branch, sequence)
    branch_lp: list[dict[int, float] | None] | None = None
    wave: list[tuple[int, int]] = field(default_factory=list)

    @property
    def request(self) -> GenerationRequest:
        return self.handle.request

    @property
    def generating(self) -> bool:
        return not self.pending and self.last is not None


class Decoder:
    """Turns one row of logits into a slot's next state (the model-independent half)."""

    def __init__(self, stop_ids: frozenset[int], model: str, n_ctx: int) -> None:
        self.stop_ids = stop_ids
        self._stop_array = np.array(sorted(stop_ids), dtype=np.int64)
        self.model = model
        self.n_ctx = n_ctx

    def advance(self, slot: Slot, logits: np.ndarray) -> bool:
        """Sample the next token of `slot`; True when the sequence is finished."""
        now = time.perf_counter()
        if slot.t_first is None:
            slot.t_first = now
        req = slot.request
        if req.score_token_ids and slot.logprobs is None and slot.parser.at_final_content_start:
            lp = log_softmax(logits)
            slot.logprobs = {int(t): float(lp[t]) for t in req.score_token_ids}
        if req.logits_processor is not None:
            try:
                edited = req.logits_processor(slot.output, logits)
            except Exception as exc:  # the caller's own: it fails this request alone
                raise CallbackError(exc) from exc
            if edited is not None:
                logits = edited
        if np.isnan(logits.max()):  # broken weights (or processor); this sequence fails alone
            raise EdgeGuardError("the model computed NaN logits (corrupt or incompatible weights)")
        if len(slot.output) < req.min_tokens:
            logits[self._stop_array] = -np.inf
        tok = slot.sampler.sample(logits)
        slot.output.append(tok)
        slot.last = tok
        events = slot.parser.feed(tok)
        slot.handle.emit(events)
        if slot.parser.done or tok in self.stop_ids:
            slot.finish = None if slot.parser.done else "eos"
            return True
        if len(slot.output) >= req.sampling.max_tokens or slot.n_past >= self.n_ctx:
            slot.finish = "length"
            return True
        return False

    def score_prompt(self, slot: Slot, logits: np.ndarray) -> bool:
        """Score-only: the prompt's last logits; True when no continuation is left to score."""
        slot.t_first = time.perf_counter()
        if np.isnan(logits.max()):
            raise EdgeGuardError("the model computed NaN logits (corrupt or incompatible weights)")
        req = slot.request
        lp = log_softmax(logits)
        slot.logprobs = {int(t): float(lp[t]) for t in req.score_token_ids}
        seqs = [list(s) for s in req.score_sequences]
        slot.seq_logprobs = [float(lp[s[0]]) if s else 0.0 for s in seqs]
        slot.jobs = [(k, s) for k, s in enumerate(seqs) if len(s) > 1]
        slot.finish = "scored"
        return not slot.jobs

    def score_branch(self, slot: Slot, k: int, logits: np.ndarray) -> bool:
        """Branch `k`'s next-token log-probs; True when every branch is scored."""
        if np.isnan(logits.max()):
            raise EdgeGuardError("the model computed NaN logits (corrupt or incompatible weights)")
        req = slot.request
        if slot.branch_lp is None:
            slot.branch_lp = [None] * len(req.branches)
        lp = log_softmax(logits)
        slot.branch_lp[k] = {int(t): float(lp[t]) for t in req.score_token_ids}
        slot.finish = "scored"
        if all(x is not None for x in slot.branch_lp):
            slot.t_first = time.perf_counter()
            return True
        return False

    def score_continuation(self, slot: Slot, k: int, j: int, logits: np.ndarray) -> None:
        """Adds log P(token j+1 of continuation k | prompt + its first j+1 tokens)."""
        if np.isnan(logits.max()):
            raise EdgeGuardError("the model computed NaN logits (corrupt or incompatible weights)")
        cont = list(slot.request.score_sequences[k])
        assert slot.seq_logprobs is not None
        slot.seq_logprobs[k] += float(log_softmax(logits)[cont[j + 1]])

    def continue_generating(self, slot: Slot, scored: ModelResponse) -> bool:
        """Score-then-continue: the slot (its header's cells already dropped) samples its
        first token from the generation prompt's last logits; True when finished."""
        req = slot.request
        assert req.continue_at is not None and slot.resume_logits is not None
        slot.scored, slot.score_only = scored, False
        slot.n_past = req.continue_at
        slot.logprobs, slot.seq_logprobs, slot.jobs, slot.finish = None, None, [], None
        slot.t_first = None
        logits, slot.resume_logits = slot.resume_logits, None
        return self.advance(slot, logits)

    def finish(self, slot: Slot) -> ModelResponse:
        req = slot.request
        prompt = list(req.prompt_ids)
        if req.continue_at is not None and not slot.score_only:  # continued: the generation's
            prompt = prompt[: req.continue_at]
        if slot.error is not None:
            failed = ModelResponse.failed(slot.error, prompt, self.model)
            failed.scored = slot.scored
            return failed
        end = time.perf_counter()
        t_first = slot.t_first or end
        timings = Timings(  # a branched request read its branches too
            prompt_tokens=len(prompt) + req.branch_tokens,
            cached_tokens=slot.cached,
            prompt_ms=(t_first - slot.t_start) * 1000 + slot.extra_prompt_ms,
            output_tokens=len(slot.output),
            output_ms=(end - t_first) * 1000,
        )
        if slot.score_only:
            return ModelResponse(
                None,
                "",
                "scored",
                prompt_token_ids=prompt,
                timings=timings,
                final_token_logprobs=slot.logprobs,
                sequence_logprobs=slot.seq_logprobs if req.score_sequences else None,
                branch_logprobs=list(slot.branch_lp) if req.branches and slot.branch_lp else None,  # type: ignore[arg-type]
                model=self.model,
            )
        parsed = slot.parser.finish(slot.finish)
        return ModelResponse.from_parsed(
            parsed,
            prompt_token_ids=prompt,
            output_token_ids=list(slot.output),
            timings=timings,
            final_token_logprobs=slot.logprobs,
            model=self.model,
            scored=slot.scored,
        )
