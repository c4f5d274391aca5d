"""Parsing completions (ids after `<|start|>assistant`) into harmony messages."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_guard.harmony.parse import (
    FINISH_REASONS,
    ContentDelta,
    HarmonyStreamParser,
    MessageEnd,
    MessageStart,
    parse_output,
)
from edge_guard.harmony.vocab import Vocab, o200k_harmony_vocab

SPECIALS = (
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|constrain|>",
    "<|return|>",
    "<|call|>",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|reserved_200000|>",
)


@functools.cache
def _tiny_vocab(path: Path) -> Vocab:
    return Vocab.from_gguf(path)


@pytest.fixture(params=["o200k", "tiny"])
def vocab(request: pytest.FixtureRequest, tiny_model: Path) -> Vocab:
    return o200k_harmony_vocab() if request.param == "o200k" else _tiny_vocab(tiny_model)


def build(vocab: Vocab, *parts: str) -> list[int]:
    """Ids for `parts`: special strings become their control id, the rest ordinary text."""
    ids: list[int] = []
    for part in parts:
        ids += [vocab.special_id(part)] if part in SPECIALS else vocab.encoder.encode(part)
    return ids


_BYTE_INDEX: dict[str, dict[bytes, int]] = {}


def byte_ids(vocab: Vocab, data: bytes) -> list[int]:
    """One token per byte: the worst case for multi-byte characters."""
    index = _BYTE_INDEX.get(vocab.name)
    if index is None:
        index = {
            b: i
            for i, b in enumerate(vocab.token_bytes)
            if len(b) == 1 and i not in vocab.control_ids
        }
        _BYTE_INDEX[vocab.name] = index
    return [index[bytes([b])] for b in data]


def feed_all(parser: HarmonyStreamParser, ids: list[int]) -> list:  # type: ignore[type-arg]
    events = []
    for tok in ids:
        events += parser.feed(tok)
    return events


def test_analysis_then_final_with_return(vocab: Vocab) -> None:
    ids = build(
        vocab,
        "<|channel|>",
        "analysis",
        "<|message|>",
        "The user is polite. Not toxic.",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "0",
        "<|return|>",
    )
    out = parse_output(vocab, ids)
    assert out.final == "0"
    assert out.reasoning == "The user is polite. Not toxic."
    assert out.finish_reason == "return"
    assert not out.truncated
    assert out.malformed == []
    assert [(m.channel, m.role, m.complete, m.terminator) for m in out.messages] == [
        ("analysis", "assistant", True, "<|end|>"),
        ("final", "assistant", True, "<|return|>"),
    ]
    # The engine's finish reason never overrides a real <|return|>.
    assert parse_output(vocab, ids, "length").finish_reason == "return"


def test_final_with_constrain_json(vocab: Vocab) -> None:
    body = '{"violation": 1, "rule": "T2"}'
    ids = build(
        vocab, "<|channel|>", "final ", "<|constrain|>", "json", "<|message|>", body, "<|return|>"
    )
    out = parse_output(vocab, ids)
    assert out.final == body
    msg = out.final_message
    assert msg is not None and msg.content_type == "json" and msg.channel == "final"
    assert out.malformed == []


def test_commentary_channel_is_not_reasoning(vocab: Vocab) -> None:
    ids = build(
        vocab,
        "<|channel|>",
        "analysis",
        "<|message|>",
        "think",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "commentary",
        "<|message|>",
        "a preamble",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "1",
        "<|return|>",
    )
    out = parse_output(vocab, ids)
    assert [m.channel for m in out.messages] == ["analysis", "commentary", "final"]
    assert out.messages[1].text == "a preamble"
    assert out.reasoning == "think"
    assert out.final == "1"


def test_tool_call_with_recipient_in_role(vocab: Vocab) -> None:
    ids = build(
        vocab,
        " to=functions.lookup",
        "<|channel|>",
        "commentary ",
        "<|constrain|>",
        "json",
        "<|message|>",
        '{"q": "x"}',
        "<|call|>",
    )
    out = parse_output(vocab, ids)
    (msg,) = out.messages
    assert (msg.role, msg.recipient, msg.channel, msg.content_type) == (
        "assistant",
        "functions.lookup",
        "commentary",
        "json",
    )
    assert msg.text == '{"q": "x"}' and msg.terminator == "<|call|>"
    assert out.finish_reason == "call"
    assert out.final is None


def test_recipient_in_channel_header(vocab: Vocab) -> None:
    ids = build(
        vocab,
        "<|channel|>",
        "commentary to=browser.search",
        "<|message|>",
        "query",
        "<|call|>",
    )
    (msg,) = parse_output(vocab, ids).messages
    assert (msg.channel, msg.recipient, msg.content_type) == ("commentary", "browser.search", None)


def test_truncated_without_final(vocab: Vocab) -> None:
    ids = build(vocab, "<|channel|>", "analysis", "<|message|>", "still thinking about")
    out = parse_output(vocab, ids, "length")
    assert out.final is None
    assert out.final_message is None
    assert out.finish_reason == "length" and out.truncated
    assert out.reasoning == "still thinking about"
    assert not out.messages[0].complete
    # No engine reason and no terminator: "eos".
    assert parse_output(vocab, ids).finish_reason == "eos"


def test_final_started_but_cut(vocab: Vocab) -> None:
    ids = build(
        vocab,
        "<|channel|>",
        "analysis",
        "<|message|>",
        "ok",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "The answer is",
    )
    out = parse_output(vocab, ids, "length")
    assert out.final is None
    assert out.final_message is not None and out.final_message.text == "The answer is"
    assert out.finish_reason == "length"


def test_earlier_complete_final_does_not_hide_a_cut_one(vocab: Vocab) -> None:
    ids = build(
        vocab,
        "<|channel|>",
        "final",
        "<|message|>",
        "0",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "1 because",
    )
    assert parse_output(vocab, ids, "length").final is None


@pytest.mark.parametrize(
    "text", ["é", "日本語", "😀👍🏽", "हिन्दी", "a€b", "Zalgo: Z\u0351\u0364a\u036a"]
)
def test_unicode_split_across_tokens(vocab: Vocab, text: str) -> None:
    head = build(vocab, "<|channel|>", "final", "<|message|>")
    body = byte_ids(vocab, text.encode())
    parser = HarmonyStreamParser(vocab)
    feed_all(parser, head)
    deltas: list[str] = []
    for tok in body:
        for ev in parser.feed(tok):
            assert isinstance(ev, ContentDelta) and ev.channel == "final"
            deltas.append(ev.text)
    # Every delta is whole characters: no replacement characters, nothing lost.
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    if len(text.encode()) > len(text):
        assert len(deltas) < len(body)  # some tokens held bytes back
    feed_all(parser, build(vocab, "<|return|>"))
    assert parser.finish().final == text


def test_invalid_utf8_is_replaced_not_raised(vocab: Vocab) -> None:
    head = build(vocab, "<|channel|>", "final", "<|message|>")
    body = byte_ids(vocab, b"ok\xe6\x97")  # a cut 3-byte character
    out = parse_output(vocab, [*head, *body, vocab.special_id("<|return|>")])
    assert out.final == "ok\ufffd"


def test_tokens_after_return_are_malformed(vocab: Vocab) -> None:
    ids = build(vocab, "<|channel|>", "final", "<|message|>", "1", "<|return|>", "extra")
    out = parse_output(vocab, ids)
    assert out.final == "1"
    assert out.finish_reason == "return"
    assert out.malformed and all("after the end" in m for m in out.malformed)


def test_missing_channel_is_malformed(vocab: Vocab) -> None:
    ids = build(vocab, "<|message|>", "no channel", "<|end|>", "stray", "<|return|>")
    out = parse_output(vocab, ids)
    assert out.messages[0].channel is None
    assert out.messages[0].text == "no channel"
    assert "a message without a channel" in out.malformed
    assert any("outside any message" in m for m in out.malformed)
    assert out.final is None
    assert out.finish_reason == "return"


def test_control_tokens_inside_content_and_header(vocab: Vocab) -> None:
    ids = build(
        vocab,
        "<|channel|>",
        "analysis",
        "<|startoftext|>",
        "<|message|>",
        "a",
        "<|channel|>",
        "b",
        "<|end|>",
    )
    out = parse_output(vocab, ids)
    assert any("unexpected <|startoftext|> in a message header" in m for m in out.malformed)
    assert any("<|channel|> inside message content" in m for m in out.malformed)
    assert out.messages[0].text == "a<|channel|>b"


def test_header_cut_by_end_resynchronises(vocab: Vocab) -> None:
    ids = build(
        vocab,
        "<|channel|>",
        "analysis",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "0",
        "<|return|>",
    )
    out = parse_output(vocab, ids)
    assert out.final == "0"
    assert any("unexpected <|end|>" in m for m in out.malformed)


def test_at_final_content_start(vocab: Vocab) -> None:
    ids = build(
        vocab,
        "<|channel|>",
        "analysis",
        "<|message|>",
        "x",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
    )
    parser = HarmonyStreamParser(vocab)
    states = []
    for tok in ids:
        parser.feed(tok)
        states.append(parser.at_final_content_start)
    assert states == [False] * (len(ids) - 1) + [True]
    # A pending partial character is already "content": no longer at the start.
    first_byte = byte_ids(vocab, "é".encode())[0]
    parser.feed(first_byte)
    assert not parser.at_final_content_start
    parser.feed(byte_ids(vocab, "é".encode())[1])
    assert not parser.at_final_content_start
    assert not parser.done
    parser.feed(vocab.special_id("<|return|>"))
    assert parser.done and parser.finish().final == "é"


def test_stream_events(vocab: Vocab) -> None:
    ids = build(
        vocab,
        "<|channel|>",
        "analysis",
        "<|message|>",
        "think hard",
        "<|end|>",
        "<|start|>",
        "assistant",
        "<|channel|>",
        "final",
        "<|message|>",
        "safe 😀",
        "<|return|>",
    )
    events = feed_all(HarmonyStreamParser(vocab), ids)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "MessageStart" and kinds[-1] == "MessageEnd"
    assert [e.index for e in events if isinstance(e, MessageStart)] == [0, 1]
    ends = [e for e in events if isinstance(e, MessageEnd)]
    assert [e.message.channel for e in ends] == ["analysis", "final"]
    by_channel: dict[str | None, str] = {}
    for e in events:
        if isinstance(e, ContentDelta):
            by_channel[e.channel] = by_channel.get(e.channel, "") + e.text
    assert by_channel == {"analysis": "think hard", "final": "safe 😀"}


def test_parser_without_header_state(vocab: Vocab) -> None:
    parser = HarmonyStreamParser(vocab, in_header=False)
    feed_all(
        parser,
        build(vocab, "<|start|>", "assistant", "<|channel|>", "final", "<|message|>", "1"),
    )
    feed_all(parser, build(vocab, "<|return|>"))
    out = parser.finish()
    assert out.final == "1" and out.malformed == []


# -- properties ----------------------------------------------------------------------------

HYPOTHESIS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
WORDS = ("final", "analysis", "commentary", "assistant", " to=functions.x", "json", " ", "1")


def token_streams(vocab: Vocab) -> st.SearchStrategy[list[int]]:
    specials = [vocab.special_id(s) for s in SPECIALS if vocab.has_special(s)]
    words = sorted({i for w in WORDS for i in vocab.encoder.encode(w)})
    n_normal = min(vocab.control_ids)
    chunks = [
        build(vocab, "<|channel|>", "final", "<|message|>"),
        build(vocab, "<|channel|>", "analysis", "<|message|>"),
        build(vocab, "<|start|>", "assistant"),
        build(vocab, "<|end|>", "<|start|>", "assistant", "<|channel|>", "final", "<|message|>"),
    ]
    token = st.one_of(
        st.sampled_from(specials).map(lambda t: [t]),
        st.sampled_from(words).map(lambda t: [t]),
        st.integers(0, n_normal - 1).map(lambda t: [t]),
        st.sampled_from(chunks),
    )
    return st.lists(token, max_size=30).map(lambda parts: [t for p in parts for t in p])


def has_complete_final(vocab: Vocab, ids: list[int], final: str) -> bool:
    """An independent, coarse oracle: some <|message|> after a header naming `final`,
    followed by exactly `final`'s bytes and then a terminator."""
    sid = vocab.special_id
    terminators = {sid("<|end|>"), sid("<|return|>"), sid("<|call|>")}
    for j, tok in enumerate(ids):
        if tok != sid("<|message|>"):
            continue
        header_start = j
        while header_start > 0 and ids[header_start - 1] not in (terminators | {sid("<|start|>")}):
            header_start -= 1
        header = vocab.decode_bytes(t for t in ids[header_start:j] if t not in vocab.control_ids)
        if b"final" not in header or sid("<|channel|>") not in ids[header_start:j]:
            continue
        k = next((k for k in range(j + 1, len(ids)) if ids[k] in terminators), None)
        if k is not None and vocab.decode(ids[j + 1 : k]) == final:
            return True
    return False


