"""Where warm services live and how they are told apart: specs, keys, paths, records.

A warm service serves ONE model file with ONE set of engine settings and store. Its
`ServiceSpec` holds what it cannot change per request — the model file's identity (real
path, device, inode, size, mtime), context size, GPU layers, threads, parallel
sequences, the result store, and the code running it (edge_guard's files, Python) — and
`spec.key` (a hash of all of it) names its socket, record, lock and log in
`<data dir>/warm/` (mode 0700, checked to be this user's). A command whose spec differs
in anything gets another service, never this one.

The service writes its record (`<key>.json`: pid, socket, spec, keep-alive, log) once
it is ready and removes it when it exits; `live_records()` drops records whose process
is gone (a killed service) with their sockets.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tempfile
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from edge_guard.defaults import env
from edge_guard.errors import EdgeGuardError

WARM_DIR = "warm"
SPEC_ENV = "EDGE_GUARD_WARM_SPEC"  # the spec a spawned service records (JSON)
READY_FD_ENV = "EDGE_GUARD_WARM_READY_FD"  # where it says "ready" (a pipe)
_MAX_SOCKET_PATH = 100  # sun_path holds 104 (macOS) or 108 (Linux) bytes


@dataclass(frozen=True)
class ServiceSpec:
    """What one warm service is fixed to (see the module docstring)."""

    model_ref: str
    model_path: str
    model_file: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns
    ctx: int
    gpu_layers: int | str
    threads: int | None
    parallel: int | None
    db: str
    code: str
    python: str

    @property
    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceSpec:
        fields = {k: v for k, v in data.items() if k != "key"}
        fields["model_file"] = tuple(fields["model_file"])
        spec = cls(**fields)
        if data.get("key") not in (None, spec.key):
            raise ValueError("spec key does not match its fields")
        return spec


def spec_for(settings: Any, model_ref: str, model_path: str) -> ServiceSpec:
    """The spec a command with `settings` (a `Settings`) needs for the file `model_path`."""
    from edge_guard.paths import default_db_path

    st = os.stat(model_path)
    threads = settings.threads
    if threads is None and env("EDGE_GUARD_THREADS"):
        threads = int(env("EDGE_GUARD_THREADS") or 0)  # what the engine would read
    db = os.path.realpath(settings.db) if settings.db else str(default_db_path().resolve())
    return ServiceSpec(
        model_ref,
        os.path.realpath(model_path),
        (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
        int(settings.ctx),
        settings.gpu_layers,
        threads,
        settings.engine_settings().n_parallel,
        db,
        code_fingerprint(),
        os.path.realpath(sys.executable),
    )


@cache
def code_fingerprint() -> str:
    """edge_guard's version and every source file's size and mtime: a service started by
    other code (an upgrade, an edited checkout) is never used."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        h = hashlib.sha256(version("edge-guard").encode())
    except PackageNotFoundError:
        h = hashlib.sha256(b"0")
    root = Path(__file__).resolve().parents[1]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                st = os.stat(os.path.join(dirpath, name))
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


# -- paths --------------------------------------------------------------------------------
def private_dir(path: Path) -> Path:
    """`path` created with mode 0700; refused unless it is this user's and private."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise EdgeGuardError(f"{path} is not a directory of this user: warm engines are off")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def warm_dir() -> Path:
    from edge_guard.paths import data_dir

    return private_dir(data_dir() / WARM_DIR)


@dataclass(frozen=True)
class ServicePaths:
    record: Path
    lock: Path
    log: Path
    socket: str


def paths_for(key: str) -> ServicePaths:
    base = warm_dir()
    sock = str(base / f"{key}.sock")
    if len(os.fsencode(sock)) > _MAX_SOCKET_PATH:  # a deep data dir: a short private dir
        where = hashlib.sha256(str(base).encode()).hexdigest()[:8]
        short = private_dir(Path(tempfile.gettempdir()) / f"edge-guard-{os.getuid()}")
        sock = str(short / f"{where}-{key}.sock")
    return ServicePaths(base / f"{key}.json", base / f"{key}.lock", base / f"{key}.log", sock)


# -- records ------------------------------------------------------------------------------
def read_record(path: Path) -> dict[str, Any] | None:
    """A service record, or None when missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ServiceSpec.from_json(data["spec"])
        int(data["pid"])
        str(data["socket"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def write_record(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(record, out, indent=1, sort_keys=True)
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process took the pid: not our service
        return False
    return True


def forget(record: dict[str, Any], record_path: Path) -> None:
    """Remove a dead service's record and socket."""
    for p in (record_path, Path(str(record.get("socket", "")))):
        try:
            if p.name and (p.is_socket() or p.suffix == ".json"):
                p.unlink()
        except OSError:
            pass


def live_records() -> list[tuple[Path, dict[str, Any]]]:
    """(record path, record) of every service whose process still runs; stale ones removed."""
    out = []
    for path in sorted(warm_dir().glob("*.json")):
        record = read_record(path)
        if record is None:
            continue
        if pid_alive(int(record["pid"])):
            out.append((path, record))
        else:
            forget(record, path)
    return out


def prune(max_age_s: float = 24 * 3600.0) -> None:
    """Remove the lock and log files of services gone for more than `max_age_s`."""
    import time

    base = warm_dir()
    live = {p.stem for p in base.glob("*.json")}
    cutoff = time.time() - max_age_s
    for p in [*base.glob("*.lock"), *base.glob("*.log")]:
        try:
            if p.stem not in live and p.stat().st_mtime < cutoff:
                p.unlink()
        except OSError:
            pass
