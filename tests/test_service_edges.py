"""The service's edges (issue 26): what a hostile client or a web page may send, and what
it gets back. In-process: `edge-guard serve` runs up to uvicorn; requests go through
FastAPI's TestClient (the body-size and socket cases are live in test_service.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import serve_in_process

from edge_guard.cli import run

BASE = "http://127.0.0.1:8089"
KEY = "edge-key-123"


@pytest.fixture(scope="module")
def apps(
    tmp_path_factory: pytest.TempPathFactory, tiny_o200k_model: Path
) -> Iterator[dict[str, Any]]:
    """Two servers over one model: without a key (inline policies on, one allowed web
    origin) and with a key."""
    home = tmp_path_factory.mktemp("edges")
    common = [
        "--model",
        str(tiny_o200k_model),
        "-p",
        "toxic_simple",
        "--max-tokens",
        "8",
        "--parallel",
        "4",
        "--ctx",
        "4096",
        "--db",
        str(home / "e.db"),
    ]
    open_app, open_core = serve_in_process(
        [*common, "--allow-inline-policies", "--cors-origin", "https://app.example"]
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EG_EDGE_KEY", KEY)
        keyed_app, keyed_core = serve_in_process([*common, "--api-key-env", "EG_EDGE_KEY"])
    try:
        yield {
            "open": TestClient(open_app, base_url=BASE),
            "keyed": TestClient(keyed_app, base_url=BASE),
            "core": open_core,
        }
    finally:
        for core in (open_core, keyed_core):
            core.shutdown(0)
            core.store.close()


def _error(r: Any, status: int) -> dict[str, Any]:
    """The OpenAI error body of `r` (exactly its four fields), after checking the status."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


# -- numbers and sampling: HTTP 400 naming the field, nothing reaches the engine ----------
@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"seed": -1, "temperature": 1}, "seed"),
        ({"seed": 2**63}, "seed"),
        ({"seed": "5"}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 9}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"parallel": 0}, "parallel"),
        ({"parallel": 99}, "parallel"),
        ({"effort": "extreme"}, "effort"),
        ({"reasoning": True}, "reasoning"),
        ({"cascade": "abc"}, "cascade"),
        ({"cascade": "0.9:0.1"}, "cascade"),
        ({"date": "2020-13-01"}, "date"),
        ({"truncate": "yes"}, "truncate"),
        ({"no_cache": 1}, "no_cache"),
    ],
)
def test_bad_numbers_and_options_are_400_naming_the_field(
    apps: dict[str, Any], fields: dict[str, Any], param: str
) -> None:
    err = _error(apps["open"].post("/v1/classify", json={"text": "x", **fields}), 400)
    assert (err["param"], err["type"]) == (param, "invalid_request_error")
    assert err["message"].startswith(f"field {param!r}: ")
    assert apps["core"].active_jobs() == 0


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_temperature_is_400(apps: dict[str, Any], literal: bytes) -> None:
    body = b'{"text": "x", "temperature": ' + literal + b"}"
    r = apps["open"].post(
        "/v1/classify", content=body, headers={"Content-Type": "application/json"}
    )
    assert _error(r, 400)["param"] == "temperature"


def test_reasoning_bool_points_to_include_reasoning(apps: dict[str, Any]) -> None:
    err = _error(apps["open"].post("/v1/classify", json={"text": "x", "reasoning": True}), 400)
    assert "include_reasoning" in err["message"]


def test_a_server_error_in_flag_terms_is_said_in_field_terms(apps: dict[str, Any]) -> None:
    r = apps["open"].post("/v1/classify", json={"text": "x", "policy": "spam", "reasoning": "none"})
    err = _error(r, 400)
    assert err["param"] == "reasoning"
    assert err["message"] == (
        'policy spam: "reasoning": "none" needs a closed output kind '
        '(binary, likert or labels), not \'json\'; use "reasoning": "full"'
    )