@pytest.mark.parametrize("vocab_name", ["o200k", "tiny"])
@HYPOTHESIS
@given(data=st.data(), reason=st.sampled_from([None, "length", "eos", "error"]))
def test_random_streams_never_raise(
    vocab_name: str, data: st.DataObject, reason: str | None, tiny_model: Path
) -> None:
    vocab = o200k_harmony_vocab() if vocab_name == "o200k" else _tiny_vocab(tiny_model)
    ids = data.draw(token_streams(vocab))
    parser = HarmonyStreamParser(vocab)
    streamed: dict[int, str] = {}
    for tok in ids:
        for ev in parser.feed(tok):
            if isinstance(ev, ContentDelta):
                streamed[ev.index] = streamed.get(ev.index, "") + ev.text
    out = parser.finish(reason)
    assert out.finish_reason in FINISH_REASONS
    assert out == parse_output(vocab, ids, reason)
    if out.final is not None:
        assert has_complete_final(vocab, ids, out.final)
        assert out.final_message is not None and out.final_message.complete
    for i, msg in enumerate(out.messages):
        if msg.complete:
            assert streamed.get(i, "") == msg.text


message_strategy = st.tuples(
    st.sampled_from(["analysis", "commentary", "final"]), st.text(max_size=30)
)


@pytest.mark.parametrize("vocab_name", ["o200k", "tiny"])
@HYPOTHESIS
@given(messages=st.lists(message_strategy, max_size=5), final_text=st.text(max_size=30))
def test_well_formed_streams_parse_exactly(
    vocab_name: str, messages: list[tuple[str, str]], final_text: str, tiny_model: Path
) -> None:
    vocab = o200k_harmony_vocab() if vocab_name == "o200k" else _tiny_vocab(tiny_model)
    messages = [*messages, ("final", final_text)]
    ids: list[int] = []
    for n, (channel, text) in enumerate(messages):
        if n:
            ids += build(vocab, "<|start|>", "assistant")
        ids += build(vocab, "<|channel|>", channel, "<|message|>")
        ids += vocab.encoder.encode(text)
        ids += build(vocab, "<|return|>" if n == len(messages) - 1 else "<|end|>")
    out = parse_output(vocab, ids, "length")
    assert out.malformed == []
    assert out.finish_reason == "return"
    assert out.final == final_text
    assert [(m.channel, m.text) for m in out.messages] == messages
    assert out.reasoning == "\n".join(t for c, t in messages if c == "analysis")
    # Cut anywhere before the last token: never a final answer unless an earlier one is
    # complete and is the last final message.
    cut = parse_output(vocab, ids[:-1], "length")
    assert cut.final is None
