"""The HTTP layer: `create_app(core, ...)` -> a FastAPI app (routes, auth, limits, errors).

Thin by design: it validates requests, turns them into `JobSpec`s for `ServiceCore`,
waits for the job while watching for a client that went away or a passed deadline
(either cancels the job's remaining work; computed labels stay stored), and shapes the
results. Errors use OpenAI's `{"error": {...}}` body: 400 names the bad field, 401 bad
key, 403 not allowed here, 404 unknown policy, 413 body too large, 504 deadline passed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from edge_guard.engine.sampling import SamplingConfig
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import ContentDelta
from edge_guard.service.core import (
    Forbidden,
    Job,
    JobSpec,
    ServiceCore,
    ShuttingDown,
    UnknownPolicy,
    failed_result,
)
from edge_guard.service.metrics import ServiceMetrics
from edge_guard.service.schemas import (
    ClassifyRequest,
    ModerationRequest,
    ModerationResponse,
    error_body,
    moderation_result,
    result_json,
)

SERVICE_MARKER = "edge_guard"
_TYPE_TAG = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|function-.*)$")
OPEN_PATHS = ("/health", "/docs", "/openapi.json")  # no key needed (no data in them)
STOPPING = "the server is shutting down; labels completed so far are stored (retry for them)"
ROUTES = ("/v1/moderations", "/v1/classify", "/v1/policies", "/v1/models", "/health", "/metrics")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param


def _error(status: int, message: str, type_: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    return JSONResponse(error_body(message, type_, param), status_code=status, headers=headers)


class GuardMiddleware:
    """Pure ASGI: bearer-key check, body-size limit (413) and per-route metrics."""

    def __init__(self, app: Any, *, api_key: str | None, max_body: int,
                 metrics: ServiceMetrics) -> None:  # fmt: skip
        self.app, self.api_key, self.max_body, self.metrics = app, api_key, max_body, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        start = time.monotonic()
        status = {"code": 500}

        async def send_wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            early = self._check(scope)
            if early is not None:
                await early(scope, receive, send_wrapped)
                return
            if scope.get("method") == "POST":  # bodies are JSON whatever the header says
                scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", [])
                                              if k.lower() != b"content-type"]
                         + [(b"content-type", b"application/json")]}  # fmt: skip
            await self.app(scope, self._limited(receive), send_wrapped)
        finally:
            self.metrics.request(route, status["code"], time.monotonic() - start)

    def _check(self, scope: dict[str, Any]) -> Response | None:
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if self.api_key is not None and scope.get("path") not in OPEN_PATHS:
            auth = headers.get("authorization", b"").decode("latin-1")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return _error(401, "missing or wrong API key (Authorization: Bearer KEY)",
                              "authentication_error", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return _error(413, f"request body over {self.max_body} bytes", "invalid_request_error")
        return None

    def _limited(self, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
        seen = 0

        async def wrapped() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise ApiError(413, f"request body over {self.max_body} bytes",
                                   "invalid_request_error")  # fmt: skip
            return message

        return wrapped


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    # pydantic adds union member tags ("str", "list[str]") to the location: not fields.
    parts = [str(p) for p in loc if p != "body" and not _TYPE_TAG.match(str(p))]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def create_app(core: ServiceCore, *, api_key: str | None = None,
               metrics: ServiceMetrics | None = None, version: str = "") -> FastAPI:  # fmt: skip
    """The service app over `core` (which holds the model, store and policies)."""
    metrics = metrics or ServiceMetrics()
    if core.observer is None:
        core.observer = metrics
    app = FastAPI(title="edge_guard", version=version or "0",
                  description="Local policy classification (OpenAI Moderation-compatible).")  # fmt: skip
    app.add_middleware(GuardMiddleware, api_key=api_key, max_body=core.limits.max_body_bytes,
                       metrics=metrics)  # fmt: skip
    app.state.core = core

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())  # a union gives one per member: report the deepest
        err = max(errors, key=lambda e: len(e.get("loc", ()))) if errors else {}
        if err.get("type") == "json_invalid":
            return _error(400, "request body is not valid JSON", "invalid_request_error")
        name = _field(err.get("loc", ())) or "body"
        return _error(400, f"field {name!r}: {err.get('msg', 'invalid')}",
                      "invalid_request_error", name)  # fmt: skip

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.type, exc.param)

    @app.exception_handler(EdgeGuardError)
    async def _edge_error(_r: Request, exc: EdgeGuardError) -> JSONResponse:
        if isinstance(exc, UnknownPolicy):
            return _error(404, str(exc), "not_found_error", "model")
        if isinstance(exc, Forbidden):
            return _error(403, str(exc), "permission_error")
        if isinstance(exc, ShuttingDown):
            return _error(503, str(exc), "server_shutting_down")
        return _error(400, str(exc).splitlines()[0], "invalid_request_error")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "service": SERVICE_MARKER, "version": version,
                **core.info(), "default_policies": core.default_policies,
                "allow_inline_policies": core.allow_inline,
                "jobs_in_flight": core.active_jobs()}  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = sorted(set(core.catalog()) | set(core.set_names()))
        data = [{"id": n, "object": "model", "created": 0, "owned_by": SERVICE_MARKER}
                for n in names]  # fmt: skip
        return {"object": "list", "data": data, SERVICE_MARKER: core.info()}

    @app.get("/v1/policies")
    async def policies() -> dict[str, Any]:
        rows, sets = await asyncio.to_thread(_policy_rows, core)
        return {"data": rows, "sets": sets, "default": core.default_policies,
                "default_set": core.default_set}  # fmt: skip

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/v1/moderations", response_model=ModerationResponse)
    async def moderations(body: ModerationRequest, request: Request) -> dict[str, Any]:
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        _check_texts(core, texts, "input")
        policies, thresholds = core.resolve(body.model)
        spec = JobSpec(texts, policies, sampling=SamplingConfig(max_tokens=core.max_tokens),
                       thresholds=thresholds)  # fmt: skip
        job = await _run(core, Job(spec), request)
        names = [p.name for p in policies]
        results = [
            moderation_result(names, [_filled(job, p, i) for p in range(len(policies))])
            for i in range(len(texts))
        ]  # fmt: skip
        model = body.model or core.default_set or ",".join(names)
        return {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": results}

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, request: Request) -> Any:
        try:
            texts = body.all_texts()
        except ValueError as exc:
            raise ApiError(400, f"field 'texts': {exc}", "invalid_request_error", "texts") from None
        _check_texts(core, texts, "texts")
        if body.policy_text is not None:
            if body.policy is not None:
                raise ApiError(400, "field 'policy_text': give policy or policy_text, not both",
                               "invalid_request_error", "policy_text")  # fmt: skip
            policies, thresholds = [core.inline_policy(body.policy_text, body.policy_output)], {}
        else:
            policies, thresholds = core.resolve(body.policy)
        max_tokens = body.max_tokens or core.max_tokens
        if max_tokens > core.limits.max_tokens:
            raise ApiError(400, f"field 'max_tokens': at most {core.limits.max_tokens}",
                           "invalid_request_error", "max_tokens")  # fmt: skip
        sampling = SamplingConfig(temperature=body.temperature, top_p=body.top_p,
                                  top_k=body.top_k, seed=body.seed, max_tokens=max_tokens)  # fmt: skip
        spec = JobSpec(texts, policies, body.style, body.effort, sampling, not body.no_cache,
                       thresholds)  # fmt: skip
        if body.stream:
            return StreamingResponse(_stream(core, spec, body.reasoning),
                                     media_type="text/event-stream")  # fmt: skip
        job = await _run(core, Job(spec), request)
        return {
            "object": "classification",
            "model": core.backend.model_ref,
            "policies": [p.name for p in policies],
            "results": [
                {**result_json(_filled(job, p, i), reasoning=body.reasoning), "index": i}
                for p in range(len(policies)) for i in range(len(texts))
            ],
        }  # fmt: skip

    return app


def _policy_rows(core: ServiceCore) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every policy (name, hash, output) and every set (its members), errors as fields."""
    rows = []
    for name in sorted(core.catalog()):
        try:
            p = core.policy(name)
        except EdgeGuardError as exc:
            rows.append({"name": name, "error": str(exc).splitlines()[0]})
            continue
        rows.append({"name": name, "description": p.description, "hash": p.hash,
                     "text_hash": p.text_hash, "output": p.output.as_dict(),
                     "custom_parser": p.parser is not None,
                     "default": name in core.default_policies})  # fmt: skip
    sets: dict[str, Any] = {}
    for name in core.set_names():
        try:
            sets[name] = core.policy_set(name).as_dict()
        except EdgeGuardError as exc:
            sets[name] = {"name": name, "error": str(exc).splitlines()[0]}
        sets[name].pop("path", None)
    return rows, sets


