"""Review sources: a stored run, a comparison or a policy's latest test run, read back as items.

Each `ReviewItem` is what a reviewer needs for one run item: what was judged (the text, or
the conversation), the model's verdict, P(violation), answer and reasoning, the gold label
(the dataset's, or a test case's expected answer), the verdicts of the runs it is compared
with (other configs of a comparison, the previous policy version's test run, or `--against`)
and the decision in force. Items are matched across runs by what was judged, not position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.policy.core import OutputSpec
from edge_guard.review.decisions import DECIDED, Decision, Target, content_key, latest
from edge_guard.store import Store

KINDS = ("run", "compare", "test")


@dataclass(frozen=True)
class Partner:
    """The same item in a run this one is compared with."""

    run: str
    verdict: str | None
    score: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "verdict": self.verdict, "score": self.score}


@dataclass
class ReviewItem:
    run: str
    idx: int
    item_id: str | None
    key: str | None  # the result's store key
    text: str
    conversation: str | None
    verdict: str
    score: float | None  # P(violation) (None when undetermined or unscored)
    final: str | None
    reasoning: str | None
    finish_reason: str | None
    error: str | None
    gold: bool | None
    gold_raw: Any
    policy_name: str
    policy_hash: str | None
    partners: list[Partner] = field(default_factory=list)
    decision: Decision | None = None

    @property
    def content_key(self) -> str:
        return content_key(self.text, self.conversation)

    @property
    def determined(self) -> bool:
        return self.verdict in DECIDED

    def target(self) -> Target:
        return Target(
            self.policy_name,
            self.text,
            self.conversation,
            self.run,
            self.idx,
            self.item_id,
            self.key,
            self.policy_hash,
            self.verdict,
            self.score,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "item": self.idx,
            "item_id": self.item_id,
            "run": self.run,
            "key": self.key,
            "text": self.text,
            "conversation": json.loads(self.conversation) if self.conversation else None,
            "verdict": self.verdict,
            "p_violation": self.score,
            "final": self.final,
            "reasoning": self.reasoning,
            "finish_reason": self.finish_reason,
            "error": self.error,
            "gold": _side(self.gold),
            "gold_raw": self.gold_raw,
            "partners": [p.to_dict() for p in self.partners],
            "decision": self.decision.to_dict() if self.decision else None,
        }


def _side(v: bool | None) -> str | None:
    return None if v is None else "violation" if v else "no_violation"


@dataclass
class ReviewSource:
    """What `edge-guard review RUN` reviews: one run's items (plus its comparison partners)."""

    ref: str  # what the user named
    kind: str  # run | compare | test (the reviewed run's kind)
    run: str  # the reviewed run
    policy_name: str
    policy_hash: str | None
    output: OutputSpec | None  # the policy version's output spec, when the store knows it
    threshold: float
    items: list[ReviewItem]
    partners: list[str]

    def item(self, ref: str | int) -> ReviewItem:
        """An item by its index (as `review RUN --json` lists it) or its dataset id."""
        s = str(ref).strip()
        if s.lstrip("-").isdigit():
            hits = [i for i in self.items if i.idx == int(s)]
        else:
            hits = [i for i in self.items if i.item_id == s]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise EdgeGuardError(
                f"item id {s!r} names {len(hits)} items of run {self.run!r}: "
                "give the item's index instead"
            )
        span = f"indices {self.items[0].idx}–{self.items[-1].idx}" if self.items else "no items"
        raise EdgeGuardError(f"run {self.run!r} has no item {s!r} ({span})")

    def refresh_decisions(self, store: Store) -> None:
        """Attach the decision in force to every item (call again after recording one)."""
        found = latest(store, self.policy_name)
        for it in self.items:
            it.decision = found.get(it.content_key)


def policy_output(store: Store, name: str, policy_hash: str | None) -> OutputSpec | None:
    """The output spec of a stored policy version (tested versions are stored), or None."""
    if not policy_hash:
        return None
    rows = store.query(
        "SELECT output FROM policy_versions WHERE policy_name = ? AND hash = ?", [name, policy_hash]
    )
    if not rows or not rows[0]["output"]:
        return None
    try:
        return OutputSpec.from_dict(json.loads(rows[0]["output"]), f"policy {name}")
    except (EdgeGuardError, ValueError):
        return None


def policy_path(store: Store, name: str, policy_hash: str | None) -> str | None:
    """Where the policy version was loaded from when it was tested (if that still exists)."""
    from pathlib import Path

    rows = store.query(
        "SELECT path FROM policy_versions WHERE policy_name = ? AND hash = ? AND path IS NOT NULL",
        [name, policy_hash or ""],
    )
    return rows[0]["path"] if rows and Path(rows[0]["path"]).exists() else None


def _recent(store: Store) -> str:
    names = [
        r["name"] for r in store.query("SELECT name FROM runs ORDER BY updated_at DESC LIMIT 5")
    ]
    return f" (recent runs: {', '.join(names)})" if names else " (no runs in this store)"


