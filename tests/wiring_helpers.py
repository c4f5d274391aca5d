"""Helpers for the wiring tests: policy and set files, the app `edge-guard serve` builds
(driven in-process through FastAPI's TestClient), and steering by markers in the text.

`served_app(monkeypatch, args)` runs `edge-guard serve ARGS` exactly as a user would, with
one difference: uvicorn's `Server.run` hands the app to the test instead of opening a
socket. The test talks to it through `TestClient`; on exit the command finishes as after
a shutdown (its jobs cancelled, its store closed).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

SAY_YES, SAY_NO = "zzsayyeszz please", "zzsaynozz please"  # texts steered to answer yes / no


def write_policy(
    folder: Path,
    name: str,
    output: Mapping[str, Any],
    *,
    judges: str = "any",
    threshold: float = 0.5,
) -> Path:
    """folder/name/{policy.md, policy.toml}: an [output] table as given, threshold explicit."""
    d = folder / name
    d.mkdir(parents=True)
    labels = output.get("labels") or ["1", "0"]
    (d / "policy.md").write_text(
        f"Is the message about {name}? Answer {labels[0]} if it is, {labels[1]} if not.\n"
    )
    lines = [f'name = "{name}"', "[input]", f'judges = "{judges}"', "[output]"]
    lines += [f"{k} = {json_toml(v)}" for k, v in output.items()]
    lines.append(f"threshold = {threshold}")
    (d / "policy.toml").write_text("\n".join(lines) + "\n")
    return d


def json_toml(value: Any) -> str:
    """A TOML value for a string or a list of strings (JSON spells them the same way)."""
    import json

    return json.dumps(value)


def write_set(
    folder: Path, name: str, members: Sequence[str], thresholds: Mapping[str, float] | None = None
) -> Path:
    path = folder / "sets" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"policies = {json_toml(list(members))}\n"
    if thresholds:
        text += "[thresholds]\n" + "".join(f"{k} = {v!r}\n" for k, v in thresholds.items())
    path.write_text(text)
    return path


def steer_marked_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request whose text holds SAY_YES / SAY_NO is steered (ForcedTokens) to a
    well-formed answer "yes" / "no"; the scores stay the model's own (read before steering)."""
    from edge_guard.engine.loop import EngineLoop
    from edge_guard.engine.sampling import ForcedTokens, harmony_script
    from edge_guard.harmony.vocab import Vocab

    original = EngineLoop.submit
    vocabs: dict[str, Any] = {}

    def submit(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        path = self.engine.model_path
        vocab = vocabs.get(path) or vocabs.setdefault(path, Vocab.from_gguf(path))
        text = vocab.decode(request.prompt_ids[request.prefix_len or 0 :])
        for marker, answer in ((SAY_YES, "yes"), (SAY_NO, "no")):
            if marker in text:
                request.logits_processor = ForcedTokens(harmony_script(vocab, answer, "steered"))
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(EngineLoop, "submit", submit)


@contextlib.contextmanager
def served_app(monkeypatch: pytest.MonkeyPatch, args: Sequence[str]) -> Iterator[Any]:
    """A `TestClient` on the app that `edge-guard serve ARGS` builds (see the module doc)."""
    import uvicorn
    from fastapi.testclient import TestClient

    from edge_guard.cli import main

    handed: dict[str, Any] = {}
    ready, done = threading.Event(), threading.Event()

    def run(server: Any, *_a: Any, **_k: Any) -> None:
        handed["app"] = server.config.app
        ready.set()
        done.wait()

    def serve() -> None:
        try:
            main.main(["serve", "--host", "127.0.0.1", "--port", "0", *args], standalone_mode=False)
        except BaseException as exc:  # reported to the test below
            handed["error"] = exc
        finally:
            ready.set()

    monkeypatch.setattr(uvicorn.Server, "run", run)
    thread = threading.Thread(target=serve, name="edge-guard-serve", daemon=True)
    thread.start()
    ready.wait()
    try:
        if "app" not in handed:
            raise AssertionError(f"edge-guard serve did not start: {handed.get('error')!r}")
        yield TestClient(handed["app"], base_url="http://127.0.0.1")  # the guard checks Host
    finally:
        done.set()
        thread.join()
    if "error" in handed:
        raise handed["error"]
