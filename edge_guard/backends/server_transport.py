"""HTTP exchanges of `ServerBackend` with a served model: bounded retries (exponential
backoff with jitter on 429/5xx/connection errors, a server's Retry-After honoured), the
one-line `ItemError` an exchange that still fails gives its item, and the one-line
`ServerError` when the server cannot be used at all. One exchange (deadline, reply cap) is
`server_http`; what the requests and replies hold is `server_protocol`.
"""

from __future__ import annotations

import random
import time
from typing import Any

from edge_guard.backends.server_http import (
    DeadlineClient,
    HttpReply,
    ReplyTooLarge,
    error_text,
    json_or_none,
    retry_after,
)
from edge_guard.backends.server_protocol import ItemError
from edge_guard.defaults import DEFAULT_PARALLEL
from edge_guard.errors import EdgeGuardError

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class ServerError(EdgeGuardError):
    """The server cannot be used at all (unreachable, wrong kind, wrong model, bad key)."""


class Transport:
    """Requests to one server (`url` carries no credentials: they travel in `auth`)."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        auth: tuple[str, str] | None,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        max_reply_bytes: int,
        concurrency: int | None,
    ) -> None:
        self.url, self.headers, self.auth = url, headers, auth
        self.timeout, self.retries, self.backoff = timeout, max(1, retries), backoff
        self.max_reply_bytes, self.concurrency = max_reply_bytes, concurrency
        self._client: DeadlineClient | None = None
        self._down = False  # set when an item ran out of retries on connection errors

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> DeadlineClient:
        if self._client is None:
            n = (self.concurrency or DEFAULT_PARALLEL) * 2 + 4
            self._client = DeadlineClient(
                self.url, self.headers, self.auth, self.timeout, self.max_reply_bytes, n
            )
        return self._client

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        attempts: int | None = None,
    ) -> HttpReply:
        """One HTTP exchange, retried on connection errors, 429 and 5xx (bounded)."""
        import httpx

        n = attempts or (1 if self._down else self.retries)
        last, transport, wait_s = "", False, None
        for attempt in range(n):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random())
                time.sleep(min(30.0, max(delay, wait_s or 0.0)))
            try:
                r = self._http().fetch(method, path, body)
            except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
                # A busy, stuck or dripping server: sending the work again would only add to
                # its queue. The deadline covers the whole exchange, not each socket read.
                raise ItemError(
                    f"{method} {self.url}{path}: no complete answer within {self.timeout:g} s "
                    "(raise --timeout, or lower --concurrency)"
                ) from None
            except ReplyTooLarge as exc:
                raise ItemError(
                    f"{method} {self.url}{path}: the reply is larger than the "
                    f"{self.max_reply_bytes:,}-byte cap ({exc}); refused"
                ) from None
            except (httpx.TimeoutException, httpx.NetworkError, httpx.ProtocolError) as exc:
                last, transport, wait_s = f"{type(exc).__name__}: {exc}", True, None
                continue
            if r.status_code in RETRY_STATUS:
                last, transport = f"HTTP {r.status_code}: {error_text(r)}", False
                wait_s = retry_after(r)
                continue
            self._down = False
            return r
        if transport:
            self._down = True  # later items try once until the server answers again
        raise ItemError(f"{method} {self.url}{path} failed after {n} attempt(s): {last}")

    def get(self, path: str) -> dict[str, Any] | None:
        """GET a JSON object; None when the server has no such endpoint."""
        try:
            r = self.request("GET", path, attempts=min(self.retries, 3))
        except ItemError as exc:
            raise ServerError(f"cannot reach the server at {self.url}: {exc}") from None
        if r.status_code in (401, 403):
            raise ServerError(
                f"the server at {self.url} refused the request (HTTP {r.status_code}: "
                f"{error_text(r)}); pass its API key with --api-key-env VAR"
            )
        return json_or_none(r) if r.status_code == 200 else None

    def post(self, path: str, body: dict[str, Any], n_prompt: int) -> dict[str, Any]:
        """POST one item's request; an error status or a reply that is not JSON fails it."""
        r = self.request("POST", path, body)
        if r.status_code >= 400:
            msg = error_text(r)
            if is_context_error(msg):
                raise ItemError(
                    f"prompt of {n_prompt} tokens does not fit the server's context "
                    f"(HTTP {r.status_code}: {msg}); start the server with a larger context"
                )
            raise ItemError(f"the server rejected the request (HTTP {r.status_code}): {msg}")
        data = json_or_none(r)
        if data is None:
            raise ItemError(f"the server answered {path} with something that is not JSON")
        return data


def is_context_error(msg: str) -> bool:
    """Whether a server's error message says the prompt does not fit its context."""
    m = msg.lower()
    return any(
        s in m
        for s in (
            "context size",
            "context length",
            "context window",
            "max_model_len",
            "exceeds the available context",
            "larger than the max context",
        )
    )
