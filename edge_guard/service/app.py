"""The HTTP layer: `create_app(core, ...)` -> a FastAPI app (routes, errors).

Thin by design: `guard` checks who may call and what a body must be; `request` turns a
body into a checked `JobSpec` for `ServiceCore`; this module waits for the job while
watching for a client that went away, a passed deadline or the end of shutdown's drain
(each cancels the job's remaining work; computed labels stay stored), and shapes the
results. Every error, 404 and 405 included, has OpenAI's `{"error": {"message", "type",
"param", "code"}}` body: 400 names the bad field (`param`), 401 bad key, 403 not allowed
here, 404 unknown policy or route, 405 wrong method, 413 body too large, 415 not JSON,
500 a policy the server cannot load (by name; the log has the detail), 503 shutting down,
504 deadline passed. `/v1/moderations` refuses the edge-guard fields it cannot take (400
pointing to /v1/classify) and ignores other unknown fields, as OpenAI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import ContentDelta
from edge_guard.service import openai_shape
from edge_guard.service.catalog import BadInlinePolicy, PolicyUnavailable
from edge_guard.service.core import (
    Forbidden,
    Job,
    JobSpec,
    ServiceCore,
    ShuttingDown,
    UnknownPolicy,
    failed_result,
)
from edge_guard.service.guard import GuardMiddleware, HostRule, error
from edge_guard.service.metrics import ServiceMetrics
from edge_guard.service.request import classify_spec, moderation_spec, spec_summary
from edge_guard.service.schemas import (
    ClassifyRequest,
    FieldError,
    ModerationRequest,
    ModerationResponse,
    field_terms,
    moderation_result,
    refuse_classify_fields,
    result_json,
)

log = logging.getLogger("edge_guard.service")
SERVICE_MARKER = "edge_guard"
_TYPE_TAG = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|function-.*)$")
STOPPING = "the server is shutting down; labels completed so far are stored (retry for them)"
_HTTP_TYPES = {404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    # pydantic adds union member tags ("str", "list[str]") to the location: not fields.
    parts = [str(p) for p in loc if p != "body" and not _TYPE_TAG.match(str(p))]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def _parse_problem(exc: BaseException) -> str:
    """Why FastAPI could not read a JSON body (the cause it wraps), in a few words."""
    cause = exc.__cause__
    if isinstance(cause, RecursionError):
        return "request body: JSON nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return f"request body is not valid UTF-8 (bad byte at offset {cause.start})"
    if isinstance(cause, ValueError):
        return f"request body is not valid JSON ({str(cause).splitlines()[0]})"
    return "request body could not be read as JSON"


def create_app(
    core: ServiceCore,
    *,
    api_key: str | None = None,
    metrics: ServiceMetrics | None = None,
    version: str = "",
    hosts: HostRule | None = None,
    cors_origins: tuple[str, ...] = (),
) -> FastAPI:
    """The service app over `core` (which holds the model, store, settings and policies).
    `hosts`: the Host names it answers to (default: loopback names only)."""
    metrics = metrics or ServiceMetrics()
    if core.observer is None:
        core.observer = metrics
    app = FastAPI(
        title="edge_guard",
        version=version or "0",
        description="Local policy classification (OpenAI Moderation-compatible).",
    )
    app.add_middleware(
        GuardMiddleware,
        api_key=api_key,
        max_body=core.limits.max_body_bytes,
        metrics=metrics,
        hosts=hosts or HostRule("127.0.0.1"),
        cors_origins=cors_origins,
    )
    app.state.core = core

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())  # a union gives one per member: report the deepest
        err = max(errors, key=lambda e: len(e.get("loc", ()))) if errors else {}
        if err.get("type") == "json_invalid":
            where = (err.get("ctx") or {}).get("error") or "invalid"
            return error(400, f"request body is not valid JSON ({where})", "invalid_request_error")
        name = _field(err.get("loc", ())) or "body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        return error(400, f"field {name!r}: {msg}", "invalid_request_error", name)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body
            return error(400, _parse_problem(exc), "invalid_request_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error(
            exc.status_code,
            message,
            _HTTP_TYPES.get(exc.status_code, "api_error"),
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message, exc.type, exc.param)

    @app.exception_handler(FieldError)
    async def _field_error(_r: Request, exc: FieldError) -> JSONResponse:
        return error(400, str(exc), "invalid_request_error", exc.field)

    @app.exception_handler(EdgeGuardError)
    async def _edge_error(_r: Request, exc: EdgeGuardError) -> JSONResponse:
        if isinstance(exc, UnknownPolicy):
            return error(404, str(exc), "not_found_error", "model")
        if isinstance(exc, Forbidden):
            return error(403, str(exc), "permission_error")
        if isinstance(exc, ShuttingDown):
            return error(503, str(exc), "server_shutting_down")
        if isinstance(exc, PolicyUnavailable):
            return error(500, str(exc), "server_error")
        if isinstance(exc, BadInlinePolicy):
            return error(400, str(exc), "invalid_request_error", exc.param)
        message, param = field_terms(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return error(400, message, "invalid_request_error", param)

    @app.exception_handler(Exception)
    async def _internal(_r: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error", exc_info=exc)
        return error(500, "internal error (the server log has the detail)", "server_error")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "service": SERVICE_MARKER,
            "version": version,
            **core.info(),
            "default_policies": core.default_policies,
            "default_set": core.default_set,
            "defaults": core.settings.request(),
            "allow_inline_policies": core.allow_inline,
            "jobs_in_flight": core.active_jobs(),
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = sorted(set(core.policy_names()) | set(core.set_names()))
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": SERVICE_MARKER} for n in names
        ]
        return {"object": "list", "data": data, SERVICE_MARKER: core.info()}

    @app.get("/v1/policies")
    async def policies() -> dict[str, Any]:
        rows, sets = await asyncio.to_thread(_policy_rows, core)
        return {
            "data": rows,
            "sets": sets,
            "default": core.default_policies,
            "default_set": core.default_set,
        }

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/v1/moderations", response_model=ModerationResponse)
    async def moderations(body: ModerationRequest, request: Request) -> dict[str, Any]:
        refuse_classify_fields(body)  # an edge-guard field it cannot take: 400, not dropped
        texts = openai_shape.input_texts(body.input)  # image parts: a 400
        spec = moderation_spec(core, texts, body.model)
        spec.policy_set = openai_shape.taxonomy_set(spec)  # OpenAI's 13 keys: one prompt
        job = await _run(core, Job(spec), request)
        names = [p.name for p in spec.policies]
        results = []
        for i in range(len(texts)):
            got = [_filled(job, p, i) for p in range(len(names))]
            shaped = moderation_result(names, got)
            results.append(openai_shape.shape(shaped, got) if spec.policy_set else shaped)
        model = body.model or core.default_set or ",".join(names)
        return {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": results}

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, request: Request) -> Any:
        spec = classify_spec(core, body)
        if body.stream:
            return StreamingResponse(
                _stream(core, spec, body.include_reasoning), media_type="text/event-stream"
            )
        job = await _run(core, Job(spec), request)
        return {
            "object": "classification",
            "model": core.info()["model"],
            "policies": [p.name for p in spec.policies],
            "options": spec_summary(spec),
            "results": [
                {
                    **result_json(_filled(job, p, i), include_reasoning=body.include_reasoning),
                    "index": i,
                }
                for p in range(len(spec.policies))
                for i in range(len(spec.texts))
            ],
        }

    return app


def _policy_rows(core: ServiceCore) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every policy (name, hash, output) and every set (its members), errors as fields
    (by name only: the detail of a load failure is in the server log, never here)."""
    rows: list[dict[str, Any]] = []
    for name in core.policy_names():
        try:
            p = core.policy(name)
        except EdgeGuardError as exc:
            rows.append({"name": name, "error": str(exc).splitlines()[0]})
            continue
        rows.append(
            {
                "name": name,
                "description": p.description,
                "hash": p.hash,
                "text_hash": p.text_hash,
                "output": p.output.as_dict(),
                "custom_parser": p.parser is not None,
                "judges": p.judges,
                "default": name in core.default_policies,
            }
        )
    sets: dict[str, Any] = {}
    for name in core.set_names():
        try:
            sets[name] = core.policy_set(name).as_dict()
        except EdgeGuardError as exc:
            sets[name] = {"name": name, "error": str(exc).splitlines()[0]}
        sets[name].pop("path", None)
        for member in sets[name].get("policies", []):
            member.pop("ref", None)  # how the set file names it: maybe a path
    return rows, sets


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
        stop = _stopped(core, deadline)
        if stop is not None:
            job.cancel()
            raise ApiError(503 if stop[1] == "server_shutting_down" else 504, *stop)


