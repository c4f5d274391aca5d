"""The policy loop end to end (issue 30's "done when") on the tiny synthetic model: a run of
30 items, 10 reviewed through the CLI and 5 through the TUI (Pilot), 8 promoted to cases
(5 by `policies cases add --item`, 3 from the Review screen), `policies test` judges them,
and `eval --gold review` prints model–reviewer agreement."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select, Static

from edge_guard.store import Store
from tests.test_review import cli, model_run, steer_cli, write_policy  # noqa: F401 - fixture
from tests.tui.conftest import SIZE, shown

pytestmark = pytest.mark.anyio

ROWS = [{"id": f"m{i}", "text": f"message number {i}", "label": int(i % 3 == 0)} for i in range(30)]
# the model: right on most items, wrong on every 4th (so the review has something to find)
MODEL = {r["text"]: str(r["label"] if i % 4 else 1 - r["label"]) for i, r in enumerate(ROWS)}
MODEL |= {"you are an idiot": "1", "thank you kindly": "0"}


def reviewer(idx: int) -> str:
    """The reviewer's call on item idx: the dataset's label, except item 8 (a bad label)."""
    gold = ROWS[idx]["label"]
    return "violation" if (gold if idx != 8 else 1 - gold) else "no_violation"


async def test_the_policy_loop_on_a_synthetic_model(
    make_app,
    db_path: Path,
    tmp_path: Path,
    tiny_o200k_model: Path,
    steer_cli: Callable[[Callable[[str], str]], None],  # noqa: F811 - the imported fixture
) -> None:
    folder = write_policy(tmp_path / "rude")
    model_run(db_path, tiny_o200k_model, folder, ROWS, "r30", lambda t: MODEL[t])
    db = ["--db", str(db_path)]
    # 10 through the CLI: the top of the triage queue (9 decided, 1 skip)
    queue = json.loads(cli("review", "r30", *db, "--limit", "10", "--json").stdout)
    assert queue["n_queue"] == 30 and (queue["reviewed"], queue["remaining"]) == (0, 30)
    cli_items = [i["item"] for i in queue["items"]]
    assert queue["items"][0]["reasons"] == ["disagree"]
    for n, idx in enumerate(cli_items):
        label = "skip" if n == 9 else reviewer(idx)
        res = cli("review", "label", "r30", str(idx), label, *db, "--note", f"cli {n}")
        assert res.exit_code == 0, res.output
    # 5 through the TUI: the first five items without a decision, in run order
    tui_items = [i for i in range(30) if i not in cli_items][:5]
    app = make_app(final=lambda t: MODEL[t], start="review")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert screen.query_one("#rv-run", Select).value == "r30"
        screen.query_one("#rv-queue", Select).value = "all"
        await pilot.pause()
        assert "reviewed 10 / remaining 20" in shown(screen.query_one("#rv-counter", Static))
        assert screen.query_one("#rv-policy", Input).value == "rude"
        screen.query_one("#rv-policy", Input).value = str(folder)
        table = screen.query_one("#rv-items", DataTable)
        table.focus()
        for idx in tui_items:
            while table.cursor_row < idx:
                await pilot.press("down")
            await pilot.press({"violation": "1", "no_violation": "0"}[reviewer(idx)])
        assert "reviewed 15 / remaining 15" in shown(screen.query_one("#rv-counter", Static))
        for idx in reversed(tui_items[:3]):  # promote three from the screen (moving up)
            while table.cursor_row > idx:
                await pilot.press("up")
            await pilot.press("p")
        await pilot.pause()
    # 5 more promoted from the CLI: the first five decided CLI items
    decided = [idx for n, idx in enumerate(cli_items) if n != 9][:5]
    res = cli(
        "policies",
        "cases",
        "add",
        str(folder),
        "--from-review",
        "r30",
        *db,
        *[a for idx in decided for a in ("--item", str(idx))],
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("added 5 case(s)")
    cases = [json.loads(x) for x in (folder / "cases.jsonl").read_text().splitlines()]
    promoted = [c for c in cases if "review" in c.get("tags", [])]
    assert len(cases) == 10 and len(promoted) == 8
    assert {c["provenance"]["item"] for c in promoted} == {*tui_items[:3], *decided}
    # `policies test` judges them like any case
    steer_cli(lambda t: MODEL[t])
    test = cli(
        "policies",
        "test",
        str(folder),
        "--model",
        str(tiny_o200k_model),
        "--max-tokens",
        "64",
        *db,
        "--json",
    )
    report = json.loads(test.stdout)
    assert report["total"] == 10
    judged = {c["text"]: c for c in report["cases"]}
    for c in promoted:
        got = judged[c["text"]]
        assert got["outcome"] == ("pass" if MODEL[c["text"]] == c["expected"] else "fail")
        assert "review" in got["tags"]
    assert report["failed"] == sum(MODEL[c["text"]] != c["expected"] for c in promoted)
    assert report["failed"] > 0  # the review found mistakes the cases now hold
    # eval --gold review: scored against the 14 decisions, with agreement beside model-gold
    rows = {r["idx"]: r for r in Store(db_path).run_results("r30")}
    reviewed = [idx for n, idx in enumerate(cli_items) if n != 9] + tui_items
    same = sum(rows[i]["verdict"] == reviewer(i) for i in reviewed)
    out = cli("eval", "r30", *db, "--gold", "review")
    assert out.exit_code == 0, out.output
    assert "gold (review decisions): 14 labelled" in out.stdout
    assert f"model vs reviewer          n=14    agreement {same / 14:.3f} [" in out.stdout
    assert "model vs dataset gold      n=30" in out.stdout
    assert "reviewer vs dataset gold   n=14    agreement 0.929 [" in out.stdout  # item 8 differs
