"""Conversations as classification inputs: validated messages, what to judge, one rendering.

A `Conversation` is a list of `{role, content}` messages (roles `user`, `assistant`,
`system`) plus a target saying which message is judged — `last` (default), `user` (the last
user message), `assistant` (the last assistant reply) or `all` (the whole exchange); the
other messages are context.

**Rendering** (`Conversation.render()`), the one format the model sees as the content of the
user message (encoded like any text: ordinary tokens only, never a control token)::

    Conversation of 3 messages. Each message is a header line "[n] role" followed by one
    line holding its content as a JSON string. Classify message [3] (assistant), marked
    "<< classify this message"; the other messages are context.

    [1] system
    "You are a helpful assistant."

    [2] user
    "How do I reset my router?"

    [3] assistant << classify this message
    "Hold the reset button for 10 seconds."

For target `all` the second sentence reads "Classify the whole conversation (all N
messages)." and no header is marked. Content is written with `json.dumps`, so a newline,
a quote, a control character or a Unicode line separator inside a message is escaped and
the message stays on its one line: a message that types "\\n[2] assistant\\n..." cannot render like a real turn.

**Canonical form** (`canonical()`): compact sorted JSON `{"messages": [...], "target": t}` —
what the cache key and the store's `conversation` column hold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edge_guard.errors import EdgeGuardError

ROLES = ("user", "assistant", "system")
TARGETS = ("last", "user", "assistant", "all")
# What a policy may declare it judges (`policy.toml` `[input] judges = ...`).
JUDGES = ("any", "user", "assistant", "conversation")
MARK = "<< classify this message"
MAX_MESSAGES = 10_000


# Characters some readers take as a line break or a control (C1, NEL, line/paragraph
# separators) are escaped too, beyond what json.dumps escapes (C0 controls, quote, backslash).
_EXTRA_ESCAPES = re.compile("[\x7f-\x9f\u2028\u2029]")


def quoted(content: str) -> str:
    """A message's content as one JSON string on one line (decodes back with json.loads)."""
    text = json.dumps(content, ensure_ascii=False)
    return _EXTRA_ESCAPES.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class ConversationError(EdgeGuardError):
    """A conversation that cannot be used (one line saying why)."""


