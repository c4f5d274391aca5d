"""Review decisions as data: record a reviewer's label, read the latest one, keep the history.

A decision says what a human found an item to be under a policy: `violation`,
`no_violation` or `skip` (looked at, no call made), with an optional note and tags. It is
keyed by the policy name and what was judged (`content_key`: the text, or a conversation's
canonical JSON, hashed), so the same text reviewed in one run counts in every run of that
policy. Rows are only ever inserted, one transaction each (committed before `record`
returns: a killed process loses no decision it reported); a second decision on the same
item is kept as history and the latest wins.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edge_guard.defaults import env
from edge_guard.errors import EdgeGuardError
from edge_guard.store import Store, utcnow

LABELS = ("violation", "no_violation", "skip")
DECIDED = ("violation", "no_violation")
MAX_NOTE = 10_000
MAX_TAG = 100


def content_key(text: str | None, conversation: str | None = None) -> str:
    """sha256 of what was judged: the conversation's canonical JSON, else the text."""
    blob = f"conv:{conversation}" if conversation else f"text:{text or ''}"
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def default_reviewer() -> str:
    """Who is reviewing: $EDGE_GUARD_REVIEWER, else the login name."""
    who = (env("EDGE_GUARD_REVIEWER") or "").strip()
    if who:
        return who
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no login name (containers): still record the decision
        return "unknown"


def check_label(label: str) -> str:
    norm = label.strip().lower().replace("-", "_").replace(" ", "_")
    if norm not in LABELS:
        raise EdgeGuardError(f"unknown review label {label!r}: use violation, no_violation or skip")
    return norm


def clean_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    """Tags as given (comma-separated strings allowed), stripped, de-duplicated, in order."""
    out: list[str] = []
    for tag in tags or ():
        for t in str(tag).split(","):
            t = t.strip()
            if len(t) > MAX_TAG:
                raise EdgeGuardError(f"tag {t[:20]!r}… is longer than {MAX_TAG} characters")
            if t and t not in out:
                out.append(t)
    return tuple(out)


@dataclass(frozen=True)
class Decision:
    """One stored decision (a row of `review_decisions`)."""

    id: int
    policy_name: str
    content_key: str
    label: str
    note: str = ""
    tags: tuple[str, ...] = ()
    reviewer: str = ""
    created_at: str = ""
    run: str | None = None
    idx: int | None = None
    item_id: str | None = None
    result_key: str | None = None
    policy_hash: str | None = None
    text: str | None = None
    conversation: str | None = None
    model_verdict: str | None = None
    model_score: float | None = None
    queue: str | None = None
    source: str | None = None
    replaced: Decision | None = field(default=None, compare=False)  # the latest before this

    @property
    def violation(self) -> bool | None:
        """True / False for a decided label, None for skip."""
        return None if self.label == "skip" else self.label == "violation"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Decision:
        tags = json.loads(row.get("tags") or "[]")
        fields: dict[str, Any] = {
            k: row.get(k) for k in cls.__dataclass_fields__ if k not in ("tags", "replaced")
        }
        fields["note"] = fields["note"] or ""
        fields["reviewer"] = fields["reviewer"] or ""
        return cls(**fields, tags=tuple(tags))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("replaced")
        d["tags"] = list(self.tags)
        if self.replaced is not None:
            d["replaced"] = {
                k: getattr(self.replaced, k) for k in ("id", "label", "reviewer", "created_at")
            }
        return d


@dataclass(frozen=True)
class Target:
    """What a decision is made on: an item of a run as the reviewer saw it."""

    policy_name: str
    text: str
    conversation: str | None = None
    run: str | None = None
    idx: int | None = None
    item_id: str | None = None
    result_key: str | None = None
    policy_hash: str | None = None
    model_verdict: str | None = None
    model_score: float | None = None

    @property
    def content_key(self) -> str:
        return content_key(self.text, self.conversation)


def record(
    store: Store,
    target: Target,
    label: str,
    *,
    note: str = "",
    tags: Sequence[str] = (),
    reviewer: str | None = None,
    queue: str | None = None,
    source: str = "cli",
) -> Decision:
    """Store one decision (its own committed transaction) and return it, with `replaced`
    set to the decision it supersedes (kept as history), if any."""
    label = check_label(label)
    note = note or ""
    if len(note) > MAX_NOTE:
        raise EdgeGuardError(f"note is {len(note)} characters; the limit is {MAX_NOTE}")
    row = {
        "policy_name": target.policy_name,
        "content_key": target.content_key,
        "label": label,
        "note": note,
        "tags": json.dumps(list(clean_tags(tags))),
        "reviewer": (reviewer or "").strip() or default_reviewer(),
        "created_at": utcnow(),
        "run": target.run,
        "idx": target.idx,
        "item_id": target.item_id,
        "result_key": target.result_key,
        "policy_hash": target.policy_hash,
        "text": target.text,
        "conversation": target.conversation,
        "model_verdict": target.model_verdict,
        "model_score": target.model_score,
        "queue": queue,
        "source": source,
    }
    with store.transaction() as db:
        prev = db.execute(
            "SELECT * FROM review_decisions WHERE policy_name = ? AND content_key = ? "
            "ORDER BY id DESC LIMIT 1",
            [row["policy_name"], row["content_key"]],
        )
        cols = [d[0] for d in prev.description]
        found = prev.fetchone()
        cur = db.execute(
            f"INSERT INTO review_decisions ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
        row["id"] = cur.lastrowid
    replaced = Decision.from_row(dict(zip(cols, found, strict=True))) if found else None
    return replace(Decision.from_row(row), replaced=replaced)


def latest(store: Store, policy_name: str) -> dict[str, Decision]:
    """content_key -> the latest decision, for every item reviewed under `policy_name`."""
    rows = store.query(
        "SELECT * FROM review_decisions WHERE policy_name = ? ORDER BY id", [policy_name]
    )
    return {r["content_key"]: Decision.from_row(r) for r in rows}


def history(store: Store, policy_name: str, key: str) -> list[Decision]:
    """Every decision on one item, oldest first (the last one is the one in force)."""
    rows = store.query(
        "SELECT * FROM review_decisions WHERE policy_name = ? AND content_key = ? ORDER BY id",
        [policy_name, key],
    )
    return [Decision.from_row(r) for r in rows]


def all_decisions(
    store: Store, *, policy_name: str | None = None, include_history: bool = False
) -> list[Decision]:
    """Every decision (oldest first), or only the latest per item; optionally one policy's."""
    sql, params = "SELECT * FROM review_decisions", []
    if policy_name is not None:
        sql, params = sql + " WHERE policy_name = ?", [policy_name]
    found = [Decision.from_row(r) for r in store.query(sql + " ORDER BY id", params)]
    if include_history:
        return found
    last: dict[tuple[str, str], Decision] = {}
    for d in found:
        last[(d.policy_name, d.content_key)] = d
    return sorted(last.values(), key=lambda d: d.id)
