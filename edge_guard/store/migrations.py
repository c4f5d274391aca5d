"""Numbered schema migrations for the result store (sqlite-utils `Migrations`).

Append new migrations at the end with the next number; never edit an applied one.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("edge_guard")


@migrations(name="m001_initial")
def m001_initial(db: Database) -> None:
    db.table("model_files").create(
        {"path": str, "size": int, "mtime_ns": int, "sha256": str, "computed_at": str},
        pk="path",
    )
    db.table("results").create(
        {
            "key": str,
            "created_at": str,
            "run_id": str,
            "model": str,
            "model_ref": str,
            "engine": str,
            "backend": str,
            "style": str,
            "effort": str,
            "date": str,
            "sampling": str,
            "policy_name": str,
            "policy_hash": str,
            "policy_text_hash": str,
            "text": str,
            "prompt_token_ids": str,
            "output_token_ids": str,
            "reasoning": str,
            "final": str,
            "messages": str,
            "verdict": str,
            "binary_label": int,
            "fine_grain_label": str,
            "float_label": float,
            "parsed": int,
            "label_probs": str,
            "metadata": str,
            "final_token_logprobs": str,
            "finish_reason": str,
            "error": str,
            "malformed": str,
            "prompt_tokens": int,
            "cached_tokens": int,
            "prompt_ms": float,
            "output_tokens": int,
            "output_ms": float,
        },
        pk="key",
    )
    for cols in (["policy_name"], ["model"], ["run_id"], ["created_at"], ["verdict"]):
        db.table("results").create_index(cols)
    db.table("runs").create(
        {
            "name": str,
            "kind": str,
            "created_at": str,
            "updated_at": str,
            "status": str,
            "dataset": str,
            "policy": str,
            "model": str,
            "config": str,
            "n_items": int,
            "notes": str,
        },
        pk="name",
    )
    db.table("run_items").create(
        {
            "run": str,
            "idx": int,
            "item_id": str,
            "key": str,
            "gold": str,
            "extra": str,
            "created_at": str,
        },
        pk=("run", "idx"),
        foreign_keys=[("run", "runs", "name")],
    )
    db.table("run_items").create_index(["key"])


@migrations(name="m002_policy_tests")
def m002_policy_tests(db: Database) -> None:
    """Policy versions (v1, v2, ... per name), test runs and per-case outcomes."""
    db.table("policy_versions").create(
        {
            "id": int,
            "policy_name": str,
            "version": int,
            "hash": str,
            "text": str,
            "parser_hash": str,
            "output": str,
            "path": str,
            "created_at": str,
            "message": str,
        },
        pk="id",
    )
    db.table("policy_versions").create_index(["policy_name", "hash"], unique=True)
    db.table("policy_versions").create_index(["policy_name", "version"], unique=True)
    db.table("policy_test_runs").create(
        {
            "id": int,
            "policy_name": str,
            "version_id": int,
            "run": str,
            "model": str,
            "model_ref": str,
            "config": str,
            "config_hash": str,
            "cases_hash": str,
            "n_cases": int,
            "passed": int,
            "failed": int,
            "undetermined": int,
            "metrics": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("version_id", "policy_versions", "id")],
    )
    db.table("policy_test_runs").create_index(["policy_name", "version_id"])
    db.table("policy_test_results").create(
        {
            "test_run_id": int,
            "idx": int,
            "case_key": str,
            "case_id": str,
            "text": str,
            "expected": str,
            "got": str,
            "outcome": str,
            "verdict": str,
            "final": str,
            "result_key": str,
            "note": str,
            "tags": str,
        },
        pk=("test_run_id", "idx"),
        foreign_keys=[("test_run_id", "policy_test_runs", "id")],
    )


@migrations(name="m003_conversations")
def m003_conversations(db: Database) -> None:
    """Conversation inputs: the canonical {"messages", "target"} JSON of a conversation item.

    (`results.messages` already holds the model's harmony output messages.) `text` stays
    the judged message; plain-text results leave `conversation` NULL.
    """
    db.table("results").add_column("conversation", str)
    db.table("policy_test_results").add_column("conversation", str)


@migrations(name="m004_parses")
def m004_parses(db: Database) -> None:
    """Parses per (result, policy version): two policies with the same text and different
    parsers share a result row (same cache key) but each keeps its own parse of it.

    `run_items.policy_hash` names the policy version whose parse the run item reads.
    Existing rows move over as they are (the parse a row holds now, under its policy hash).
    Deleting a result deletes its parses.
    """
    db.execute(
        "CREATE TABLE parses ("
        " key TEXT NOT NULL REFERENCES results(key) ON DELETE CASCADE,"
        " policy_hash TEXT NOT NULL, policy_name TEXT, verdict TEXT, binary_label INTEGER,"
        " fine_grain_label TEXT, float_label FLOAT, parsed INTEGER, label_probs TEXT,"
        " metadata TEXT, error TEXT, created_at TEXT,"
        " PRIMARY KEY (key, policy_hash))"
    )
    db.execute(
        "INSERT INTO parses (key, policy_hash, policy_name, verdict, binary_label,"
        " fine_grain_label, float_label, parsed, label_probs, metadata, error, created_at)"
        " SELECT key, policy_hash, policy_name, verdict, binary_label, fine_grain_label,"
        " float_label, parsed, label_probs, metadata, error, created_at FROM results"
        " WHERE policy_hash IS NOT NULL"
    )
    db.table("run_items").add_column("policy_hash", str)
    db.execute(
        "UPDATE run_items SET policy_hash ="
        " (SELECT r.policy_hash FROM results r WHERE r.key = run_items.key)"
    )


@migrations(name="m005_review_decisions")
def m005_review_decisions(db: Database) -> None:
    """Human review decisions (`edge_guard.review`): one row per decision, never updated.

    A decision is about what was judged (`content_key`: sha256 of the text, or of the
    conversation's canonical JSON) under a policy name; the latest row per (policy_name,
    content_key) wins and earlier rows stay as history. It keeps the text it was made on
    and the result, run item and policy version it was made against, so deleting cached
    results never loses a decision.
    """
    db.execute(
        "CREATE TABLE review_decisions ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " policy_name TEXT NOT NULL, content_key TEXT NOT NULL,"
        " label TEXT NOT NULL CHECK (label IN ('violation', 'no_violation', 'skip')),"
        " note TEXT, tags TEXT, reviewer TEXT, created_at TEXT NOT NULL,"
        " run TEXT, idx INTEGER, item_id TEXT, result_key TEXT, policy_hash TEXT,"
        " text TEXT, conversation TEXT, model_verdict TEXT, model_score FLOAT,"
        " queue TEXT, source TEXT)"
    )
    db.execute(
        "CREATE INDEX review_decisions_item ON review_decisions (policy_name, content_key, id)"
    )
    db.execute("CREATE INDEX review_decisions_run ON review_decisions (run, idx)")


@migrations(name="m006_model_file_stamp")
def m006_model_file_stamp(db: Database) -> None:
    """A model file's identity memo also remembers its inode and ctime: a file replaced at
    the same path with the same size and mtime (`cp -p`, `rsync -a`) is hashed again.
    Rows from before have NULLs there, so each such file is hashed once more."""
    db.table("model_files").add_column("ino", int)
    db.table("model_files").add_column("ctime_ns", int)