# -- what a web page can do: Content-Type, Origin, Host ------------------------------------
@pytest.mark.parametrize("which", ["open", "keyed"])
def test_web_pages_are_refused_with_and_without_a_key(apps: dict[str, Any], which: str) -> None:
    client: TestClient = apps[which]
    auth = {"Authorization": f"Bearer {KEY}"}
    form = client.post("/v1/moderations", data={"input": "x"}, headers=auth)
    assert _error(form, 415)["type"] == "invalid_request_error"
    plain = client.post(
        "/v1/classify", content=b'{"text": "x"}', headers={**auth, "Content-Type": "text/plain"}
    )
    assert _error(plain, 415)["message"].endswith("(got 'text/plain')")
    evil = client.post(
        "/v1/classify", json={"text": "x"}, headers={**auth, "Origin": "https://evil.example"}
    )
    assert "--cors-origin" in _error(evil, 403)["message"]
    for host in ("evil.example", "evil.example:8089", "127.0.0.1.evil.example"):
        rebound = client.get("/health", headers={"Host": host})
        assert "DNS rebinding" in _error(rebound, 403)["message"]
    for host in ("127.0.0.1:8089", "localhost:8089", "localhost", "[::1]:8089"):
        assert client.get("/health", headers={"Host": host}).status_code == 200