def _check_texts(core: ServiceCore, texts: list[str], field: str) -> None:
    lim = core.limits
    if not texts:
        raise ApiError(400, f"field {field!r}: no texts", "invalid_request_error", field)
    if len(texts) > lim.max_texts:
        raise ApiError(400, f"field {field!r}: {len(texts)} texts, at most {lim.max_texts}",
                       "invalid_request_error", field)  # fmt: skip
    for i, t in enumerate(texts):
        if len(t) > lim.max_text_chars:
            where = f"{field}[{i}]"
            raise ApiError(400, f"field {where!r}: {len(t)} characters, at most "
                           f"{lim.max_text_chars}", "invalid_request_error", where)  # fmt: skip


def _filled(job: Job, p: int, i: int) -> Any:
    res = job.results[p][i]
    if res is None:
        why = "cancelled" if job.cancelled else "not computed"
        return failed_result(job.spec.texts[i], job.spec.policies[p], why)
    return res


async def _run(core: ServiceCore, job: Job, request: Request) -> Job:
    """Submit `job` and wait; a gone client or a passed deadline cancels it."""
    core.submit(job)
    assert job.future is not None
    fut = asyncio.wrap_future(job.future)
    deadline = time.monotonic() + core.limits.deadline_s
    while True:
        try:
            done, _ = await asyncio.wait({fut}, timeout=0.2)
        except asyncio.CancelledError:  # server shutting down past its grace period
            job.cancel()
            raise
        if done:
            fut.result()
            return job
        if await request.is_disconnected():
            job.cancel()
            raise ApiError(499, "client closed the request", "cancelled")
        if core.draining_over():
            job.cancel()
            raise ApiError(503, STOPPING, "server_shutting_down")
        if time.monotonic() > deadline:
            job.cancel()
            raise ApiError(504, f"request deadline of {core.limits.deadline_s:g} s passed "
                           "(completed labels are stored)", "timeout")  # fmt: skip


