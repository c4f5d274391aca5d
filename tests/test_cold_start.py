"""Cold start: a GGUF's header and vocabulary are read once per model file (issue 27).

The header and the vocabulary tables are cached per file identity in the process and in
`<data dir>/gguf_cache/`; an edited or replaced file is never read through a stale entry.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from edge_guard.gguf import cache as gguf_cache
from edge_guard.gguf.check import check_model_file, read_header
from edge_guard.gguf.read import parse_header
from edge_guard.harmony.vocab import Vocab, token_tables


@pytest.fixture
def model_copy(tiny_o200k_model: Path, tmp_path: Path) -> Path:
    """A private copy of the o200k model, dated in the past (not "racy")."""
    path = tmp_path / "m.gguf"
    shutil.copyfile(tiny_o200k_model, path)
    old = time.time() - 60
    os.utime(path, (old, old))
    gguf_cache.clear_memo()
    return path


def _fresh_process() -> None:
    """What a new process would see: nothing memoized, the disk entries kept."""
    gguf_cache.clear_memo()
    from edge_guard.gguf import check as gguf_check
    from edge_guard.harmony import vocab

    gguf_check._checked.clear()
    vocab._memo.clear()


def test_header_and_vocab_are_parsed_once_then_read_from_disk(model_copy: Path) -> None:
    before = gguf_cache.stats["parses"]
    header = check_model_file(model_copy)
    vocab = Vocab.from_gguf(model_copy)
    read_header(model_copy)  # fit and the engine read it again: no new parse
    assert gguf_cache.stats["parses"] - before == 1
    entries = list((Path(os.environ["EDGE_GUARD_HOME"]) / "gguf_cache").iterdir())
    assert len(entries) == 1

    _fresh_process()
    hits = gguf_cache.stats["disk_hits"]
    header2 = check_model_file(model_copy)
    vocab2 = Vocab.from_gguf(model_copy)
    assert gguf_cache.stats["parses"] - before == 1  # a new process parses nothing
    assert gguf_cache.stats["disk_hits"] > hits
    assert header2.metadata == header.metadata
    assert header2.tensors == header.tensors
    assert (header2.data_offset, header2.version) == (header.data_offset, header.version)
    assert vocab2.token_bytes == vocab.token_bytes
    assert vocab2.control_ids == vocab.control_ids
    # ... and equal to a plain parse of the file.
    full = parse_header(model_copy, keep_arrays=gguf_cache.VOCAB_KEYS)
    tokens, types = (full.metadata[k] for k in gguf_cache.VOCAB_KEYS)
    assert token_tables(tokens, types) == (vocab2.token_bytes, vocab2.control_ids)
    assert Vocab.from_gguf(model_copy) is vocab2  # one object (its encoder is built once)


def test_an_edited_file_is_never_read_through_its_old_entry(model_copy: Path) -> None:
    check_model_file(model_copy)
    Vocab.from_gguf(model_copy)
    _fresh_process()
    # Change one byte of a token string inside the header, keep size and mtime.
    st = os.stat(model_copy)
    data = bytearray(model_copy.read_bytes())
    at = data.index(b"hello") if b"hello" in data else data.index(b"the")
    data[at] ^= 0x01
    model_copy.write_bytes(bytes(data))
    os.utime(model_copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(model_copy).st_size == st.st_size
    before = gguf_cache.stats["parses"]
    vocab = Vocab.from_gguf(model_copy)
    assert gguf_cache.stats["parses"] == before + 1  # the header hash no longer matched
    full = parse_header(model_copy, keep_arrays=gguf_cache.VOCAB_KEYS)
    tokens, types = (full.metadata[k] for k in gguf_cache.VOCAB_KEYS)
    assert vocab.token_bytes == token_tables(tokens, types)[0]


def test_a_replaced_file_is_re_read(model_copy: Path, tiny_model: Path) -> None:
    """Another model moved over the same path (os.replace): a new inode, a new identity."""
    assert len(Vocab.from_gguf(model_copy)) == 201_088
    other = model_copy.with_name("other.gguf")
    shutil.copyfile(tiny_model, other)
    old = time.time() - 30
    os.utime(other, (old, old))
    os.replace(other, model_copy)
    assert len(Vocab.from_gguf(model_copy)) == len(Vocab.from_gguf(tiny_model))
    assert check_model_file(model_copy).file_size == tiny_model.stat().st_size


def test_a_racy_file_is_parsed_every_time(model_copy: Path) -> None:
    """Written just now: size + mtime cannot tell two versions apart, so no caching."""
    os.utime(model_copy)  # now
    before = gguf_cache.stats["parses"]
    check_model_file(model_copy)
    check_model_file(model_copy)
    assert gguf_cache.stats["parses"] == before + 2
    assert not (Path(os.environ["EDGE_GUARD_HOME"]) / "gguf_cache").exists()


def test_a_corrupt_entry_is_a_miss(model_copy: Path) -> None:
    vocab = Vocab.from_gguf(model_copy)
    _fresh_process()
    (entry,) = (Path(os.environ["EDGE_GUARD_HOME"]) / "gguf_cache").iterdir()
    raw = entry.read_bytes()
    entry.write_bytes(raw[: len(raw) - 1000])  # truncated vocabulary blob
    before = gguf_cache.stats["parses"]
    assert Vocab.from_gguf(model_copy).token_bytes == vocab.token_bytes
    assert gguf_cache.stats["parses"] == before + 1
