"""Fuzzing: the GGUF header reader on mutated real headers, the harmony output parser on
adversarial token orders, and the built-in answer parsers on lookalike answers."""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_guard.errors import BadModelFile
from edge_guard.gguf.check import check_model_file, read_header
from edge_guard.harmony.parse import FINISH_REASONS, HarmonyStreamParser, parse_output
from edge_guard.harmony.vocab import Vocab, o200k_harmony_vocab
from edge_guard.policy.core import OutputSpec
from edge_guard.policy.parsers import builtin_parse
from edge_guard.response import ModelResponse
from edge_guard.result import Verdict

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_COUNTER = itertools.count()

# -- gguf_check.read_header ------------------------------------------------------------------
EXTREME_U64 = [0, 1, 7, 255, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 62, (1 << 63) - 1, (1 << 64) - 1]
EXTREME_U32 = [*range(16), 1 << 31, (1 << 32) - 1]
mutation = st.one_of(
    st.tuples(st.just("byte"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("u64"), st.integers(0, 1 << 16), st.sampled_from(EXTREME_U64)),
    st.tuples(st.just("u32"), st.integers(0, 1 << 16), st.sampled_from(EXTREME_U32)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 16), st.just(0)),
    st.tuples(st.just("dup"), st.integers(0, 1 << 16), st.integers(1, 64)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, pos, value in mutations:
        if not b:
            break
        pos %= len(b)
        if kind == "byte":
            b[pos] = value
        elif kind == "u64":
            b[pos : pos + 8] = struct.pack("<Q", value)
        elif kind == "u32":
            b[pos : pos + 4] = struct.pack("<I", value)
        elif kind == "cut":
            del b[pos:]
        else:
            b[pos:pos] = b[pos : pos + value]
    return bytes(b)


class Parts(tuple):  # type: ignore[type-arg]
    """(header bytes, tensor data) with a short repr for hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"<tiny model: {len(self[0])} header bytes>"


@pytest.fixture(scope="module")
def header_bytes(tiny_model: Path) -> tuple[bytes, bytes]:
    data = tiny_model.read_bytes()
    offset = read_header(tiny_model).data_offset
    return Parts((data[:offset], data[offset:]))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(mutations=st.lists(mutation, min_size=1, max_size=6))
def test_read_header_only_ever_raises_bad_model_file(
    mutations: list[tuple[str, int, int]], header_bytes: tuple[bytes, bytes], fuzz_dir: Path
) -> None:
    header, data = header_bytes
    path = fuzz_dir / f"m{next(_COUNTER)}.gguf"
    broken = mutate(header, mutations)
    path.write_bytes(broken + data)
    try:
        read_header(path)
    except BadModelFile as exc:
        assert "\n" not in str(exc)
    try:
        check_model_file(path)
    except BadModelFile as exc:
        assert "\n" not in str(exc)
    path.unlink()


@FUZZ
@given(blob=st.binary(max_size=512))
def test_read_header_on_random_bytes_after_the_magic(blob: bytes, fuzz_dir: Path) -> None:
    path = fuzz_dir / f"r{next(_COUNTER)}.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 3) + blob)
    with contextlib.suppress(BadModelFile):
        read_header(path)
    path.unlink()


# -- the harmony output parser ----------------------------------------------------------------
@pytest.fixture(scope="module", params=["o200k", "tiny"])
def vocab(request: pytest.FixtureRequest, tiny_model: Path) -> Vocab:
    return o200k_harmony_vocab() if request.param == "o200k" else Vocab.from_gguf(tiny_model)


SPECIALS = [
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|constrain|>",
    "<|return|>",
    "<|call|>",
    "<|endoftext|>",
    "<|startoftext|>",
    "<|reserved_200000|>",
]
WORDS = [
    "final",
    "analysis",
    "commentary",
    "assistant",
    "user",
    "system",
    "developer",
    " to=functions.get",
    " json",
    "json",
    "0",
    "1",
    "\n",
    " ",
    "<|end|>",
    "final<|message|>",
]


def adversarial_stream(vocab: Vocab) -> st.SearchStrategy[list[int]]:
    """Special and ordinary ids in harmful orders: nested headers, headers inside content,
    terminators in headers, role words where channels go, text that spells specials."""
    sid = vocab.special_id
    specials = [sid(s) for s in SPECIALS if vocab.has_special(s)]
    pieces = [vocab.encoder.encode(w) for w in WORDS]
    n_normal = min(vocab.control_ids)
    harmful = [
        [sid("<|channel|>"), *vocab.encoder.encode("final"), sid("<|message|>")],
        [sid("<|start|>"), *vocab.encoder.encode("final"), sid("<|message|>")],
        [sid("<|channel|>"), sid("<|channel|>"), *vocab.encoder.encode("final")],
        [sid("<|message|>"), sid("<|message|>")],
        [sid("<|end|>"), sid("<|start|>"), *vocab.encoder.encode("assistant")],
        [sid("<|constrain|>"), *vocab.encoder.encode("json"), sid("<|end|>")],
    ]
    part = st.one_of(
        st.sampled_from(specials).map(lambda t: [t]),
        st.sampled_from(pieces),
        st.sampled_from(harmful),
        st.integers(0, n_normal - 1).map(lambda t: [t]),
    )
    return st.lists(part, max_size=40).map(lambda ps: [t for p in ps for t in p])


@FUZZ
@given(data=st.data(), reason=st.sampled_from([None, "length", "eos", "error"]))
def test_adversarial_streams_never_forge_a_final_answer(
    vocab: Vocab, data: st.DataObject, reason: str | None
) -> None:
    ids = data.draw(adversarial_stream(vocab))
    sid = vocab.special_id
    out = parse_output(vocab, ids, reason)
    assert out.finish_reason in FINISH_REASONS
    terminators = {sid("<|end|>"), sid("<|return|>"), sid("<|call|>")}
    if out.final is not None:
        msg = out.final_message
        assert msg is not None and msg.complete and msg.channel == "final"
        # A complete final needs a channel header, an opened body and a terminator.
        assert sid("<|channel|>") in ids and sid("<|message|>") in ids
        assert terminators & set(ids)
    if not terminators & set(ids) or sid("<|channel|>") not in ids:
        assert out.final is None
    # Nothing after <|return|> / <|call|> changes the outcome.
    ends = [k for k, t in enumerate(ids) if t in (sid("<|return|>"), sid("<|call|>"))]
    if ends:
        tail = data.draw(adversarial_stream(vocab))
        again = parse_output(vocab, ids + tail, reason)
        assert again.final == parse_output(vocab, ids[: len(ids)], reason).final
    # The streaming parser agrees with the whole-list parser.
    parser = HarmonyStreamParser(vocab)
    for t in ids:
        parser.feed(t)
    assert parser.finish(reason) == out


@FUZZ
@given(text=st.text(max_size=60) | st.sampled_from(WORDS + SPECIALS))
def test_content_cannot_close_or_reopen_the_final_message(vocab: Vocab, text: str) -> None:
    sid = vocab.special_id
    head = [sid("<|channel|>"), *vocab.encoder.encode("final"), sid("<|message|>")]
    out = parse_output(vocab, head + vocab.encoder.encode(text) + [sid("<|return|>")])
    assert out.final == text.encode("utf-8", "replace").decode("utf-8", "replace")
    assert out.malformed == [] and len(out.messages) == 1


# -- the built-in answer parsers --------------------------------------------------------------
def resp(text: str | None) -> ModelResponse:
    return ModelResponse(text, "", "return" if text is not None else "length")


BINARY = OutputSpec()
LABELS = OutputSpec("labels", ("safe", "spam", "scam"), ("spam", "scam"))
LIKERT = OutputSpec("likert", tuple(str(i) for i in range(1, 6)), ("4", "5"))
JSON = OutputSpec("json", (), ())
LOOKALIKES = [
    "１",
    "١",
    "¹",
    "𝟏",
    "1\u200b",
    "\u200b1",
    "\u202e1",
    "1\ufe0f",
    "\xa01",
    "1\xa0",
    "+1",
    "01",
    "1.",
    "1.0",
    "l",
    "I",
    "1 0",
    "0 1",
    "1<|end|>",
    "<|return|>1",
    "\u00001",
    "1\u0000",
    "one",
    "true",
    "yes",
    "[1]",
    '"1"',
    "1\n1",
]
ASCII_WS = " \t\r\n\x0b\x0c"


@pytest.mark.parametrize("answer", LOOKALIKES)
def test_lookalike_answers_are_never_a_verdict(answer: str) -> None:
    assert builtin_parse(resp(answer), BINARY).verdict == Verdict.UNDETERMINED
    assert builtin_parse(resp(answer), LIKERT).verdict == Verdict.UNDETERMINED


@FUZZ
@given(st.text(max_size=12), st.sampled_from([BINARY, LABELS, LIKERT]))
def test_closed_parsers_accept_only_a_label(answer: str, spec: OutputSpec) -> None:
    r = builtin_parse(resp(answer), spec)
    if r.parsed_successfully:
        core = answer.strip(ASCII_WS)
        assert r.fine_grain_label in spec.labels
        assert core.casefold() == r.fine_grain_label.casefold()
        assert r.verdict == (
            Verdict.VIOLATION if r.fine_grain_label in spec.violation else Verdict.NO_VIOLATION
        )
    else:
        assert r.verdict == Verdict.UNDETERMINED


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@FUZZ
@given(
    violation=json_values,
    extra=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    wrap=st.booleans(),
)
def test_json_parser_on_hostile_objects(
    violation: object, extra: dict[str, object], wrap: bool
) -> None:
    obj: object = {**extra, "violation": violation}
    text = json.dumps([obj] if wrap else obj)
    r = builtin_parse(resp(text), JSON)
    if r.parsed_successfully:
        assert not wrap and violation in (0, 1) and not isinstance(violation, str)
        assert r.binary_label is bool(violation)
    else:
        assert r.verdict == Verdict.UNDETERMINED


def test_json_parser_on_deep_nesting() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert builtin_parse(resp(deep), JSON).verdict == Verdict.UNDETERMINED
    assert builtin_parse(resp('{"violation": ' + deep + "}"), JSON).verdict == Verdict.UNDETERMINED
