"""Study datasets: short opinions to rate, as JSONL (`{"id", "topic", "text"}` or the seed's `{"text"}`).

An item may be a conversation instead of a text: `{"id", "messages": [{"role", "content"}...],
"target": ...}` (the judged message is its `text`).

The project's own dataset ships in `edge_guard/data/controversial_opinions.jsonl`. The seed's
format (`{"text": ...}` lines, an optional `canary` field) loads too: ids are assigned from the
1-based line number and the topic is None.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edge_guard.conversation import Conversation, ConversationError, Item
from edge_guard.errors import EdgeGuardError

DEFAULT_DATASET = "controversial_opinions.jsonl"
KNOWN_FIELDS = {"id", "topic", "text", "canary", "messages", "target"}


@dataclass(frozen=True)
class StudyItem:
    """One opinion to rate."""

    id: str
    text: str
    topic: str | None = None
    canary: str | None = None
    conversation: Conversation | None = None

    @property
    def item(self) -> Item:
        """What is classified: the conversation, else the text."""
        return self.conversation if self.conversation is not None else self.text

    def as_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "topic": self.topic, "text": self.text}


def default_dataset_path() -> Path:
    """The packaged controversial-opinion dataset."""
    return Path(str(resources.files("edge_guard") / "data" / DEFAULT_DATASET))


def load_dataset(path: str | Path | None = None, *, limit: int | None = None) -> list[StudyItem]:
    """Read a JSONL dataset (ours or the seed's); raises `EdgeGuardError` naming the bad line."""
    p = Path(path) if path is not None else default_dataset_path()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise EdgeGuardError(f"{p}: cannot read dataset ({exc.strerror or exc})") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EdgeGuardError(
            f"{p}: dataset is not UTF-8 (bad byte at offset {exc.start})"
        ) from None
    items: list[StudyItem] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        item = _parse_line(line, lineno, p)
        if item.id in seen:
            raise EdgeGuardError(
                f"{p}:{lineno}: duplicate id {item.id!r} (first on line {seen[item.id]})"
            )
        seen[item.id] = lineno
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise EdgeGuardError(f"{p}: dataset has no items")
    return items


def _parse_line(line: str, lineno: int, path: Path) -> StudyItem:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EdgeGuardError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise EdgeGuardError(f"{where}: expected a JSON object with a 'text' field")
    conversation = None
    if obj.get("messages") is not None:
        try:
            conversation = Conversation.from_json(obj["messages"], obj.get("target"), "'messages'")
        except ConversationError as exc:
            raise EdgeGuardError(f"{where}: {exc}") from None
    text = conversation.judged_text if conversation is not None else obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise EdgeGuardError(f"{where}: 'text' must be a non-empty string")
    item_id = obj.get("id", str(lineno))
    if not isinstance(item_id, str | int) or isinstance(item_id, bool) or not str(item_id).strip():
        raise EdgeGuardError(f"{where}: 'id' must be a non-empty string or integer")
    topic = obj.get("topic")
    if topic is not None and not isinstance(topic, str):
        raise EdgeGuardError(f"{where}: 'topic' must be a string")
    canary = obj.get("canary")
    return StudyItem(
        str(item_id),
        text.strip(),
        topic or None,
        None if canary is None else str(canary),
        conversation,
    )


def dataset_hash(items: list[StudyItem]) -> str:
    """A short hash of the items' ids and texts (a study's identity includes it)."""
    h = hashlib.sha256()
    for it in items:
        ident = [it.id, it.text] + ([it.conversation.canonical()] if it.conversation else [])
        h.update(json.dumps(ident, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]
