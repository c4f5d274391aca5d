"""The parity matrix (issue 25): every request option through every door gives the row and
the verdict `edge-guard classify` gives for the same input, or the door refuses it in one
line. The options come from the spec itself (`request_options()`): a new option, or a
new door language, that the matrix does not cover fails `test_the_matrix_covers_...`.

Per cell: the CLI classifies first (the reference, into the store the door uses); then the
door classifies the same input with the same option. The door must store nothing new (it
found the CLI's row: the same key), report the CLI's key where it reports keys, and the
same verdict (a set's thresholds applied). Everything runs in this process on the tiny
synthetic model: the servers are `edge-guard serve` stopped where uvicorn would start,
requests go through FastAPI's TestClient, the remote client's HTTP goes to it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import serve_in_process

from edge_guard.settings.resolve import DOORS, request_options
from edge_guard.store import Store
from tests.parity_doors import (
    BASE,
    BASE_FLAGS,
    OPTIONS,
    POLICY,
    SERVER,
    SET,
    SET_VERDICTS,
    Option,
    Outcome,
    cli_classify,
    cli_run,
    python_classify,
    serve_classify,
    serve_moderations,
    write_set,
)

# door -> the language its errors speak (settings.DOORS)
MATRIX_DOORS = {
    "CLI classify": "cli",
    "CLI run": "cli",
    "Python classify()": "python",
    "serve /v1/classify": "http",
    "serve /v1/moderations": "http",
    "remote client": "python",
    "TUI Workbench": "tui",
}
SERVED = ("serve /v1/classify", "serve /v1/moderations", "remote client")
# Cells a door refuses by design, and what its one line must name.
REFUSED = {("serve /v1/moderations", "conversation target"): "/v1/classify"}


def test_the_matrix_covers_every_request_option_and_door() -> None:
    covered = [f for o in OPTIONS for f in o.fields]
    assert sorted(covered) == sorted(request_options()), "a request option without a row"
    assert set(MATRIX_DOORS.values()) == set(DOORS), "a door language without a door"
    assert {o.name for o in OPTIONS} >= {"set thresholds", "conversation target"}


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_set(tmp_path_factory.mktemp("parity_policies"))


@pytest.fixture(autouse=True)
def _set_on_path(policies: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_GUARD_POLICIES", str(policies))


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, tiny_o200k_model: Path, policies: Path
) -> Iterator[Callable[[Option | None], tuple[TestClient, Path]]]:
    """server(None): `serve -p toxic_simple` with the CLI's base flags (requests carry the
    options); server(option): the same started with the option's flags (its defaults)."""
    db = tmp_path_factory.mktemp("parity_serve") / "serve.db"
    started: dict[str, tuple[TestClient, Any]] = {}

    def server(option: Option | None) -> tuple[TestClient, Path]:
        name = "base" if option is None else option.name
        if name not in started:
            flags = [] if option is None else list(option.flags)
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("EDGE_GUARD_POLICIES", str(policies))
                app, core = serve_in_process(
                    [
                        "-p",
                        POLICY,
                        "--model",
                        str(tiny_o200k_model),
                        *BASE_FLAGS,
                        *flags,
                        "--db",
                        str(db),
                    ]
                )
            started[name] = (TestClient(app, base_url=SERVER), core)
        return started[name][0], db

    yield server
    for _client, core in started.values():
        core.shutdown(0)
        core.store.close()


def _keys(db: Path) -> set[str]:
    store = Store(db)
    try:
        return {r["key"] for r in store.query("SELECT key FROM results")}
    finally:
        store.close()


async def _tui(option: Option, door: str, model: Path, db: Path) -> Outcome:
    """The Workbench: controls for style/effort/reasoning/max tokens/set/conversation; the
    options it has no control for come from its settings (flags, env, config.toml)."""
    from textual.widgets import Input, Select, TextArea

    from edge_guard.settings.resolve import resolve_settings
    from edge_guard.tui.app import EdgeGuardApp
    from edge_guard.tui.widgets.conversation import ConversationInput
    from tests.tui.test_workbench import wait_idle

    controls = {"style": "#wb-style", "effort": "#wb-effort", "reasoning": "#wb-path"}
    rest = {k: v for k, v in option.values.items() if k not in controls and k != "max_tokens"}
    spec = resolve_settings({**BASE, "model": str(model), **rest}, env={}, config={})
    app = EdgeGuardApp(db=db, model=str(model), policy=POLICY, settings=spec)
    async with app.run_test(size=(140, 42)) as pilot:
        screen = app.screen
        await pilot.pause()
        for name, value in option.values.items():
            if name in controls:
                screen.query_one(controls[name], Select).value = value
        if "max_tokens" in option.values:
            screen.query_one("#wb-max-tokens", Input).value = str(option.values["max_tokens"])
        if option.policy == SET:
            screen.query_one("#wb-set", Select).value = f"{SET}|separate"
        item, text = option.item(door), screen.query_one("#wb-text", TextArea)
        if option.conversation:
            await pilot.press("ctrl+k")
            conv = screen.query_one(ConversationInput)
            conv.set_turns([item.messages[0].as_dict()])  # type: ignore[union-attr]
            conv.query_one("#conv-role", Select).value = "assistant"
            conv.query_one("#conv-target", Select).value = "user"
            text.load_text(item.messages[1].content)  # type: ignore[union-attr]
        else:
            text.load_text(item)  # type: ignore[arg-type]
        await pilot.press("ctrl+r")
        await wait_idle(pilot, screen)
        errors = [n.message for n in app._notifications if n.severity == "error"]
        shown = screen.result
    if errors or shown is None:
        return Outcome(refused=errors[-1] if errors else "no result")
    items = shown.results.items() if option.policy == SET else [(shown.policy, shown)]
    return Outcome({str(n): (r.key, str(r.verdict)) for n, r in items})


