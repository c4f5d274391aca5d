"""The service side of a warm engine: a private Unix socket, the idle exit, the record.

`edge-guard serve --uds PATH --keep-alive 5m` builds a `WarmListener`:

- `--uds PATH`: the socket is bound here (never by uvicorn, which would make it 0666)
  with mode 0600, in a directory that must be this user's; uvicorn gets it as `fd=`. The
  HTTP protocol checks each connection's peer credentials (SO_PEERCRED on Linux,
  LOCAL_PEERCRED on macOS) and drops one from another user before reading a byte;
- `--keep-alive`: an ASGI wrapper counts requests in flight and the time since the last
  one; a watcher thread sends this process SIGTERM (uvicorn's graceful stop) once no
  request has run for the keep-alive. `GET /warm` reports the key, pid, idle time,
  requests in flight and resident memory (what `edge-guard ps` shows);
- a spawned service (`$EDGE_GUARD_WARM_SPEC`) writes its record once the model is loaded
  and says "ready" on `$EDGE_GUARD_WARM_READY_FD`; `close()` removes record and socket.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edge_guard.defaults import env, take_env
from edge_guard.errors import EdgeGuardError
from edge_guard.warm import registry

STATUS_PATH = "/warm"
STOPPING = "this warm engine is stopping (idle); start another"
log = logging.getLogger("edge_guard.warm")


# -- peer credentials ---------------------------------------------------------------------
def peer_uid(sock: Any) -> int | None:
    """The uid of the process at the other end of Unix socket `sock` (None: unknown)."""
    try:
        if hasattr(socket, "SO_PEERCRED"):  # Linux: struct ucred {pid, uid, gid}
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            return int(struct.unpack("3i", raw)[1])
        if sys.platform == "darwin":  # struct xucred {u_int version; uid_t uid; ...}
            raw = sock.getsockopt(0, 0x001, 76)  # SOL_LOCAL, LOCAL_PEERCRED
            return int(struct.unpack_from("Ii", raw)[1])
    except OSError:
        return None
    return None


def same_user(sock: Any) -> bool:
    """True when the peer runs as this process's user (or, without peer credentials on
    this platform, when the socket file's 0600 mode is all there is)."""
    uid = peer_uid(sock)
    return uid is None or uid == os.geteuid()


