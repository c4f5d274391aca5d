"""Warm engines (issue 27): a command starts or finds a local service for its model and
engine settings, sends its work there and reads the results from the store.

Every test opts in with EDGE_GUARD_KEEP_ALIVE (under pytest the default is 0), gets its
own data dir (conftest), and the `warm` fixture kills every service a test started,
whatever happened (by pid: the records, this process's children, and any process whose
command line names the test's data dir).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_guard.cli import main
from edge_guard.store import Store
from edge_guard.warm import calls, registry, route, spawn

POLICY = "toxic_simple"


def _kill_all(home: Path) -> None:
    for proc in list(spawn._children.values()):
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    spawn._children.clear()
    needle = str(home).encode()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"serve" in cmd and b"--uds" in cmd and needle in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
    for client in spawn._clients.values():
        client.close()
    spawn._clients.clear()
    warm_dir = home / "warm"  # sockets of services killed before they wrote a record
    short = hashlib.sha256(str(warm_dir).encode()).hexdigest()[:8]
    for sock in [
        *warm_dir.glob("*.sock"),
        *Path(tempfile.gettempdir()).glob(f"edge-guard-{os.getuid()}/{short}-*.sock"),
    ]:
        sock.unlink(missing_ok=True)


@pytest.fixture
def warm(edge_guard_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Warm engines on (keep-alive 60 s), each one killed when the test ends."""
    monkeypatch.setenv("EDGE_GUARD_KEEP_ALIVE", "60")
    from edge_guard.backends.local import release_engine

    release_engine()  # an earlier test file on this worker may have left one loaded here
    for key in route.stats:
        route.stats[key] = 0
    try:
        yield edge_guard_home
    finally:
        from edge_guard.backends.local import release_engine

        release_engine()  # a --keep-alive 0 call loaded one here
        _kill_all(Path(os.environ.get("EDGE_GUARD_HOME", edge_guard_home)))
        _kill_all(edge_guard_home)
        assert not [r for _, r in _records()], "a warm service outlived its test"


def _records() -> list[tuple[Path, dict[str, Any]]]:
    return registry.live_records() if (registry.warm_dir()).is_dir() else []


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _classify(model: Path, text: str, *extra: str) -> dict[str, Any]:
    out = _cli(
        "classify",
        "--model",
        str(model),
        "-p",
        POLICY,
        "--reasoning",
        "none",
        "--json",
        *extra,
        text,
    )
    return json.loads(out.stdout)


def _only_service() -> dict[str, Any]:
    records = _records()
    assert len(records) == 1, records
    return records[0][1]


def _engine_loaded_here() -> bool:
    from edge_guard.backends import local

    return bool(local.loaded_engines())


# -- starting, reusing -------------------------------------------------------------------
def test_a_command_starts_a_service_and_the_next_reuses_it(warm: Path, tiny_model: Path) -> None:
    first = _classify(tiny_model, "you are all idiots")
    service = _only_service()
    assert route.stats["remote_calls"] == 1 and not _engine_loaded_here()
    second = _classify(tiny_model, "have a nice day")
    again = _only_service()
    assert again["pid"] == service["pid"]  # the same process: the model loaded once, there
    assert route.stats["remote_calls"] == 2 and route.stats["local_misses"] == 0
    assert not _engine_loaded_here()  # and never in this process
    assert first["verdict"] in ("violation", "no_violation")
    assert second["key"] != first["key"]
    # The service wrote both rows into the command's store.
    rows = Store(warm / "edge_guard.db").query("SELECT key FROM results")
    assert {first["key"], second["key"]} <= {r["key"] for r in rows}
    ps = json.loads(_cli("ps", "--json").stdout)
    assert [r["pid"] for r in ps] == [service["pid"]]
    assert ps[0]["settings"]["ctx"] == 16384 and ps[0]["rss_bytes"] > 0
    assert ps[0]["idle_s"] >= 0 and ps[0]["model_path"] == str(tiny_model.resolve())