class ConversationNeeded(ConversationError):
    """A policy judges conversations (or model responses) and got something else. `str()`
    names the fix in Python's terms; `for_door(door)` in the CLI's, HTTP's or the TUI's."""

    def __init__(self, policy: str, judges: str, item: Any, index: int) -> None:
        self.policy, self.judges, self.item, self.index = policy, judges, item, index
        super().__init__(self.for_door("python"))

    def for_door(self, door: str) -> str:
        return f"policy {self.policy} {judges_problem(self.judges, self.item, door)} (item {self.index})"


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def _message(obj: Any, i: int) -> Message:
    n = i + 1
    if isinstance(obj, Message):
        obj = obj.as_dict()
    if not isinstance(obj, Mapping):
        raise ConversationError(
            f"message {n} is {type(obj).__name__}, not an object with role and content"
        )
    extra = sorted(repr(k) for k in obj if k not in ("role", "content"))  # repr: no raw controls
    if extra:
        raise ConversationError(f"message {n}: unknown field(s) {', '.join(extra)}")
    role, content = obj.get("role"), obj.get("content")
    if not isinstance(role, str) or role not in ROLES:
        raise ConversationError(f"message {n}: role {role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        what = "missing" if content is None else f"{type(content).__name__}, not a string"
        raise ConversationError(f"message {n} ({role}): content is {what}")
    if not content.strip():
        raise ConversationError(f"message {n} ({role}): content is empty")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConversationError(
            f"message {n} ({role}): content has an unpaired surrogate at character {exc.start}"
        ) from None
    return Message(role, content)


class Conversation:
    """Validated messages and the target to judge. Immutable; equal when canonical forms are."""

    __slots__ = ("_canonical", "messages", "target")

    def __init__(
        self, messages: Iterable[Mapping[str, Any] | Message], target: str = "last"
    ) -> None:
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
            raise ConversationError(
                f"messages must be a list of {{role, content}} objects, not {type(messages).__name__}"
            )
        msgs = tuple(_message(m, i) for i, m in enumerate(messages))
        if not msgs:
            raise ConversationError("a conversation needs at least one message")
        if len(msgs) > MAX_MESSAGES:
            raise ConversationError(f"{len(msgs)} messages (at most {MAX_MESSAGES})")
        if target not in TARGETS:
            raise ConversationError(f"target {target!r} is not one of {', '.join(TARGETS)}")
        if target in ("user", "assistant") and not any(m.role == target for m in msgs):
            raise ConversationError(f"target {target}: the conversation has no {target} message")
        self.messages: tuple[Message, ...] = msgs
        self.target = target
        self._canonical: str | None = None

    # -- what is judged ----------------------------------------------------------------
    @property
    def judged_index(self) -> int | None:
        """0-based index of the judged message; None for target `all`."""
        if self.target == "all":
            return None
        if self.target == "last":
            return len(self.messages) - 1
        return max(i for i, m in enumerate(self.messages) if m.role == self.target)

    @property
    def judged_role(self) -> str:
        """The judged message's role, or "conversation" for target `all`."""
        i = self.judged_index
        return "conversation" if i is None else self.messages[i].role

    @property
    def judged_text(self) -> str:
        """The judged message's content (the rendering for target `all`)."""
        i = self.judged_index
        return self.render() if i is None else self.messages[i].content

    def with_target(self, target: str) -> Conversation:
        return Conversation(self.messages, target)

    # -- forms -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"messages": [m.as_dict() for m in self.messages], "target": self.target}

    def canonical(self) -> str:
        """Compact sorted JSON of messages and target (cache key, store column)."""
        if self._canonical is None:
            self._canonical = json.dumps(
                self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":")
            )
        return self._canonical

    def render(self) -> str:
        """The documented text the model reads as the user message (see the module doc)."""
        n, judged = len(self.messages), self.judged_index
        noun = "message" if n == 1 else "messages"
        if judged is None:
            what = f"Classify the whole conversation (all {n} {noun})."
        else:
            what = (
                f"Classify message [{judged + 1}] ({self.messages[judged].role}), marked "
                f'"{MARK}"; the other messages are context.'
            )
        head = (
            f'Conversation of {n} {noun}. Each message is a header line "[n] role" followed '
            f"by one line holding its content as a JSON string. {what}"
        )
        blocks = [head]
        for i, m in enumerate(self.messages):
            mark = f" {MARK}" if i == judged else ""
            blocks.append(f"[{i + 1}] {m.role}{mark}\n{quoted(m.content)}")
        return "\n\n".join(blocks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Conversation) and other.canonical() == self.canonical()

    def __hash__(self) -> int:
        return hash(self.canonical())

    def __repr__(self) -> str:
        return f"Conversation({len(self.messages)} messages, target={self.target!r})"

    # -- reading -----------------------------------------------------------------------
    @classmethod
    def from_json(
        cls, data: str | bytes | Any, target: str | None = None, where: str = "messages"
    ) -> Conversation:
        """From JSON text or a parsed value: a list of messages or {"messages", "target"}.

        `target` overrides one given in the data (default `last`).
        """
        obj = data
        if isinstance(data, str | bytes):
            try:
                obj = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ConversationError(
                    f"{where}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                ) from None
            except RecursionError:
                raise ConversationError(f"{where}: invalid JSON (nested too deeply)") from None
        given = None
        if isinstance(obj, Mapping):
            unknown = sorted(str(k) for k in obj if k not in ("messages", "target"))
            if "messages" not in obj or unknown:
                raise ConversationError(
                    f'{where}: expected a list of messages or {{"messages": [...], "target": ...}}'
                )
            given, obj = obj.get("target"), obj["messages"]
        if not isinstance(obj, list):
            raise ConversationError(
                f"{where}: expected a JSON list of {{role, content}} messages, "
                f"not {type(obj).__name__}"
            )
        try:
            return cls(obj, target or given or "last")
        except ConversationError as exc:
            raise ConversationError(f"{where}: {exc}") from None

    @classmethod
    def exchange(cls, prompt: str, response: str, target: str = "assistant") -> Conversation:
        """A user prompt and a model response (judge the response in the prompt's context)."""
        return cls(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
            target,
        )


Item = str | Conversation


def item_text(item: Item) -> str:
    """What a result's `text` holds: the text itself, or the judged message."""
    return item.judged_text if isinstance(item, Conversation) else item


def item_content(item: Item) -> str:
    """What goes into the user message: the text itself, or the conversation's rendering."""
    return item.render() if isinstance(item, Conversation) else item


# How each door gives a conversation (the fix named by the conversation-needed error).
CONVERSATION_HOW = {
    "cli": "--messages, a messages column, or --prompt-field/--response-field",
    "python": "pass a Conversation(messages, target) instead of a string",
    "http": "the request field 'messages', a list of {role, content}, with 'target'",
    "tui": "Ctrl+K for conversation mode, then Ctrl+N adds each turn",
}


def judges_problem(judges: str, item: Item, door: str = "cli") -> str | None:
    """Why a policy that judges `judges` must not classify `item` (None when it may),
    naming the fix in `door`'s terms ("cli", "python", "http", "tui")."""
    if judges == "any":
        return None
    if not isinstance(item, Conversation):
        if judges == "user":
            return None
        return (
            f"judges {'model responses' if judges == 'assistant' else 'conversations'}, "
            f"but got plain text: give a conversation ({CONVERSATION_HOW[door]})"
        )
    role = item.judged_role
    if judges == "conversation" or role == judges:
        return None
    return f"judges {judges} messages, but target {item.target!r} judges {role}"


def shown_lines(conversation: str | Mapping[str, Any] | None) -> list[tuple[int, str, str, bool]]:
    """(number, role, content, judged) per message of a stored canonical conversation.

    Unreadable data yields no lines (display code shows the plain text instead).
    """
    if not conversation:
        return []
    try:
        conv = Conversation.from_json(
            conversation if isinstance(conversation, str) else dict(conversation)
        )
    except ConversationError:
        return []
    judged = conv.judged_index
    return [
        (i + 1, m.role, m.content, judged is None or i == judged)
        for i, m in enumerate(conv.messages)
    ]


JUDGED_PREFIX = ">>> "


def shown_text(
    text: str | None, conversation: str | Mapping[str, Any] | None = None, clip: int = 600
) -> str | None:
    """What reports, flips and the TUI show for an item: the text, or the conversation with
    one message per block, the judged message(s) marked `>>> ` and `(judged)`::

        [1] user
            How do I reset my router?
        >>> [2] assistant (judged)
            Hold the reset button for 10 seconds.

    Each message's content is clipped to `clip` characters. Plain data, not escaped: the
    caller escapes for its medium (HTML, Markdown, terminal, Textual).
    """
    lines = shown_lines(conversation)
    if not lines:
        return text
    out = []
    for n, role, content, judged in lines:
        body = content if len(content) <= clip else content[: clip - 1] + "…"
        head = f"{JUDGED_PREFIX if judged else ''}[{n}] {role}{' (judged)' if judged else ''}"
        out.append(head + "\n" + "\n".join("    " + ln for ln in body.split("\n")))
    return "\n".join(out)
