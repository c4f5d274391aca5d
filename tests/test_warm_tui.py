"""The TUI's jobs and policy sets on the warm engine (issue 27): one engine load for the
TUI and the shell, a TUI cancel that stops the engine's work (and only that), sets with
the in-process rows. The TUI's job functions run here with a stand-in screen (what the
Workbench's worker thread runs, minus Textual); waits are on events.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from edge_guard.api import classify
from edge_guard.cli import main
from edge_guard.settings.resolve import resolve_settings
from edge_guard.store import Store
from edge_guard.tui.jobs import ModelAccess, RunOptions
from edge_guard.tui.widgets.classify_job import Failed, Finished, classify_job
from edge_guard.tui.widgets.set_results import SetFinished, set_job
from edge_guard.warm import calls, route
from tests.test_warm import (  # noqa: F401  (warm: the fixture)
    _classify,
    _cli,
    _engine_loaded_here,
    _only_service,
    warm,
)

LONG = "tell me a long story about the sea"  # full reasoning, thousands of tokens
OTHER = "have a nice day"
SKIP = {"created_at", "prompt_ms", "output_ms", "timings", "id", "final_token_logprobs"}


class Screen:
    """What a TUI job needs of its screen: the app's models and store, post_message."""

    def __init__(self, access: ModelAccess, store: Store) -> None:
        self.eg = SimpleNamespace(models=access, store=store)
        self.messages: list[Any] = []
        self.ended = threading.Event()

    def post_message(self, message: Any) -> None:
        self.messages.append(message)
        if isinstance(message, Finished | Failed | SetFinished):
            self.ended.set()

    def end(self) -> Any:
        """The job's last message (Finished, Failed or SetFinished)."""
        assert self.ended.wait(300)
        self.ended.clear()
        return self.messages[-1]


def _tui(settings: Any, db: Path) -> tuple[ModelAccess, Screen]:
    access = ModelAccess(settings=settings)  # the app's default classifier factory
    return access, Screen(access, Store(db))


def _stored(db: Path) -> list[dict[str, Any]]:
    rows = Store(db).query("SELECT * FROM results ORDER BY key")
    return [{k: v for k, v in r.items() if k not in SKIP} for r in rows]


