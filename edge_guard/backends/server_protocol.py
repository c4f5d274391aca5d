"""Request bodies and reply parsing for the servers `ServerBackend` talks to (no I/O here).

Two dialects:

- ``llama-server`` (llama.cpp): ``POST /completion`` with ``prompt`` = token ids,
  ``return_tokens`` (generated ids, the end-of-generation token included), ``n_probs`` with
  ``post_sampling_probs: false`` (log-probabilities of the raw logits), ``cache_prompt``.
- ``vllm`` / ``openai``: ``POST /v1/completions`` with ``prompt`` = token ids,
  ``return_token_ids`` (vLLM ≥ 0.10.2), ``logprobs`` + ``return_tokens_as_token_ids`` (ids as
  ``token_id:N``: also a fallback for the output ids), ``logprob_token_ids`` (exact label
  scores where supported), ``stop_token_ids``, ``skip_special_tokens: false``.

Sampling is pinned: temperature/top-p/top-k from `SamplingConfig`, every other sampler
neutral, the seed passed. A reply becomes a `Reply` (output ids, whether the token limit
stopped it, top log-probabilities at its first position, cache and timing figures);
`Decoder` feeds output ids through the harmony parser, stopping where the local engine stops.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_guard.engine.sampling import SamplingConfig
from edge_guard.harmony.parse import Event, HarmonyStreamParser
from edge_guard.harmony.vocab import Vocab

_TOKEN_ID = re.compile(r"^token_id:(\d+)$")


class ItemError(Exception):
    """One item failed for good; the message is what its error row says."""


class BadReply(ItemError):
    """A reply field has the wrong type or an impossible value."""


def as_int(value: Any, what: str, lo: int = 0, hi: int | None = None) -> int:
    """`value` as an int in [lo, hi), else `BadReply` (bools, floats and strings are refused)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < lo
        or (hi is not None and value >= hi)
    ):
        bound = f" in [{lo}, {hi})" if hi is not None else f" >= {lo}"
        raise BadReply(f"the server sent {what} = {_show(value)}, not an integer{bound}")
    return value


