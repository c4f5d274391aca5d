"""Calls to a warm service for a `WarmClassifier` (`route`): restartable and cancellable.

`ServiceCall.results` sends texts to the service — under one policy (streamed: each
result as it is stored, reasoning deltas for the TUI) or under a policy set by its name
(one request: the service runs every (text, policy) pair in one engine call, as
`classify_set` does in-process) — and yields (text index, result). A service that dies
during a call (killed, idle exit) is started again once and the call goes on with the
texts not yet answered; when no service can be had, `unanswered` says which texts are
left for the command's own engine.

`Hangup` ends the calls in flight when the caller's cancel is set (the TUI's Esc) or when
the caller stops reading: each request gets a connection of its own, whose socket
`Hangup` learns as it connects (httpx's `trace` extension) and shuts down from any
thread; the service cancels that request's engine work as its client disconnects
(queued and running sequences freed; other callers' requests go on).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from edge_guard.errors import EdgeGuardError

if TYPE_CHECKING:
    from edge_guard.warm.route import WarmClassifier

CONNECTED = ("connection.connect_unix_socket.complete", "connection.connect_tcp.complete")
stats = {"remote_calls": 0, "local_calls": 0, "restarts": 0, "local_misses": 0}


class Cancel(Protocol):
    """A caller's cancel request (the TUI's `CancelFlag`), settable from any thread."""

    @property
    def is_set(self) -> bool: ...

    def check(self) -> None:
        """Raise the caller's own "cancelled" exception once set."""

    def on_set(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when set (at once if it is); returns a function that forgets it."""


class Hangup:
    """The connections of one classifier's requests in flight, and a way to end them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[Any] = []  # network streams of requests in flight
        self.stopping = False  # calls end quietly (the reader left, or a cancel)
        self.for_good = False  # cancelled: every later request is hung up too

    def on_request(self, request: Any) -> None:
        """httpx request hook: tell us of the request's connection as it is made."""
        request.extensions["trace"] = self._trace

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event not in CONNECTED:
            return
        stream = info.get("return_value")
        with self._lock:
            self._open.append(stream)
            now = self.stopping or self.for_good
        if now:
            _shut(stream)

    def finished(self) -> None:
        """The call is over: its connections are closed, no longer ours to shut."""
        with self._lock:
            self._open.clear()
            self.stopping = self.for_good

    def hang_up(self, *, for_good: bool = False) -> None:
        with self._lock:
            self.stopping = True
            self.for_good = self.for_good or for_good
            streams, self._open = self._open, []
        for stream in streams:
            _shut(stream)


def _shut(stream: Any) -> None:
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):  # closed already
            sock.shutdown(socket.SHUT_RDWR)


def client(socket_path: str, hangup: Hangup) -> Any:
    """An httpx client on the service's Unix socket: a connection per request (so that
    `hangup` can end one), no TLS, no read timeout (a long batch is not a dead service;
    a dead one fails at once)."""
    import httpx

    return httpx.Client(
        transport=httpx.HTTPTransport(
            uds=socket_path, verify=False, limits=httpx.Limits(max_keepalive_connections=0)
        ),
        timeout=httpx.Timeout(None, connect=10.0),
        event_hooks={"request": [hangup.on_request]},
    )


def _ignore(_i: int, _event: Any) -> None:
    """An event sink: with one, the client streams (results come one by one)."""


