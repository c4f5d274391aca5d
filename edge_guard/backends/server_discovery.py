"""What a server serves, asked once per `ServerBackend`: its kind (llama-server, vLLM or
another OpenAI-style server; llama-cpp-python's text-only server refused), the model id,
version, slots and context, and that it is the same model as the local GGUF copy the
prompts are rendered with (vocabulary size, and the ids decode to the same text).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_guard.backends.server_http import json_or_none
from edge_guard.backends.server_protocol import (
    ItemError,
    llama_props,
    model_meta,
    served_models,
)
from edge_guard.backends.server_transport import ServerError, Transport
from edge_guard.harmony.vocab import Vocab

VOCAB_CHECK_TEXT = "edge_guard vocabulary check: Hello, world! 12345 naïve"


@dataclass(frozen=True)
class ServerInfo:
    kind: str  # llama-server | vllm | openai
    model: str  # the id the server lists (sent with /v1/completions requests)
    version: str
    hostport: str
    slots: int | None = None
    n_ctx: int | None = None


def discover(
    http: Transport,
    *,
    kind: str,
    served_model: str | None,
    vocab: Callable[[], Vocab],
    vocab_path: str,
    hostport: str,
    redact: Callable[[str], str],
) -> ServerInfo:
    """The `ServerInfo` of the server behind `http` (`kind` "auto" finds it out)."""
    url = http.url
    props = http.get("/props") if kind in ("auto", "llama-server") else None
    version = None
    if kind == "auto":
        if props and ("default_generation_settings" in props or "build_info" in props):
            kind = "llama-server"
        elif (ver := http.get("/version")) and "version" in ver:
            kind, version = "vllm", str(ver["version"])
        else:
            api_info = (http.get("/openapi.json") or {}).get("info")
            if "llama.cpp Python" in str(isinstance(api_info, dict) and api_info.get("title")):
                raise ServerError(
                    f"{url} is llama-cpp-python's server, which takes only text prompts and "
                    "drops special tokens from its output, so harmony answers cannot be parsed; "
                    "serve the model with llama.cpp's llama-server or vLLM instead"
                )
            kind = "openai"
    elif kind == "vllm":
        version = str((http.get("/version") or {}).get("version", "unknown"))
    models = served_models(http.get("/v1/models") or {})
    ids = [m["id"] for m in models]
    if served_model is not None and served_model not in ids:
        raise ServerError(f"{url} does not serve model {served_model!r} (it serves: {ids})")
    if not ids and served_model is None:
        raise ServerError(f"{url}/v1/models lists no model")
    model = served_model or ids[0]
    meta = next((m for m in models if m["id"] == model), {})
    n_vocab, max_len = model_meta(meta)
    if n_vocab is not None and n_vocab != len(vocab()):
        raise ServerError(
            f"the server's model has {n_vocab} tokens but {vocab_path} has "
            f"{len(vocab())}: --model must name a local copy of the served model"
        )
    slots = n_ctx = None
    if kind == "llama-server":
        version, slots, n_ctx = llama_props(props or {})
    else:
        n_ctx = max_len
    info = ServerInfo(kind, redact(model), redact(version or "unknown"), hostport, slots, n_ctx)
    check_vocab(http, kind, model, vocab(), vocab_path)
    return info


def check_vocab(http: Transport, kind: str, model: str, vocab: Vocab, vocab_path: str) -> None:
    """The server must decode our ids to our text (same tokenizer), when it can say."""
    ids = vocab.encoder.encode(VOCAB_CHECK_TEXT)
    body: dict[str, Any] = {"tokens": ids}
    if kind != "llama-server":
        body["model"] = model
    try:
        r = http.request("POST", "/detokenize", body, attempts=1)
    except ItemError:
        return
    if r.status_code != 200:
        return
    data = json_or_none(r) or {}
    text = data.get("content", data.get("prompt"))
    if isinstance(text, str) and "".join(text.split()) != "".join(vocab.decode(ids).split()):
        raise ServerError(
            f"the server decodes token ids differently from {vocab_path} "
            f"({text!r} vs {vocab.decode(ids)!r}): --model must name a copy of the served model"
        )
