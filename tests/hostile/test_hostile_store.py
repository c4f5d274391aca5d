"""The store under attack: damaged files, concurrent writers (threads, processes, the TUI and a
CLI run at once), and `kill -9` in the middle of `edge-guard run`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_guard.cli import main
from edge_guard.errors import StoreError
from edge_guard.store import Store
from tests.runs_helpers import HeldRun, python_m


def damaged(tmp_path: Path, how: str) -> Path:
    """A store file broken `how`: garbage bytes, or a real store with pages overwritten."""
    path = tmp_path / f"{how}.db"
    if how == "garbage":
        path.write_bytes(b"this is not a sqlite database at all" * 200)
        return path
    store = Store(path)
    with store.transaction() as db:
        db["results"].insert_all({"key": f"k{i}", "text": "t" * 300} for i in range(1500))
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 60] = b"\x5a" * (4096 * 57)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["garbage", "pages"])
def test_damaged_store_is_a_one_line_error_naming_cache_repair(tmp_path: Path, how: str) -> None:
    path = damaged(tmp_path, how)
    before = path.read_bytes()
    with pytest.raises(StoreError) as info:
        Store(path).query("SELECT count(*) FROM results")
    message = str(info.value)
    assert "\n" not in message and f"edge-guard cache repair --db {path}" in message
    assert path.read_bytes() == before  # never deleted or rewritten
    result = CliRunner().invoke(main, ["cache", "stats", "--db", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"error: {message}"]


def test_cache_repair_moves_the_damage_aside_and_starts_fresh(tmp_path: Path) -> None:
    path = damaged(tmp_path, "pages")
    before = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    wal.write_bytes(b"stale wal frames")
    declined = CliRunner().invoke(main, ["cache", "repair", "--db", str(path)], input="n\n")
    assert declined.exit_code == 1 and path.read_bytes() == before
    result = CliRunner().invoke(main, ["cache", "repair", "--db", str(path), "--yes"])
    assert result.exit_code == 0, result.stderr
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    main_file = next(p for p in aside if not p.name.endswith(("-wal", "-shm")))
    assert main_file.read_bytes() == before  # kept byte for byte
    assert (main_file.with_name(main_file.name + "-wal")).read_bytes() == b"stale wal frames"
    assert str(main_file) in result.stdout
    fresh = Store(path)
    fresh.put({"key": "new", "text": "works", "verdict": "undetermined"})
    assert fresh.query("SELECT count(*) AS n FROM results")[0]["n"] == 1
    again = CliRunner().invoke(main, ["cache", "repair", "--db", str(path), "--yes"])
    assert "healthy; nothing to repair" in again.stdout


WRITER = textwrap.dedent(
    """
    import sys
    from edge_guard.store import Store
    s = Store(sys.argv[1])
    s.ensure_run("shared", kind="test")
    for i in range(int(sys.argv[3])):
        key = sys.argv[2] + str(i)
        s.put({"key": key, "text": "t", "verdict": "undetermined"})
        with s.transaction() as db:
            db["run_items"].upsert({"run": "shared", "idx": hash(key) % 10**9, "key": key},
                                   pk=("run", "idx"))
        s.set_run_status("shared", "running")
    """
)


def test_processes_opening_a_new_store_at_once(tmp_path: Path) -> None:
    """Several processes creating the same new store used to fail with 'database is locked'."""
    db = tmp_path / "new.db"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), f"p{n}-", "20"], stderr=subprocess.PIPE
        )
        for n in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert Store(db).query("SELECT count(*) AS n FROM results")[0]["n"] == 80


def test_threads_and_processes_write_heavily_without_locking(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    store = Store(db)
    store.ensure_run("shared", kind="test")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), "proc-", "150"], stderr=subprocess.PIPE
    )
    errors: list[BaseException] = []

    def hammer(n: int) -> None:
        mine = Store(db) if n % 2 else store  # own connection, or the shared one
        try:
            for i in range(150):
                key = f"t{n}-{i}"
                mine.put(
                    {"key": key, "text": "t", "verdict": "undetermined"},
                    {"run": "shared", "idx": n * 1000 + i, "key": key},
                )
                mine.query("SELECT count(*) FROM results")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert errors == []
    assert store.query("SELECT count(*) AS n FROM results")[0]["n"] == 750


def _dataset(path: Path, n: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": f"id{i}", "text": f"item {i} " + "word " * (i % 7)}) + "\n"
            for i in range(n)
        )
    )
    return path


def _run_cmd(data: Path, model: Path, db: Path, max_tokens: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edge_guard",
        "run",
        str(data),
        "-p",
        "toxic_simple",
        "-m",
        str(model),
        "--max-tokens",
        str(max_tokens),
        "--parallel",
        "4",
        "--db",
        str(db),
        "--name",
        "batch",
    ]


def test_kill_9_during_edge_guard_run_then_rerun_loses_nothing(
    tmp_path: Path, tiny_model: Path
) -> None:
    n = 60
    data, db = _dataset(tmp_path / "d.jsonl", n), tmp_path / "batch.db"
    Store(db)
    cmd = _run_cmd(data, tiny_model, db, 150)
    # The run holds once 4 items are stored, until the kill: mid-run at any speed.
    run = HeldRun(python_m("edge_guard", *cmd[3:], hold_after_items=4), tmp_path / "run.log")
    run.wait_held()
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish(30) == -signal.SIGKILL
    store = Store(db)
    before = {r["idx"]: r["key"] for r in store.query("SELECT idx, key FROM run_items")}
    assert len(before) == 4, "the run was not killed after its 4th stored item"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: 4 done, {n - 4} to do" in rerun.stderr
    items = store.query("SELECT idx, item_id, key FROM run_items WHERE run = 'batch' ORDER BY idx")
    assert [r["idx"] for r in items] == list(range(n))
    assert [r["item_id"] for r in items] == [f"id{i}" for i in range(n)]
    assert all(before[r["idx"]] == r["key"] for r in items if r["idx"] in before)
    assert store.query("SELECT count(*) AS n FROM results")[0]["n"] == n
    orphans = store.query(
        "SELECT count(*) AS n FROM run_items ri LEFT JOIN results r "
        "ON r.key = ri.key WHERE r.key IS NULL"
    )
    assert orphans[0]["n"] == 0


@pytest.mark.anyio
async def test_tui_and_a_cli_run_share_one_store(tmp_path: Path, tiny_model: Path) -> None:
    pytest.importorskip("textual")
    from textual.widgets import TextArea

    from edge_guard.backends.local import EngineSettings
    from edge_guard.engine.sampling import ForcedTokens, harmony_script
    from edge_guard.tui.app import EdgeGuardApp
    from edge_guard.tui.jobs import default_classifier_factory
    from tests.tui.conftest import until
    from tests.tui.test_workbench import wait_idle

    db = tmp_path / "shared.db"
    data = _dataset(tmp_path / "d.jsonl", 80)
    Store(db)

    def factory(policy: Any, options: Any, *, store: Any, use_cache: bool = True) -> Any:
        return default_classifier_factory(
            policy,
            options,
            store=store,
            use_cache=use_cache,
            engine_settings=EngineSettings(n_ctx=2048),
        )

    def steer(clf: Any, texts: Any) -> list[ForcedTokens]:
        return [ForcedTokens(harmony_script(clf.backend.vocab(), final="0")) for _ in texts]

    proc = subprocess.Popen(
        _run_cmd(data, tiny_model, db, 100),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    app = EdgeGuardApp(
        db=db, model=str(tiny_model), policy="toxic_simple", classifier_factory=factory, steer=steer
    )
    async with app.run_test(size=(140, 42)) as pilot:
        await until(  # start writing once the CLI run is writing too
            pilot,
            lambda: app.store.query("SELECT count(*) AS n FROM run_items")[0]["n"] or proc.poll(),
            "the CLI run's first stored item",
            timeout=300,
        )
        assert proc.poll() is None, "the CLI run should still be going"
        for i in range(6):
            app.screen.query_one("#wb-text", TextArea).load_text(f"tui text {i}")
            await pilot.press("ctrl+r")
            await wait_idle(pilot, app.screen)
        notes = [n.message for n in app._notifications]
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "locked" not in err and not any("locked" in str(m) for m in notes)
    store = Store(db)
    tui_rows = store.query("SELECT text, verdict FROM results WHERE text LIKE 'tui text %'")
    assert sorted(r["text"] for r in tui_rows) == [f"tui text {i}" for i in range(6)]
    assert {r["verdict"] for r in tui_rows} == {"no_violation"}
    assert len(store.run_results("batch")) == 80


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
