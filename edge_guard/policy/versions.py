"""Policy versions and test history in the store: v1, v2, ... per policy name.

Each distinct policy (text + parser + output format, i.e. `Policy.hash`) gets the next
version number the first time it is tested. Test runs keep every case's outcome, so two
versions can be compared case by case (fixed / broke / still failing) long after the fact
(`policy.version_diff`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.policy.core import Policy
from edge_guard.store import Store, utcnow

PASS, FAIL, UNDETERMINED = "pass", "fail", "undetermined"


@dataclass(frozen=True)
class PolicyVersion:
    id: int
    policy_name: str
    number: int
    hash: str
    text: str
    parser_hash: str = ""
    output: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    created_at: str = ""
    message: str | None = None

    @property
    def label(self) -> str:
        return f"v{self.number}"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PolicyVersion:
        out = row.get("output")
        return cls(
            row["id"],
            row["policy_name"],
            row["version"],
            row["hash"],
            row["text"],
            row.get("parser_hash") or "",
            json.loads(out) if out else {},
            row.get("path"),
            row.get("created_at") or "",
            row.get("message"),
        )

    def to_dict(self, text: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = self.label
        if not text:
            d.pop("text")
        return d


@dataclass(frozen=True)
class TestRunInfo:
    """One `policies test` run of one version: counts, metrics, model and settings."""

    __test__ = False  # not a pytest class

    id: int
    version_id: int
    run: str
    model_ref: str
    config_hash: str
    n_cases: int
    passed: int
    failed: int
    undetermined: int
    metrics: dict[str, Any] | None
    created_at: str

    @property
    def pass_rate(self) -> float:
        return self.passed / self.n_cases if self.n_cases else 0.0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TestRunInfo:
        return cls(
            row["id"],
            row["version_id"],
            row["run"],
            row["model_ref"] or "",
            row["config_hash"] or "",
            row["n_cases"],
            row["passed"],
            row["failed"],
            row["undetermined"],
            json.loads(row["metrics"]) if row["metrics"] else None,
            row["created_at"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pass_rate": self.pass_rate}


def record_version(
    store: Store, policy: Policy, message: str | None = None
) -> tuple[PolicyVersion, bool]:
    """The version of this policy text (+parser), creating v(n+1) if new; (version, created)."""
    parser_hash = (
        hashlib.sha256(policy.parser_source.encode("utf-8")).hexdigest()
        if policy.parser_source
        else ""
    )
    with store.transaction() as db:
        rows = list(
            db["policy_versions"].rows_where(
                "policy_name = ? AND hash = ?", [policy.name, policy.hash]
            )
        )
        if rows:
            row = rows[0]
            if message and not row["message"]:
                db.table("policy_versions").update(row["id"], {"message": message})
                row["message"] = message
            return PolicyVersion.from_row(row), False
        last = db.execute(
            "SELECT COALESCE(MAX(version), 0) FROM policy_versions WHERE policy_name = ?",
            [policy.name],
        ).fetchone()[0]
        row = {
            "policy_name": policy.name,
            "version": last + 1,
            "hash": policy.hash,
            "text": policy.text,
            "parser_hash": parser_hash,
            "output": json.dumps(policy.output.as_dict()),
            "path": str(policy.path) if policy.path else None,
            "created_at": utcnow(),
            "message": message,
        }
        row["id"] = db.table("policy_versions").insert(row).last_pk
        return PolicyVersion.from_row(row), True


def versions(store: Store, name: str) -> list[PolicyVersion]:
    rows = store.query(
        "SELECT * FROM policy_versions WHERE policy_name = ? ORDER BY version", [name]
    )
    return [PolicyVersion.from_row(r) for r in rows]


def resolve_version(store: Store, name: str, ref: str | int) -> PolicyVersion:
    """A version by number (`3`, `v3`), `latest`, or a hash prefix (4+ hex digits)."""
    found = versions(store, name)
    if not found:
        raise EdgeGuardError(
            f"no tested versions of policy {name!r} (run `edge-guard policies test {name}`)"
        )
    s = str(ref).strip().lower()
    if s == "latest":
        return found[-1]
    m = re.fullmatch(r"v?(\d+)", s)
    if m and (s.startswith("v") or len(s) < 4):
        hits = [v for v in found if v.number == int(m.group(1))]
    else:
        hits = [v for v in found if v.hash.startswith(s)] if len(s) >= 4 else []
    if len(hits) != 1:
        known = ", ".join(v.label for v in found)
        why = "is ambiguous" if hits else "is not one of its versions"
        raise EdgeGuardError(f"{ref!r} {why} for policy {name!r} (versions: {known})")
    return hits[0]


def save_test_run(
    store: Store,
    *,
    version: PolicyVersion,
    run: str,
    model: str,
    model_ref: str,
    config: dict[str, Any],
    config_hash: str,
    cases_hash: str,
    rows: list[dict[str, Any]],
    metrics: dict[str, Any] | None,
) -> TestRunInfo:
    """Record one test run and each case's outcome (one transaction)."""
    counts = {k: sum(r["outcome"] == k for r in rows) for k in (PASS, FAIL, UNDETERMINED)}
    with store.transaction() as db:
        head = {
            "policy_name": version.policy_name,
            "version_id": version.id,
            "run": run,
            "model": model,
            "model_ref": model_ref,
            "config": json.dumps(config),
            "config_hash": config_hash,
            "cases_hash": cases_hash,
            "n_cases": len(rows),
            "passed": counts[PASS],
            "failed": counts[FAIL],
            "undetermined": counts[UNDETERMINED],
            "metrics": json.dumps(metrics) if metrics is not None else None,
            "created_at": utcnow(),
        }
        head["id"] = db.table("policy_test_runs").insert(head).last_pk
        db.table("policy_test_results").insert_all(
            [
                {**r, "test_run_id": head["id"], "tags": json.dumps(r.get("tags") or [])}
                for r in rows
            ],
            pk=("test_run_id", "idx"),
        )
    return TestRunInfo.from_row(head)


