"""`edge-guard serve` live on 127.0.0.1: the official `openai` client and plain httpx.

One server per module (synthetic tiny-o200k model, steered verdicts: see service_helpers).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner
from service_helpers import HOLD, SAFE, SLOW, VIOLATE, ServiceProcess

from edge_guard.cli import main
from edge_guard.errors import EdgeGuardError
from edge_guard.policy.core import load_policy
from edge_guard.store import Store
from tests.runs_helpers import HoldPipe


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tiny_o200k_model: Path
) -> Iterator[tuple[ServiceProcess, Path]]:
    home = tmp_path_factory.mktemp("serve_home")
    db = home / "serve.db"
    args = [
        "--model",
        str(tiny_o200k_model),
        "--policy",
        "toxic_simple",
        "--max-tokens",
        "16",
        "--parallel",
        "4",
        "--ctx",
        "4096",
        "--db",
        str(db),
        "--allow-inline-policies",
        "--max-texts",
        "20",
        "--max-body",
        "20000",
    ]
    events = HoldPipe()  # the server's events (service_helpers): act on them, never sleep
    proc = ServiceProcess(
        args, home / "serve.log", env={"EDGE_GUARD_HOME": str(home)}, events=events
    ).start()
    try:
        yield proc, db
    finally:
        proc.kill()
        events.close()


@pytest.fixture
def url(served: tuple[ServiceProcess, Path]) -> str:
    return served[0].url


def _client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def _stored(db: Path, texts: list[str]) -> list[str]:
    store = Store(db)
    try:
        marks = ",".join("?" * len(texts))
        return [
            r["text"]
            for r in store.query(f"SELECT text FROM results WHERE text IN ({marks})", texts)
        ]
    finally:
        store.close()


def test_openai_client_single_list_and_cached(url: str) -> None:
    client = _client(url)
    one = client.moderations.create(model="toxic_simple", input=f"one {VIOLATE}")
    assert [r.flagged for r in one.results] == [True]
    assert one.results[0].categories.model_extra == {"toxic_simple": True}
    assert one.results[0].category_scores.model_extra == {"toxic_simple": pytest.approx(1.0)}
    texts = [f"a {SAFE}", f"b {VIOLATE}", "plain words, no marker"]
    first = client.moderations.create(model="toxic_simple", input=texts)
    assert [r.flagged for r in first.results] == [False, True, True]
    assert [r.categories.model_extra for r in first.results] == [
        {"toxic_simple": False},
        {"toxic_simple": True},
        {"toxic_simple": None},
    ]
    # Undetermined is flagged (fail closed) and said so, never a silent "not flagged".
    assert [r.model_extra["undetermined"] for r in first.results] == [[], [], ["toxic_simple"]]
    assert [r.model_extra["cached"] for r in first.results] == [{"toxic_simple": False}] * 3
    again = client.moderations.create(model="toxic_simple", input=texts)
    assert [r.model_extra["cached"] for r in again.results] == [{"toxic_simple": True}] * 3
    assert [r.flagged for r in again.results] == [False, True, True]


def test_default_policy_and_unknown_policy(url: str) -> None:
    r = httpx.post(url + "/v1/moderations", json={"input": f"x {SAFE}"}, timeout=120)
    assert r.status_code == 200
    assert r.json()["model"] == "toxic_simple"
    with pytest.raises(openai.NotFoundError) as exc:
        _client(url).moderations.create(model="no_such_policy", input="x")
    assert exc.value.body["param"] == "model"  # type: ignore[index]
    assert "no_such_policy" in exc.value.body["message"]  # type: ignore[index]
    # A set name: one category per member policy (spam's JSON answer format reads "1" as
    # undetermined, so the text is flagged and says which policy could not decide).
    r = httpx.post(
        url + "/v1/moderations", json={"input": f"set {VIOLATE}", "model": "community"}, timeout=120
    ).json()
    assert r["model"] == "community"
    assert r["results"][0]["categories"] == {"toxic_chat": True, "spam": None}
    assert (r["results"][0]["flagged"], r["results"][0]["undetermined"]) == (True, ["spam"])
    # A request names policies, never paths (a path would import its parse.py).
    r = httpx.post(url + "/v1/classify", json={"text": "x", "policy": "policies/toxic_simple"})
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": 5}, "input"),
        ({"input": ["ok", 3]}, "input[1]"),
        ({"model": "x"}, "input"),
        ({"input": "x", "model": 7}, "model"),
    ],
)
def test_bad_moderation_fields_are_400_naming_the_field(url: str, body: dict, field: str) -> None:
    r = httpx.post(url + "/v1/moderations", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == field
    assert f"'{field}'" in r.json()["error"]["message"]


def test_bad_json_limits_and_native_fields(url: str) -> None:
    json_type = {"Content-Type": "application/json"}
    r = httpx.post(url + "/v1/moderations", content=b'{"input": ', headers=json_type)
    assert (r.status_code, r.json()["error"]["message"]) == (
        400,
        "request body is not valid JSON (Expecting value)",
    )
    # A form post (what any web page may send without a CORS preflight) is refused.
    r = httpx.post(url + "/v1/moderations", data={"input": "x"})
    assert (r.status_code, r.json()["error"]["type"]) == (415, "invalid_request_error")
    # A chunked body (no Content-Length) over --max-body (20000): 413, read no further.
    chunks = (b'{"input": "' + b"a" * 4096 for _ in range(8))
    r = httpx.post(url + "/v1/moderations", content=chunks, headers=json_type)
    assert r.status_code == 413
    assert r.json()["error"]["message"] == "request body over 20000 bytes"
    r = httpx.post(url + "/v1/classify", json={"txts": ["a"]})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "txts")
    r = httpx.post(url + "/v1/classify", json={"texts": ["a"] * 21})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "texts")
    r = httpx.post(url + "/v1/classify", json={"texts": ["a"], "effort": "extreme"})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "effort")
    r = httpx.post(url + "/v1/moderations", json={"input": "a" * 30_000})
    assert r.status_code == 413
    with pytest.raises(openai.BadRequestError):
        _client(url).moderations.create(model="toxic_simple", input=[])


def test_native_classify_full_result_and_store(served: tuple[ServiceProcess, Path]) -> None:
    proc, db = served
    text = f"native {VIOLATE}"
    r = httpx.post(
        proc.url + "/v1/classify",
        json={"texts": [text], "policy": "toxic_simple", "include_reasoning": True},
        timeout=120,
    )
    assert r.status_code == 200
    res = r.json()["results"][0]
    assert (res["verdict"], res["fine_grain_label"], res["binary_label"]) == (
        "violation",
        "1",
        True,
    )
    assert (res["final"], res["reasoning"], res["cached"]) == ("1", "steered", False)
    assert res["p_violation"] == pytest.approx(1.0)
    assert res["label_probs"] == {"0": pytest.approx(0.0, abs=1e-6), "1": pytest.approx(1.0)}
    store = Store(db)
    try:
        row = store.get(res["key"])
    finally:
        store.close()
    assert row is not None and row["text"] == text and row["final"] == "1"
    no_reasoning = httpx.post(proc.url + "/v1/classify", json={"text": text}, timeout=120).json()
    assert "reasoning" not in no_reasoning["results"][0]
    assert no_reasoning["results"][0]["cached"] is True


def test_stream_sends_reasoning_deltas_then_the_result(url: str) -> None:
    events = []
    body = {"texts": [f"stream {SAFE}"], "stream": True, "max_tokens": 32}
    with httpx.stream("POST", url + "/v1/classify", json=body, timeout=120) as r:
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    kinds = [k for k, _ in events]
    assert kinds[-2:] == ["result", "done"]
    assert "".join(d["delta"] for k, d in events if k == "reasoning") == "steered"
    assert events[-2][1]["verdict"] == "no_violation"


def test_inline_policy_text_uses_the_builtin_parser(url: str) -> None:
    body = {"text": f"inline {VIOLATE}", "policy_text": "Answer 1 for spam, else 0."}
    res = httpx.post(url + "/v1/classify", json=body, timeout=120).json()["results"][0]
    assert (res["policy"], res["verdict"]) == ("inline", "violation")


def test_policies_models_health_metrics(url: str) -> None:
    pol = httpx.get(url + "/v1/policies").json()
    row = next(p for p in pol["data"] if p["name"] == "toxic_simple")
    assert (row["hash"], row["default"]) == (load_policy("toxic_simple").hash, True)
    models = httpx.get(url + "/v1/models").json()
    assert "toxic_simple" in [m["id"] for m in models["data"]]
    assert models["edge_guard"]["backend"] == "local"
    health = httpx.get(url + "/health").json()
    assert (health["service"], health["default_policies"]) == ("edge_guard", ["toxic_simple"])
    httpx.post(url + "/v1/moderations", json={"input": f"metrics {VIOLATE}"}, timeout=120)
    text = httpx.get(url + "/metrics").text
    for name in (
        "edge_guard_requests_total",
        'edge_guard_labels_total{verdict="violation"}',
        "edge_guard_cache_hits_total",
        'edge_guard_tokens_total{kind="output"}',
        "edge_guard_queue_depth 0.0",
        "edge_guard_request_seconds_bucket",
    ):
        assert name in text
    assert httpx.get(url + "/docs").status_code == 200


def test_cli_classify_through_the_server(url: str, tiny_o200k_model: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "classify",
            "--backend",
            "server",
            "--url",
            url,
            "-p",
            "toxic_simple",
            "--max-tokens",
            "16",
            "--json",
            f"cli {VIOLATE}",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["verdict"], out["model"]) == ("violation", tiny_o200k_model.name)  # no path


def test_client_that_disconnects_leaves_nothing_running(
    served: tuple[ServiceProcess, Path],
) -> None:
    """A client that hangs up cancels its job: labels computed are kept, nothing else runs.
    The slow texts would reason for minutes, so only the cancel ends their job (the
    server's `done` event), and none of them is ever stored."""
    proc, db = served
    texts = [f"gone 0 {SAFE}"] + [f"gone {i} {SLOW}" for i in range(1, 20)]
    body = {"texts": texts, "stream": True, "max_tokens": 8000}
    with httpx.stream("POST", proc.url + "/v1/classify", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line == "event: result":
                break  # hang up after the first label
    proc.events.wait_for("done gone")
    assert httpx.get(proc.url + "/health").json()["jobs_in_flight"] == 0
    assert _stored(db, texts) == [texts[0]]  # the computed label kept, the rest never computed
    after = httpx.post(proc.url + "/v1/moderations", json={"input": [f"after {SAFE}"]}, timeout=120)
    assert [r["flagged"] for r in after.json()["results"]] == [False]
    # A plain (not streamed) request whose client gives up once its job runs: cancelled too.
    texts = [f"impatient {i} {SLOW}" for i in range(20)]
    with _abandoned_post(proc.url, "/v1/classify", {"texts": texts, "max_tokens": 8000}):
        proc.events.wait_for("slow impatient")  # its job is running: now the client leaves
    proc.events.wait_for("done impatient")
    assert httpx.get(proc.url + "/health").json()["jobs_in_flight"] == 0
    assert _stored(db, texts) == []
    again = httpx.post(
        proc.url + "/v1/moderations", json={"input": [f"again {VIOLATE}"]}, timeout=120
    )
    assert [r["flagged"] for r in again.json()["results"]] == [True]


@contextlib.contextmanager
def _abandoned_post(url: str, path: str, body: dict[str, Any]) -> Iterator[None]:
    """POST `body` as JSON on a connection the client closes when the block ends, before
    any answer (a client that gave up)."""
    host = httpx.URL(url)
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host.host}:{host.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    with socket.create_connection((host.host, host.port), timeout=120) as sock:
        sock.sendall(head.encode() + data)
        yield


def _result_indexes(response: httpx.Response, n: int) -> list[int]:
    """The `index` of a stream's first `n` result events."""
    got: list[int] = []
    kind = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind == "result":
            got.append(json.loads(line[6:])["index"])
            if len(got) == n:
                break
    return got


def test_non_loopback_without_key_is_refused(tiny_o200k_model: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_guard",
            "serve",
            "--host",
            "0.0.0.0",
            "--model",
            str(tiny_o200k_model),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: refusing to bind 0.0.0.0 without an API key: pass --api-key-env VAR (or bind 127.0.0.1)"
    ]


def test_auth_and_kill_9_mid_load_then_restart_serves_from_the_store(
    tmp_path: Path, tiny_o200k_model: Path
) -> None:
    db = tmp_path / "kill.db"
    # --parallel 1: one text at a time, so the held text starts once those before it are done
    args = [
        "--model",
        str(tiny_o200k_model),
        "--policy",
        "toxic_simple",
        "--max-tokens",
        "32",
        "--parallel",
        "1",
        "--ctx",
        "4096",
        "--db",
        str(db),
        "--api-key-env",
        "EG_TEST_KEY",
    ]
    env = {"EDGE_GUARD_HOME": str(tmp_path), "EG_TEST_KEY": "s3cret"}
    auth = {"Authorization": "Bearer s3cret"}
    events = HoldPipe()
    proc = ServiceProcess(args, tmp_path / "kill.log", env=env, events=events).start()
    texts = [f"load {i} plain text" for i in range(8)]
    texts[3] = f"load 3 {HOLD}"  # holds the engine at its first token (service_helpers)
    try:
        assert httpx.get(proc.url + "/v1/models").status_code == 401
        assert (
            httpx.get(proc.url + "/v1/models", headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
        assert httpx.get(proc.url + "/health").status_code == 200
        assert httpx.get(proc.url + "/openapi.json").json()["paths"]["/v1/moderations"]
        with pytest.raises(openai.AuthenticationError):
            _client(proc.url, "wrong").moderations.create(input="x")
        ok = _client(proc.url, "s3cret").moderations.create(input=f"auth {VIOLATE}")
        assert [r.flagged for r in ok.results] == [True]
        inline = httpx.post(
            proc.url + "/v1/classify", json={"text": "x", "policy_text": "p"}, headers=auth
        )
        assert inline.status_code == 403  # inline policies are off unless allowed
        # Mid-load: an 8-text request, killed -9 while its 4th text runs, once the three
        # before it are stored (a result event comes after its label is committed).
        body = {"texts": texts, "stream": True}
        with httpx.stream(
            "POST", proc.url + "/v1/classify", json=body, headers=auth, timeout=120
        ) as r:
            first = _result_indexes(r, 3)
            events.wait_for("held load 3")
            proc.kill()
    finally:
        proc.kill()
        events.close()
    assert first == [0, 1, 2]
    done_before = set(_stored(db, texts))
    assert done_before == set(texts[:3])  # every label committed before the kill, no other
    assert "s3cret" not in (tmp_path / "kill.log").read_text()
    rest = texts[:3] + texts[4:]  # the held text would hold this server too
    events = HoldPipe()
    # a grace period of 1 s (serve's is 8): the slow texts take minutes, so the end is the same
    again = ServiceProcess(
        args, tmp_path / "kill2.log", env=env, events=events, grace_s=1.0
    ).start()
    late: dict[str, httpx.Response] = {}
    try:
        r = httpx.post(
            again.url + "/v1/moderations", json={"input": rest}, timeout=300, headers=auth
        )
        # SIGTERM while a long request runs (slow texts: minutes each): it gets the grace
        # period, then a clean 503.
        long_body = {"texts": [f"long {i} {SLOW}" for i in range(12)], "max_tokens": 8000}
        worker = threading.Thread(
            target=lambda: late.setdefault(
                "r",
                httpx.post(again.url + "/v1/classify", json=long_body, headers=auth, timeout=120),
            )
        )
        worker.start()
        events.wait_for("slow long")  # its job is running
    finally:
        assert again.stop() == -signal.SIGTERM  # uvicorn re-raises SIGTERM after its clean stop
        events.close()
    worker.join(60)
    assert late["r"].status_code == 503
    assert late["r"].json()["error"]["type"] == "server_shutting_down"
    cached = {
        t for t, res in zip(rest, r.json()["results"], strict=True) if res["cached"]["toxic_simple"]
    }
    assert cached == done_before
    assert sorted(_stored(db, texts)) == sorted(rest)  # every label stored, once; never the held
    assert "Traceback" not in (tmp_path / "kill2.log").read_text()


def test_remote_client_sends_every_option_and_its_rows_are_the_clis(
    served: tuple[ServiceProcess, Path], tiny_o200k_model: Path
) -> None:
    """`classify(..., url=server)` (the remote client) with reasoning mode, cascade, effort,
    parallel, truncate and sampling: the server stores the row a local classify() with the
    same options then finds (and the reverse)."""
    from edge_guard import classify
    from edge_guard.conversation import Conversation

    proc, db = served
    remote = {"backend": "server", "url": proc.url, "max_tokens": 16}
    local = {"model": str(tiny_o200k_model), "db": db, "ctx": 4096, "parallel": 4, "max_tokens": 16}
    cases = [
        {"reasoning": "none", "effort": "low"},
        {"cascade": "0.2:0.8", "effort": "high"},
        {"temperature": 0.5, "seed": 7, "date": "2021-02-03", "truncate": True},
        {"style": "chat-template"},
    ]
    for n, options in enumerate(cases):
        text = f"remote {n} {VIOLATE}"
        got = classify(text, "toxic_simple", **{**remote, **options})
        assert (got.cached, got.error) == (False, None), options
        here = classify(text, "toxic_simple", **{**local, **options})
        assert (here.key, here.cached, here.verdict) == (got.key, True, got.verdict), options
        first = classify(f"local {n} {SAFE}", "toxic_simple", **{**local, **options})
        again = classify(f"local {n} {SAFE}", "toxic_simple", **{**remote, **options})
        assert (again.key, again.cached) == (first.key, True), options
    one_pass = classify(
        "remote 0 " + VIOLATE, "toxic_simple", **remote, reasoning="none", effort="low"
    )
    assert one_pass.metadata["path"] == "one-pass"
    # A conversation goes as messages + target.
    chat = Conversation(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": f"hello {VIOLATE}"}],
        "assistant",
    )
    res = classify(chat, "harmful_assistance", **remote)
    assert (res.text, res.conversation) == (f"hello {VIOLATE}", chat.canonical())
    # What the server cannot do is one line, in the client's error.
    with pytest.raises(EdgeGuardError) as exc:
        classify("wide", "toxic_simple", **remote, parallel=64)
    assert str(exc.value) == (
        f"server {proc.url}: HTTP 400: field 'parallel': at most 4 on this server (its --parallel)"
    )


def test_remote_classifier_reasoning_is_a_mode(url: str) -> None:
    from edge_guard.backends.server_client import RemoteClassifier

    clf = RemoteClassifier(
        "toxic_simple", url, reasoning="none", cascade=(0.2, 0.8), truncate=True, parallel=2
    )
    assert (clf.reasoning, clf.cascade, clf.include_reasoning) == ("none", (0.2, 0.8), True)
    body = clf.options(clf.sampling)
    assert (body["reasoning"], body["cascade"], body["truncate"], body["parallel"]) == (
        "none",
        "0.2:0.8",
        True,
        2,
    )
    with pytest.raises(EdgeGuardError):
        RemoteClassifier("toxic_simple", url, reasoning=True)  # type: ignore[arg-type]


def test_a_client_using_a_name_the_server_refuses_is_told_why(url: str) -> None:
    """A Host the server does not answer to (DNS rebinding guard): the client's error says
    which flag lets it, instead of "not an edge-guard server"."""
    from edge_guard.backends.server_client import detect

    with (
        httpx.Client(headers={"Host": "gpu-box:8089"}) as named,
        pytest.raises(EdgeGuardError) as exc,
    ):
        detect(url, http=named)
    assert "--allowed-host" in str(exc.value) and str(exc.value).startswith(f"{url}: HTTP 403")