def test_tui_jobs_use_the_warm_engine_and_a_cancel_stops_only_their_work(
    warm: Path,  # noqa: F811  (the fixture imported above)
    tiny_o200k_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = str(tiny_o200k_model)
    db = warm / "edge_guard.db"  # the default store: the CLI's too
    access, screen = _tui(resolve_settings({"parallel": 1}, door="tui"), db)
    quick = RunOptions(model=model, reasoning="none")
    # A Workbench job starts the engine; the shell then uses the same one (one load).
    classify_job(screen, "toxic_simple", "you are all idiots", quick, True, access.new_flag())
    first = screen.end()
    assert isinstance(first, Finished) and first.result.verdict in ("violation", "no_violation")
    service = _only_service()
    assert route.stats["remote_calls"] == 1 and not _engine_loaded_here()
    same = _classify(tiny_o200k_model, "you are all idiots", "--parallel", "1")
    assert (same["key"], same["cached"]) == (first.result.key, True)
    new = _classify(tiny_o200k_model, "you are not", "--parallel", "1")
    assert new["cached"] is False and route.stats["remote_calls"] == 2
    assert _only_service()["pid"] == service["pid"] and not _engine_loaded_here()

    # A long Workbench job runs on the engine's only sequence (--parallel 1); another
    # caller's request waits behind it; Esc hangs the job up and the engine drops its work.
    arrived = {LONG: threading.Event(), OTHER: threading.Event()}

    def on_response(response: Any) -> None:  # a streamed answer starts: the job is queued
        if response.request.url.path == "/v1/classify":
            for text in json.loads(response.request.content)["texts"]:
                if text in arrived:
                    arrived[text].set()

    made = calls.client

    def client(socket_path: str, hangup: calls.Hangup) -> Any:
        http = made(socket_path, hangup)
        http.event_hooks["response"].append(on_response)
        return http

    monkeypatch.setattr(calls, "client", client)
    flag = access.new_flag()
    slow = RunOptions(model=model, reasoning="full", max_tokens=15000)
    long_screen = Screen(access, Store(db))
    job = threading.Thread(
        target=classify_job, args=(long_screen, "toxic_simple", LONG, slow, True, flag)
    )
    job.start()
    assert arrived[LONG].wait(120)
    other: dict[str, Any] = {}

    def caller() -> None:
        other["result"] = classify(
            OTHER, "toxic_simple", model=model, reasoning="none", parallel=1, keep_alive=60
        )

    behind = threading.Thread(target=caller)
    behind.start()
    assert arrived[OTHER].wait(120)
    flag.set()  # the Workbench's Esc
    job.join(120)
    assert isinstance(long_screen.end(), Failed) and long_screen.messages[-1].error is None
    behind.join(120)  # only the cancel frees the sequence it waits for (15000 tokens)
    assert not behind.is_alive()
    texts = {r["text"] for r in Store(db).query("SELECT text FROM results")}
    assert OTHER in texts and LONG not in texts  # the cancelled job stored nothing
    # The engine still serves the TUI, and the other caller got the in-process answer.
    classify_job(screen, "toxic_simple", "one more", quick, True, access.new_flag())
    last = screen.end()
    assert isinstance(last, Finished), last.error
    assert _only_service()["pid"] == service["pid"]
    assert not _engine_loaded_here() and route.stats["local_calls"] == 0
    cold = classify(
        OTHER, "toxic_simple", model=model, reasoning="none", parallel=1, db=str(warm / "c.db")
    )
    got = other["result"]
    assert (got.key, got.verdict, got.metadata) == (cold.key, cold.verdict, cold.metadata)


SET = """name = "pair"
policies = ["toxic_simple", "toxic_chat"]

[thresholds]
toxic_chat = 0.4
"""


def test_a_set_on_the_warm_engine_gives_the_in_process_rows(
    warm: Path,  # noqa: F811  (the fixture imported above)
    tiny_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The TUI's set job, `classify`, `run` and `policies test` over a set: computed on
    the engine (the set by its name; its policies' tests one policy at a time), read back
    here (thresholds applied here): the same rows, run items and output as with no warm
    engine."""
    sets = warm / "policies" / "sets"
    sets.mkdir(parents=True)
    (sets / "pair.toml").write_text(SET)
    data = warm / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("a b", "c d", "e f")))
    model = str(tiny_model)

    def everything(db: str, *extra: str) -> dict[str, Any]:
        access, screen = _tui(resolve_settings(door="tui"), Path(db))
        options = RunOptions(model=model, reasoning="none")
        set_job(screen, ("pair", "separate"), "you idiot", options, True, access.new_flag(), Failed)
        multi = screen.end().multi
        common = ("--model", model, "--reasoning", "none", "--db", db, *extra)
        out = _cli("classify", "-p", "pair", "--json", *common, "g h")
        run = _cli("run", str(data), "-p", "pair", "--json", "--name", "r", *common)
        tests = CliRunner().invoke(main, ["policies", "test", "pair", "--json", *common])
        assert tests.exit_code in (0, 1), tests.output  # 1: a case failed (a random model)
        reports = json.loads(tests.stdout)["reports"]
        rows = Store(db).query("SELECT run, idx, key, extra FROM run_items ORDER BY run, idx")
        return {
            "tui": {n: (r.key, r.verdict, r.metadata) for n, r in multi.results.items()},
            "classify": _quiet(json.loads(out.stdout)),
            "run": json.loads(run.stdout)["summary"]["n_done"],
            "tests": {
                n: [(c["outcome"], c["got"]) for c in r["cases"]] for n, r in reports.items()
            },
            "run_items": rows,
        }

    hot = everything(str(warm / "hot.db"))
    assert route.stats["local_calls"] == 0 and route.stats["local_misses"] == 0
    assert route.stats["remote_calls"] == 5 and not _engine_loaded_here()  # 3 sets, 2 suites
    _only_service()
    monkeypatch.setenv("EDGE_GUARD_KEEP_ALIVE", "0")  # the TUI's too: all in this process
    cold = everything(str(warm / "cold.db"), "--keep-alive", "0")
    assert _engine_loaded_here()
    # Probabilities equal to 1e-9, keys, verdicts, labels and texts exactly: the engine's
    # float sums depend on which sequences it admits together (in one process too: two
    # runs of the same set differ in the 11th decimal of P(violation), and by ~0.05 in the
    # -100 logprob of an unlikely label on this random model, which the rows skip).
    assert _differences(hot, cold) == []
    assert hot["tui"]["toxic_chat"][2].get("threshold") == 0.4  # the set's, applied here
    assert _differences(_stored(warm / "hot.db"), _stored(warm / "cold.db")) == []


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where `a` and `b` differ: floats by more than 1e-9, anything else at all (JSON text,
    as in store columns, compared as its value). A tolerance, not rounding: rounding both to
    9 decimals still splits two values 1e-11 apart that straddle a rounding boundary."""
    a, b = _decoded(a), _decoded(b)
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= 1e-9
        return [] if ok else [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _decoded(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _quiet(value: Any) -> Any:
    """`classify --json` output without what differs between two computations of it."""
    if isinstance(value, dict):
        noisy = ("model_response", "cached", "timings")
        return {k: _quiet(v) for k, v in value.items() if k not in noisy}
    if isinstance(value, list):
        return [_quiet(v) for v in value]
    return value
