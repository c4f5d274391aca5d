"""The service's front door (pure ASGI): who may call, and what a body must be.

Checked before any route runs, with or without an API key:
- **Host** (DNS rebinding): the `Host` header must name the bound address, `localhost`,
  `127.0.0.1`/`::1`, or a name given with `--allowed-host`; a server bound to every
  interface (0.0.0.0, ::) also takes IP literals (a rebinding attack needs a host name).
- **Origin** (browsers): a request carrying `Origin` is refused unless it is the server's
  own origin (its /docs page) or one allowed with `--cors-origin` (which then gets the CORS
  headers, preflight included).
- **Key**: `Authorization: Bearer KEY`, compared as bytes in constant time.
- **Body** of the POST routes: `Content-Type: application/json` (415 otherwise), at most
  `--max-body` bytes however it is sent (chunked included: 413), valid UTF-8 (400).
Every refusal is an OpenAI-shaped error body. Per-route metrics are counted here.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from starlette.responses import JSONResponse, Response

from edge_guard.service.metrics import ServiceMetrics
from edge_guard.service.schemas import error_body

OPEN_PATHS = ("/health", "/docs", "/openapi.json")  # no key needed (no data in them)
ROUTES = ("/v1/moderations", "/v1/classify", "/v1/policies", "/v1/models", "/health", "/metrics")
JSON_POSTS = ("/v1/moderations", "/v1/classify")
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"


def error(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param), status_code=status, headers=headers)


def host_name(value: str) -> str:
    """The host part of a Host header (`[::1]:8089` -> `::1`, `Name:80` -> `name`)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostRule:
    """Which Host header names this server answers to."""

    def __init__(self, bound: str, extra: Sequence[str] = ()) -> None:
        bound = host_name(bound)
        self.names = {*LOCAL_NAMES, bound, *(host_name(h) for h in extra)}
        self.any_ip = bound in ("0.0.0.0", "::", "")

    def allows(self, header: str) -> bool:
        name = host_name(header)
        return name in self.names or (self.any_ip and _is_ip(name))


class GuardMiddleware:
    """Host, Origin, key and body checks (see the module doc) and per-route metrics."""

    def __init__(
        self,
        app: Any,
        *,
        api_key: str | None,
        max_body: int,
        metrics: ServiceMetrics,
        hosts: HostRule,
        cors_origins: Sequence[str] = (),
    ) -> None:
        self.app, self.max_body, self.metrics, self.hosts = app, max_body, metrics, hosts
        self.key = None if api_key is None else api_key.encode("utf-8")
        self.cors = {o.rstrip("/") for o in cors_origins}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        start = time.monotonic()
        status = {"code": 500}
        headers = _headers(scope)
        origin = headers.get("origin")
        cors = origin if origin is not None and origin.rstrip("/") in self.cors else None

        async def send_wrapped(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if cors is not None:
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), *_cors_headers(cors)],
                    }
            await send(message)

        try:
            early = self._check(scope, headers, cors)
            if early is None and scope.get("method") == "POST" and path in JSON_POSTS:
                early, receive = await self._body(receive)
            if early is not None:
                await early(scope, receive, send_wrapped)
                return
            await self.app(scope, receive, send_wrapped)
        finally:
            self.metrics.request(route, status["code"], time.monotonic() - start)

    def _check(
        self, scope: dict[str, Any], headers: dict[str, str], cors: str | None
    ) -> Response | None:
        host = headers.get("host")
        if host is not None and not self.hosts.allows(host):
            return error(
                403,
                "this server does not answer to that Host name (DNS rebinding "
                "guard; allow a name with --allowed-host)",
                "permission_error",
            )
        origin = headers.get("origin")
        if origin is not None and cors is None and origin != f"http://{host}":
            return error(
                403,
                "cross-origin requests are refused (allow an origin with --cors-origin)",
                "permission_error",
            )
        if scope.get("method") == "OPTIONS" and cors is not None:
            return Response(status_code=204)  # a preflight: the CORS headers say what may come
        if self.key is not None and scope.get("path") not in OPEN_PATHS:
            auth = _raw_header(scope, b"authorization")
            given = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(given, self.key):
                return error(
                    401,
                    "missing or wrong API key (Authorization: Bearer KEY)",
                    "authentication_error",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        if scope.get("method") == "POST" and scope.get("path") in JSON_POSTS:
            kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return error(
                    415,
                    "send the body as JSON with Content-Type: application/json "
                    f"(got {kind or 'none'!r})",
                    "invalid_request_error",
                )
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                return self._too_big()
        return None

    def _too_big(self) -> Response:
        return error(413, f"request body over {self.max_body} bytes", "invalid_request_error")

    async def _body(self, receive: Any) -> tuple[Response | None, Any]:
        """Read the whole body (at most max_body bytes, however sent), check it is UTF-8,
        and hand the app a receive() that replays it, then reports a disconnect."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return Response(status_code=499), receive  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return self._too_big(), receive
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = _utf8_problem(body)
        if problem is not None:
            return error(400, f"request body {problem}", "invalid_request_error"), receive
        return None, _replay(body, receive)


def _utf8_problem(body: bytes) -> str | None:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not valid UTF-8 (bad byte at offset {exc.start})"
    nul = body.find(b"\x00")  # JSON holds no raw NUL: UTF-16/32 text, or garbage
    return None if nul < 0 else f"is not UTF-8 JSON (NUL byte at offset {nul})"


def _replay(body: bytes, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return dict(await receive())  # later calls: the disconnect, when it comes

    return replay


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _raw_header(scope: dict[str, Any], name: bytes) -> bytes:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return bytes(v)
    return b""


def _cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"vary", b"Origin"),
        (b"access-control-allow-methods", CORS_METHODS.encode()),
        (b"access-control-allow-headers", CORS_HEADERS.encode()),
        (b"access-control-max-age", b"600"),
    ]
