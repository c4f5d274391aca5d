"""The SQLite store: schema, WAL/busy timeout, concurrent writers, crash safety, corrupt files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_guard.errors import StoreError
from edge_guard.store import Store
from tests.runs_helpers import REPO, HeldRun


def test_schema_and_pragmas(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    tables = set(store.db.table_names())
    assert {"results", "runs", "run_items", "model_files", "_sqlite_migrations"} <= tables
    assert store.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert store.query("PRAGMA busy_timeout")[0]["timeout"] >= 30_000
    applied = [r["name"] for r in store.query("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert applied[0] == "m001_initial"
    # Reopening applies nothing twice.
    Store(tmp_path / "s.db")
    again = [
        r["name"] for r in Store(tmp_path / "s.db").query("SELECT name FROM _sqlite_migrations")
    ]
    assert again == applied


def test_default_location_follows_edge_guard_home(edge_guard_home: Path) -> None:
    assert Path(Store().path) == edge_guard_home / "edge_guard.db"


def test_model_identity_is_remembered(tmp_path: Path, tiny_model: Path) -> None:
    store = Store(tmp_path / "s.db")
    ident = store.model_identity(tiny_model)
    assert ident.startswith("sha256:") and len(ident) == 71
    assert store.query("SELECT count(*) AS n FROM model_files")[0]["n"] == 1
    assert store.model_identity(tiny_model) == ident


def _replace_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """Put `data` (the same size) at `path` as `cp -p` / `rsync -a` would: mtime kept."""
    st = path.stat()
    assert len(data) == st.st_size
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_a_model_file_replaced_at_the_same_path_is_identified_again(
    tmp_path: Path, tiny_model: Path
) -> None:
    import hashlib

    path = tmp_path / "model.gguf"
    data = tiny_model.read_bytes()
    path.write_bytes(data)
    store = Store(tmp_path / "s.db")
    first = store.model_identity(path)
    assert first == "sha256:" + hashlib.sha256(data).hexdigest()
    grown = data + b"\0" * 32  # another size, written in place
    path.write_bytes(grown)
    assert store.model_identity(path) == "sha256:" + hashlib.sha256(grown).hexdigest()
    path.write_bytes(data)
    os.utime(path, ns=(0, 10**18))  # the same bytes back, another mtime: hashed again, same id
    assert store.model_identity(path) == first
    other = bytes([data[0] ^ 1]) + data[1:]  # other content, same size, same mtime
    _replace_keeping_size_and_mtime(path, other)
    assert store.model_identity(path) == "sha256:" + hashlib.sha256(other).hexdigest()
    assert Store(tmp_path / "s.db").model_identity(path) == store.model_identity(path)


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    with pytest.raises(RuntimeError), store.transaction() as db:
        db["results"].insert({"key": "k1", "text": "half"})
        raise RuntimeError("crash mid-write")
    assert store.get("k1") is None


def test_corrupt_store_gives_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a sqlite database at all" * 200)
    with pytest.raises(StoreError) as err:
        Store(bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    assert bad.exists()  # never deleted


def test_concurrent_writers_do_not_lock(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    Store(db)
    code = textwrap.dedent(
        f"""
        import sys
        from edge_guard.store import Store
        s = Store({str(db)!r})
        for i in range(200):
            s.put({{"key": sys.argv[1] + str(i), "text": "t", "verdict": "undetermined"}})
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, f"w{n}-"], stderr=subprocess.PIPE)
        for n in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert Store(db).query("SELECT count(*) AS n FROM results")[0]["n"] == 600


BATCH = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[4])  # the repository: tests.runs_helpers
    from edge_guard.classification.classifier import Classifier, RunItem
    from edge_guard.engine.sampling import SamplingConfig
    from edge_guard.store import Store
    from tests.runs_helpers import HOLD_FD_ENV, hold_after
    store = Store(sys.argv[2])
    c = Classifier("toxic_simple", sys.argv[1], store=store, parallel=4,
                   sampling=SamplingConfig(max_tokens=int(sys.argv[3])))
    texts = [f"item number {i} " + "words " * (i % 7) for i in range(50)]
    store.ensure_run("batch", kind="run", n_items=50)
    done = store.done_indices("batch")
    todo = [i for i in range(50) if i not in done]
    print(f"todo {len(todo)}", flush=True)
    items = [RunItem("batch", i, item_id=f"id{i}") for i in todo]
    held = hold_after(4) if HOLD_FD_ENV in os.environ else lambda: None
    for _ in c.iter([texts[i] for i in todo], run_items=items):
        held()  # in a held child: 4 items stored, then it waits for the kill
    store.set_run_status("batch", "done")
    print("finished")
    """
)


def test_kill_9_mid_batch_then_rerun_loses_nothing(tmp_path: Path, tiny_model: Path) -> None:
    db = tmp_path / "batch.db"
    Store(db)
    script = tmp_path / "batch.py"
    script.write_text(BATCH)
    # the byte-level tiny model: what is stored when is the store's business, not the vocab's
    # (tiny-o200k spends most of its time on its 200k-token vocabulary, 5x slower here)
    argv = [sys.executable, str(script), str(tiny_model), str(db), "120", str(REPO)]
    run = HeldRun(argv, tmp_path / "batch.log")
    run.wait_held()  # 4 items stored, the 5th not yet: kill it there
    run.proc.send_signal(signal.SIGKILL)
    assert run.finish(30) == -signal.SIGKILL
    store = Store(db)
    before = {r["idx"]: r["key"] for r in store.query("SELECT idx, key FROM run_items")}
    assert len(before) == 4, "the batch was not killed after its 4th stored item"
    assert store.query("SELECT count(*) AS n FROM results")[0]["n"] == 4  # committed: kept
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines() == ["todo 46", "finished"]  # only the missing items
    items = store.query("SELECT idx, item_id, key FROM run_items WHERE run = 'batch' ORDER BY idx")
    assert [r["idx"] for r in items] == list(range(50))
    assert [r["item_id"] for r in items] == [f"id{i}" for i in range(50)]
    assert all(before[r["idx"]] == r["key"] for r in items if r["idx"] in before)
    assert store.query("SELECT count(*) AS n FROM results")[0]["n"] == 50
    orphans = store.query(
        "SELECT count(*) AS n FROM run_items ri LEFT JOIN results r ON r.key = ri.key "
        "WHERE r.key IS NULL"
    )
    assert orphans[0]["n"] == 0
    assert store.run("batch")["status"] == "done"