def test_warm_results_are_the_in_process_ones(
    warm: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same key, same stored row, same printed JSON as a command with no warm engine."""
    text = "you are all idiots and I hate you"
    hot = _classify(tiny_model, text, "--db", str(warm / "hot.db"))
    assert route.stats["remote_calls"] == 1
    cold = _classify(tiny_model, text, "--db", str(warm / "cold.db"), "--keep-alive", "0")
    assert route.stats["remote_calls"] == 1 and route.stats["local_calls"] == 0
    assert route.stats["local_misses"] == 0  # the service stored the key read here
    assert _engine_loaded_here()  # the --keep-alive 0 call loaded the model here
    for noisy in ("model_response", "cached", "timings"):  # timings differ, the rest must not
        hot.pop(noisy, None), cold.pop(noisy, None)
    assert hot == cold
    skip = {"created_at", "prompt_ms", "output_ms", "timings", "id"}

    def row(db: str) -> dict[str, Any]:
        (r,) = Store(warm / db).query("SELECT * FROM results")
        return {k: v for k, v in r.items() if k not in skip}

    assert row("hot.db") == row("cold.db")


def test_keep_alive_0_never_starts_one(
    warm: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Any] = []
    monkeypatch.setattr(spawn, "_start", lambda *a: started.append(a))
    _classify(tiny_model, "one", "--keep-alive", "0")
    monkeypatch.setenv("EDGE_GUARD_KEEP_ALIVE", "0")
    _classify(tiny_model, "two")
    monkeypatch.delenv("EDGE_GUARD_KEEP_ALIVE")  # the default under pytest is 0 too
    _classify(tiny_model, "three")
    assert started == [] and route.stats["remote_calls"] == 0
    assert not registry.warm_dir().exists() or not list(registry.warm_dir().glob("*.json"))


def test_a_bad_keep_alive_is_one_line(warm: Path, tiny_model: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["classify", "--model", str(tiny_model), "-p", POLICY, "--keep-alive", "-5", "x"],
    )
    assert result.exit_code == 2
    assert "--keep-alive '-5': must be seconds >= 0 or a duration" in result.output


# -- settings ----------------------------------------------------------------------------
def test_other_settings_never_use_the_running_service(warm: Path, tiny_model: Path) -> None:
    _classify(tiny_model, "first", "--ctx", "4096")
    a = _only_service()
    assert a["spec"]["ctx"] == 4096
    _classify(tiny_model, "second", "--ctx", "2048")
    b = _only_service()  # a second service; the idle first one (same file) was stopped
    assert (
        b["spec"]["ctx"] == 2048 and b["pid"] != a["pid"] and b["spec"]["key"] != a["spec"]["key"]
    )
    assert not spawn.alive(a["pid"])
    _classify(tiny_model, "third", "--ctx", "2048", "--db", str(warm / "other.db"))
    c = _only_service()
    assert c["spec"]["db"] == str((warm / "other.db").resolve()) and c["pid"] != b["pid"]
    rows = Store(warm / "other.db").query("SELECT text FROM results")
    assert [r["text"] for r in rows] == ["third"]  # the row went to the command's store
    assert route.stats["remote_calls"] == 3 and route.stats["local_misses"] == 0


def test_a_replaced_model_file_gets_a_new_service(warm: Path, tiny_model: Path) -> None:
    model = warm / "m.gguf"
    warm.mkdir(parents=True, exist_ok=True)
    model.write_bytes(tiny_model.read_bytes())
    _classify(model, "first")
    a = _only_service()
    other = warm / "m2.gguf"
    other.write_bytes(tiny_model.read_bytes())
    os.replace(other, model)  # same path, another file
    _classify(model, "second")
    b = _only_service()
    assert b["spec"]["model_file"] != a["spec"]["model_file"] and b["pid"] != a["pid"]


# -- life cycle --------------------------------------------------------------------------
def test_the_service_exits_when_idle(warm: Path, tiny_model: Path) -> None:
    _classify(tiny_model, "idle soon", "--keep-alive", "1")
    service = _only_service()
    proc = spawn._children[service["pid"]]
    assert proc.wait(120) == 0  # nobody signalled it: it left by itself
    assert _records() == []
    assert not os.path.exists(service["socket"])
    assert "idle for" in Path(service["log"]).read_text()


def test_a_killed_service_is_restarted_and_nothing_is_lost(warm: Path, tiny_model: Path) -> None:
    first = _classify(tiny_model, "stored before the kill")
    service = _only_service()
    os.kill(service["pid"], signal.SIGKILL)
    spawn._children[service["pid"]].wait(60)
    again = _classify(tiny_model, "stored before the kill")
    assert again["cached"] is True and again["key"] == first["key"]  # read from the store
    assert route.stats["remote_calls"] == 1  # a stored label needs (and starts) no service
    new = _classify(tiny_model, "after the kill")
    restarted = _only_service()
    assert restarted["pid"] != service["pid"]
    assert new["cached"] is False and route.stats["local_misses"] == 0


def test_a_service_killed_during_a_call_is_restarted_in_it(
    warm: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_guard.api import classify

    monkeypatch.setattr(route, "BATCH", 2)
    original = calls.ServiceCall.results
    killed: list[int] = []

    def stream_then_kill(self: Any, *args: Any, **kwargs: Any) -> Any:
        yield from original(self, *args, **kwargs)
        if not killed:  # after the first chunk is stored: kill the service
            record = _only_service()
            os.kill(record["pid"], signal.SIGKILL)
            spawn._children[record["pid"]].wait(60)
            killed.append(record["pid"])

    monkeypatch.setattr(calls.ServiceCall, "results", stream_then_kill)
    texts = ["one", "two", "three", "four"]
    results = classify(texts, POLICY, model=str(tiny_model), reasoning="none", keep_alive=60)
    assert [r.text for r in results] == texts
    assert all(r.verdict in ("violation", "no_violation") for r in results)
    assert route.stats["restarts"] == 1 and route.stats["local_misses"] == 0
    assert _only_service()["pid"] != killed[0]
    stored = Store(warm / "edge_guard.db").query("SELECT text FROM results")
    assert sorted(r["text"] for r in stored) == sorted(texts)


def test_stop_ends_every_service(warm: Path, tiny_model: Path) -> None:
    _classify(tiny_model, "x")
    service = _only_service()
    out = _cli("stop")
    assert f"stopped {service['spec']['key']}" in out.stdout
    assert _records() == [] and not os.path.exists(service["socket"])
    assert (
        spawn._children.get(service["pid"]) is None
        or spawn._children[service["pid"]].poll() is not None
    )
    assert "no warm engines running" in _cli("ps").stdout


# -- who may connect ---------------------------------------------------------------------
def _connect_as_nobody(path: str) -> str:
    """What a process of another user gets from the socket: 'refused' (cannot connect),
    'dropped' (connected, no answer) or 'answered'."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1])\nexcept OSError:\n    print('refused'); sys.exit()\n"
        "s.settimeout(30)\n"
        "try:\n    s.sendall(b'GET /warm HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n')\n"
        "    data = s.recv(100)\nexcept OSError:\n    data = b''\n"
        "print('answered' if data else 'dropped')\n"
    )
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    out = subprocess.run(
        [python, "-c", code, path],
        user=65534,
        group=65534,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def open_home(warm: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data dir that another user may traverse (/tmp/eg-warm-XXXX, mode 0711): the warm
    directory inside it is all that keeps others out."""
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="eg-warm-", dir="/tmp"))
    os.chmod(home, 0o711)
    monkeypatch.setenv("EDGE_GUARD_HOME", str(home))
    try:
        yield home
    finally:
        _kill_all(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_another_users_process_is_refused(open_home: Path, tiny_model: Path) -> None:
    _classify(tiny_model, "x")
    service = _only_service()
    assert Path(service["socket"]).parent == open_home / "warm"
    sock = service["socket"]
    for path, mode in (
        (Path(sock).parent, 0o700),
        (Path(sock), 0o600),
        (registry.warm_dir() / f"{service['spec']['key']}.json", 0o600),
    ):
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == mode and st.st_uid == os.getuid(), path
    assert _connect_as_nobody(sock) == "refused"  # the 0700 directory stops it
    # Opened up by mistake (or by a careless admin): the server still drops the peer.
    os.chmod(Path(sock).parent, 0o711)
    os.chmod(sock, 0o666)
    try:
        assert _connect_as_nobody(sock) == "dropped"
    finally:
        os.chmod(sock, 0o600)
        os.chmod(Path(sock).parent, 0o700)
    assert "refused a connection from uid 65534" in Path(service["log"]).read_text()
    assert spawn.status(service) is not None  # and it still serves its own user


def test_the_socket_of_a_deep_data_dir_moves_to_a_short_private_dir(
    warm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = warm / ("d" * 90)
    monkeypatch.setenv("EDGE_GUARD_HOME", str(deep))
    paths = registry.paths_for("0123456789abcdef")
    assert len(os.fsencode(paths.socket)) <= 100
    st = os.stat(Path(paths.socket).parent)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    assert paths.record.parent == deep / "warm"


def test_the_warm_dir_is_private(warm: Path) -> None:
    (warm / "warm").mkdir(parents=True, mode=0o755)
    os.chmod(warm / "warm", 0o755)
    registry.warm_dir()
    assert stat.S_IMODE(os.stat(warm / "warm").st_mode) == 0o700


def test_two_commands_at_once_start_one_service(warm: Path, tiny_model: Path) -> None:
    """The start runs under a lock on <key>.lock: the second command waits, then finds it."""
    import threading

    from edge_guard.settings.resolve import resolve_settings

    settings = resolve_settings({"model": str(tiny_model)})
    spec = registry.spec_for(settings, str(tiny_model), str(tiny_model))
    go = threading.Barrier(2)
    got: list[dict[str, Any]] = []

    def start() -> None:
        go.wait()
        got.append(spawn.ensure(spec, settings, 60.0))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(got) == 2 and got[0]["pid"] == got[1]["pid"]
    assert len(spawn._children) == 1 and _only_service()["pid"] == got[0]["pid"]