def test_runs(store: Store, name: str, version_id: int | None = None) -> list[TestRunInfo]:
    """Test runs of a policy (or one of its versions), newest first."""
    sql = "SELECT * FROM policy_test_runs WHERE policy_name = ?"
    params: list[str | int] = [name]
    if version_id is not None:
        sql, params = sql + " AND version_id = ?", [*params, version_id]
    return [TestRunInfo.from_row(r) for r in store.query(sql + " ORDER BY id DESC", params)]


def run_outcomes(store: Store, test_run_id: int) -> dict[str, dict[str, Any]]:
    """case key -> that case's stored outcome row, for one test run."""
    rows = store.query(
        "SELECT * FROM policy_test_results WHERE test_run_id = ? ORDER BY idx", [test_run_id]
    )
    return {r["case_key"]: r for r in rows}


@dataclass
class HistoryEntry:
    version: PolicyVersion
    runs: int
    last: TestRunInfo | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.version.to_dict(),
            "runs": self.runs,
            "last_run": self.last.to_dict() if self.last else None,
        }


def policy_history(store: Store, name: str) -> list[HistoryEntry]:
    """Every version of a policy with its number of test runs and its latest run."""
    found = versions(store, name)
    if not found:
        raise EdgeGuardError(
            f"no tested versions of policy {name!r} (run `edge-guard policies test {name}`)"
        )
    out = []
    for v in found:
        runs = test_runs(store, name, v.id)
        out.append(HistoryEntry(v, len(runs), runs[0] if runs else None))
    return out


def previous_tested(store: Store, name: str, current: PolicyVersion) -> PolicyVersion | None:
    """The version tested most recently before, other than `current` (what the author had)."""
    rows = store.query(
        "SELECT v.* FROM policy_test_runs t JOIN policy_versions v ON v.id = t.version_id "
        "WHERE t.policy_name = ? AND t.version_id != ? ORDER BY t.id DESC LIMIT 1",
        [name, current.id],
    )
    return PolicyVersion.from_row(rows[0]) if rows else None