def test_an_allowed_origin_gets_cors_and_the_docs_page_its_own(apps: dict[str, Any]) -> None:
    client: TestClient = apps["open"]
    ok = client.post(
        "/v1/classify", json={"text": "cors text"}, headers={"Origin": "https://app.example"}
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    pre = client.options(
        "/v1/classify",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
    same = client.get("/v1/models", headers={"Origin": BASE})  # /docs' "try it out"
    assert same.status_code == 200 and "access-control-allow-origin" not in same.headers


def test_non_ascii_api_key_is_refused_at_start(
    tiny_o200k_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EG_ACCENT_KEY", "clé-secrète")
    with pytest.raises(SystemExit) as exc:
        run(["serve", "--model", str(tiny_o200k_model), "--api-key-env", "EG_ACCENT_KEY"])
    assert exc.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "error: --api-key-env EG_ACCENT_KEY: the key must be visible ASCII "
        "characters (no spaces or accents): clients send it as header bytes"
    ]
    assert "clé" not in lines[0]


def test_a_non_ascii_authorization_header_is_a_401_not_a_crash(apps: dict[str, Any]) -> None:
    keyed: TestClient = apps["keyed"]
    r = keyed.get("/v1/models", headers={"Authorization": "Bearer clé".encode()})  # type: ignore[dict-item]
    assert _error(r, 401)["type"] == "authentication_error"
    ok = keyed.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200


# -- every error in OpenAI's shape; bodies that are not JSON -------------------------------
def test_404_405_and_bad_bodies_have_the_openai_shape(apps: dict[str, Any]) -> None:
    client: TestClient = apps["open"]
    assert _error(client.get("/v1/nothing"), 404)["type"] == "not_found_error"
    wrong = client.get("/v1/classify")
    assert _error(wrong, 405)["message"] == "method GET is not allowed on /v1/classify"
    assert wrong.headers["allow"] == "POST"
    deep = client.post(
        "/v1/classify", content=b"[" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert _error(deep, 400)["message"] == "request body: JSON nested too deeply"
    bad = client.post(
        "/v1/classify", content=b'{"text": "caf\xe9"}', headers={"Content-Type": "application/json"}
    )
    assert _error(bad, 400)["message"] == "request body is not valid UTF-8 (bad byte at offset 13)"
    utf16 = client.post(
        "/v1/classify",
        content='{"text": "x"}'.encode("utf-16-le"),
        headers={"Content-Type": "application/json"},
    )
    assert _error(utf16, 400)["message"].startswith("request body is not UTF-8 JSON")


# -- what the server shows: no paths; broken policies by name ----------------------------
def test_health_and_models_show_no_file_paths(apps: dict[str, Any], tiny_o200k_model: Path) -> None:
    for path in ("/health", "/v1/models", "/v1/policies"):
        text = apps["open"].get(path).text
        assert str(tiny_o200k_model.parent) not in text and "/policies" not in text, path
    assert apps["open"].get("/health").json()["model"] == tiny_o200k_model.name


def test_a_policy_that_fails_to_load_is_reported_by_name_only(
    apps: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "secret_place" / "broken"
    folder.mkdir(parents=True)
    (folder / "policy.md").write_text("Answer 1 or 0.")
    (folder / "policy.toml").write_text("[output]\nkind = 'nonsense'\n")
    monkeypatch.setenv("EDGE_GUARD_POLICIES", str(folder.parent))
    client: TestClient = apps["open"]
    err = _error(client.post("/v1/classify", json={"text": "x", "policy": "broken"}), 500)
    assert err["message"] == (
        "policy 'broken' failed to load on the server (the server log has the detail)"
    )
    row = next(p for p in client.get("/v1/policies").json()["data"] if p["name"] == "broken")
    assert "secret_place" not in json.dumps(row)
    assert "secret_place" in caplog.text  # the operator sees where


# -- inline policies: checked like policy files -------------------------------------------
@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"policy_text": "a\x00b"}, "policy_text"),
        ({"policy_text": "bad \ud800 surrogate"}, "policy_text"),
        ({"policy_text": "   "}, "policy_text"),
        ({"policy_output": {"kind": "labels", "labels": ["a", "a"]}}, "policy_output.labels"),
        ({"policy_output": {"kind": "labels", "labels": ["a", 5]}}, "policy_output.labels[1]"),
        (
            {"policy_output": {"kind": "labels", "labels": ["a", "b\ud800"]}},
            "policy_output.labels[1]",
        ),
        ({"policy_output": {"violation": 1}}, "policy_output.violation"),
        ({"policy_output": {"kind": "likert", "min": "1"}}, "policy_output.min"),
        ({"policy_output": {"threshold": "high"}}, "policy_output.threshold"),
        ({"policy_output": {"colour": "red"}}, "policy_output.colour"),
        ({"policy_output": {"kind": "telepathy"}}, "policy_output.kind"),
        ({"policy_output": {"violation": ["9"]}}, "policy_output.violation"),
        ({"policy_output": {"violation": ["1", "1"]}}, "policy_output.violation"),
        ({"policy_output": ["kind", "binary"]}, "policy_output"),
    ],
)
def test_bad_inline_policies_are_400_never_500(
    apps: dict[str, Any], fields: dict[str, Any], param: str
) -> None:
    body = {"text": "x", "policy_text": "Answer 1 for spam, else 0.", **fields}
    r = apps["open"].post(
        "/v1/classify",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert _error(r, 400)["param"] == param


def test_texts_with_lone_surrogates_are_400(apps: dict[str, Any]) -> None:
    r = apps["open"].post(
        "/v1/classify",
        content=b'{"texts": ["ok", "x\\ud800y"]}',
        headers={"Content-Type": "application/json"},
    )
    err = _error(r, 400)
    assert (err["param"], err["message"]) == (
        "texts[1]",
        "field 'texts[1]': unpaired surrogate at character 1",
    )


# -- conversations over HTTP --------------------------------------------------------------
CHAT = [
    {"role": "user", "content": "How do I pick a lock?"},
    {"role": "assistant", "content": "I can't help with that."},
]


def test_conversation_policies_work_over_http(apps: dict[str, Any]) -> None:
    client: TestClient = apps["open"]
    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert {"harmful_assistance", "assistant_replies"} <= set(models)
    for policy in ("harmful_assistance", "assistant_replies"):
        r = client.post(
            "/v1/classify",
            json={"messages": CHAT, "target": "assistant", "policy": policy, "max_tokens": 8},
        )
        assert r.status_code == 200, r.text
        for res in r.json()["results"]:
            assert res["text"] == "I can't help with that."
            assert res["conversation"] == {"messages": CHAT, "target": "assistant"}


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"text": "x"}, "messages", "send the conversation as 'messages'"),
        ({"messages": CHAT, "target": "user"}, "target", "target 'user' judges user"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages", "role 'bot' is not one of"),
        ({"messages": []}, "messages", "at least one message"),
        ({"messages": "hi"}, "messages", "valid list"),
        ({"text": "x", "target": "last"}, "target", "needs messages"),
        ({"text": "x", "messages": CHAT}, "messages", "not text and messages"),
    ],
)
def test_conversation_errors_name_fields_not_flags(
    apps: dict[str, Any], fields: dict[str, Any], param: str, says: str
) -> None:
    r = apps["open"].post("/v1/classify", json={"policy": "harmful_assistance", **fields})
    err = _error(r, 400)
    assert err["param"] == param and says in err["message"], err
    assert "--" not in err["message"]