class ServiceCall:
    """Texts to the service under `local`'s policy (streamed), or under the set `pset` by
    its name (one request per batch: the service runs its pairs together), as `owner`'s
    settings say; `local` (a `Lane`) gives the cache policy and the sampling."""

    def __init__(self, owner: WarmClassifier, local: Any, pset: Any = None) -> None:
        self.owner = owner
        self.local = local
        self.pset = pset
        self.streamed = pset is None
        self._remote: Any = None
        self._http: Any = None  # the client `_remote` was made with
        self.unanswered: list[int] = []

    def results(
        self, items: Sequence[Any], sampling: Any, on_event: Callable[[int, Any], None] | None
    ) -> Iterator[tuple[int, Any]]:
        """(index in `items`, the service's result) as the service answers (a result per
        policy of a set); texts left when no service can be had (or has the set) are in
        `self.unanswered` afterwards."""
        import httpx

        owner, left = self.owner, list(range(len(items)))
        sink = (on_event or _ignore) if self.streamed else None
        self.unanswered = []
        try:
            for attempt in (0, 1):
                answered: set[int] = set()
                http = None
                try:
                    remote, http = self._service()
                    if remote is None:
                        break
                    todo = list(left)
                    events = None if sink is None else _shift(sink, todo)
                    for k, res in remote.iter(
                        [items[i] for i in todo],
                        samplings=[sampling] * len(todo) if sampling is not None else None,
                        on_event=events,
                    ):
                        answered.add(todo[k])
                        yield todo[k], res
                    stats["remote_calls"] += 1
                    return
                except (httpx.TransportError, EdgeGuardError) as exc:
                    owner.check_cancel()  # cancelled: the caller's own exception
                    if owner.hangup.stopping:  # the reader left: nothing more to do
                        return
                    left = [i for i in left if i not in answered]
                    if attempt or not owner.gone(exc):
                        if not isinstance(exc, httpx.TransportError):
                            raise
                        owner.disable(f"the warm engine failed: {exc}")
                        break
                    stats["restarts"] += 1
                    owner.lost(http)  # died (killed, idle exit): the next one takes over
            self.unanswered = left
        finally:
            owner.hangup.finished()

    def _service(self) -> tuple[Any, Any]:
        """(the `RemoteClassifier` for this policy, its http client), or (None, None)."""
        http = self.owner.service_http()
        if http is None:
            return None, None
        if self._remote is not None and self._http is http:
            return self._remote, http
        from edge_guard.backends.server_client import RemoteClassifier

        s, local = self.owner.settings, self.local
        if self.pset is not None and not set_served(http, self.pset):
            return None, None  # the service has another set of that name: this one here
        try:
            self._remote = RemoteClassifier(
                local.policy if self.pset is None else self.pset.name,
                "http://localhost",
                style=s.style,
                effort=s.effort,
                date=s.date,
                reasoning=s.reasoning,
                cascade=s.cascade,
                truncate=s.truncate,
                parallel=s.parallel,
                sampling=local.sampling,
                use_cache=local.use_cache,
                timeout=None,  # type: ignore[arg-type]  # a long batch is not a dead service
                http=http,
            )
        except EdgeGuardError as exc:  # e.g. a parse.py the service does not have
            self.owner.disable(str(exc), quiet=True)
            return None, None
        self._http = http
        return self._remote, http


def stored(local: Any, item: Any, sampling: Any) -> bool:
    """True when `item`'s label under `local`'s policy is in the store (no service
    needed; never for a cascade, whose stages the service decides, or without the cache)."""
    if not local.use_cache or local.cascade is not None:
        return False
    try:
        row = local.store.get(local.key(item, sampling))
    except EdgeGuardError:  # an unusable text: the service answers it as it should
        return False
    return row is not None and not row.get("error")


def set_served(http: Any, pset: Any) -> bool:
    """True when the service knows `pset` by its name with the same policies (same
    versions, same order) and no policy of that name shadows it."""
    import httpx

    try:
        data = http.get("http://localhost/v1/policies").json()
    except (httpx.HTTPError, ValueError):
        return False
    if not isinstance(data, dict) or any(
        row.get("name") == pset.name for row in data.get("data", [])
    ):
        return False
    members = ((data.get("sets") or {}).get(pset.name) or {}).get("policies") or []
    return [m.get("hash") for m in members] == [p.hash for p in pset.policies]


def _shift(on_event: Callable[[int, Any], None], idxs: Sequence[int]) -> Any:
    """`on_event` for a call on `idxs` (its index k is idxs[k])."""
    return lambda k, event: on_event(idxs[k], event)