async def _stream(core: ServiceCore, spec: JobSpec, include_reasoning: bool) -> AsyncIterator[str]:
    """SSE: `reasoning` deltas, one `result` per label, then `done` (or `error`). The
    deadline and the end of shutdown's drain cut the stream however fast tokens come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def put(kind: str, data: dict[str, Any]) -> None:
        if not loop.is_closed():  # the stream may have ended (cut, client gone) before the job
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, (kind, data))

    def on_event(p: int, i: int, ev: Any) -> None:
        if isinstance(ev, ContentDelta) and ev.channel == "analysis":
            put("reasoning", {"policy": spec.policies[p].name, "index": i, "delta": ev.text})

    def on_result(p: int, i: int, res: Any) -> None:
        put("result", {**result_json(res, include_reasoning=include_reasoning), "index": i})

    job = Job(spec, on_result=on_result, on_event=on_event)
    core.submit(job)
    assert job.future is not None
    job.future.add_done_callback(lambda f: put("done", _failure(f)))
    deadline = time.monotonic() + core.limits.deadline_s
    try:
        while True:
            stop = _stopped(core, deadline)
            if stop is not None:
                job.cancel()
                yield _sse("error", {"message": stop[0], "type": stop[1]})
                return
            wait = min(0.25, max(0.0, deadline - time.monotonic()))
            try:
                kind, data = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                continue
            if kind == "done":
                yield _sse("error", data) if data else _sse("done", {})
                return
            yield _sse(kind, data)
    finally:
        job.cancel()  # no-op when finished; a client gone mid-stream cancels the rest


def _stopped(core: ServiceCore, deadline: float) -> tuple[str, str] | None:
    """(message, type) when a request must stop now: shutdown's drain over, or its deadline."""
    if core.draining_over():
        return STOPPING, "server_shutting_down"
    if time.monotonic() > deadline:
        return (
            f"request deadline of {core.limits.deadline_s:g} s passed (completed labels "
            "are stored)",
            "timeout",
        )
    return None


def _failure(fut: Any) -> dict[str, str]:
    """A streamed job's failure as an error event ({} when it succeeded): a request error
    in field terms; anything else a generic line (the detail goes to the server log)."""
    exc = fut.exception() if not fut.cancelled() else None
    if exc is None:
        return {}
    if isinstance(exc, EdgeGuardError) and str(exc):
        return {
            "message": field_terms(str(exc).splitlines()[0])[0],
            "type": "invalid_request_error",
        }
    log.error("streamed job failed", exc_info=exc)
    return {"message": "internal error (the server log has the detail)", "type": "server_error"}


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
