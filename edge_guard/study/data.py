"""Study ratings in one shape, loaded from a study run in the store or from a results file.

`StudyData` holds, per model and item, the ratings of each repeat (None = unparsed, with the
reason). Results files: the seed's JSON list of `{"text", "model_<name>": value}` objects
(value = rating scaled to [0, 1], rating = value × 4 + 1, null = unparsed), or our long
format (JSON list or JSONL of `{"model", "item_id", "text", "rating", ...}` rows, as written
by `StudyData.rows()`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_guard.errors import EdgeGuardError
from edge_guard.study.dataset import StudyItem
from edge_guard.study.runner import RUN_KIND, rating_of

SEED_PREFIX = "model_"


@dataclass
class Obs:
    """One rating of one item by one model (one repeat)."""

    repeat: int
    rating: int | None
    expected: float | None = None
    reason: str | None = None  # why it is unparsed


@dataclass
class StudyData:
    name: str
    models: list[str]
    items: list[StudyItem]
    obs: dict[str, dict[str, list[Obs]]]  # model -> item id -> observations
    scale: tuple[int, int] = (1, 5)
    repeats: int = 1
    source: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    n_planned: int | None = None  # ratings planned (runs); missing = planned - observed

    @property
    def n_observed(self) -> int:
        return sum(len(v) for per in self.obs.values() for v in per.values())

    def rows(self) -> list[dict[str, Any]]:
        """Long format: one row per (model, item, repeat)."""
        by_id = {it.id: it for it in self.items}
        return [
            {
                "model": m,
                "item_id": iid,
                "topic": by_id[iid].topic,
                "text": by_id[iid].text,
                "repeat": o.repeat,
                "rating": o.rating,
                "expected_rating": o.expected,
                "reason": o.reason,
            }
            for m in self.models
            for iid, obs in self.obs[m].items()
            for o in obs
        ]


def model_label(ref: str) -> str:
    """A short display name: a .gguf path's file stem, else the reference itself."""
    if ref.endswith(".gguf") or "/" in ref:
        return Path(ref).name.removesuffix(".gguf")
    return ref


def unparsed_reason(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"error: {str(row['error']).splitlines()[0][:120]}"
    final = row.get("final")
    if final is None:
        return f"no final answer (finish: {row.get('finish_reason') or '?'})"
    return f"answer {final.strip()[:60]!r} is not a rating"


def from_run(store: Any, name: str) -> StudyData:
    """Load a study run's ratings (missing ratings of an unfinished run are counted, not read)."""
    run = store.run(name)
    if run is None:
        raise EdgeGuardError(f"no study run named {name!r} in {store.path}{_available(store)}")
    if run.get("kind") != RUN_KIND:
        raise EdgeGuardError(f"run {name!r} is a {run.get('kind')!r} run, not a study")
    config = json.loads(run.get("config") or "{}")
    models = list(config.get("models") or [])
    scale = tuple(config.get("scale") or (1, 5))
    items: dict[str, StudyItem] = {}
    obs: dict[str, dict[str, list[Obs]]] = {m: {} for m in models}
    for row in store.run_results(name):
        extra = json.loads(row.get("extra") or "{}")
        model, iid = extra.get("model"), extra.get("item") or row.get("item_id")
        if model not in obs:
            models.append(model)
            obs[model] = {}
        items.setdefault(iid, StudyItem(iid, row["text"], extra.get("topic")))
        meta = json.loads(row.get("metadata") or "{}")
        rating = rating_of(row.get("fine_grain_label"), row.get("parsed"), row.get("verdict"))
        if rating is not None and not scale[0] <= rating <= scale[1]:
            rating = None
        o = Obs(
            int(extra.get("repeat", 0)),
            rating,
            meta.get("expected_rating"),
            None if rating is not None else unparsed_reason(row),
        )
        obs[model].setdefault(iid, []).append(o)
    return StudyData(
        name,
        models,
        list(items.values()),
        obs,
        (int(scale[0]), int(scale[1])),
        int(config.get("repeats") or 1),
        f"run {name} ({store.path})",
        config,
        run.get("n_items"),
    )


def _available(store: Any) -> str:
    names = [
        r["name"]
        for r in store.query(
            "SELECT name FROM runs WHERE kind = ? ORDER BY updated_at DESC LIMIT 5", [RUN_KIND]
        )
    ]
    return (
        f" (study runs: {', '.join(names)})"
        if names
        else " (no study runs yet: `edge-guard study run`)"
    )


def latest_run(store: Any) -> str:
    rows = store.query(
        "SELECT name FROM runs WHERE kind = ? ORDER BY updated_at DESC LIMIT 1", [RUN_KIND]
    )
    if not rows:
        raise EdgeGuardError(
            f"no study runs in {store.path}: start one with `edge-guard study run`"
        )
    return rows[0]["name"]


def from_results_file(path: str | Path) -> StudyData:
    """Load the seed's results JSON or our long-format rows (.json / .jsonl)."""
    p = Path(path)
    try:
        content = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeGuardError(f"{p}: cannot read results file ({exc})") from None
    try:
        if p.suffix.lower() == ".jsonl":
            data = [json.loads(line) for line in content.splitlines() if line.strip()]
        else:
            data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise EdgeGuardError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list) or not data or not all(isinstance(x, dict) for x in data):
        raise EdgeGuardError(f"{p}: expected a non-empty JSON list of objects")
    if any(k.startswith(SEED_PREFIX) for k in data[0]):
        return _from_seed(data, p)
    if "model" in data[0] and "rating" in data[0]:
        return _from_rows(data, p)
    raise EdgeGuardError(
        f"{p}: unknown results format (want the seed's `model_<name>` fields or rows with "
        "'model' and 'rating')"
    )


