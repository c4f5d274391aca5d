"""The Workbench's one-text job (a thread worker) and the messages it posts to the screen:
`Delta` (streamed reasoning/answer text, or "status" while waiting for the model),
`Finished` (the result) and `Failed` (an error line, or None when cancelled)."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from edge_guard.tui.jobs import CancelFlag, Cancelled, RunOptions, error_text


class Delta(Message):
    def __init__(self, channel: str | None, text: str) -> None:
        super().__init__()
        self.channel, self.text = channel, text


class Finished(Message):
    def __init__(self, result: Any, model: str) -> None:
        super().__init__()
        self.result, self.model = result, model


class Failed(Message):
    def __init__(self, error: str | None) -> None:
        super().__init__()
        self.error = error  # None = cancelled


def classify_job(
    screen: Any, policy: Any, text: Any, options: RunOptions, use_cache: bool, flag: CancelFlag
) -> None:
    """Classify `text` under `policy` (in a worker thread), posting to `screen` as it goes."""
    from edge_guard.harmony.parse import ContentDelta

    access = screen.eg.models
    try:
        access.acquire(flag, on_wait=lambda: screen.post_message(Delta("status", "waiting")))
    except Cancelled:
        screen.post_message(Failed(None))
        return
    try:
        clf = access.classifier(
            policy, options, store=screen.eg.store, flag=flag, use_cache=use_cache, warm=True
        )

        def on_event(_i: int, event: Any) -> None:
            if isinstance(event, ContentDelta):
                screen.post_message(Delta(event.channel, event.text))

        result = None
        procs = access.processors(clf, [text])
        for _i, res in clf.iter([text], logits_processors=procs, on_event=on_event):
            result = res
        screen.post_message(Finished(result, clf.backend.model_ref))
    except Cancelled:
        screen.post_message(Failed(None))
    except Exception as exc:
        screen.post_message(Failed(error_text(exc)))
    finally:
        access.release()
