"""`edge-guard serve` builds through Settings; its flags are every request's defaults, a
request overrides them, and the server's store rows are the CLI's (in-process: the
command runs up to uvicorn, requests go through FastAPI's TestClient).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import SAFE, SLOW, VIOLATE, serve_in_process, steering

from edge_guard import classify
from edge_guard.cli import run
from edge_guard.service.request import REQUEST_FIELDS
from edge_guard.settings.resolve import request_options
from edge_guard.store import Store

BASE = "http://127.0.0.1:8089"  # the Host a client of the default bind sends


def _args(model: Path, db: Path, *extra: str) -> list[str]:
    return [
        "--model",
        str(model),
        "--max-tokens",
        "16",
        "--parallel",
        "4",
        "--ctx",
        "4096",
        "--db",
        str(db),
        *extra,
    ]


@pytest.fixture(scope="module")
def low(
    tmp_path_factory: pytest.TempPathFactory, tiny_o200k_model: Path
) -> Iterator[tuple[TestClient, Any, Path]]:
    """`serve -p toxic_simple --effort low --reasoning none` (steered markers)."""
    db = tmp_path_factory.mktemp("serve_low") / "low.db"
    with steering():
        app, core = serve_in_process(
            _args(
                tiny_o200k_model, db, "-p", "toxic_simple", "--effort", "low", "--reasoning", "none"
            )
        )
        try:
            yield TestClient(app, base_url=BASE), core, db
        finally:
            core.shutdown(0)
            core.store.close()


def _row(db: Path, key: str) -> dict[str, Any]:
    store = Store(db)
    try:
        row = store.get(key)
    finally:
        store.close()
    assert row is not None
    return dict(row)


def _cli_classify(model: Path, db: Path, text: str, **options: Any) -> Any:
    """What `edge-guard classify` with the same flags computes (the Python door)."""
    return classify(
        text,
        "toxic_simple",
        model=str(model),
        db=db,
        parallel=4,
        ctx=4096,
        **{"max_tokens": 16, **options},
    )


def test_serve_effort_low_reasoning_none_answers_at_low_effort_in_one_pass(
    low: tuple[TestClient, Any, Path], tiny_o200k_model: Path
) -> None:
    client, _core, db = low
    assert client.get("/health").json()["defaults"]["effort"] == "low"
    res = client.post("/v1/classify", json={"text": "a plain one-pass text"}).json()
    assert (res["options"]["effort"], res["options"]["reasoning"]) == ("low", "none")
    one = res["results"][0]
    assert (one["metadata"]["path"], one["finish_reason"], one["cached"]) == (
        "one-pass",
        "scored",
        False,
    )
    row = _row(db, one["key"])
    assert (row["effort"], row["finish_reason"]) == ("low", "scored")
    # The moderation route uses the same defaults: the same row, from the store.
    mod = client.post("/v1/moderations", json={"input": "a plain one-pass text"}).json()
    assert mod["results"][0]["cached"] == {"toxic_simple": True}
    # `classify --effort low --reasoning none` with the same flags: a hit on the server's row.
    cli = _cli_classify(
        tiny_o200k_model, db, "a plain one-pass text", effort="low", reasoning="none"
    )
    assert (cli.key, cli.cached, str(cli.verdict)) == (one["key"], True, one["verdict"])


# Each request's overrides, and the same options as the Python door's keywords.
OVERRIDES = [
    (
        {"effort": "medium", "reasoning": "full", "max_tokens": 64},
        {"effort": "medium", "max_tokens": 64},
    ),
    (
        {"reasoning": "full", "style": "chat-template", "date": "2020-01-01", "max_tokens": 64},
        {"effort": "low", "style": "chat-template", "date": "2020-01-01", "max_tokens": 64},
    ),
    (
        {"reasoning": "full", "temperature": 0.7, "seed": 5, "max_tokens": 64},
        {"effort": "low", "temperature": 0.7, "seed": 5, "max_tokens": 64},
    ),
    (
        {"cascade": "0.2:0.8", "max_tokens": 64},
        {"effort": "low", "reasoning": "none", "cascade": "0.2:0.8", "max_tokens": 64},
    ),
    ({"truncate": True}, {"effort": "low", "reasoning": "none", "truncate": True}),
]


@pytest.mark.parametrize(("fields", "keywords"), OVERRIDES)
def test_request_overrides_store_the_rows_the_cli_finds_and_the_reverse(
    low: tuple[TestClient, Any, Path],
    tiny_o200k_model: Path,
    fields: dict[str, Any],
    keywords: dict[str, Any],
) -> None:
    client, _core, db = low
    tag = json.dumps(fields, sort_keys=True)
    served = client.post("/v1/classify", json={"text": f"s {tag} {VIOLATE}", **fields}).json()
    one = served["results"][0]
    assert (one["cached"], one["error"]) == (False, None)
    for name, value in fields.items():
        assert served["options"][name] == value
    cli = _cli_classify(tiny_o200k_model, db, f"s {tag} {VIOLATE}", **keywords)
    assert (cli.key, cli.cached, str(cli.verdict)) == (one["key"], True, one["verdict"])
    # The reverse: the CLI computes first, the server answers from its row.
    first = _cli_classify(tiny_o200k_model, db, f"c {tag} {SAFE}", **keywords)
    assert first.cached is False
    again = client.post("/v1/classify", json={"text": f"c {tag} {SAFE}", **fields}).json()
    assert (again["results"][0]["key"], again["results"][0]["cached"]) == (first.key, True)


def test_truncate_cuts_as_the_cli_does(tiny_o200k_model: Path, tmp_path: Path) -> None:
    """A text over the context, cut (truncate: true) by the server and by `classify
    --truncate`: one row. Its own --ctx: an engine with no other prefix resident."""
    db, long = tmp_path / "t.db", "word " * 4000
    app, core = serve_in_process(
        [
            "--model",
            str(tiny_o200k_model),
            "-p",
            "toxic_simple",
            "--reasoning",
            "none",
            "--ctx",
            "3072",
            "--parallel",
            "4",
            "--db",
            str(db),
        ]
    )
    try:
        client = TestClient(app, base_url=BASE)
        refused = client.post("/v1/classify", json={"text": long}).json()["results"][0]
        assert refused["verdict"] == "undetermined" and "--truncate" not in refused["error"]
        res = client.post("/v1/classify", json={"text": long, "truncate": True}).json()
        one = res["results"][0]
        assert (one["metadata"]["truncated"], one["error"]) == (True, None)
        cli = classify(
            long,
            "toxic_simple",
            model=str(tiny_o200k_model),
            db=db,
            ctx=3072,
            parallel=4,
            reasoning="none",
            truncate=True,
        )
        assert (cli.key, cli.cached) == (one["key"], True)
    finally:
        core.shutdown(0)
        core.store.close()


def test_parallel_is_a_job_width_up_to_the_servers(low: tuple[TestClient, Any, Path]) -> None:
    client, _core, _db = low
    ok = client.post("/v1/classify", json={"text": "narrow", "parallel": 1}).json()
    assert ok["options"]["parallel"] == 1
    wide = client.post("/v1/classify", json={"text": "wide", "parallel": 5}).json()["error"]
    assert (wide["param"], wide["message"]) == (
        "parallel",
        "field 'parallel': at most 4 on this server (its --parallel)",
    )


def test_every_request_option_is_a_classify_field() -> None:
    """A new request option (settings.request_options) must be a /v1/classify field."""
    assert set(request_options()) <= set(REQUEST_FIELDS.values())


def test_no_cache_recomputes_and_the_store_answers_otherwise(
    low: tuple[TestClient, Any, Path],
) -> None:
    client, _core, _db = low
    body = {"text": "no cache please"}
    assert client.post("/v1/classify", json=body).json()["results"][0]["cached"] is False
    assert client.post("/v1/classify", json=body).json()["results"][0]["cached"] is True
    fresh = client.post("/v1/classify", json={**body, "no_cache": True}).json()
    assert (fresh["results"][0]["cached"], fresh["options"]["no_cache"]) == (False, True)


def test_set_thresholds_and_a_set_named_unlike_its_file(
    low: tuple[TestClient, Any, Path],
    tiny_o200k_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, _core, db = low
    folder = tmp_path / "pols"
    (folder / "sets").mkdir(parents=True)
    (folder / "sets" / "strict_file.toml").write_text(
        'name = "strict"\npolicies = ["toxic_simple"]\n[thresholds]\ntoxic_simple = 1.0\n'
    )
    monkeypatch.setenv("EDGE_GUARD_POLICIES", str(folder))
    names = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert "strict" in names and "strict_file" not in names  # as `policies sets` shows it
    # The tiny model's one-pass P(violation) for this text is just under 1: the model says
    # violation, the set's threshold (1.0) says no.
    served = client.post("/v1/classify", json={"text": "a thresholded text", "policy": "strict"})
    res = served.json()["results"][0]
    assert res["p_violation"] < 1.0
    assert (res["verdict"], res["binary_label"]) == ("no_violation", False)
    assert (res["metadata"]["threshold"], res["metadata"]["model_verdict"]) == (1.0, "violation")
    mod = client.post("/v1/moderations", json={"input": "a thresholded text", "model": "strict"})
    assert mod.json()["results"][0]["categories"] == {"toxic_simple": False}
    from edge_guard.policy.sets import load_set

    cli = classify(
        "a thresholded text",
        load_set(folder / "sets" / "strict_file.toml"),
        model=str(tiny_o200k_model),
        db=db,
        max_tokens=16,
        parallel=4,
        ctx=4096,
        effort="low",
        reasoning="none",
    )
    assert str(cli.results["toxic_simple"].verdict) == "no_violation"
    assert cli.results["toxic_simple"].key == res["key"]


def test_cli_classify_of_a_set_on_a_server_sends_the_set_name(
    low: tuple[TestClient, Any, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`classify --set S --backend server` (and `-p S`) sends the set's name, as the Python
    API does: the server applies the set's thresholds (its policy list was refused)."""
    import httpx
    from click.testing import CliRunner

    from edge_guard.cli import main

    client, _core, db = low
    folder = tmp_path / "pols"
    (folder / "sets").mkdir(parents=True)
    (folder / "sets" / "strict_file.toml").write_text(
        'name = "strict"\npolicies = ["toxic_simple"]\n[thresholds]\ntoxic_simple = 1.0\n'
    )
    monkeypatch.setenv("EDGE_GUARD_POLICIES", str(folder))
    for verb in ("get", "post", "stream"):
        monkeypatch.setattr(httpx, verb, getattr(client, verb))
    served = client.post("/v1/classify", json={"text": "a thresholded text", "policy": "strict"})
    want = served.json()["results"][0]
    assert (want["verdict"], want["metadata"]["model_verdict"]) == ("no_violation", "violation")
    flags = [
        "--backend",
        "server",
        "--url",
        BASE,
        "--effort",
        "low",
        "--reasoning",
        "none",
        "--max-tokens",
        "16",
        "--parallel",
        "4",
    ]
    runner = CliRunner()
    before = _count(db)
    for pick in (["--set", "strict"], ["-p", "strict"]):
        r = runner.invoke(main, ["classify", *pick, *flags, "--json", "a thresholded text"])
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        got = out["results"]["toxic_simple"]
        assert (out["policy_set"], out["flagged"], got["verdict"], got["binary_label"]) == (
            "strict",
            False,
            "no_violation",
            False,
        )
        assert (got["key"], got["metadata"]["threshold"]) == (want["key"], 1.0)
    assert _count(db) == before  # the server's row, found again
    r = runner.invoke(main, ["classify", "--set", "strict", "--mode", "combined", *flags, "x"])
    assert r.exit_code != 0 and r.stderr.strip().splitlines() == [
        "error: --mode combined runs in this process: an edge-guard server runs a set's "
        "policies separately (use --mode separate or the local backend)"
    ]
    data = tmp_path / "one.jsonl"
    data.write_text('{"text": "a thresholded text"}\n')
    for pick in (["--set", "strict"], ["-p", "toxic_simple"]):  # a run's rows stay here: refused
        r = runner.invoke(main, ["run", str(data), *pick, *flags, "--db", str(tmp_path / "r.db")])
        assert r.exit_code == 1 and r.stderr.strip().splitlines() == [
            "error: a named run keeps its results in this machine's store: run it with the local "
            "backend (--backend local), or send texts to the server with `edge-guard classify "
            "--backend server`"
        ], r.output


