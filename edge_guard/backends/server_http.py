"""HTTP for `ServerBackend`: each exchange has a wall-clock deadline and a cap on the reply size.

httpx's timeouts bound each socket operation, so a server that sends one byte every half
second never trips them. Here every socket operation of an exchange (connect, write, read of
headers and body) gets only the time left before the exchange's deadline (a
`DeadlineBackend` wrapped around httpcore's network backend); past it the exchange fails with
`httpx.ReadTimeout`. The reply is streamed and refused once it exceeds `max_bytes` (its
`Content-Length` is checked first; compression is declined, so bytes read are bytes held).
`json_or_none`, `error_text` and `retry_after` read a finished reply.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

MAX_REPLY_BYTES = 8 * 1024 * 1024  # far above any reply edge_guard asks for


class ReplyTooLarge(Exception):
    """The server's reply is larger than the cap."""


@dataclass(frozen=True)
class HttpReply:
    """A fully read reply (what `error_text`, `json_or_none` and `retry_after` read)."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    reason_phrase: str = ""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, clock: DeadlineBackend) -> None:
        self._inner, self._clock = inner, clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._clock.budget(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._clock.budget(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._clock.budget(timeout))
        return _Stream(inner, self._clock)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend, with each socket operation bounded by this thread's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner
        self._local = threading.local()

    def budget(self, timeout: float | None) -> float | None:
        at = getattr(self._local, "at", None)
        if at is None:
            return timeout
        left = at - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the exchange's deadline has passed")
        return left if timeout is None else min(timeout, left)

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        self._local.at = time.monotonic() + seconds
        try:
            yield
        finally:
            self._local.at = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.connect_tcp(
            host, port, self.budget(timeout), local_address, socket_options
        )
        return _Stream(inner, self)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.connect_unix_socket(path, self.budget(timeout), socket_options)
        return _Stream(inner, self)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineClient:
    """An httpx client whose `fetch` reads a whole reply within `timeout` s and `max_bytes`."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        auth: tuple[str, str] | None,
        timeout: float,
        max_bytes: int,
        keepalive: int,
    ) -> None:
        self.timeout, self.max_bytes = timeout, max_bytes
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=keepalive)
        transport = httpx.HTTPTransport(limits=limits)
        pool = getattr(transport, "_pool", None)
        self.clock = DeadlineBackend(
            getattr(pool, "_network_backend", None) or httpcore.SyncBackend()
        )
        if pool is not None and hasattr(pool, "_network_backend"):
            pool._network_backend = self.clock
        self.client = httpx.Client(
            base_url=base_url,
            headers={**headers, "Accept-Encoding": "identity"},
            auth=auth,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            limits=limits,
            transport=transport,
        )

    def fetch(self, method: str, path: str, body: dict[str, Any] | None = None) -> HttpReply:
        """One exchange; raises httpx errors (a passed deadline is `httpx.ReadTimeout`) and
        `ReplyTooLarge`."""
        end = time.monotonic() + self.timeout
        with self.clock.deadline(self.timeout), self.client.stream(method, path, json=body) as r:
            size = r.headers.get("content-length", "")
            if size.isdigit() and int(size) > self.max_bytes:
                raise ReplyTooLarge(f"{int(size)} bytes announced")
            chunks: list[bytes] = []
            got = 0
            for chunk in r.iter_bytes():
                got += len(chunk)
                if got > self.max_bytes:
                    raise ReplyTooLarge(f"over {self.max_bytes} bytes sent")
                if time.monotonic() > end:
                    raise httpx.ReadTimeout("the exchange's deadline has passed")
                chunks.append(chunk)
            return HttpReply(r.status_code, r.headers, b"".join(chunks), r.reason_phrase)

    def close(self) -> None:
        self.client.close()


def json_or_none(r: HttpReply) -> dict[str, Any] | None:
    """The reply's JSON object; None when it is not JSON or not an object."""
    try:
        data = r.json()
    except (ValueError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def error_text(r: HttpReply) -> str:
    """The server's error message (llama-server, vLLM, FastAPI and OpenAI shapes)."""
    data = json_or_none(r)
    msg: Any = None
    if data is not None:
        err = data.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        msg = msg or data.get("message") or data.get("detail")
    if not msg:
        msg = (r.text or r.reason_phrase or "").strip()
    text = " ".join(str(msg).split())
    return text[:400] + ("…" if len(text) > 400 else "")


def retry_after(r: HttpReply) -> float | None:
    """The reply's Retry-After in seconds (at most 30); None when absent or not a number."""
    value = r.headers.get("retry-after")
    try:
        return min(30.0, float(value)) if value else None
    except ValueError:
        return None