async def _stream(core: ServiceCore, spec: JobSpec, reasoning: bool) -> AsyncIterator[str]:
    """SSE: `reasoning` deltas, one `result` per label, then `done` (or `error`)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def put(kind: str, data: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (kind, data))

    def on_event(p: int, i: int, ev: Any) -> None:
        if isinstance(ev, ContentDelta) and ev.channel == "analysis":
            put("reasoning", {"policy": spec.policies[p].name, "index": i, "delta": ev.text})

    def on_result(p: int, i: int, res: Any) -> None:
        put("result", {**result_json(res, reasoning=reasoning), "index": i})

    job = Job(spec, on_result=on_result, on_event=on_event)
    core.submit(job)
    assert job.future is not None
    job.future.add_done_callback(lambda f: put("done", {"error": _exc_text(f)}))
    deadline = time.monotonic() + core.limits.deadline_s
    try:
        while True:
            try:
                kind, data = await asyncio.wait_for(queue.get(), 0.25)
            except TimeoutError:
                stop = STOPPING if core.draining_over() else None
                if stop is None and time.monotonic() > deadline:
                    stop = "request deadline passed (completed labels are stored)"
                if stop is not None:
                    job.cancel()
                    yield _sse("error", {"message": stop})
                    return
                continue
            if kind == "done":
                error = data.get("error")
                yield _sse("error" if error else "done", {"message": error} if error else {})
                return
            yield _sse(kind, data)
    finally:
        job.cancel()  # no-op when finished; a client gone mid-stream cancels the rest


def _exc_text(fut: Any) -> str | None:
    exc = fut.exception() if not fut.cancelled() else None
    return None if exc is None else str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