def _door(
    label: str,
    option: Option,
    model: Path,
    db: Path,
    tmp: Path,
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Outcome:
    """`label` is the door, maybe with a "#k" (another text: see test_cell)."""
    door = label.split(" #")[0]
    if door == "CLI classify":
        return cli_classify(option, label, model, db, tmp)
    if door == "CLI run":
        return cli_run(option, label, model, db, tmp)
    if door == "Python classify()":
        return python_classify(option, label, model, db)
    if door == "serve /v1/classify":
        return serve_classify(option, label, client)
    if door == "serve /v1/moderations":
        return serve_moderations(option, label, client)
    if door == "remote client":  # the Python API over HTTP, to the same server
        import httpx

        for verb in ("get", "post", "stream"):
            monkeypatch.setattr(httpx, verb, getattr(client, verb))
        return python_classify(option, label, model, db, backend="server", url=SERVER)
    return asyncio.run(_tui(option, label, model, db))


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name.replace(" ", "-"))
@pytest.mark.parametrize("door", list(MATRIX_DOORS))
def test_cell(
    door: str,
    option: Option,
    tiny_o200k_model: Path,
    tmp_path: Path,
    servers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, db = None, tmp_path / "s.db"
    if door in SERVED:
        client, db = servers(option if door == "serve /v1/moderations" else None)
    label, ref = door, cli_classify(option, door, tiny_o200k_model, db, tmp_path)
    for k in range(1, 40 if option.policy == SET else 1):
        if {n: v for n, (_k, v) in ref.results.items()} == SET_VERDICTS:
            break  # a text whose thresholds flip a member's own verdict (P < 1: no violation)
        label = f"{door} #{k}"
        ref = cli_classify(option, label, tiny_o200k_model, db, tmp_path)
    assert ref.refused is None, ref.refused
    if option.policy == SET:  # the thresholds decided every member, one against the model
        assert {n: v for n, (_k, v) in ref.results.items()} == SET_VERDICTS
    before = _keys(db)
    got = _door(label, option, tiny_o200k_model, db, tmp_path, client, monkeypatch)
    if (door, option.name) in REFUSED:
        assert got.refused is not None and "\n" not in got.refused
        assert REFUSED[door, option.name] in got.refused
    else:
        assert got.refused is None, f"{door} refused {option.name}: {got.refused}"
        assert set(got.results) == set(ref.results)
        for policy, (key, verdict) in got.results.items():
            assert (key or ref.results[policy][0], verdict) == ref.results[policy], policy
    assert _keys(db) == before, f"{door} stored a row of its own for {option.name}"


@pytest.mark.parametrize(
    "option", [o for o in OPTIONS if o.fields], ids=lambda o: o.name.replace(" ", "-")
)
def test_each_option_changes_the_request(option: Option, tiny_o200k_model: Path) -> None:
    """A cell can only catch a door dropping an option the key depends on: each does."""
    from edge_guard.api import build_classifier
    from edge_guard.settings.resolve import resolve_settings

    def key(**values: Any) -> str:
        spec = resolve_settings(
            {**BASE, "model": str(tiny_o200k_model), **values}, env={}, config={}
        )
        return build_classifier(POLICY, spec).key(option.item("key"))

    assert key(**option.values) != key()


@pytest.mark.parametrize(
    "option", [o for o in OPTIONS if o.fields], ids=lambda o: o.name.replace(" ", "-")
)
def test_moderations_refuses_the_request_options_it_does_not_take(
    option: Option, servers: Any
) -> None:
    """/v1/moderations takes the server's defaults: an option sent with it is refused (one
    line naming the field and /v1/classify), never dropped."""
    client, db = servers(None)
    before = _keys(db)
    body = {"input": option.text("moderations"), "model": POLICY, **option.values}
    r = client.post("/v1/moderations", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "\n" not in error["message"] and "/v1/classify" in error["message"]
    assert error["param"] in option.values
    assert _keys(db) == before
