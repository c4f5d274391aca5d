"""Numbered schema migrations for the result store (sqlite-utils `Migrations`).

Append new migrations at the end with the next number; never edit an applied one.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("edge_guard")


@migrations(name="m001_initial")
def m001_initial(db: Database) -> None:
    db["model_files"].create(
        {"path": str, "size": int, "mtime_ns": int, "sha256": str, "computed_at": str},
        pk="path",
    )
    db["results"].create(
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
        db["results"].create_index(cols)
    db["runs"].create(
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
    db["run_items"].create(
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
    db["run_items"].create_index(["key"])