def as_float(value: Any, what: str) -> float:
    """A JSON number (not a bool, not NaN), else `BadReply`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise BadReply(f"the server sent {what} = {_show(value)}, not a number")
    return float(value)


def token_ids(values: Any, what: str, n_vocab: int | None) -> list[int]:
    """A list of token ids, each an integer in [0, n_vocab), else `BadReply`."""
    if not isinstance(values, list):
        raise BadReply(f"the server sent {what} = {_show(values)}, not a list of token ids")
    return [as_int(v, f"a token id in {what}", 0, n_vocab) for v in values]


def _show(value: Any) -> str:
    text = repr(value)
    return text[:60] + ("…" if len(text) > 60 else "")


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadReply(f"the server sent {what} = {_show(value)}, not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadReply(f"the server sent {what} = {_show(value)}, not a list")
    return value


def _opt_int(value: Any, what: str, lo: int = 0) -> int | None:
    return None if value is None else as_int(value, what, lo)


@dataclass
class Reply:
    tokens: list[int]
    length: bool = False  # stopped by the token limit or the end of the context
    top: dict[int, float] = field(default_factory=dict)  # logprobs at the first position
    cached: int = 0
    prompt_ms: float = 0.0
    output_ms: float = 0.0
    ids_source: str = "tokens"  # tokens | token_ids | logprobs | text


# -- llama-server ---------------------------------------------------------------------------
def llama_body(
    prompt: list[int], n: int, s: SamplingConfig, n_probs: int, bias: dict[int, float]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": prompt,
        "n_predict": n,
        "stream": False,
        "cache_prompt": True,
        "return_tokens": True,
        "n_probs": n_probs,
        "post_sampling_probs": False,
        "temperature": s.temperature,
        "top_k": s.top_k,
        "top_p": s.top_p,
        "seed": s.seed,
        "min_p": 0.0,
        "typical_p": 1.0,
        "top_n_sigma": -1.0,
        "xtc_probability": 0.0,
        "repeat_penalty": 1.0,
        "repeat_last_n": 0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "dry_multiplier": 0.0,
        "mirostat": 0,
        "dynatemp_range": 0.0,
        "ignore_eos": False,
    }
    if bias:
        body["logit_bias"] = [[int(t), float(b)] for t, b in bias.items()]
    return body


def llama_reply(data: dict[str, Any], n_prompt: int, n_vocab: int | None = None) -> Reply:
    if "tokens" not in data:
        raise ItemError(
            "llama-server returned no token ids (it is too old for `return_tokens`; "
            "use a llama.cpp build from 2025 or later)"
        )
    tokens = token_ids(data["tokens"], "`tokens`", n_vocab)
    if data.get("truncated"):
        raise ItemError("llama-server truncated the prompt: it does not fit the slot's context")
    evaluated = _opt_int(data.get("tokens_evaluated"), "`tokens_evaluated`")
    if evaluated is not None and evaluated != n_prompt:
        raise ItemError(f"the server evaluated {evaluated} prompt tokens, not the {n_prompt} sent")
    t = _obj(data.get("timings"), "`timings`")
    top: dict[int, float] = {}
    probs = _list(data.get("completion_probabilities"), "`completion_probabilities`")
    if probs:
        first = _obj(probs[0], "`completion_probabilities[0]`")
        for p in _list(first.get("top_logprobs"), "`top_logprobs`"):
            p = _obj(p, "a `top_logprobs` entry")
            tok = as_int(p.get("id"), "a `top_logprobs` id", 0, n_vocab)
            top[tok] = as_float(p.get("logprob"), "a `top_logprobs` logprob")
        for p in _list(first.get("top_probs"), "`top_probs`"):
            p = _obj(p, "a `top_probs` entry")
            tok = as_int(p.get("id"), "a `top_probs` id", 0, n_vocab)
            prob = as_float(p.get("prob"), "a `top_probs` prob")
            top[tok] = math.log(prob) if prob > 0 else -math.inf
    return Reply(
        tokens=tokens,
        length=data.get("stop_type") == "limit",
        top=top,
        cached=_opt_int(t.get("cache_n"), "`timings.cache_n`") or 0,
        prompt_ms=as_float(t.get("prompt_ms") or 0.0, "`timings.prompt_ms`"),
        output_ms=as_float(t.get("predicted_ms") or 0.0, "`timings.predicted_ms`"),
    )


# -- vLLM / OpenAI-style /v1/completions ----------------------------------------------------
def openai_body(
    model: str,
    prompt: list[int],
    n: int,
    s: SamplingConfig,
    n_probs: int,
    bias: dict[int, float],
    want: Sequence[int],
    stop_ids: Sequence[int],
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": n,
        "stream": False,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k or -1,
        "seed": s.seed,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "stop_token_ids": list(stop_ids),
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
        "include_stop_str_in_output": True,
        "add_special_tokens": False,
        "return_token_ids": True,
    }
    if n_probs:
        body["logprobs"], body["return_tokens_as_token_ids"] = n_probs, True
    if want:
        body["logprob_token_ids"] = [int(t) for t in want]
    if bias:
        body["logit_bias"] = {str(int(t)): float(b) for t, b in bias.items()}
    return body


def openai_reply(data: dict[str, Any], prompt: list[int], vocab: Vocab) -> Reply:
    n_vocab = len(vocab)
    choices = _list(data.get("choices"), "`choices`")
    if not choices:
        raise ItemError("the server's reply has no choices")
    ch = _obj(choices[0], "`choices[0]`")
    sent_back = ch.get("prompt_token_ids")
    if sent_back is not None and token_ids(sent_back, "`prompt_token_ids`", None) != list(prompt):
        raise ItemError(
            f"the server changed the prompt ({len(prompt)} ids sent, {len(sent_back)} used)"
        )
    lp = _obj(ch.get("logprobs"), "`logprobs`")
    ids, source = ch.get("token_ids"), "token_ids"
    if ids is None:
        toks = _list(lp.get("tokens"), "`logprobs.tokens`")
        matches = [_TOKEN_ID.match(str(t)) for t in toks]
        if toks and all(matches):
            ids, source = [int(m.group(1)) for m in matches if m], "logprobs"
        elif isinstance(ch.get("text"), str):
            ids, source = retokenize(vocab, ch["text"]), "text"  # last resort: specials kept
        else:
            raise ItemError("the server returned neither token ids nor text")
    ids = token_ids(ids, "`token_ids`", n_vocab)
    stop_reason = ch.get("stop_reason")
    if isinstance(stop_reason, int) and not isinstance(stop_reason, bool):
        stop_reason = as_int(stop_reason, "`stop_reason`", 0, n_vocab)
        if not ids or ids[-1] != stop_reason:
            ids.append(stop_reason)  # a stop token some servers leave out of the ids
    top: dict[int, float] = {}
    tops = _list(lp.get("top_logprobs"), "`top_logprobs`")
    if tops and isinstance(tops[0], dict):
        for key, value in tops[0].items():
            m = _TOKEN_ID.match(str(key))
            if m and value is not None:
                tok = as_int(int(m.group(1)), "a `top_logprobs` id", 0, n_vocab)
                top[tok] = as_float(value, "a `top_logprobs` logprob")
    usage = _obj(data.get("usage"), "`usage`")
    details = _obj(usage.get("prompt_tokens_details"), "`usage.prompt_tokens_details`")
    return Reply(
        tokens=ids,
        length=ch.get("finish_reason") == "length",
        top=top,
        cached=_opt_int(details.get("cached_tokens"), "`cached_tokens`") or 0,
        ids_source=source,
    )


def served_models(data: Any) -> list[dict[str, Any]]:
    """The entries of a `/v1/models` reply (`BadReply` when it is malformed)."""
    models = _list(_obj(data, "/v1/models").get("data"), "/v1/models `data`")
    out = []
    for m in models:
        m = _obj(m, "a /v1/models entry")
        if not isinstance(m.get("id"), str) or not m["id"]:
            raise BadReply(f"the server sent a /v1/models entry with id = {_show(m.get('id'))}")
        out.append(m)
    return out


def model_meta(entry: dict[str, Any]) -> tuple[int | None, int | None]:
    """(n_vocab, max_model_len) of a `/v1/models` entry, each None when not given."""
    meta = _obj(entry.get("meta"), "/v1/models `meta`")
    n_vocab = _opt_int(meta.get("n_vocab"), "/v1/models `meta.n_vocab`", 1)
    return n_vocab, _opt_int(entry.get("max_model_len"), "/v1/models `max_model_len`", 1)


def llama_props(props: Any) -> tuple[str, int | None, int | None]:
    """(build_info, total_slots, n_ctx) of llama-server's `/props`."""
    props = _obj(props, "/props")
    build = props.get("build_info")
    if build is not None and not isinstance(build, str):
        raise BadReply(f"the server sent /props `build_info` = {_show(build)}, not a string")
    slots = _opt_int(props.get("total_slots"), "/props `total_slots`", 1)
    settings = _obj(
        props.get("default_generation_settings"), "/props `default_generation_settings`"
    )
    n_ctx = _opt_int(settings.get("n_ctx"), "/props `n_ctx`", 1)
    return build or "unknown", slots, n_ctx


