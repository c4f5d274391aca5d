"""Handles on submitted requests: stream a request's events, wait for (or await) its response,
cancel it; `iter_completed` yields a group's responses as they finish. A `Group` is one job
(one submit or generate_many call), the unit of the loop's fair share (`admission`)."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_guard.engine.slots import CallbackError, GenerationRequest
from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.parse import Event
from edge_guard.response import ModelResponse


class _Wakeable(Protocol):
    def wake(self) -> None: ...


CANCELLED = "cancelled"
# Priorities of a job (`Group.priority`): interactive doors (one text typed or sent by a
# person) are admitted before batch jobs; equal priorities share the slots round-robin.
BATCH, INTERACTIVE = 0, 1

log = logging.getLogger("edge_guard.engine")


@dataclass(eq=False)
class Group:
    """Requests submitted together (one job): at most `width` of them run at once.

    `priority`: higher is admitted first (`INTERACTIVE` for doors a person waits on).
    The rest is the engine loop's, kept by its thread: running requests (`active`), the
    requests still waiting, and the job's place in the round-robin (`admission`)."""

    width: int
    priority: int = BATCH
    active: int = 0
    shared: list[int] | None = None  # the prefix of requests that give no `prefix_len`
    waiting: deque[Handle] = field(default_factory=deque)
    tag: int = 0  # the virtual finish time of its next request (admission's fair queuing)
    last: int = 0  # ... and of its latest admitted request
    arrival: int = 0  # order in which jobs started waiting (ties: the earlier first)
    admitted: int = 0  # requests admitted so far


class Handle:
    """A submitted request: its events, its final response, and a way to cancel it."""

    def __init__(
        self,
        loop: _Wakeable,
        request: GenerationRequest,
        group: Group,
        index: int,
        sink: queue.Queue[tuple[int, ModelResponse]] | None,
        stream: bool,
    ) -> None:
        self._loop = loop
        self.request = request
        self.group = group
        self.index = index
        self._sink = sink
        self._events: queue.Queue[Event | None] | None = queue.Queue() if stream else None
        self._done = threading.Event()
        self._response: ModelResponse | None = None
        self._lock = threading.Lock()
        self._waiters: list[Any] = []  # callbacks run once the response is in
        self.cancelled = False
        self.seq_id: int | None = None  # its sequence while it runs
        self.admitted: int | None = None  # its place in the loop's admission order
        # An exception a request's own callback raised (not an engine failure): re-raised
        # to the caller by result() and iter_completed instead of a response.
        self.exception: BaseException | None = None

    def cancel(self) -> None:
        """Stop this request (queued or running); its response becomes a 'cancelled' error."""
        if not self._done.is_set():
            self.cancelled = True
            self._loop.wake()

    def done(self) -> bool:
        return self._done.is_set()

    def wait_done(self, timeout: float | None = None) -> bool:
        """Wait for the request to complete; whether it did within `timeout` seconds."""
        return self._done.wait(timeout)

    def result(self, timeout: float | None = None) -> ModelResponse:
        if not self._done.wait(timeout):
            raise TimeoutError("the request is still running")
        if self.exception is not None:
            raise self.exception
        assert self._response is not None
        return self._response

    async def wait_async(self) -> ModelResponse:
        """Await the response from asyncio without blocking the event loop."""
        aio = asyncio.get_running_loop()
        future: asyncio.Future[None] = aio.create_future()

        def settle() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:
            aio.call_soon_threadsafe(settle)

        with self._lock:
            if not self._done.is_set():
                self._waiters.append(wake)
                pending = True
            else:
                pending = False
        if pending:
            await future
        return self.result()

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """The request's parser events as they happen (submit with `stream=True`)."""
        if self._events is None:
            raise EdgeGuardError("events() needs a handle submitted with stream=True")
        while True:
            ev = self._events.get(timeout=timeout)
            if ev is None:
                return
            yield ev

    # -- called by the loop thread ----------------------------------------------------------
    def emit(self, events: list[Event]) -> None:
        on_event = self.request.on_event
        for ev in events:
            if on_event is not None:
                try:
                    on_event(ev)
                except Exception as exc:  # the caller's own: it fails this request alone
                    raise CallbackError(exc) from exc
            if self._events is not None:
                self._events.put(ev)

    def complete(self, response: ModelResponse) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._response = response
            self._done.set()
            waiters, self._waiters = self._waiters, []
        # Nothing a waiter does may stop the loop (an asyncio loop closed before its
        # response came raises here): the response is in; a waiter that is gone misses it.
        for wake in waiters:
            try:
                wake()
            except Exception as exc:
                log.debug("a waiter of request %d could not be woken: %s", self.index, exc)
        if self._events is not None:
            self._events.put(None)
        if self._sink is not None:
            try:
                self._sink.put((self.index, response))
            except Exception as exc:
                log.warning("request %d: its response could not be delivered: %s", self.index, exc)


def iter_completed(
    handles: list[Handle],
    sink: queue.Queue[tuple[int, ModelResponse]],
    timeout: float | None = None,
) -> Iterator[tuple[int, ModelResponse]]:
    """Yield (index, response) as each handle completes; closing early cancels the rest.

    `timeout`: seconds for the whole group; past it the rest are cancelled and
    TimeoutError is raised (None: wait as long as it takes)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for _ in range(len(handles)):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                index, response = sink.get(timeout=left)
            except queue.Empty:
                raise TimeoutError(f"the requests did not complete within {timeout}s") from None
            failed = handles[index].exception
            if failed is not None:
                raise failed
            yield index, response
    finally:
        for h in handles:
            if not h.done():
                h.cancel()
        for h in handles:
            h.wait_done(60)
