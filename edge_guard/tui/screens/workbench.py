"""The Workbench: edit a policy, classify one text with live reasoning, see the policy's history."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Select, TextArea

from edge_guard.tui.format import score_text
from edge_guard.tui.jobs import CancelFlag, RunOptions, error_text
from edge_guard.tui.policy_io import opening_policy
from edge_guard.tui.screens.base import EdgeScreen
from edge_guard.tui.screens.workbench_controls import compose_controls, copy_text, read_options
from edge_guard.tui.widgets.classify_job import Delta, Failed, Finished, classify_job
from edge_guard.tui.widgets.conversation import ConversationInput
from edge_guard.tui.widgets.history import PolicyHistory, row_summary
from edge_guard.tui.widgets.policy_editor import PolicyEditor
from edge_guard.tui.widgets.set_results import (
    SetFinished,
    SetResults,
    headline,
    parse_choice,
    set_job,
)
from edge_guard.tui.widgets.verdict import VerdictPanel


class WorkbenchScreen(EdgeScreen):
    MODE = "workbench"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("ctrl+f", "rerun", "Fresh re-run", priority=True),
        Binding("escape", "cancel", "Cancel", show=False),
        Binding("ctrl+o", "copy", "Copy result", priority=True),
        Binding("ctrl+s", "save_as", "Save policy as…", priority=True),
        Binding("ctrl+t", "test_policy", "Test policy", priority=True),
        Binding("ctrl+k", "conversation_mode", "Conversation", show=False, priority=True),
        Binding("ctrl+n", "add_turn", "Add turn", show=False, priority=True),
    ]
    PALETTE: ClassVar[list[tuple[str, str, str]]] = [
        ("Run classification", "classify the text (cached results answer instantly)", "run"),
        ("Re-run without cache", "generate again and overwrite the stored result", "rerun"),
        ("Cancel", "stop the running generation", "cancel"),
        ("Copy result", "verdict, answer and reasoning to the clipboard", "copy"),
        ("Save policy as new version", "write the edited policy to a new folder", "save_as"),
        (
            "Test this policy",
            "run its golden cases (with your edits) on the Tests screen",
            "test_policy",
        ),
        (
            "Conversation mode",
            "classify a message in its conversation: turns with roles "
            "(Ctrl+K on/off, Ctrl+N adds the text box as a turn)",
            "conversation_mode",
        ),
        ("Reload policy from disk", "drop your edits", "revert"),
        ("Refresh history", "reload this policy's stored results", "refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.flag: CancelFlag | None = None
        self.last: dict[str, Any] | None = None  # what Copy copies
        self.result: Any = None  # the classification on display (a MultiResult for a set)

    def compose_body(self) -> ComposeResult:
        spec = self.eg.settings  # the controls start from the TUI's settings
        with Horizontal(id="wb-main"):
            yield PolicyEditor(
                opening_policy(self.eg.store, self.eg.initial_policy), id="wb-policy"
            )
            with Vertical(id="wb-right"):
                yield TextArea(
                    "",
                    id="wb-text",
                    soft_wrap=True,
                    placeholder="Type the text to classify, then press Ctrl+R",
                )
                yield ConversationInput(id="wb-conv")
                yield from compose_controls(spec, self.eg.model_ref)
                with Horizontal(id="wb-buttons"):
                    yield Button("Run ^R", variant="primary", id="wb-run", compact=True)
                    yield Button("Re-run ^F", id="wb-rerun", compact=True)
                    yield Button(
                        "Cancel Esc", variant="error", id="wb-cancel", disabled=True, compact=True
                    )
                    yield Button("Copy ^O", id="wb-copy", compact=True)
                    yield Button("Save as ^S", id="wb-save", compact=True)
                yield VerdictPanel(id="wb-verdict")
                yield SetResults(id="wb-set-results")
                yield TextArea(
                    "",
                    id="wb-reasoning",
                    read_only=True,
                    soft_wrap=True,
                    placeholder="The model's reasoning streams here.",
                )
        yield PolicyHistory(id="wb-history")

    def on_mount(self) -> None:
        self.query_one("#wb-reasoning").border_title = "Reasoning"
        self.query_one("#wb-text").border_title = "Text"
        self.query_one("#wb-text", TextArea).focus()
        self._hint_model()

    def _hint_model(self) -> None:
        from edge_guard.tui.jobs import model_missing_hint

        if not self.running and self.last is None:
            ref = self.query_one("#wb-model", Input).value.strip()
            self.query_one(VerdictPanel).show_idle(model_missing_hint(ref))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "wb-model":
            self._hint_model()

    # -- running ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.flag is not None

    def _options(self) -> RunOptions | None:
        """The controls' choices, checked now by the one resolution (`jobs.tui_settings`):
        a bad value is a notification naming its control, and nothing runs."""
        from edge_guard.tui.jobs import tui_settings

        typed = read_options(self)
        self.eg.set_model(typed.model or "")
        options = replace(typed, model=typed.model or self.eg.model_ref)
        try:
            tui_settings(options, self.eg.settings)
        except Exception as exc:
            self.notify(error_text(exc), severity="error")
            return None
        return options

    def action_run(self, use_cache: bool = True) -> None:
        if self.running:
            self.notify("already running — Esc cancels", severity="warning")
            return
        text: Any = self.query_one("#wb-text", TextArea).text
        conv = self.query_one(ConversationInput)
        if conv.active and (conv.turns or text.strip()):
            try:
                text = conv.item(text)  # a Conversation (its last turn may be the text box)
            except Exception as exc:
                self.notify(error_text(exc), severity="error")
                return
        elif not text.strip():
            self.notify("type a text to classify first", severity="warning")
            self.query_one("#wb-text", TextArea).focus()
            return
        editor = self.query_one(PolicyEditor)
        if not editor.text.strip():
            self.notify("the policy text is empty", severity="warning")
            return
        options = self._options()
        if options is None:
            return
        self.flag = self.eg.models.new_flag()
        self._set_running(True)
        self.query_one("#wb-reasoning", TextArea).load_text("")
        self.query_one(VerdictPanel).show_running("starting")
        self.query_one(SetResults).hide()
        choice, flag = parse_choice(self.query_one("#wb-set", Select).value), self.flag
        if choice is not None:  # a policy set: one row per policy
            job = lambda: set_job(self, choice, text, options, use_cache, flag, Failed)  # noqa: E731
        else:
            policy = editor.current()
            job = lambda: classify_job(self, policy, text, options, use_cache, flag)  # noqa: E731
        self.run_worker(job, thread=True, group="classify")

    def action_rerun(self) -> None:
        self.action_run(use_cache=False)

    def action_conversation_mode(self) -> None:
        on = self.query_one(ConversationInput).toggle()
        self.query_one("#wb-text").border_title = "Next turn" if on else "Text"

    def action_add_turn(self) -> None:
        conv, area = self.query_one(ConversationInput), self.query_one("#wb-text", TextArea)
        if not conv.active:
            conv.toggle()
        error = conv.add_turn(area.text)
        if error:
            self.notify(error, severity="warning")
        else:
            area.load_text("")

    def action_cancel(self) -> None:
        if self.flag is not None:
            self.flag.set()
            self.query_one(VerdictPanel).show_running("cancelling")

    def _set_running(self, running: bool) -> None:
        self.query_one("#wb-run", Button).disabled = running
        self.query_one("#wb-rerun", Button).disabled = running
        self.query_one("#wb-cancel", Button).disabled = not running

    def on_delta(self, message: Delta) -> None:
        if message.channel == "status":
            self.query_one(VerdictPanel).show_running("waiting for the model (another job)")
        elif message.channel == "final":
            self.query_one(VerdictPanel).add_answer(message.text)
        else:
            area = self.query_one("#wb-reasoning", TextArea)
            area.insert(message.text, area.document.end)
            area.scroll_end(animate=False)

    def on_finished(self, message: Finished) -> None:
        self.flag = None
        self._set_running(False)
        result = self.result = message.result
        self.query_one(VerdictPanel).show_result(result)
        resp = result.model_response
        area = self.query_one("#wb-reasoning", TextArea)
        if not area.text and resp is not None and resp.reasoning:
            area.load_text(resp.reasoning)
        self.last = {
            "verdict": str(result.verdict),
            "score": score_text(result.metadata or {}, result.float_label),
            "policy": result.policy,
            "model": message.model,
            "text": result.text,
            "answer": resp.response if resp else None,
            "reasoning": resp.reasoning if resp else "",
        }
        self.refresh_data()

    def on_set_finished(self, message: SetFinished) -> None:
        self.flag = None
        self._set_running(False)
        self.result = message.multi
        self.query_one(SetResults).show(message.multi, message.set_name, message.mode)
        self.on_set_results_picked(SetResults.Picked(headline(message.multi)))

    def on_set_results_picked(self, message: SetResults.Picked) -> None:
        res, resp = message.result, message.result.model_response
        self.query_one(VerdictPanel).show_result(res)
        self.query_one("#wb-reasoning", TextArea).load_text(resp.reasoning if resp else "")
        self.last = {
            "verdict": str(res.verdict),
            "policy": res.policy,
            "text": res.text,
            "score": score_text(res.metadata or {}, res.float_label),
            "model": "",
            "answer": resp.response if resp else None,
            "reasoning": resp.reasoning if resp else "",
        }

    def on_failed(self, message: Failed) -> None:
        self.flag = None
        self._set_running(False)
        panel = self.query_one(VerdictPanel)
        if message.error is None:
            panel.show_cancelled()
            self.notify("cancelled", timeout=2)
        else:
            panel.show_error(message.error)
            self.notify(message.error, severity="error", title="classification failed")

    # -- buttons ------------------------------------------------------------------------------
    async def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {
            "wb-run": "run",
            "wb-rerun": "rerun",
            "wb-cancel": "cancel",
            "wb-copy": "copy",
            "wb-save": "save_as",
        }
        if event.button.id in actions:
            await self.run_action(actions[event.button.id])

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "wb-style" and isinstance(event.value, str):
            self.query_one(PolicyEditor).set_style(event.value)

    def action_copy(self) -> None:
        if self.last is None:
            self.notify("nothing to copy yet — run a classification first", severity="warning")
            return
        self.app.copy_to_clipboard(copy_text(self.last))
        self.notify("result copied to the clipboard", timeout=2)

    def action_test_policy(self) -> None:
        editor = self.query_one(PolicyEditor)
        policy = editor.current()
        if policy.cases_path is None:
            self.notify(
                f"policy {policy.name} has no golden cases (cases.jsonl in its folder)",
                severity="warning",
            )
            return
        model = self.query_one("#wb-model", Input).value.strip()
        self.eg.set_model(model)
        self.eg.open_tests(policy)

    def action_revert(self) -> None:
        self.query_one(PolicyEditor).revert()

    def action_save_as(self) -> None:
        from edge_guard.tui.policy_io import next_free_name
        from edge_guard.tui.screens.dialogs import SavePolicyScreen

        editor = self.query_one(PolicyEditor)
        base = editor.policy.name if editor.policy is not None else "policy"
        self.app.push_screen(SavePolicyScreen(next_free_name(base), base), self._save)

    def _save(self, answer: tuple[str, str] | None) -> None:
        if answer is None:
            return
        from edge_guard.tui.policy_io import save_policy_as

        editor = self.query_one(PolicyEditor)
        try:
            dest = save_policy_as(editor.current(), editor.text, answer[0], answer[1])
        except Exception as exc:
            self.notify(error_text(exc), severity="error", title="not saved")
            return
        self.notify(f"saved as {answer[0]} ({dest})", title="policy saved")
        editor.reload_choices(select=str(dest))

    def on_screen_resume(self) -> None:
        self.sync_model_input("#wb-model")
        pending, self.eg.pending_workbench = self.eg.pending_workbench, None
        if pending is not None:
            policy, text = pending
            if policy:
                self.query_one(PolicyEditor).reload_choices(select=policy)
            self.query_one("#wb-text", TextArea).load_text(text)
        self.refresh_data()

    # -- history ------------------------------------------------------------------------------
    def on_policy_editor_loaded(self, event: PolicyEditor.Loaded) -> None:
        self._match_input(event.policy)
        self.refresh_data()

    def _match_input(self, policy: Any) -> None:
        """Conversation mode for a policy that judges conversations or model responses;
        back to plain text for one that judges a text (unless turns were entered)."""
        judges = getattr(policy, "judges", "any")
        wants, conv = judges in ("assistant", "conversation"), self.query_one(ConversationInput)
        if wants != conv.active and (wants or not conv.turns):
            self.action_conversation_mode()
            if wants:
                self.notify(
                    f"{policy.name} judges {'model responses' if judges == 'assistant' else 'conversations'}: "
                    "conversation mode (Ctrl+N adds the text box as a turn)",
                    timeout=4,
                )

    def refresh_data(self) -> None:
        editor = self.query_one(PolicyEditor)
        name = editor.policy.name if editor.policy is not None else None
        current = editor.current().hash if editor.policy is not None else None
        self.query_one(PolicyHistory).show(self.eg.store, name, current)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "wb-history" or self.running:
            return
        row = self.eg.store.get(str(event.row_key.value))
        if row is None:
            return
        self.query_one(VerdictPanel).show_row(row)
        self.query_one("#wb-reasoning", TextArea).load_text(row.get("reasoning") or "")
        self.query_one("#wb-text", TextArea).load_text(row.get("text") or "")
        self.last = row_summary(row)