def retokenize(vocab: Vocab, text: str) -> list[int]:
    """Ids for model output given as text with its special tokens spelled out.

    Server output is the model's, not user text, so its special-token strings are specials.
    """
    names = sorted((vocab.decode([i]) for i in vocab.control_ids), key=len, reverse=True)
    if not names:
        return vocab.encoder.encode(text)
    pattern = re.compile("|".join(re.escape(n) for n in names))
    ids: list[int] = []
    pos = 0
    for m in pattern.finditer(text):
        ids += vocab.encoder.encode(text[pos : m.start()]) if m.start() > pos else []
        ids.append(vocab.special_id(m.group(0)))
        pos = m.end()
    if pos < len(text):
        ids += vocab.encoder.encode(text[pos:])
    return ids


class Decoder:
    """Feeds output ids through the harmony parser, stopping where the local engine stops."""

    def __init__(self, vocab: Vocab, stop_ids: frozenset[int], max_tokens: int) -> None:
        self.parser = HarmonyStreamParser(vocab)
        self.stop_ids, self.max_tokens = stop_ids, max_tokens
        self.out: list[int] = []
        self.events: list[Event] = []
        self.final_pos: int | None = None  # output index of the first final-answer token
        self.stop: str | None = None

    def feed(self, tokens: Sequence[int]) -> bool:
        """True when the completion is over (stop token or the token budget)."""
        for tok in tokens:
            if self.final_pos is None and self.parser.at_final_content_start:
                self.final_pos = len(self.out)
            self.out.append(int(tok))
            self.events.extend(self.parser.feed(int(tok)))
            if self.parser.done or tok in self.stop_ids:
                self.stop = "eos"
                return True
            if len(self.out) >= self.max_tokens:
                self.stop = "length"
                return True
        return len(self.out) >= self.max_tokens


# -- shared helpers -------------------------------------------------------------------------
def steering(processor: object) -> tuple[list[int], dict[int, float]]:
    """A logits processor as a server can apply it: forced ids (`ForcedTokens`) or logit bias."""
    if processor is None:
        return [], {}
    script = getattr(processor, "script", None)
    bias = getattr(processor, "bias", None)
    if script is None and bias is None:
        raise ItemError(
            f"logits processor {type(processor).__name__} runs only on the local backend "
            "(a server cannot call Python code for each token)"
        )
    return [int(t) for t in script or []], {int(k): float(v) for k, v in (bias or {}).items()}


def short_model(model: str) -> str:
    """A served model id for identities: a .gguf path shortened to its file name."""
    if model.lower().endswith(".gguf") and ("/" in model or "\\" in model):
        return re.split(r"[\\/]", model)[-1]
    return model
