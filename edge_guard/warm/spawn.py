"""Finding, starting and stopping warm services (the command side of their life cycle).

`ensure(spec, settings, keep_alive)` returns the record of a running service for `spec`:
the one already there, or one it starts — `python -m edge_guard serve --uds ...` in its
own session (it outlives the command), logging to `<key>.log`, under an exclusive lock
on `<key>.lock` so that two commands never start two. It waits until the service says
"ready" on a pipe (the model is loaded and the socket listens), or fails with the log's
last error line when the service exits first. Before starting, idle services of the
same model file with other settings are stopped (two copies of a 12 GB model would not
fit a laptop). `stop(record)` sends SIGTERM (graceful: running requests finish) and
SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.warm import registry

START_TIMEOUT_S = 900.0  # a 12 GB model read from a slow disk the first time
STOP_GRACE_S = 15.0
_BIG = str(1 << 40)  # the service's per-request limits: none that a command would hit
_children: dict[int, subprocess.Popen[bytes]] = {}  # services this process started
_clients: dict[str, Any] = {}  # socket path -> httpx.Client


class WarmStartFailed(EdgeGuardError):
    """The service could not be started (the reason is in its log)."""


def http_client(socket_path: str) -> Any:
    """The httpx client (one per socket and process) that talks to a service over its Unix
    socket: no TLS, and no read timeout (a long batch is not a dead service; a dead one
    fails the connection at once)."""
    import httpx

    client = _clients.get(socket_path)
    if client is None:
        client = httpx.Client(
            transport=httpx.HTTPTransport(uds=socket_path, verify=False),
            timeout=httpx.Timeout(None, connect=10.0),
        )
        _clients[socket_path] = client
    return client


def status(record: dict[str, Any], timeout: float = 5.0) -> dict[str, Any] | None:
    """The service's `GET /warm` (key, pid, idle time, memory), None if it does not answer."""
    import httpx

    try:
        r = http_client(str(record["socket"])).get("http://localhost/warm", timeout=timeout)
        body = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, OSError):
        return None
    if not isinstance(body, dict) or body.get("key") != record["spec"].get("key"):
        return None
    return body


def alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:  # ours and exited: reaped now
        _children.pop(pid, None)
        return False
    return registry.pid_alive(pid)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def find(spec: registry.ServiceSpec) -> dict[str, Any] | None:
    """The record of the running service for `spec` that answers, else None."""
    paths = registry.paths_for(spec.key)
    record = registry.read_record(paths.record)
    if record is None or not alive(int(record["pid"])):
        return None
    st = status(record)
    return None if st is None or st.get("closing") else record


def ensure(spec: registry.ServiceSpec, settings: Any, keep_alive: float) -> dict[str, Any]:
    """The record of a ready service for `spec`, started if need be (module docstring)."""
    record = find(spec)
    if record is not None:
        return record
    paths = registry.paths_for(spec.key)
    with locked(paths.lock):
        record = find(spec)  # another command may have started it while we waited
        if record is not None:
            return record
        stale = registry.read_record(paths.record)
        if stale is not None:
            if alive(int(stale["pid"])):  # hung or closing: make room for a new one
                stop(stale)
            registry.forget(stale, paths.record)
        stop_idle_siblings(spec)
        registry.prune()
        return _start(spec, settings, keep_alive, paths)


def stop_idle_siblings(spec: registry.ServiceSpec) -> None:
    """Stop idle services of the same model file (other settings)."""
    for path, record in registry.live_records():
        other = record["spec"]
        if other.get("key") == spec.key or other.get("model_path") != spec.model_path:
            continue
        st = status(record, timeout=2.0)
        if st is None or (st.get("in_flight") == 0 and not st.get("closing")):
            stop(record, path)


def service_argv(
    spec: registry.ServiceSpec, settings: Any, keep_alive: float, socket_path: str
) -> list[str]:
    """The `edge-guard serve` command line of the service for `spec`."""
    # -P: not the current directory's `edge_guard`, but this one ($PYTHONPATH, see _start)
    argv = [
        sys.executable,
        "-P",
        "-m",
        "edge_guard",
        "serve",
        "--uds",
        socket_path,
        "--keep-alive",
        f"{keep_alive:g}",
        "--model",
        spec.model_ref,
        "--ctx",
        str(spec.ctx),
        "--gpu-layers",
        str(spec.gpu_layers),
        "--db",
        spec.db,
        "--allow-inline-policies",
        "--max-tokens",
        str(1 << 20),
        "--max-texts",
        "256",
        "--max-text-chars",
        _BIG,
        "--max-body",
        _BIG,
        "--deadline",
        "1e9",
        "--log-level",
        "warning",
    ]
    if spec.threads is not None:
        argv += ["--threads", str(spec.threads)]
    if spec.parallel is not None:
        argv += ["--parallel", str(spec.parallel)]
    if getattr(settings, "force", False):
        argv.append("--force")
    return argv


def _start(
    spec: registry.ServiceSpec, settings: Any, keep_alive: float, paths: registry.ServicePaths
) -> dict[str, Any]:
    package_root = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    r, w = os.pipe()
    env = dict(
        os.environ,
        PYTHONPATH=pythonpath,
        GGML_NO_BACKTRACE="1",
        **{registry.SPEC_ENV: json.dumps(spec.as_json()), registry.READY_FD_ENV: str(w)},
    )
    log = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        proc = subprocess.Popen(
            service_argv(spec, settings, keep_alive, paths.socket),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(w,),
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        os.close(r)
        raise WarmStartFailed(f"cannot start a warm engine: {exc}") from None
    finally:
        os.close(w)
        os.close(log)
    _children[proc.pid] = proc
    try:
        ready = _wait_ready(r, proc)
    finally:
        os.close(r)
    record = registry.read_record(paths.record) if ready else None
    if record is None:
        if proc.poll() is None:
            _kill(proc.pid)
        raise WarmStartFailed(
            f"the warm engine did not start: {_log_reason(paths.log)} (log: {paths.log})"
        )
    return record


def _wait_ready(fd: int, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    got = b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            break
        chunk = os.read(fd, 64)
        if not chunk:  # the service exited (or closed the pipe) before saying ready
            return False
        got += chunk
        if b"ready" in got:
            return True
    return False


def _log_reason(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if line.startswith("error:") or "Error" in line:
            return line.removeprefix("error: ")[:300]
    return lines[-1][:300] if lines else "it exited without a message"


def stop(record: dict[str, Any], record_path: Path | None = None) -> bool:
    """End a service (SIGTERM, then SIGKILL after STOP_GRACE_S); True if it was running."""
    pid = int(record["pid"])
    was = alive(pid)
    if was:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_exit(pid, STOP_GRACE_S):
            _kill(pid)
            _wait_exit(pid, 5.0)
    path = record_path or registry.paths_for(str(record["spec"]["key"])).record
    registry.forget(record, path)
    return was


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait (an event where the platform has pidfds) until `pid` has exited."""
    child = _children.get(pid)
    if child is not None:
        try:
            child.wait(timeout)
            _children.pop(pid, None)
            return True
        except subprocess.TimeoutExpired:
            return False
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                return bool(select.select([fd], [], [], timeout)[0])
            finally:
                os.close(fd)
    deadline = time.monotonic() + timeout
    while registry.pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