def test_moderations_point_conversation_policies_to_classify(apps: dict[str, Any]) -> None:
    r = apps["open"].post("/v1/moderations", json={"input": "x", "model": "harmful_assistance"})
    err = _error(r, 400)
    assert (err["param"], err["message"]) == (
        "input",
        "field 'input': policy harmful_assistance judges model responses: send the "
        "conversation to /v1/classify as 'messages'",
    )


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        (
            {"effort": "low"},
            "effort",
            "the server's settings (its flags); send per-request options to /v1/classify",
        ),
        ({"no_cache": True}, "no_cache", "send per-request options to /v1/classify"),
        (
            {"top_p": 0.5, "extra_thing": 1, "stream": True},
            "top_p",
            "(also not taken here: stream)",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "target": "user"},
            "messages",
            "send a conversation to /v1/classify as 'messages' with 'target' (also not taken here: target)",
        ),
        ({"target": "user"}, "target", "send a conversation to /v1/classify"),
        ({"text": "x"}, "text", "takes its texts as 'input'"),
        ({"policy": "toxic_simple"}, "policy", "names its policy or set as 'model'"),
        ({"policy_text": "Flag insults."}, "policy_text", "/v1/classify"),
    ],
)
def test_moderations_refuse_the_edge_guard_fields_they_cannot_take(
    apps: dict[str, Any], fields: dict[str, Any], param: str, says: str
) -> None:
    r = apps["open"].post("/v1/moderations", json={"input": "refused field", **fields})
    err = _error(r, 400)
    assert err["param"] == param and err["type"] == "invalid_request_error", err
    message = err["message"]
    assert message.startswith(f"field {param!r}: /v1/moderations ") and says in message
    assert "\n" not in message and "--" not in message


def test_moderations_ignore_unknown_fields_as_openai_does(apps: dict[str, Any]) -> None:
    body = {"input": "ignored extras", "user": "u-1", "metadata": {"a": 1}, "texts_": []}
    r = apps["open"].post("/v1/moderations", json=body)
    assert r.status_code == 200, r.text
    assert list(r.json()["results"][0]["categories"]) == ["toxic_simple"]


def test_moderations_flagged_is_the_one_flagged_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """`flagged` is `result.flagged`, its undetermined (None) mapped to true in one place."""
    from edge_guard import result
    from edge_guard.result import ClassificationResult, Verdict
    from edge_guard.service.schemas import moderation_result

    def res(verdict: Verdict) -> ClassificationResult:
        return ClassificationResult(None, None, None, verdict=verdict, policy="p")

    v, n, u = Verdict.VIOLATION, Verdict.NO_VIOLATION, Verdict.UNDETERMINED
    cases = [[v, u], [n, u], [u], [n, n]]
    flags = [moderation_result(["a", "b"][: len(c)], [res(x) for x in c]).flagged for c in cases]
    assert flags == [True, True, True, False]
    calls: list[list[str]] = []
    monkeypatch.setattr(result, "flagged", lambda vs: calls.append([str(x) for x in vs]) or False)
    assert moderation_result(["a"], [res(v)]).flagged is False
    assert calls == [["violation"]]


def test_host_rule_for_specific_and_wildcard_binds() -> None:
    from edge_guard.service.guard import HostRule

    one = HostRule("192.168.1.5", ["gpu-box"])
    assert [
        one.allows(h)
        for h in ("192.168.1.5:8089", "gpu-box:8089", "localhost", "10.0.0.9", "attacker.example")
    ] == [True, True, True, False, False]
    every = HostRule("0.0.0.0")  # any interface: IP literals (no name to rebind), local names
    assert [
        every.allows(h) for h in ("10.0.0.9:8089", "[fe80::1]:8089", "localhost:8089", "gpu-box")
    ] == [True, True, True, False]