def peer_checked_protocol() -> type:
    """uvicorn's HTTP protocol, dropping connections from other users."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class PeerChecked(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None and not same_user(sock):
                log.warning("refused a connection from uid %s", peer_uid(sock))
                transport.abort()

    return PeerChecked


def bind_private(path: str) -> socket.socket:
    """A listening Unix socket at `path`, mode 0600, in a directory only we can enter."""
    parent = Path(path).parent
    try:
        st = os.stat(parent)
    except OSError as exc:
        raise EdgeGuardError(f"--uds {path}: {exc.strerror or exc} ({parent})") from None
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise EdgeGuardError(f"--uds {path}: its directory must be yours with mode 0700")
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise EdgeGuardError(f"--uds {path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # a dead service's socket
        else:
            raise EdgeGuardError(f"--uds {path}: another service is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise EdgeGuardError(f"--uds {path}: cannot listen there ({exc.strerror})") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident memory of `pid` (default: this process) from /proc, else getrusage's peak."""
    try:
        with open(f"/proc/{pid or 'self'}/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    if pid is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    return None


# -- the listener -------------------------------------------------------------------------
class WarmListener:
    """`--uds` and `--keep-alive` for one `edge-guard serve` process (module docstring)."""

    def __init__(self, uds: str | None, keep_alive: float | None) -> None:
        self.uds = uds
        self.keep_alive = keep_alive or 0.0  # 0: never exit for idleness
        self.sock = bind_private(uds) if uds else None
        self._sock_ino = os.stat(uds).st_ino if uds else None  # to remove only our own
        self.in_flight = 0
        self.closing = False
        self.last_activity = time.monotonic()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.spec = _spec_from_env()
        self._server: Any = None
        self.record_path: Path | None = None

    # -- uvicorn ---------------------------------------------------------------------
    def config_kwargs(self) -> dict[str, Any]:
        """Extra `uvicorn.Config` arguments: the socket and the peer-checked protocol."""
        if self.sock is None:
            return {}
        return {"fd": self.sock.fileno(), "http": peer_checked_protocol()}

    def wrap(self, app: Any) -> Any:
        """The ASGI app with request counting and `GET /warm`."""
        listener = self

        async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":  # shut down (idle, SIGTERM): stop being found
                await app(scope, receive, _on_shutdown(send, listener.close))
                return
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            if scope.get("path") == STATUS_PATH and scope.get("method") == "GET":
                await _json_response(send, listener.status())
                return
            if not listener.begin_request():  # idle exit under way: the client starts another
                await _json_response(
                    send, {"error": {"message": STOPPING, "type": "server_shutting_down"}}, 503
                )
                return
            try:
                await app(scope, receive, send)
            finally:
                listener.end_request()

        return wrapped

    # -- activity --------------------------------------------------------------------
    def begin_request(self) -> bool:
        with self._lock:
            if self.closing:
                return False
            self.in_flight += 1
            self.last_activity = time.monotonic()
            return True

    def end_request(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.last_activity = time.monotonic()
        self._wake.set()

    def idle_seconds(self) -> float:
        with self._lock:
            return self._idle()

    def _idle(self) -> float:
        return 0.0 if self.in_flight else time.monotonic() - self.last_activity

    def status(self) -> dict[str, Any]:
        with self._lock:
            in_flight, idle, closing = self.in_flight, self._idle(), self.closing
        return {
            "key": self.spec.key if self.spec else None,
            "pid": os.getpid(),
            "idle_s": round(idle, 3),
            "in_flight": in_flight,
            "closing": closing,
            "keep_alive_s": self.keep_alive,
            "rss_bytes": rss_bytes(),
        }

    # -- life cycle ------------------------------------------------------------------
    def started(self, model_ref: str, server: Any = None) -> None:
        """The model is loaded and the socket listens: record, watch idleness, say ready.
        `server` (a uvicorn.Server) is stopped gracefully after the keep-alive (else this
        process gets SIGTERM)."""
        self.last_activity = time.monotonic()
        self._server = server
        if self.spec is not None and self.uds:
            paths = registry.paths_for(self.spec.key)
            self.record_path = paths.record
            registry.write_record(
                paths.record,
                {
                    "pid": os.getpid(),
                    "socket": self.uds,
                    "spec": self.spec.as_json(),
                    "model": model_ref,
                    "keep_alive_s": self.keep_alive,
                    "started": time.time(),
                    "log": str(paths.log),
                },
            )
        if self.keep_alive > 0:
            self._watcher = threading.Thread(target=self._watch, name="eg-keep-alive", daemon=True)
            self._watcher.start()
        _say_ready()

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                idle = self._idle()
                self.closing = idle >= self.keep_alive
            if self.closing:
                log.warning("idle for %.0f s (keep-alive %g s): stopping", idle, self.keep_alive)
                self._retire()
                if self._server is not None:
                    self._server.should_exit = True  # uvicorn's graceful stop, exit status 0
                else:
                    os.kill(os.getpid(), signal.SIGTERM)
                return
            self._wake.wait(max(0.05, self.keep_alive - idle))
            self._wake.clear()

    def _retire(self) -> None:
        """Stop being found: no new command picks a service that is about to exit."""
        if self.record_path is not None:
            record = registry.read_record(self.record_path)
            if record is not None and int(record["pid"]) == os.getpid():  # not a successor's
                with contextlib.suppress(OSError):
                    self.record_path.unlink()

    def close(self) -> None:
        """Stop watching, remove the record and the socket file (if still ours)."""
        self._stop.set()
        self._wake.set()
        self._retire()
        if self.sock is not None and self.uds:
            try:
                if os.stat(self.uds).st_ino == self._sock_ino:
                    os.unlink(self.uds)
            except OSError:
                pass
            self.sock.close()


def listener_from_options(uds: str | None, keep_alive: str | None) -> WarmListener | None:
    """`serve --uds PATH --keep-alive DURATION` -> a listener (None when neither is given)."""
    if uds is None and keep_alive is None:
        return None
    seconds = 0.0
    if keep_alive is not None:
        from edge_guard.settings.keep_alive import RULE, parse_keep_alive

        try:
            seconds = parse_keep_alive(keep_alive)
        except ValueError:
            import click

            raise click.BadParameter(
                f"{keep_alive!r} {RULE}", param_hint="'--keep-alive'"
            ) from None
    return WarmListener(uds, seconds)


def _spec_from_env() -> registry.ServiceSpec | None:
    raw = env(registry.SPEC_ENV)
    if not raw:
        return None
    try:
        return registry.ServiceSpec.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError):
        raise EdgeGuardError(f"${registry.SPEC_ENV} is not a warm service spec") from None


def _say_ready() -> None:
    raw = take_env(registry.READY_FD_ENV) or ""
    if not raw.isdigit():
        return
    try:
        os.write(int(raw), b"ready\n")
        os.close(int(raw))
    except OSError:  # the command that started us is gone: serve anyway
        pass


def _on_shutdown(send: Any, callback: Any) -> Any:
    async def wrapped(message: dict[str, Any]) -> None:
        if message.get("type") == "lifespan.shutdown.complete":
            callback()
        await send(message)

    return wrapped


async def _json_response(send: Any, body: dict[str, Any], status: int = 200) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
