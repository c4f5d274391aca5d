"""`ServerBackend`: the same hand-built token prompts on llama-server or vLLM.

Prompts go out as token ids (llama.cpp's `llama-server` native `/completion`, or vLLM's
`/v1/completions`), so the server never applies a chat template and sees exactly the local
prompt. Output comes back as token ids (`return_tokens` / `return_token_ids`, or vLLM's
`token_id:N` logprob tokens; re-tokenized text with specials only as a last resort) and goes
through the same harmony parser as the local engine; a server's own "reasoning" split is never
used. Label scores come from a one-token probe at the first final-answer position.
Requests run in a bounded thread pool with a wall-clock deadline and a reply-size cap per
exchange (`server_http`) and bounded retries (`server_transport`: exponential backoff with
jitter on 429/5xx/connection errors); an item that still fails is returned as
`ModelResponse.failed(...)` (an error row: a rerun retries it) and the others go on. A
malformed reply field fails its item; what is served is asked once (`server_discovery`), and a
malformed `/props` or `/v1/models` is a one-line `ServerError`. The API key's value and the
URL's credentials are blanked out of every message, identity and stored string (`redact`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_guard.backends.redact import Redactor, safe_url, url_credentials
from edge_guard.backends.server_discovery import ServerInfo, discover
from edge_guard.backends.server_http import MAX_REPLY_BYTES
from edge_guard.backends.server_protocol import (
    BadReply,
    Decoder,
    ItemError,
    Reply,
    llama_body,
    llama_reply,
    openai_body,
    openai_reply,
    short_model,
    steering,
)
from edge_guard.backends.server_transport import ServerError, Transport
from edge_guard.defaults import DEFAULT_PARALLEL
from edge_guard.engine.engine import GenerationRequest
from edge_guard.engine.sampling import SamplingConfig
from edge_guard.harmony.parse import Event
from edge_guard.harmony.vocab import Vocab
from edge_guard.response import ModelResponse, Timings

__all__ = ["ServerBackend", "ServerError", "ServerInfo", "server_backend_from_config"]


class ServerBackend:
    """A model served over HTTP; `vocab_path` is a local copy of the same GGUF (tokenizer)."""

    name = "server"

    def __init__(
        self,
        url: str,
        vocab_path: str | Path,
        *,
        vocab_ref: str | None = None,
        api_key_env: str | None = None,
        concurrency: int | None = None,
        timeout: float = 600.0,
        server_kind: str = "auto",
        served_model: str | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        score_top_k: int = 20,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        import os

        auth = url_credentials(url.rstrip("/"))  # user:password@ goes as Basic auth
        self.url = safe_url(url.rstrip("/"))  # what every message shows: no credentials
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.hostport = f"{parts.hostname}:{port}"
        self.vocab_path = str(vocab_path)
        self.model_ref = f"{vocab_ref or vocab_path}@{self.hostport}"
        self.concurrency, self.timeout = concurrency, timeout
        self.server_kind, self.served_model = server_kind, served_model
        self.score_top_k = score_top_k
        headers = {"Content-Type": "application/json"}
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ServerError(
                    f"environment variable {api_key_env} (the server's API key) is not set"
                )
            headers["Authorization"] = f"Bearer {key}"
            auth = None  # one Authorization header: the API key wins over URL credentials
        self.redact = Redactor(url, key)
        self._http = Transport(
            self.url,
            headers,
            auth,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_reply_bytes=max_reply_bytes,
            concurrency=concurrency,
        )
        self._info: ServerInfo | None = None
        self._lock = threading.Lock()
        self._vocab: Vocab | None = None
        self._ids_in_reply = False  # the server returns `token_ids` (no logprobs needed for ids)

    # -- Backend protocol ---------------------------------------------------------------
    def identity(self) -> str:
        i = self.info()
        return f"server:{i.hostport}/{short_model(i.model)}@{i.version}"

    def engine_version(self) -> str:
        i = self.info()
        return f"{i.kind} {i.version}"

    def numerics(self, n_parallel: int | None = None) -> dict[str, Any]:
        """The numerics class (part of the cache key): one request at a time on a one-slot
        server, or several batched together (the server's own kernels are in its version)."""
        i = self.info()
        width = max(1, self.concurrency or n_parallel or i.slots or DEFAULT_PARALLEL)
        return {"decode": "seq" if width == 1 or i.slots == 1 else "par"}

    def vocab(self) -> Vocab:
        if self._vocab is None:
            from edge_guard.gguf.check import check_model_file

            check_model_file(self.vocab_path)
            self._vocab = Vocab.from_gguf(self.vocab_path)
        return self._vocab

    def close(self) -> None:
        self._http.close()

    def execute(
        self, requests: Sequence[GenerationRequest], n_parallel: int | None = None
    ) -> Iterator[tuple[int, ModelResponse]]:
        """Send every request (bounded concurrency); yields (index, response) as each completes."""
        info = self.info()
        default = info.slots or (32 if info.kind == "vllm" else 8)  # vLLM batches many at once
        width = max(1, self.concurrency or n_parallel or default)
        todo = iter(enumerate(requests))
        pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="edge-guard-server")
        pending: dict[Future[tuple[ModelResponse, list[Event]]], int] = {}

        def submit(n: int) -> None:
            for _ in range(n):
                item = next(todo, None)
                if item is None:
                    return
                pending[pool.submit(self._run_one, item[1])] = item[0]

        try:
            submit(2 * width)
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    response, events = fut.result()
                    on_event = requests[i].on_event
                    if on_event is not None:
                        for ev in events:
                            on_event(ev)
                    submit(1)
                    yield i, response
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    # -- server discovery ---------------------------------------------------------------
    def info(self) -> ServerInfo:
        """What is served where (queried once): kind, model id, version, slots, context."""
        with self._lock:
            if self._info is None:
                try:
                    self._info = discover(
                        self._http,
                        kind=self.server_kind,
                        served_model=self.served_model,
                        vocab=self.vocab,
                        vocab_path=self.vocab_path,
                        hostport=self.hostport,
                        redact=self.redact,
                    )
                except BadReply as exc:
                    raise ServerError(self.redact(f"{self.url}: {exc}")) from None
                except ServerError as exc:
                    raise ServerError(self.redact(str(exc))) from None
            return self._info

    # -- one item -----------------------------------------------------------------------
    def _run_one(self, req: GenerationRequest) -> tuple[ModelResponse, list[Event]]:
        try:
            return self._complete(req)
        except ItemError as exc:
            msg = self.redact(str(exc))
        except Exception as exc:  # an unexpected reply: this item fails, the run goes on
            msg = self.redact(f"unexpected {type(exc).__name__} from {self.url}: {exc}")
        return ModelResponse.failed(msg, req.prompt_ids, self.model_ref), []

    def _complete(self, req: GenerationRequest) -> tuple[ModelResponse, list[Event]]:
        if not req.prompt_ids:
            raise ItemError("empty prompt")
        s = req.sampling
        forced, bias = steering(req.logits_processor)
        dec = Decoder(self.vocab(), self._stop_ids(), s.max_tokens)
        t0 = time.perf_counter()
        reply = Reply([])
        called = False
        if not dec.feed(forced):
            reply = self._generate(req.prompt_ids + dec.out, s.max_tokens - len(dec.out), s, bias)
            called = True
            if not dec.feed(reply.tokens):
                dec.stop = "length" if reply.length else "eos"
        logprobs = None
        if req.score_token_ids and dec.final_pos is not None:
            top = self._probe(req.prompt_ids + dec.out[: dec.final_pos], req.score_token_ids)
            logprobs = {int(t): top[t] for t in req.score_token_ids if t in top} or None
            called = True
        if not called:  # fully steered: the server still checks the prompt
            self._probe(req.prompt_ids, ())
        wall = (time.perf_counter() - t0) * 1000
        parsed = dec.parser.finish(None if dec.parser.done else dec.stop)
        timings = Timings(
            prompt_tokens=len(req.prompt_ids),
            cached_tokens=min(reply.cached, len(req.prompt_ids)),
            prompt_ms=reply.prompt_ms,
            output_tokens=len(dec.out),
            output_ms=reply.output_ms or max(0.0, wall - reply.prompt_ms),
        )
        response = ModelResponse.from_parsed(
            parsed,
            prompt_token_ids=list(req.prompt_ids),
            output_token_ids=list(dec.out),
            timings=timings,
            final_token_logprobs=logprobs,
            model=self.model_ref,
        )
        return response, dec.events

    def _stop_ids(self) -> frozenset[int]:
        v = self.vocab()
        names = ("<|return|>", "<|call|>", "<|endoftext|>")
        return frozenset(v.special_id(n) for n in names if v.has_special(n))

    def _generate(
        self,
        prompt: list[int],
        n: int,
        s: SamplingConfig,
        bias: dict[int, float],
        n_probs: int = 0,
        want: Sequence[int] = (),
    ) -> Reply:
        kind = self.info().kind
        if kind == "llama-server":
            body = llama_body(prompt, n, s, n_probs, bias)
            data = self._http.post("/completion", body, len(prompt))
            return llama_reply(data, len(prompt), len(self.vocab()))
        stops = sorted(self._stop_ids())
        # Without `return_token_ids` (vLLM < 0.10.2) the ids come from `token_id:N` logprobs.
        n_lp = n_probs or (0 if self._ids_in_reply else 1)
        body = openai_body(self.info().model, prompt, n, s, n_lp, bias, want, stops)
        reply = openai_reply(
            self._http.post("/v1/completions", body, len(prompt)), prompt, self.vocab()
        )
        self._ids_in_reply = self._ids_in_reply or reply.ids_source == "token_ids"
        return reply

    def _probe(self, prompt: list[int], want: Sequence[int]) -> dict[int, float]:
        """Log-probabilities of the next token after `prompt` (top-k, plus `want` where supported)."""
        reply = self._generate(prompt, 1, SamplingConfig(), {}, max(1, self.score_top_k), want)
        return reply.top


def server_backend_from_config(cfg: Any, model_ref: str | None) -> ServerBackend:
    """A `ServerBackend` for a `config.BackendConfig`; `model_ref` names the local GGUF copy."""
    from edge_guard import registry
    from edge_guard.errors import ModelNotFound

    try:
        resolved = registry.resolve(model_ref)
    except ModelNotFound as exc:
        raise ModelNotFound(
            f"the server backend renders prompts with the model's own tokenizer, read from a local "
            f"copy of the served GGUF (pass --model PATH or a pulled model id): {exc}"
        ) from None
    return ServerBackend(
        cfg.url,
        resolved.path,
        vocab_ref=resolved.ref,
        api_key_env=cfg.api_key_env,
        concurrency=cfg.concurrency,
        timeout=cfg.timeout,
        server_kind=cfg.server_kind,
    )
