"""The official `openai` client against a live `edge-guard serve --set openai-moderation`
(issue 29): single and list input, each alias echoed as `model`, typed attributes for all
13 categories reading our values, OpenAI's exact keys (extras in their own fields), image
parts refused, undetermined as documented; full reasoning answers all 13 in one pass."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from service_helpers import ServiceProcess, serve_in_process

from edge_guard.service.openai_shape import OPENAI_CATEGORIES

ALIASES = [
    "omni-moderation-latest",
    "omni-moderation-2024-09-26",
    "text-moderation-latest",
    "text-moderation-stable",
]
ATTRS = {k: k.replace("/", "_").replace("-", "_") for k in OPENAI_CATEGORIES}
EXTRAS = {"undetermined", "verdicts", "cached"}


@pytest.fixture(scope="module")
def model(synth_model: Any) -> str:
    """tiny-o200k with room for the 13 policies' prompt (its own 8192 positions are tight),
    from the test model cache (built once, not per run)."""
    return str(synth_model("tiny-o200k", context_length=32768))


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, model: str) -> Iterator[str]:
    home = tmp_path_factory.mktemp("om_serve")
    args = [
        "--model",
        model,
        "--set",
        "omni-moderation-latest",
        "--reasoning",
        "none",
        "--parallel",
        "16",
        "--ctx",
        "16384",
        "--db",
        str(home / "serve.db"),
    ]
    proc = ServiceProcess(args, home / "serve.log", env={"EDGE_GUARD_HOME": str(home)}).start()
    try:
        yield proc.url
    finally:
        proc.kill()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)


def _check_typed(result: Any, raw: dict[str, Any]) -> None:
    """Every category through the client's typed attributes equals the JSON we sent."""
    assert list(raw["categories"]) == list(OPENAI_CATEGORIES)  # exactly OpenAI's 13 keys
    assert list(raw["category_scores"]) == list(OPENAI_CATEGORIES)
    assert raw["category_applied_input_types"] == {k: ["text"] for k in OPENAI_CATEGORIES}
    assert set(raw) >= EXTRAS  # our extras: their own fields
    for key, attr in ATTRS.items():
        assert getattr(result.categories, attr) is raw["categories"][key]
        assert getattr(result.category_scores, attr) == raw["category_scores"][key]
        assert getattr(result.category_applied_input_types, attr) == ["text"]
    assert result.flagged is raw["flagged"]


def test_single_and_list_input_through_the_typed_client(url: str) -> None:
    client = _client(url)
    raw = client.moderations.with_raw_response.create(
        model="omni-moderation-latest", input="I will find you and hurt you."
    )
    one, body = raw.parse(), json.loads(raw.text)
    assert one.model == "omni-moderation-latest" and len(one.results) == 1
    r = one.results[0]
    _check_typed(r, body["results"][0])
    for attr in ATTRS.values():  # one pass: every category decided, with its P(violation)
        assert isinstance(getattr(r.categories, attr), bool)
        assert 0.0 <= getattr(r.category_scores, attr) <= 1.0
    assert r.categories.self_harm_intent == (r.category_scores.self_harm_intent >= 0.5)
    assert r.model_extra["undetermined"] == []
    assert r.flagged == any(getattr(r.categories, a) for a in ATTRS.values())
    texts = ["first text", "second, quite different", "a third"]
    raw = client.moderations.with_raw_response.create(model="text-moderation-stable", input=texts)
    many, body = raw.parse(), json.loads(raw.text)
    assert len(many.results) == 3 and many.model == "text-moderation-stable"
    for res, res_raw in zip(many.results, body["results"], strict=True):
        _check_typed(res, res_raw)
    again = client.moderations.create(model="text-moderation-stable", input=texts)
    assert all(all(c.values()) for c in (r.model_extra["cached"] for r in again.results))
    assert [r.category_scores.harassment for r in again.results] == [
        r.category_scores.harassment for r in many.results
    ]


@pytest.mark.parametrize("alias", [*ALIASES, "openai-moderation"])
def test_each_alias_is_echoed(url: str, alias: str) -> None:
    resp = _client(url).moderations.create(model=alias, input="hello there")
    assert resp.model == alias
    assert isinstance(resp.results[0].categories.violence_graphic, bool)


def test_no_model_uses_the_preloaded_set(url: str) -> None:
    r = httpx.post(url + "/v1/moderations", json={"input": "hello there"}, timeout=300).json()
    assert r["model"] == "omni-moderation-latest"
    assert list(r["results"][0]["categories"]) == list(OPENAI_CATEGORIES)


