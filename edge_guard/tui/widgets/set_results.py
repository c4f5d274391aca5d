"""The Workbench's policy-set view: which set to run, and one row per policy of the result.

`set_choices()` lists "this policy" and every policy set in separate and combined mode
for the Workbench's set selector (value "" = the edited policy, else "SET|MODE").
`SetResults` is a table with a row per policy (verdict, score, answer); selecting a row
posts `SetResults.Picked` with that policy's result (the Workbench shows its reasoning).
"""

from __future__ import annotations

from typing import Any

from textual.message import Message
from textual.widgets import DataTable

from edge_guard.tui.format import cell, line, score_short, verdict_cell

THIS_POLICY = ""


def set_choices() -> list[tuple[str, str]]:
    """(label, value) for the selector: the edited policy, then each set in both modes."""
    from edge_guard.policy.sets import list_sets

    out = [("this policy", THIS_POLICY)]
    for path in list_sets():
        out += [
            (f"set {path.stem}", f"{path.stem}|separate"),
            (f"set {path.stem} (combined)", f"{path.stem}|combined"),
        ]
    return out


def parse_choice(value: Any) -> tuple[str, str] | None:
    """(set name, mode) for a selector value, None for the edited policy."""
    if not isinstance(value, str) or "|" not in value:
        return None
    name, mode = value.split("|", 1)
    return name, mode


def run_set(access: Any, clf: Any, set_name: str, mode: str, text: str) -> Any:
    """Classify `text` against the set (in a worker thread): its `MultiResult`."""
    from edge_guard.policy.sets import load_set
    from edge_guard.runs.multi import classify_set

    pset = load_set(set_name)
    procs = access.processors(clf, [text])
    steer = None if procs is None else (lambda t: procs if callable(procs) else procs[t])
    return classify_set(clf, pset, [text], mode=mode, steer=steer)[0]


class SetResults(DataTable):
    """One row per policy of a set's result on one text."""

    class Picked(Message):
        def __init__(self, result: Any) -> None:
            super().__init__()
            self.result = result

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.results: dict[str, Any] = {}

    def on_mount(self) -> None:
        self.add_columns("policy", "verdict", "score", "answer")
        self.display = False

    def show(self, multi: Any, set_name: str, mode: str) -> None:
        from edge_guard.policy.thresholds import flag_label

        self.clear()
        self.results = dict(multi.results)
        for name, res in self.results.items():
            resp = res.model_response
            self.add_row(
                cell(name, 24),
                verdict_cell(str(res.verdict)),
                cell(score_short(res.metadata or {}, res.float_label)),
                cell(resp.response if resp else None, 30),
                key=name,
            )
        self.border_title = line(
            f"set {set_name} ({mode}): {flag_label(multi.flagged)} · select a row for its reasoning"
        )
        self.display = True

    def hide(self) -> None:
        self.clear()
        self.results = {}
        self.display = False

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        res = self.results.get(str(event.row_key.value))
        if res is not None:
            self.post_message(self.Picked(res))


class SetFinished(Message):
    def __init__(self, multi: Any, set_name: str, mode: str, model: str) -> None:
        super().__init__()
        self.multi, self.set_name, self.mode, self.model = multi, set_name, mode, model


def set_job(
    screen: Any,
    choice: tuple[str, str],
    text: str,
    options: Any,
    use_cache: bool,
    flag: Any,
    failed: Any,
) -> None:
    """The Workbench's worker for a set: posts `SetFinished`, or `failed(error | None)`."""
    from edge_guard.policy.sets import load_set
    from edge_guard.tui.jobs import Cancelled, error_text

    access = screen.eg.models
    try:
        access.acquire(flag)
    except Cancelled:
        screen.post_message(failed(None))
        return
    try:
        pset = load_set(choice[0])
        clf = access.classifier(
            pset.policies,
            options,
            store=screen.eg.store,
            flag=flag,
            use_cache=use_cache,
            warm=True,
        )
        multi = run_set(access, clf, choice[0], choice[1], text)
        screen.post_message(SetFinished(multi, pset.name, choice[1], clf.backend.model_ref))
    except Cancelled:
        screen.post_message(failed(None))
    except Exception as exc:
        screen.post_message(failed(error_text(exc)))
    finally:
        access.release()


def headline(multi: Any) -> Any:
    """The result the verdict panel shows for a set: the first violation, else the first
    undetermined, else the first policy's."""
    rs = list(multi.results.values())
    for want in ("violation", "undetermined"):
        hit = next((r for r in rs if str(r.verdict) == want), None)
        if hit is not None:
            return hit
    return rs[0]


def render_multi_evaluation(ev: dict[str, Any]) -> Any:
    """A multi-policy run's evaluation (Runs screen): the policy x metric table."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from edge_guard.runs.multi_eval import policy_table

    header, rows = policy_table(ev)
    table = Table(*header, box=None, pad_edge=False)
    for r in rows:
        table.add_row(*(Text(c) for c in r))
    head = Text.assemble(
        line(ev.get("run"), "bold"),
        line(f"  [{ev.get('status')}]"),
        "\n",
        line(
            f"{len(ev['policies'])} policies ({ev['mode']} mode) · "
            f"{ev['n_done']}/{ev['n_items']} pairs over {ev['n_texts']} texts"
        ),
    )
    note = Text(
        "undetermined excluded; [lo, hi] = 95% bootstrap; macro = mean over policies "
        "with gold; any_violation = flagged if any policy is violated",
        style="dim",
    )
    return Group(head, Text(""), table, Text(""), note)


def runs_of_policy_sql(policy: str | None) -> tuple[str, list[Any]]:
    """A WHERE clause (and its parameters) keeping the runs that classified `policy`: its
    own runs, and multi-policy runs holding it (any run when `policy` is None)."""
    if not policy:
        return "", []
    return (
        " WHERE r.policy = ? OR EXISTS (SELECT 1 FROM run_items ri JOIN results x "
        "ON x.key = ri.key WHERE ri.run = r.name AND x.policy_name = ?)"
    ), [policy, policy]
