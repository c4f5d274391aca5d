"""Snapshots of the main screens (pytest-textual-snapshot), with fixed data and no timestamps.

Update after an intended visual change: `pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_guard.store import Store
from tests.tui.conftest import SIZE, settle, shown, steer_to, until

POLICY = """Decide whether the message is rude.

Rude means: insults, name-calling or mockery aimed at a person.
Answer with exactly one character: `1` if it is rude, `0` if it is not.
"""


@pytest.fixture
def snap_policy(tmp_path: Path) -> Path:
    folder = tmp_path / "rude"
    folder.mkdir()
    (folder / "policy.md").write_text(POLICY, encoding="utf-8")
    (folder / "policy.toml").write_text('[output]\nkind = "binary"\n', encoding="utf-8")
    return folder


async def steady(pilot) -> None:  # type: ignore[no-untyped-def]
    """No blinking cursors, every worker ended and its result shown: a snapshot must not
    depend on when it is taken."""
    from textual.widgets import Input, TextArea

    await settle(pilot)
    for widget in pilot.app.screen.query("TextArea, Input"):
        if isinstance(widget, TextArea | Input):
            widget.cursor_blink = False
    await settle(pilot)


async def wait_for_tokens(pilot) -> None:  # type: ignore[no-untyped-def]
    status = pilot.app.screen.query_one("#policy-status")
    await until(pilot, lambda: "tokens (prompt prefix" in shown(status), "the token count")
    await steady(pilot)


def test_workbench(snap_compare, make_app, snap_policy) -> None:
    app = make_app(model="synth:tiny-o200k", policy=str(snap_policy))
    assert snap_compare(app, terminal_size=SIZE, run_before=wait_for_tokens)


def test_help(snap_compare, make_app, snap_policy) -> None:
    app = make_app(model="synth:tiny-o200k", policy=str(snap_policy))

    async def open_help(pilot) -> None:  # type: ignore[no-untyped-def]
        await wait_for_tokens(pilot)
        await pilot.press("f1")
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_help)


def test_results(snap_compare, make_app, db_path) -> None:
    store = Store(db_path)
    rows = [
        ("you are an idiot", "violation", "1", 0.97),
        ("have a nice day", "no_violation", "0", 0.02),
        ("maybe", "undetermined", None, None),
    ]
    for i, (text, verdict, final, p) in enumerate(rows):
        store.put(
            {
                "key": f"k{i}",
                "created_at": f"2025-01-0{i + 1}T10:00:00.000+00:00",
                "text": text,
                "verdict": verdict,
                "final": final,
                "policy_name": "toxic_simple",
                "model_ref": "gpt-oss-safeguard-20b:mxfp4",
                "finish_reason": "return",
                "metadata": {"p_violation": p} if p is not None else {},
                "reasoning": f"Reasoning about: {text}",
            }
        )
    app = make_app(model="synth:tiny-o200k", start="results")
    assert snap_compare(app, terminal_size=SIZE, run_before=steady)


def test_runs(snap_compare, make_app) -> None:
    app = make_app(model="synth:tiny-o200k", start="runs")
    assert snap_compare(app, terminal_size=SIZE, run_before=steady)


def test_study(snap_compare, make_app, db_path, tiny_o200k_model) -> None:
    from edge_guard.registry.manage import add_local
    from edge_guard.study import StudyConfig, run_study
    from edge_guard.tui.jobs import CancelFlag, ModelAccess, RunOptions
    from tests.tui.conftest import factory

    # registered ids (not tmp paths) so the snapshot shows the same model names every run
    safeguard, base = "snap-safeguard:test", "snap-base:test"
    add_local(tiny_o200k_model, safeguard)
    add_local(tiny_o200k_model, base)
    store, access, clfs = Store(db_path), ModelAccess(factory), {}

    def make(model: str):  # type: ignore[no-untyped-def]
        clfs[model] = access.classifier(
            "is_good", RunOptions(model=model), store=store, flag=CancelFlag()
        )
        return clfs[model]

    def steer(model, item, _r):  # type: ignore[no-untyped-def]
        answer = "3" if model == safeguard else str(1 + len(item.text) % 5)
        return steer_to(answer, f"{model} rates {answer}")(clfs[model], [item.text])[0]

    run_study(
        StudyConfig(models=[safeguard, base], limit=6),
        name="snapshot-study",
        store=store,
        classifier_factory=make,
        steer=steer,
    )
    app = make_app(model="synth:tiny-o200k", start="study")

    async def loaded(pilot) -> None:  # type: ignore[no-untyped-def]
        table = pilot.app.screen.query_one("#st-divergent")
        await until(pilot, lambda: table.row_count, "the divergent items")
        table.focus()
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=loaded)