def resolve(store: Store, ref: str) -> tuple[str, list[str]]:
    """(the run to review, the runs it is compared with) for a run name, a comparison name
    or the name of a tested policy (its latest test run, against the previous version's)."""
    from edge_guard.runs.multi_plan import is_multi_run

    run = store.run(ref)
    if run is not None:
        if is_multi_run(run):
            raise EdgeGuardError(
                f"run {ref!r} classified several policies: review works on "
                "single-policy runs (run each policy on its own)"
            )
        return ref, _auto_partners(store, run)
    from edge_guard.compare.runner import comparison_runs

    try:
        names = comparison_runs(store, ref)
        return names[0], names[1:]
    except EdgeGuardError:
        pass
    tests = store.query(
        "SELECT run FROM policy_test_runs WHERE policy_name = ? ORDER BY id DESC LIMIT 1", [ref]
    )
    if tests:
        name = tests[0]["run"]
        return name, _auto_partners(store, store.run(name) or {"name": name, "kind": "test"})
    raise EdgeGuardError(
        f"no run, comparison or tested policy named {ref!r} in {store.path}{_recent(store)}"
    )


def _auto_partners(store: Store, run: dict[str, Any]) -> list[str]:
    """A compare run's sibling configs; a test run's previous policy version's test run."""
    if run.get("kind") == "compare":
        from edge_guard.compare.runner import comparison_runs

        meta = json.loads(run.get("config") or "{}").get("compare") or {}
        try:
            return [n for n in comparison_runs(store, meta.get("name", "")) if n != run["name"]]
        except EdgeGuardError:
            return []
    if run.get("kind") == "test":
        return _previous_test_run(store, run["name"])
    return []


def _previous_test_run(store: Store, name: str) -> list[str]:
    from edge_guard.policy.versions import PolicyVersion, previous_tested, test_runs

    rows = store.query(
        "SELECT t.config_hash, v.* FROM policy_test_runs t JOIN policy_versions v "
        "ON v.id = t.version_id WHERE t.run = ? ORDER BY t.id DESC LIMIT 1",
        [name],
    )
    if not rows:
        return []
    version = PolicyVersion.from_row(rows[0])
    prev = previous_tested(store, version.policy_name, version)
    if prev is None:
        return []
    runs = test_runs(store, version.policy_name, prev.id)
    same = [r for r in runs if r.config_hash == rows[0]["config_hash"]]
    return [(same or runs)[0].run] if runs else []


def load_source(
    store: Store, ref: str, *, against: list[str] | None = None, threshold: float | None = None
) -> ReviewSource:
    """The items of the run `ref` names, with partners (`against` replaces the automatic
    ones), gold labels mapped by the policy's own labels and the decisions in force."""
    from edge_guard.datasets.gold import GoldMapper
    from edge_guard.runs.outcomes import item_score, run_outcomes

    name, partners = resolve(store, ref)
    if against:
        partners = list(dict.fromkeys(a for a in against if a != name))
        for p in partners:
            if store.run(p) is None:
                raise EdgeGuardError(f"--against: no run named {p!r} in {store.path}")
    out = run_outcomes(store, name)
    run = out.run
    cfg = out.config
    policy_name = str(run.get("policy") or cfg.get("policy") or "")
    policy_hash = cfg.get("policy_hash") or (out.rows[0].get("policy_hash") if out.rows else None)
    spec = policy_output(store, policy_name, policy_hash)
    if threshold is None:
        threshold = spec.threshold if spec is not None else 0.5
    if not 0 <= threshold <= 1:
        raise EdgeGuardError(f"--threshold must be in [0, 1], got {threshold}")
    mapper = GoldMapper(spec) if spec is not None else None
    by_partner = {p: _by_content(store.run_results(p)) for p in partners}
    items = []
    for row, gold in zip(out.rows, out.gold, strict=True):
        if gold is None and mapper is not None and row.get("gold") is not None:
            mapped = mapper.map(row["gold"])
            gold = None if mapped is None else mapped.violation
        extra = json.loads(row.get("extra") or "{}")
        raw = extra.get("gold_raw", row.get("gold")) if isinstance(extra, dict) else row.get("gold")
        item = ReviewItem(
            name,
            row["idx"],
            row.get("item_id"),
            row.get("key"),
            row.get("text") or "",
            row.get("conversation"),
            str(row["verdict"]),
            item_score(row),
            row.get("final"),
            row.get("reasoning"),
            row.get("finish_reason"),
            row.get("error"),
            gold,
            raw,
            policy_name,
            row.get("policy_hash") or policy_hash,
        )
        for p, rows in by_partner.items():
            other = rows.get(item.content_key)
            if other is not None:
                item.partners.append(Partner(p, other["verdict"], item_score(other)))
        items.append(item)
    source = ReviewSource(
        ref,
        str(run.get("kind") or "run"),
        name,
        policy_name,
        policy_hash,
        spec,
        float(threshold),
        items,
        partners,
    )
    source.refresh_decisions(store)
    return source


def _by_content(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        out.setdefault(content_key(r.get("text"), r.get("conversation")), r)
    return out
