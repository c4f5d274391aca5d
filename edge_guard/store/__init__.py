"""The SQLite result store: every classification, its run membership, and model identities.

A result row holds the model's answer (shared by every policy version with the same
prompt); `parses` holds each policy version's parse of it, and a run item reads the parse
of the version that ran it, so one run never rewrites another run's labels.

One database (WAL, busy timeout, numbered migrations) in the data dir, overridable with
`EDGE_GUARD_HOME` or an explicit path. Each result is committed as it completes (with its
run item in the same transaction), so a killed batch loses at most the items in flight.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shlex
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from edge_guard.errors import StoreError
from edge_guard.paths import default_db_path
from edge_guard.store.migrations import migrations

BUSY_TIMEOUT_MS = 60_000

# A result's parse under one policy version (`parses`, keyed by result key + policy hash).
PARSE_COLUMNS = (
    "policy_name",
    "verdict",
    "binary_label",
    "fine_grain_label",
    "float_label",
    "parsed",
    "label_probs",
    "metadata",
    "error",
)
# Run items with their results and the parse of the policy version that ran them.
_ITEM_JOIN = (
    "run_items ri JOIN results r ON r.key = ri.key LEFT JOIN parses p "
    "ON p.key = ri.key AND p.policy_hash = ri.policy_hash"
)


def utcnow() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if path != ":memory:":
        _retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _retry_locked(fn: Any) -> Any:
    """Run `fn`, retrying while another connection holds a lock SQLite does not wait for
    (switching a new file to WAL while another process does the same)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def is_corrupt(exc: BaseException) -> bool:
    """A SQLite error meaning the file is damaged (not busy, not a constraint)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
    return type(exc) is sqlite3.DatabaseError


def corrupt_message(path: str, exc: BaseException) -> str:
    from edge_guard.paths import default_db_path

    default = os.path.abspath(path) == os.path.abspath(default_db_path())
    cmd = "edge-guard cache repair" + ("" if default else f" --db {shlex.quote(path)}")
    return (
        f"result store {path} is damaged ({exc}); `{cmd}` moves it aside (kept, not deleted) "
        "and starts a fresh one, or pass --db to use another file"
    )


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
                self._migrate()
        except sqlite3.DatabaseError as exc:
            if is_corrupt(exc):
                raise StoreError(corrupt_message(self.path, exc)) from None
            raise StoreError(f"cannot open result store {self.path}: {exc}") from None

    def _migrate(self) -> None:
        """Apply pending migrations, one process at a time (two processes opening a new
        store at once must not both create the tables)."""
        if not migrations.pending(self.db):
            return
        self.conn.execute("BEGIN IMMEDIATE")  # waits (busy timeout) for other writers
        try:
            migrations.apply(self.db)  # re-reads what is applied, inside the lock
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """BEGIN IMMEDIATE … COMMIT; rolled back on any error (no half-written rows)."""
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from None
            try:
                yield self.db
            except BaseException as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError) and is_corrupt(exc):
                    raise self._error(exc) from None
                raise
            self.conn.execute("COMMIT")

    def _error(self, exc: sqlite3.DatabaseError) -> Exception:
        return StoreError(corrupt_message(self.path, exc)) if is_corrupt(exc) else exc

    # -- model identity --------------------------------------------------------------------
    def model_identity(self, path: str | os.PathLike[str]) -> str:
        """`sha256:<hex>` of a GGUF, computed once and remembered by path and file stamp
        (size, mtime, inode, ctime): a file replaced at the same path is hashed again."""
        p = Path(path).resolve()
        stamp = file_stamp(p)
        with self._lock:
            rows = list(self.db["model_files"].rows_where("path = ?", [str(p)]))
        if rows and _row_stamp(rows[0]) == stamp:
            return f"sha256:{rows[0]['sha256']}"
        digest = sha256_file(p)
        if file_stamp(p) != stamp:  # changed while hashed: remember nothing
            return f"sha256:{digest}"
        with self.transaction() as db:
            db.table("model_files").upsert(
                {
                    "path": str(p),
                    "size": stamp[0],
                    "mtime_ns": stamp[1],
                    "ino": stamp[2],
                    "ctime_ns": stamp[3],
                    "sha256": digest,
                    "computed_at": utcnow(),
                },
                pk="path",
            )
        return f"sha256:{digest}"

    # -- results ---------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM results WHERE key = ?", [key])
        return rows[0] if rows else None

    def put(self, row: dict[str, Any], run_item: dict[str, Any] | None = None) -> None:
        """Insert or replace one result, its parse under its policy version (`parses`) and
        its run item (which then reads that parse), atomically."""
        row = {k: _encode(v) for k, v in row.items()}
        row.setdefault("created_at", utcnow())
        policy_hash = row.get("policy_hash")
        with self.transaction() as db:
            db.table("results").upsert(row, pk="key", alter=False)
            if policy_hash is not None:
                self._put_parse(db, row["key"], policy_hash, row)
            if run_item is not None:
                item = {k: _encode(v) for k, v in run_item.items()}
                item.setdefault("created_at", utcnow())
                item.setdefault("policy_hash", policy_hash)
                db.table("run_items").upsert(item, pk=("run", "idx"))

    def put_parse(self, key: str, policy_hash: str, fields: dict[str, Any]) -> None:
        """Store one policy version's parse of the result `key` (its other parses and the
        result row are left alone: another run's labels never change)."""
        with self.transaction() as db:
            self._put_parse(db, key, policy_hash, {k: _encode(v) for k, v in fields.items()})

    @staticmethod
    def _put_parse(db: Database, key: str, policy_hash: str, fields: dict[str, Any]) -> None:
        parse = {c: fields.get(c) for c in PARSE_COLUMNS}
        db.table("parses").upsert(
            {"key": key, "policy_hash": policy_hash, **parse, "created_at": utcnow()},
            pk=("key", "policy_hash"),
        )

    def get_parse(self, key: str, policy_hash: str) -> dict[str, Any] | None:
        """One policy version's stored parse of result `key` (the PARSE_COLUMNS), or None."""
        rows = self.query(
            f"SELECT {', '.join(PARSE_COLUMNS)} FROM parses WHERE key = ? AND policy_hash = ?",
            [key, policy_hash],
        )
        return {**rows[0], "policy_hash": policy_hash} if rows else None

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                cur = self.conn.execute(sql, list(params))
                cols = [d[0] for d in cur.description or ()]
                return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from None

    # -- runs ------------------------------------------------------------------------------
    def ensure_run(self, name: str, **fields: Any) -> dict[str, Any]:
        """Create run `name` or return it; `config` must match when resuming."""
        with self.transaction() as db:
            existing = list(db["runs"].rows_where("name = ?", [name]))
            if existing:
                db.table("runs").update(name, {"updated_at": utcnow(), "status": "running"})
                return existing[0]
            row = {
                "name": name,
                "created_at": utcnow(),
                "updated_at": utcnow(),
                "status": "running",
                **{k: _encode(v) for k, v in fields.items()},
            }
            db.table("runs").insert(row, pk="name")
            return row

    def set_run_status(self, name: str, status: str, **fields: Any) -> None:
        with self.transaction() as db:
            db.table("runs").update(
                name,
                {
                    "status": status,
                    "updated_at": utcnow(),
                    **{k: _encode(v) for k, v in fields.items()},
                },
            )

    def run(self, name: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM runs WHERE name = ?", [name])
        return rows[0] if rows else None

    def done_indices(self, run: str) -> set[int]:
        """The run's committed items (error rows included)."""
        rows = self.query(
            "SELECT ri.idx FROM run_items ri JOIN results r ON r.key = ri.key WHERE ri.run = ?",
            [run],
        )
        return {r["idx"] for r in rows}

    def ok_indices(self, run: str) -> set[int]:
        """The run's items with an answer and, under the run's own parse, no error (a
        resume redoes the others)."""
        rows = self.query(
            f"SELECT ri.idx FROM {_ITEM_JOIN} WHERE ri.run = ? AND r.error IS NULL "
            "AND (p.key IS NULL OR p.error IS NULL)",
            [run],
        )
        return {r["idx"] for r in rows}

    def run_results(self, run: str) -> list[dict[str, Any]]:
        """The run's items joined with their results, in item order, each with the parse of
        the policy version that ran it (`parses`; the result row's own parse for items
        stored before parses were kept per policy)."""
        own = ", ".join(f"p.{c} AS p_{c}" for c in (*PARSE_COLUMNS, "policy_hash"))
        rows = self.query(
            f"SELECT ri.idx, ri.item_id, ri.gold, ri.extra, r.*, {own} FROM {_ITEM_JOIN} "
            "WHERE ri.run = ? ORDER BY ri.idx",
            [run],
        )
        for row in rows:
            parsed = row["p_policy_hash"] is not None
            for c in (*PARSE_COLUMNS, "policy_hash"):
                value = row.pop(f"p_{c}")
                if parsed:
                    row[c] = value
        return rows


def _encode(value: Any) -> Any:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False)
    return value


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten or replaced: (size, mtime, inode, ctime)."""
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _row_stamp(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["size"], row["mtime_ns"], row.get("ino"), row.get("ctime_ns"))


def sha256_file(path: str | os.PathLike[str], chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_store(path: str | os.PathLike[str]) -> str | None:
    """None if the database at `path` opens and passes `PRAGMA quick_check`, else why not."""
    try:
        conn = sqlite3.connect(
            f"file:{Path(path).as_posix()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000
        )
    except sqlite3.DatabaseError as exc:
        return str(exc)
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    problems = [r[0] for r in rows if r[0] != "ok"]
    return "; ".join(problems[:3]) if problems else None


def repair_store(path: str | os.PathLike[str]) -> Path:
    """Move a damaged store (and its -wal/-shm) aside to `<name>.corrupt-<timestamp>`,
    never deleting anything, and create a fresh store at `path`. Returns the new name."""
    path = Path(path)
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.replace(path, aside)
        for suffix in ("-wal", "-shm", "-journal"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
    except OSError as exc:
        raise StoreError(f"cannot move {path} aside: {exc.strerror or exc}") from None
    Store(path).close()
    return aside