def _from_seed(data: list[dict[str, Any]], p: Path) -> StudyData:
    models = [k for k in data[0] if k.startswith(SEED_PREFIX)]
    items: list[StudyItem] = []
    obs: dict[str, dict[str, list[Obs]]] = {m.removeprefix(SEED_PREFIX): {} for m in models}
    for n, row in enumerate(data, 1):
        text = row.get("text")
        if not isinstance(text, str):
            raise EdgeGuardError(f"{p}: item {n} has no 'text'")
        item = StudyItem(str(row.get("id", n)), text, row.get("topic"))
        items.append(item)
        for key in models:
            value = row.get(key)
            rating: int | None = None
            if value is not None:
                if not isinstance(value, int | float) or not 0 <= value <= 1:
                    raise EdgeGuardError(f"{p}: item {n} {key} = {value!r} is not in [0, 1]")
                scaled = value * 4 + 1
                rating = round(scaled)
                if abs(scaled - rating) > 1e-6:
                    raise EdgeGuardError(f"{p}: item {n} {key} = {value!r} is not a 1-5 rating / 4")
            reason = None if rating is not None else "null in the results file (unparsed)"
            obs[key.removeprefix(SEED_PREFIX)][item.id] = [Obs(0, rating, None, reason)]
    return StudyData(p.stem, list(obs), items, obs, (1, 5), 1, f"seed results {p}")


def _from_rows(data: list[dict[str, Any]], p: Path) -> StudyData:
    models: list[str] = []
    items: dict[str, StudyItem] = {}
    obs: dict[str, dict[str, list[Obs]]] = {}
    for n, row in enumerate(data, 1):
        model, iid, rating = row.get("model"), row.get("item_id", row.get("id")), row.get("rating")
        if not isinstance(model, str) or iid is None:
            raise EdgeGuardError(f"{p}: row {n} needs 'model' and 'item_id'")
        if rating is not None and (not isinstance(rating, int) or isinstance(rating, bool)):
            raise EdgeGuardError(f"{p}: row {n} rating {rating!r} is not an integer or null")
        if model not in obs:
            models.append(model)
            obs[model] = {}
        items.setdefault(str(iid), StudyItem(str(iid), str(row.get("text", "")), row.get("topic")))
        reason = None if rating is not None else (row.get("reason") or "unparsed")
        o = Obs(int(row.get("repeat", 0)), rating, row.get("expected_rating"), reason)
        obs[model].setdefault(str(iid), []).append(o)
    repeats = max(len(v) for per in obs.values() for v in per.values())
    return StudyData(p.stem, models, list(items.values()), obs, (1, 5), repeats, f"results {p}")


def load_study(ref: str | None, store: Any = None, db: str | None = None) -> StudyData:
    """A run name, a results file, or (None) the latest study run."""
    if ref is not None and Path(ref).is_file():
        return from_results_file(ref)
    if store is None:
        from edge_guard.store import Store

        store = Store(db)
    return from_run(store, ref if ref is not None else latest_run(store))