def _count(db: Path) -> int:
    store = Store(db)
    try:
        return int(store.query("SELECT COUNT(*) AS n FROM results")[0]["n"])
    finally:
        store.close()


def test_config_toml_and_environment_set_the_server(
    tiny_o200k_model: Path,
    tmp_path: Path,
    edge_guard_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    edge_guard_home.mkdir(parents=True, exist_ok=True)
    (edge_guard_home / "config.toml").write_text(
        '[prompt]\neffort = "high"\n[sampling]\nmax_tokens = 48\n'
    )
    monkeypatch.setenv("EDGE_GUARD_PARALLEL", "2")
    monkeypatch.setenv("EDGE_GUARD_CTX", "2048")
    app, core = serve_in_process(
        ["--model", str(tiny_o200k_model), "-p", "toxic_simple", "--db", str(tmp_path / "c.db")]
    )
    try:
        defaults = TestClient(app, base_url=BASE).get("/health").json()["defaults"]
        assert (defaults["effort"], defaults["max_tokens"]) == ("high", 48)
        settings = core.backend.inner.settings
        assert (settings.n_parallel, settings.n_ctx) == (2, 2048)
    finally:
        core.shutdown(0)
        core.store.close()


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exc:
        run(argv)
    return int(exc.value.code or 0), capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["-p", "spam", "--reasoning", "none"],
            "error: policy spam: --reasoning none needs a closed output kind (binary, likert or "
            "labels), not 'json'; use --reasoning full",
        ),
        (
            ["-p", "toxic_simple", "--cascade", "abc"],
            "error: --cascade 'abc': is not LOW:HIGH (e.g. 0.2:0.8)",
        ),
        (["-p", "toxic_simple", "--parallel", "-3"], "error: --parallel -3: must be >= 1"),
    ],
)
def test_serve_refuses_at_start_what_classify_refuses(
    args: list[str],
    line: str,
    tiny_o200k_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["--model", str(tiny_o200k_model), "--db", str(tmp_path / "r.db"), *args]
    served = _cli_error(["serve", *common], capsys)
    assert served[1] == [line]
    assert served == _cli_error(["classify", *common, "some text"], capsys)


def test_serve_port_out_of_range_is_a_one_line_usage_error(
    tiny_o200k_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = _cli_error(["serve", "--model", str(tiny_o200k_model), "--port", "70000"], capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(
        "error: Invalid value for '--port': 70000 is not in the range 0<=x<=65535."
    )


def _events(
    client: TestClient, body: dict[str, Any], on_first: Any = None
) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("POST", "/v1/classify", json={**body, "stream": True}) as r:
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if on_first is not None and len(events) == 1:
                    on_first()
    return events


@pytest.mark.parametrize("stop", ["deadline", "drain"])
def test_a_stream_that_keeps_producing_is_cut(
    stop: str, tiny_o200k_model: Path, tmp_path: Path
) -> None:
    """A slow model streams a token every 10 ms for 40 s: --deadline 1 (or shutdown's drain,
    begun after the first delta) cuts it, and the job is cancelled."""
    deadline = "1" if stop == "deadline" else "600"
    with steering():
        app, core = serve_in_process(
            _args(tiny_o200k_model, tmp_path / "s.db", "-p", "toxic_simple", "--deadline", deadline)
        )
        try:
            jobs: list[Any] = []

            def first() -> None:
                jobs.extend(core._jobs)
                if stop == "drain":
                    core.begin_shutdown(0.0)

            body = {"text": f"endless {SLOW}", "max_tokens": 4000, "reasoning": "full"}
            events = _events(TestClient(app, base_url=BASE), body, first)
            for job in jobs:
                job.future.result(timeout=120)  # the job ends (cancelled), not after 40 s
        finally:
            core.shutdown(0)
            core.store.close()
    kinds = [k for k, _ in events]
    assert kinds[0] == "reasoning" and set(kinds[:-1]) == {"reasoning"}
    assert kinds[-1] == "error"
    want = "timeout" if stop == "deadline" else "server_shutting_down"
    assert events[-1][1]["type"] == want
    assert len(events) < 1000  # cut long before the 4000 tokens
    assert all(job.cancelled for job in jobs) and jobs
