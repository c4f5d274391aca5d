"""Real HTTP servers for the server-backend tests (started on 127.0.0.1, always killed).

- `python tests/server_helpers.py --model M --port P --dialect D` runs llama-cpp-python's own
  server app (`llama_cpp.server.app.create_app`). With ``--dialect stock`` it is exactly
  `python -m llama_cpp.server`. That server takes only text prompts and drops special tokens
  from its output, so for ``llama-server`` / ``vllm`` this file adds the routes those servers
  document, decoding with llama-cpp-python's `Llama` (greedy on the raw logits):
  llama-server's ``/completion`` (token-id prompt, ``return_tokens``, ``n_probs``,
  ``stop_type``, ``/props``, ``/detokenize``) or vLLM's ``/v1/completions`` (token-id prompt,
  ``return_token_ids``, ``return_tokens_as_token_ids``, ``logprob_token_ids``,
  ``stop_token_ids``, ``stop_reason``, ``/version``).
- `ServerProcess` starts and kills such a server (or a real `llama-server` binary).
- `FlakyProxy` forwards to a server after answering the first requests with errors.
- `FakeLlamaServer` answers llama-server's discovery routes with scriptable JSON and its
  ``/completion`` with whatever a test scripts: echoed secrets, a drip, a huge reply, bad ids.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def llama_server_binary() -> tuple[str | None, str]:
    """(path, "") of a real llama.cpp `llama-server`, or (None, why not).

    $EDGE_GUARD_TEST_LLAMA_SERVER when set, else the prebuilt one beside the clone
    (`../shared/bin/llama-server`, where CI puts it), else one on PATH.
    """
    env = os.environ.get("EDGE_GUARD_TEST_LLAMA_SERVER")
    if env:
        if os.access(env, os.X_OK):
            return env, ""
        return None, f"$EDGE_GUARD_TEST_LLAMA_SERVER={env} is not an executable file"
    shared = REPO_ROOT.parent / "shared" / "bin" / "llama-server"
    if os.access(shared, os.X_OK):
        return str(shared), ""
    import shutil

    found = shutil.which("llama-server")
    if found:
        return found, ""
    return None, (
        f"no llama-server binary: none at {shared}, none on PATH, and "
        "$EDGE_GUARD_TEST_LLAMA_SERVER is not set"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A server subprocess on 127.0.0.1:`port`; `start()` waits until it answers."""

    ready_path = "/v1/models"  # answers 200 once the server is up
    start_timeout = 60.0
    pass_fds: tuple[int, ...] = ()  # descriptors the server inherits (an event pipe's write end)

    def __init__(
        self, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.argv, self.port, self.log, self.env = argv, port, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def shim(
        cls, model: Path, dialect: str, log_dir: Path, *, n_ctx: int = 2048, port: int | None = None
    ) -> ServerProcess:
        port = port or free_port()
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--model",
            str(model),
            "--port",
            str(port),
            "--dialect",
            dialect,
            "--n-ctx",
            str(n_ctx),
        ]
        return cls(argv, port, log_dir / f"{dialect}-{port}.log")

    @classmethod
    def llama_server(
        cls,
        binary: str,
        model: Path,
        log_dir: Path,
        *,
        n_ctx: int = 4096,
        parallel: int = 2,
        threads: int = 1,
    ) -> ServerProcess:
        port = free_port()
        argv = [
            binary,
            "-m",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            str(n_ctx),
            "--parallel",
            str(parallel),
            "-fa",
            "off",
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "--no-webui",
            "--kv-unified",
        ]
        return cls(argv, port, log_dir / f"llama-server-{port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float | None = None) -> Self:
        timeout = timeout or self.start_timeout
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                pass_fds=self.pass_fds,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not start in {timeout} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class FlakyProxy:
    """Forwards to `target`; the first `fail` POSTs to `path` answer HTTP `status` instead."""

    def __init__(
        self, target: str, *, fail: int = 2, status: int = 500, path: str | None = None
    ) -> None:
        self.target, self.fail, self.status, self.path = target.rstrip("/"), fail, status, path
        self.log: list[tuple[str, str, int]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hit = proxy.path is None or self.path == proxy.path
                if method == "POST" and hit and proxy.fail > 0:
                    proxy.fail -= 1
                    self._send(proxy.status, b'{"error": {"message": "injected failure"}}')
                    proxy.log.append((method, self.path, proxy.status))
                    return
                r = httpx.request(
                    method,
                    proxy.target + self.path,
                    content=body or None,
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                )
                proxy.log.append((method, self.path, r.status_code))
                self._send(r.status_code, r.content)

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeLlamaServer:
    """A model-less llama-server stand-in on 127.0.0.1 (threads; `close()` stops it).

    `props` / `models` are the JSON of ``/props`` / ``/v1/models`` (None: HTTP 404);
    ``/detokenize`` is 404 (the vocabulary check is skipped). Each ``/completion`` is answered
    by the next of `script` (then by `default`): a dict is sent as JSON (HTTP 200), a callable
    gets the handler and the request's JSON body and answers itself. `seen` records every
    request's method, path and headers.
    """

    def __init__(
        self, default: Any = None, *, props: Any = "default", models: Any = "default"
    ) -> None:
        self.props = (
            {
                "build_info": "b1-fake",
                "total_slots": 1,
                "default_generation_settings": {"n_ctx": 4096},
            }
            if props == "default"
            else props
        )
        self.models = {"data": [{"id": "fake.gguf"}]} if models == "default" else models
        self.script: list[Any] = []
        self.default = default
        self.seen: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.seen.append(
                    {"method": "GET", "path": self.path, "headers": dict(self.headers)}
                )
                obj = {"/props": fake.props, "/v1/models": fake.models}.get(self.path)
                send_json(self, 404 if obj is None else 200, obj or {"error": "not found"})

            def do_POST(self) -> None:
                fake.seen.append(
                    {"method": "POST", "path": self.path, "headers": dict(self.headers)}
                )
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/completion":
                    send_json(self, 404, {"error": "not found"})
                    return
                answer = fake.script.pop(0) if fake.script else fake.default
                if callable(answer):
                    answer(self, json.loads(raw))
                else:
                    send_json(self, 200, answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_json(handler: BaseHTTPRequestHandler, status: int, obj: Any) -> None:
    data = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def drip(body: bytes, every: float) -> Any:
    """A /completion answer that sends `body` one byte every `every` s (until the client leaves)."""

    def answer(handler: BaseHTTPRequestHandler, _request: dict[str, Any]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            for i in range(len(body)):
                handler.wfile.write(body[i : i + 1])
                handler.wfile.flush()
                time.sleep(every)
        except OSError:
            pass  # the client gave up

    return answer


def flood(n_bytes: int, announce: bool) -> Any:
    """A /completion answer of `n_bytes` of JSON: with its Content-Length, or streamed until
    the connection closes (then it sends them all, 64 KiB at a time, unless the client leaves)."""

    def answer(handler: BaseHTTPRequestHandler, _request: dict[str, Any]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if announce:
            handler.send_header("Content-Length", str(n_bytes))
        handler.send_header("Connection", "close")
        handler.end_headers()
        head = b'{"tokens": [], "content": "'
        piece = b"x" * 65536
        try:
            handler.wfile.write(head)
            sent = len(head)
            while sent < n_bytes - 2:
                chunk = piece[: n_bytes - 2 - sent]
                handler.wfile.write(chunk)
                sent += len(chunk)
            handler.wfile.write(b'"}')
        except OSError:
            pass
        handler.close_connection = True

    return answer


# -- the server process ---------------------------------------------------------------------
def _decode(
    llama: Any,
    prompt: list[int],
    n: int,
    n_probs: int,
    want: list[int],
    bias: dict[int, float],
    stop_ids: set[int],
) -> dict[str, Any]:
    """Greedy decoding on the raw logits, as llama-server / vLLM do at temperature 0."""
    import llama_cpp
    import numpy as np

    n_vocab, n_ctx = llama.n_vocab(), llama.n_ctx()
    llama.reset()
    t0 = time.perf_counter()
    llama.eval(prompt)
    t1 = time.perf_counter()
    out: list[int] = []
    tops: list[dict[int, float]] = []
    stop = "limit"
    while len(out) < n:
        ptr = llama._ctx.get_logits_ith(-1)
        logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
        if n_probs:
            lp = logits - logits.max()
            lp -= np.log(np.exp(lp).sum())
            ids = want or [int(i) for i in np.argsort(-lp, kind="stable")[:n_probs]]
            tops.append({int(i): float(lp[i]) for i in ids})
        for tok_id, b in bias.items():
            logits[tok_id] += b
        tok = int(np.argmax(logits))
        out.append(tok)
        if llama_cpp.llama_vocab_is_eog(llama._model.vocab, tok) or tok in stop_ids:
            stop = "eos"
            break
        if llama.n_tokens >= n_ctx:
            break
        llama.eval([tok])
    t2 = time.perf_counter()
    return {
        "tokens": out,
        "tops": tops,
        "stop": stop,
        "prompt_ms": (t1 - t0) * 1000,
        "predicted_ms": (t2 - t1) * 1000,
    }


def build_app(model: str, n_ctx: int, dialect: str) -> Any:
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse
    from llama_cpp.server import app as lapp
    from llama_cpp.server.settings import Settings

    app = lapp.create_app(
        settings=Settings(model=model, n_ctx=n_ctx, logits_all=False, n_threads=1, verbose=False)
    )
    if dialect == "stock":
        return app
    import llama_cpp

    llama = lapp._llama_proxy(None)  # type: ignore[misc]
    lock = threading.Lock()
    stock_routes = list(app.router.routes)  # ours go first, shadowing the stock ones

    def too_long(prompt: list[int]) -> JSONResponse | None:
        if len(prompt) < n_ctx:
            return None
        msg = (
            f"request ({len(prompt)} tokens) exceeds the available context size ({n_ctx} tokens), try increasing it"
            if dialect == "llama-server"
            else f"This model's maximum context length is {n_ctx} tokens. However, you requested {len(prompt)} tokens in the prompt."
        )
        return JSONResponse(
            {"error": {"code": 400, "message": msg, "type": "exceed_context_size_error"}}, 400
        )

    def text(ids: list[int]) -> str:
        return bytes(llama.detokenize(ids, special=True)).decode("utf-8", "replace")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        entry = {
            "id": model,
            "object": "model",
            "owned_by": "test",
            "max_model_len": n_ctx,
            "meta": {"n_vocab": llama.n_vocab(), "n_ctx_train": n_ctx},
        }
        return {"object": "list", "data": [entry]}

    if dialect == "llama-server":

        @app.get("/health")
        def health() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/props")
        def props() -> dict[str, Any]:
            return {
                "default_generation_settings": {"n_ctx": n_ctx},
                "total_slots": 1,
                "model_path": model,
                "build_info": f"llama-cpp-python-{llama_cpp.__version__}-shim",
            }

        @app.post("/detokenize")
        def detokenize(body: dict[str, Any]) -> dict[str, str]:
            return {"content": text(body["tokens"])}

        @app.post("/completion")
        def completion(body: dict[str, Any]) -> Any:
            prompt = body["prompt"]
            if not isinstance(prompt, list) or body.get("temperature", 0.8) != 0:
                raise HTTPException(400, "this test server takes token ids, temperature 0")
            if (err := too_long(prompt)) is not None:
                return err
            n_probs = int(body.get("n_probs") or 0)
            bias = {int(t): float(b) for t, b in body.get("logit_bias") or []}
            with lock:
                r = _decode(llama, prompt, int(body.get("n_predict", -1)), n_probs, [], bias, set())
            res: dict[str, Any] = {
                "content": text(r["tokens"]),
                "tokens": r["tokens"] if body.get("return_tokens") else [],
                "stop": True,
                "stop_type": r["stop"],
                "tokens_evaluated": len(prompt),
                "truncated": False,
                "tokens_cached": len(prompt) + len(r["tokens"]),
                "timings": {
                    "prompt_n": len(prompt),
                    "prompt_ms": r["prompt_ms"],
                    "cache_n": 0,
                    "predicted_n": len(r["tokens"]),
                    "predicted_ms": r["predicted_ms"],
                },
            }
            if n_probs:
                res["completion_probabilities"] = [
                    {
                        "id": tok,
                        "logprob": top.get(tok, -99.0),
                        "top_logprobs": [{"id": i, "logprob": lp} for i, lp in top.items()],
                    }
                    for tok, top in zip(r["tokens"], r["tops"], strict=False)
                ]
            return res

        return _ours_first(app, stock_routes)

    @app.get("/version")
    def version() -> dict[str, str]:
        return {"version": f"0.0.0-llama-cpp-python-{llama_cpp.__version__}-shim"}

    @app.post("/detokenize")
    def detokenize_v(body: dict[str, Any]) -> dict[str, str]:
        return {"prompt": text(body["tokens"])}

    @app.post("/v1/completions")
    def completions(body: dict[str, Any]) -> Any:
        prompt = body["prompt"]
        if not isinstance(prompt, list) or body.get("temperature", 1.0) != 0:
            raise HTTPException(400, "this test server takes token ids, temperature 0")
        if (err := too_long(prompt)) is not None:
            return err
        n_probs = int(body.get("logprobs") or 0)
        want = [int(t) for t in body.get("logprob_token_ids") or []]
        bias = {int(t): float(b) for t, b in (body.get("logit_bias") or {}).items()}
        stops = {int(t) for t in body.get("stop_token_ids") or []}
        with lock:
            r = _decode(llama, prompt, int(body.get("max_tokens", 16)), n_probs, want, bias, stops)
        ids = r["tokens"]
        choice: dict[str, Any] = {
            "index": 0,
            "text": text(ids),
            "finish_reason": "length" if r["stop"] == "limit" else "stop",
            "stop_reason": ids[-1] if ids and ids[-1] in stops else None,
        }
        if body.get("return_token_ids"):
            choice["token_ids"], choice["prompt_token_ids"] = ids, prompt
        if n_probs:
            name = (
                (lambda i: f"token_id:{i}")
                if body.get("return_tokens_as_token_ids")
                else (lambda i: text([i]))
            )
            choice["logprobs"] = {
                "tokens": [name(i) for i in ids],
                "text_offset": [0] * len(ids),
                "token_logprobs": [top.get(i) for i, top in zip(ids, r["tops"], strict=False)],
                "top_logprobs": [{name(i): lp for i, lp in top.items()} for top in r["tops"]],
            }
        usage = {
            "prompt_tokens": len(prompt),
            "completion_tokens": len(ids),
            "total_tokens": len(prompt) + len(ids),
        }
        return {
            "id": "cmpl-test",
            "object": "text_completion",
            "model": model,
            "choices": [choice],
            "usage": usage,
        }

    return _ours_first(app, stock_routes)


def _ours_first(app: Any, stock_routes: list[Any]) -> Any:
    ours = [r for r in app.router.routes if r not in stock_routes]
    app.router.routes[:] = ours + stock_routes
    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--dialect", choices=("stock", "llama-server", "vllm"), default="llama-server")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    app = build_app(args.model, args.n_ctx, args.dialect)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
