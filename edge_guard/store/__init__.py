"""The SQLite result store: every classification, its run membership, and model identities.

One database (WAL, busy timeout, numbered migrations) in the data dir, overridable with
`EDGE_GUARD_HOME` or an explicit path. Each result is committed as it completes (with its
run item in the same transaction), so a killed batch loses at most the items in flight.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from edge_guard.errors import StoreError
from edge_guard.paths import default_db_path
from edge_guard.store.migrations import migrations

BUSY_TIMEOUT_MS = 60_000


def utcnow() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                           isolation_level=None)  # fmt: skip
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Store:
    """Thread-safe access to the result database (one connection, serialized by a lock)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.fspath(path) if path is not None else str(default_db_path())
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self.conn = _connect(self.path)
            self.db = Database(self.conn)
            with self._lock:
                migrations.apply(self.db)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"result store {self.path} is unreadable ({exc}); move it aside with "
                f"`edge-guard cache repair` or pass --db to use another file"
            ) from None

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """BEGIN IMMEDIATE … COMMIT; rolled back on any error (no half-written rows)."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    # -- model identity --------------------------------------------------------------------
    def model_identity(self, path: str | os.PathLike[str]) -> str:
        """`sha256:<hex>` of a GGUF, computed once and remembered by path + size + mtime."""
        p = Path(path).resolve()
        st = p.stat()
        with self._lock:
            rows = list(self.db["model_files"].rows_where("path = ?", [str(p)]))
        if rows and rows[0]["size"] == st.st_size and rows[0]["mtime_ns"] == st.st_mtime_ns:
            return f"sha256:{rows[0]['sha256']}"
        digest = sha256_file(p)
        with self.transaction() as db:
            db["model_files"].upsert(
                {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                 "sha256": digest, "computed_at": utcnow()},
                pk="path",
            )  # fmt: skip
        return f"sha256:{digest}"

    # -- results ---------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self.conn.execute("SELECT * FROM results WHERE key = ?", [key]).fetchone()
            if row is None:
                return None
            cols = [d[0] for d in self.conn.execute("SELECT * FROM results LIMIT 0").description]
        return dict(zip(cols, row, strict=True))

    def put(self, row: dict[str, Any], run_item: dict[str, Any] | None = None) -> None:
        """Insert or replace one result (and its run item) atomically."""
        row = {k: _encode(v) for k, v in row.items()}
        row.setdefault("created_at", utcnow())
        with self.transaction() as db:
            db["results"].upsert(row, pk="key", alter=False)
            if run_item is not None:
                item = {k: _encode(v) for k, v in run_item.items()}
                item.setdefault("created_at", utcnow())
                db["run_items"].upsert(item, pk=("run", "idx"))

    def update_parse(self, key: str, fields: dict[str, Any]) -> None:
        with self.transaction() as db:
            db["results"].update(key, {k: _encode(v) for k, v in fields.items()})

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.conn.execute(sql, list(params))
            cols = [d[0] for d in cur.description or ()]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    # -- runs ------------------------------------------------------------------------------
    def ensure_run(self, name: str, **fields: Any) -> dict[str, Any]:
        """Create run `name` or return it; `config` must match when resuming."""
        with self.transaction() as db:
            existing = list(db["runs"].rows_where("name = ?", [name]))
            if existing:
                db["runs"].update(name, {"updated_at": utcnow(), "status": "running"})
                return existing[0]
            row = {"name": name, "created_at": utcnow(), "updated_at": utcnow(),
                   "status": "running", **{k: _encode(v) for k, v in fields.items()}}  # fmt: skip
            db["runs"].insert(row, pk="name")
            return row

    def set_run_status(self, name: str, status: str, **fields: Any) -> None:
        with self.transaction() as db:
            db["runs"].update(name, {"status": status, "updated_at": utcnow(),
                                     **{k: _encode(v) for k, v in fields.items()}})  # fmt: skip

    def run(self, name: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM runs WHERE name = ?", [name])
        return rows[0] if rows else None

    def done_indices(self, run: str) -> set[int]:
        rows = self.query(
            "SELECT ri.idx FROM run_items ri JOIN results r ON r.key = ri.key WHERE ri.run = ?",
            [run],
        )
        return {r["idx"] for r in rows}

    def run_results(self, run: str) -> list[dict[str, Any]]:
        """The run's items joined with their results, in item order."""
        return self.query(
            "SELECT ri.idx, ri.item_id, ri.gold, ri.extra, r.* FROM run_items ri "
            "JOIN results r ON r.key = ri.key WHERE ri.run = ? ORDER BY ri.idx",
            [run],
        )


def _encode(value: Any) -> Any:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False)
    return value


def sha256_file(path: str | os.PathLike[str], chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def open_store(path: str | os.PathLike[str] | None = None) -> Store:
    return Store(path)
