"""Parses model output from token ids into harmony messages (analysis, final, others).

Parsing works on ids, never on detokenized text, where the specials have vanished. The
stream starts right after a prompt that ends ``<|start|>assistant``, so the first tokens
complete that header (``<|channel|>analysis<|message|>``). `HarmonyStreamParser` takes one
token at a time and emits events (for live display); `parse_output` parses a whole list.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from dataclasses import dataclass, field

from edge_guard.harmony.vocab import Vocab

FINISH_REASONS = ("return", "call", "length", "eos", "error")


@dataclass
class HarmonyMessage:
    """One assistant message: its header fields and its text."""

    channel: str | None = None
    role: str = "assistant"
    recipient: str | None = None
    content_type: str | None = None
    text: str = ""
    complete: bool = False
    terminator: str | None = None  # "<|end|>", "<|return|>" or "<|call|>"


@dataclass
class MessageStart:
    index: int
    message: HarmonyMessage


@dataclass
class ContentDelta:
    index: int
    channel: str | None
    text: str


@dataclass
class MessageEnd:
    index: int
    message: HarmonyMessage


Event = MessageStart | ContentDelta | MessageEnd


@dataclass
class ParsedOutput:
    """The parse of one completion."""

    messages: list[HarmonyMessage] = field(default_factory=list)
    finish_reason: str | None = None
    malformed: list[str] = field(default_factory=list)

    @property
    def final(self) -> str | None:
        """The final answer, or None when there is no *complete* final-channel message."""
        for msg in reversed(self.messages):
            if msg.channel == "final":
                return msg.text if msg.complete else None
        return None

    @property
    def final_message(self) -> HarmonyMessage | None:
        for msg in reversed(self.messages):
            if msg.channel == "final":
                return msg
        return None

    @property
    def reasoning(self) -> str:
        return "\n".join(m.text for m in self.messages if m.channel == "analysis")

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


_HEADER, _CONTENT, _BETWEEN, _DONE = range(4)


class HarmonyStreamParser:
    """Incremental parser: `feed(token_id)` returns the events that token produced."""

    def __init__(self, vocab: Vocab, *, in_header: bool = True) -> None:
        self.vocab = vocab
        sid = vocab.special_id
        self.START, self.MESSAGE, self.END = sid("<|start|>"), sid("<|message|>"), sid("<|end|>")
        self.CHANNEL, self.RETURN, self.CALL = (
            sid("<|channel|>"),
            sid("<|return|>"),
            sid("<|call|>"),
        )
        self.CONSTRAIN = sid("<|constrain|>") if vocab.has_special("<|constrain|>") else -1
        self.output = ParsedOutput()
        self._state = _HEADER if in_header else _BETWEEN
        # Header pieces: role part (before <|channel|>), channel part, constrain part.
        self._header: dict[str, bytearray] = {"role": bytearray(b"assistant")}
        self._header_part = "role_rest"
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._current: HarmonyMessage | None = None
        self.n_tokens = 0

    # -- state queries used by the engine ---------------------------------------------------
    @property
    def at_final_content_start(self) -> bool:
        """True right after ``<|channel|>final...<|message|>``, before any answer token."""
        return (
            self._state == _CONTENT
            and self._current is not None
            and self._current.channel == "final"
            and not self._current.text
            and self._pending_bytes == 0
        )

    @property
    def _pending_bytes(self) -> int:
        buf, _flag = self._decoder.getstate()
        return len(buf)

    @property
    def done(self) -> bool:
        return self._state == _DONE

    # -- feeding ----------------------------------------------------------------------------
    def feed(self, token_id: int) -> list[Event]:
        self.n_tokens += 1
        if self._state == _DONE:
            self.output.malformed.append(f"token {token_id} after the end of the completion")
            return []
        if self._state == _HEADER:
            return self._feed_header(token_id)
        if self._state == _CONTENT:
            return self._feed_content(token_id)
        return self._feed_between(token_id)

    def _feed_header(self, tok: int) -> list[Event]:
        if tok == self.CHANNEL:
            self._header_part = "channel"
            self._header.setdefault("channel", bytearray())
        elif tok == self.CONSTRAIN:
            self._header_part = "constrain"
            self._header.setdefault("constrain", bytearray())
        elif tok == self.MESSAGE:
            return self._open_message()
        elif tok in self.vocab.control_ids:
            name = self.vocab.decode([tok])
            self.output.malformed.append(f"unexpected {name} in a message header")
            if tok in (self.END, self.RETURN, self.CALL, self.START):
                # A header with no body: drop it and resynchronise.
                self._reset_header()
                self._state = _HEADER if tok == self.START else _BETWEEN
                if tok in (self.RETURN, self.CALL):
                    self._state = _DONE
        else:
            key = "role" if self._header_part == "role_rest" else self._header_part
            self._header.setdefault(key, bytearray()).extend(self.vocab.piece(tok))
        return []

    def _reset_header(self, role: bytes = b"") -> None:
        self._header = {"role": bytearray(role)}
        self._header_part = "role_rest"

    def _open_message(self) -> list[Event]:
        role_part = self._header.get("role", bytearray()).decode("utf-8", "replace").strip()
        channel_part = self._header.get("channel", bytearray()).decode("utf-8", "replace").strip()
        constrain = self._header.get("constrain", bytearray()).decode("utf-8", "replace").strip()
        role, _, recipient = role_part.partition(" to=")
        channel_words = channel_part.split()
        channel = channel_words[0] if channel_words else None
        content_type = constrain or None
        for word in channel_words[1:]:
            if word.startswith("to="):
                recipient = word[3:]
            elif content_type is None:
                content_type = word
        msg = HarmonyMessage(
            channel=channel,
            role=role.strip() or "assistant",
            recipient=recipient.strip() or None,
            content_type=content_type,
        )
        if channel is None:
            self.output.malformed.append("a message without a channel")
        self.output.messages.append(msg)
        self._current = msg
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._state = _CONTENT
        return [MessageStart(len(self.output.messages) - 1, msg)]

    def _feed_content(self, tok: int) -> list[Event]:
        assert self._current is not None
        index = len(self.output.messages) - 1
        if tok in (self.END, self.RETURN, self.CALL):
            events: list[Event] = []
            tail = self._decoder.decode(b"", final=True)
            if tail:
                self._current.text += tail
                events.append(ContentDelta(index, self._current.channel, tail))
            self._current.complete = True
            self._current.terminator = self.vocab.decode([tok])
            events.append(MessageEnd(index, self._current))
            self._current = None
            if tok == self.END:
                self._state = _BETWEEN
            else:
                self._state = _DONE
                self.output.finish_reason = "return" if tok == self.RETURN else "call"
            return events
        if tok in self.vocab.control_ids:
            name = self.vocab.decode([tok])
            self.output.malformed.append(f"control token {name} inside message content")
            piece = name.encode()
        else:
            piece = self.vocab.piece(tok)
        text = self._decoder.decode(piece)
        if not text:
            return []
        self._current.text += text
        return [ContentDelta(index, self._current.channel, text)]

    def _feed_between(self, tok: int) -> list[Event]:
        if tok == self.START:
            self._reset_header()
            self._state = _HEADER
        elif tok in (self.RETURN, self.CALL):
            self._state = _DONE
            self.output.finish_reason = "return" if tok == self.RETURN else "call"
        else:
            self.output.malformed.append(f"token {tok} outside any message")
        return []

    def finish(self, reason: str | None = None) -> ParsedOutput:
        """Close the stream. `reason` is the engine's view (``length``, ``eos``, ``error``)."""
        if self._current is not None:
            tail = self._decoder.decode(b"", final=True)
            self._current.text += tail
        if self.output.finish_reason is None:
            self.output.finish_reason = reason or "eos"
        return self.output


def parse_output(
    vocab: Vocab, token_ids: Iterable[int], finish_reason: str | None = None
) -> ParsedOutput:
    """Parse a whole completion (the ids generated after ``<|start|>assistant``)."""
    parser = HarmonyStreamParser(vocab)
    for tok in token_ids:
        parser.feed(tok)
    return parser.finish(finish_reason)