def test_text_parts_are_one_input_and_an_image_part_is_refused(url: str) -> None:
    client = _client(url)
    parts = [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]
    resp = client.moderations.create(model="omni-moderation-latest", input=parts)  # type: ignore[arg-type]
    assert len(resp.results) == 1
    joined = client.moderations.create(model="omni-moderation-latest", input="part one\npart two")
    assert resp.results[0].category_scores.hate == joined.results[0].category_scores.hate
    image = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
    ]
    with pytest.raises(openai.BadRequestError) as exc:
        client.moderations.create(model="omni-moderation-latest", input=image)  # type: ignore[arg-type]
    assert exc.value.status_code == 400
    body = exc.value.body
    assert body["param"] == "input[1]" and "only text input is supported" in body["message"]  # type: ignore[index]


def test_undetermined_is_null_listed_and_flagged(url: str) -> None:
    """A text too long for the context: no category decided, none reported as safe."""
    client = _client(url)
    r = client.moderations.create(model="omni-moderation-latest", input="word " * 9000).results[0]
    for attr in ATTRS.values():
        assert getattr(r.categories, attr) is None
        assert getattr(r.category_scores, attr) is None
    assert r.model_extra["undetermined"] == list(OPENAI_CATEGORIES)
    assert set(r.model_extra["verdicts"].values()) == {"undetermined"}
    assert r.flagged is True  # fail closed


# -- in process: full reasoning (steered answers) and the preload --------------------------------
@pytest.fixture
def full_app(tmp_path: Path, model: str) -> Iterator[tuple[Any, Any]]:
    app, core = serve_in_process(
        [
            "--model",
            model,
            "--set",
            "openai-moderation",
            "--ctx",
            "16384",
            "--parallel",
            "4",
            "--max-tokens",
            "200",
            "--db",
            str(tmp_path / "f.db"),
        ]
    )
    try:
        yield app, core
    finally:
        core.shutdown(0)


def _steer(answers: dict[str, str], submitted: list[Any]) -> Any:
    """Force the final answer of prompts whose text holds a key of `answers`."""
    from edge_guard.engine.loop import EngineLoop
    from edge_guard.engine.sampling import ForcedTokens, harmony_script
    from edge_guard.harmony.vocab import Vocab

    original = EngineLoop.submit

    def submit(self: EngineLoop, request: Any, **kwargs: Any) -> Any:
        submitted.append(request)
        vocab = Vocab.from_gguf(self.engine.model_path)
        text = vocab.decode(request.prompt_ids[request.prefix_len or 0 :])
        for marker, final in answers.items():
            if marker in text:
                request.logits_processor = ForcedTokens(harmony_script(vocab, final, "ok"))
        return original(self, request, **kwargs)

    EngineLoop.submit = submit  # type: ignore[method-assign]
    return lambda: setattr(EngineLoop, "submit", original)


def test_full_reasoning_one_pass_per_text_through_the_client(full_app: tuple[Any, Any]) -> None:
    from starlette.testclient import TestClient

    app, core = full_app
    engine = core.backend.inner.engine()
    taxonomy_prefix = max(len(r.tokens) for r in engine.prefixes.residents)
    assert taxonomy_prefix > 7000  # preloaded: the 13 policies' one prompt, not 13 prompts
    verdicts = {k: int(k in ("hate", "violence/graphic")) for k in OPENAI_CATEGORIES}
    answers = {"zzgoodzz": json.dumps(verdicts, separators=(",", ":")), "zzbadzz": "1"}
    submitted: list[Any] = []
    undo = _steer(answers, submitted)
    try:
        with TestClient(app) as http:
            client = openai.OpenAI(
                base_url="http://127.0.0.1/v1", api_key="x", http_client=http, max_retries=0
            )
            resp = client.moderations.create(
                model="omni-moderation-2024-09-26", input=["a zzgoodzz text", "a zzbadzz text"]
            )
    finally:
        undo()
    assert len(submitted) == 2  # one reasoning pass per text, not 13
    good, bad = resp.results
    assert good.categories.hate is True and good.categories.violence_graphic is True
    assert good.categories.harassment is False and good.flagged is True
    assert good.category_scores.hate == 1.0 and good.category_scores.sexual_minors == 0.0
    assert good.model_extra["undetermined"] == []
    # an answer that is not the 13-key object: every category undetermined, flagged
    assert all(getattr(bad.categories, a) is None for a in ATTRS.values())
    assert all(getattr(bad.category_scores, a) is None for a in ATTRS.values())
    assert bad.model_extra["undetermined"] == list(OPENAI_CATEGORIES) and bad.flagged is True
