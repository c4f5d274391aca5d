"""Models: installed and available builds; pull with progress, header info and memory fit."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, ProgressBar, Static

from edge_guard.tui.format import cell, line, plain
from edge_guard.tui.jobs import error_text
from edge_guard.tui.screens.base import EdgeScreen

SYNTH = ("synth:tiny-o200k", "random weights, real gpt-oss vocabulary: try the app offline")


def _size(n: int | None) -> str:
    from edge_guard.registry.store import fmt_size

    return fmt_size(n) if n else "?"


def model_rows(current: str | None = None) -> list[dict[str, Any]]:
    """Registry rows (manifests, pulled, registered), the synthetic preset, and the model in
    use when it is a plain .gguf path."""
    from edge_guard.registry import lookup
    from edge_guard.registry.manage import list_models

    rows = list_models()
    synth = lookup(SYNTH[0])
    known = {r["id"] for r in rows} | {SYNTH[0]}
    if current and current not in known and Path(current).is_file():
        rows.append(
            {
                "id": current,
                "kind": "path",
                "quant": None,
                "installed": True,
                "size": Path(current).stat().st_size,
                "path": current,
                "trust": "file",
                "default": False,
            }
        )
    rows.append(
        {
            "id": SYNTH[0],
            "kind": "synth",
            "quant": "f32",
            "installed": True,
            "size": synth.path.stat().st_size if synth.path else None,
            "path": str(synth.path) if synth.path else None,
            "trust": "local",
            "default": False,
            "note": SYNTH[1],
        }
    )
    return rows


class InfoReady(Message):
    def __init__(self, model_id: str, renderable: Any) -> None:
        super().__init__()
        self.model_id, self.renderable = model_id, renderable


class PullEvent(Message):
    def __init__(self, text: str, done: bool = False, error: bool = False) -> None:
        super().__init__()
        self.text, self.done, self.error = text, done, error


def info_renderable(row: dict[str, Any]) -> Any:
    """Header summary and memory fit of an installed model (reads the GGUF header only)."""
    from edge_guard.registry import fit_report, model_info

    path = row.get("path")
    head = Text.assemble(
        line(row["id"], "bold"), line(f"  {row.get('kind')} · {row.get('trust', '')}")
    )
    if not path or not Path(path).is_file():
        hint = (
            "a tiny random model is built on first use"
            if row["kind"] == "synth"
            else f"not downloaded: Ctrl+R pulls it ({_size(row.get('size'))})"
        )
        return Group(head, Text(hint, style="yellow"))
    info = model_info(path)
    fit = fit_report(path)
    t = Table.grid(padding=(0, 2))
    t.add_column(style="cyan")
    t.add_column()
    for k, v in (
        ("file", path),
        ("size", _size(info.get("file_size"))),
        ("architecture", info.get("architecture")),
        ("file type", info.get("file_type")),
        ("parameters", f"{(info.get('parameters') or 0) / 1e9:.2f} B"),
        ("layers / experts", f"{info.get('block_count')} / {info.get('expert_count')}"),
        ("context (trained)", info.get("context_length")),
        ("check", info.get("check")),
    ):
        t.add_row(k, plain(v))
    fits = fit.get("fits")
    verdict = Text("fits" if fits else "does not fit", style="bold green" if fits else "bold red")
    f = Table.grid(padding=(0, 2))
    f.add_column(style="cyan")
    f.add_column()
    f.add_row("memory fit", verdict)
    f.add_row("at n_ctx", str(fit.get("n_ctx")))
    f.add_row(
        "RAM needed / free", f"{_size(fit.get('ram_needed'))} / {_size(fit.get('ram_available'))}"
    )
    if fit.get("gpus"):
        f.add_row(
            "VRAM needed / free", f"{_size(fit.get('vram_needed'))} / {_size(fit.get('vram_free'))}"
        )
        f.add_row("GPU layers", f"{fit.get('n_gpu_layers')} ({fit.get('offload')})")
    f.add_row("largest context", str(fit.get("max_ctx")))
    parts: list[Any] = [head, Text(""), t, Text(""), f]
    if fit.get("reason"):
        parts.append(plain(fit["reason"], style="yellow"))
    return Group(*parts)


class ModelsScreen(EdgeScreen):
    MODE = "models"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "pull", "Pull", priority=True),
        Binding("ctrl+u", "use", "Use this model"),
    ]
    PALETTE: ClassVar[list[tuple[str, str, str]]] = [
        ("Pull selected model", "download and verify it (resumes a partial download)", "pull"),
        ("Use selected model", "make it the model of the Workbench, Runs and Study", "use"),
        ("Refresh models", "re-read the registry", "refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, Any]] = {}
        self.pulling: str | None = None
        self._partial: tuple[Path, int] | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="md-main"):
            with Vertical(id="md-left"):
                yield DataTable(id="md-table", cursor_type="row", zebra_stripes=True)
                with Horizontal(id="md-pull-row"):
                    yield ProgressBar(total=1, id="md-progress", show_eta=False)
                    yield Static("", id="md-pull-status")
            with VerticalScroll(id="md-info-box"):
                yield Static(
                    Text(
                        "Select a model to see its header and whether it fits this machine.",
                        style="dim",
                    ),
                    id="md-info",
                )

    def on_mount(self) -> None:
        table = self.query_one("#md-table", DataTable)
        table.add_columns("", "model", "kind", "installed", "size", "trust")
        self.query_one("#md-info-box").border_title = "Info & fit"
        self.set_interval(0.5, self._poll_partial)
        table.focus()

    def refresh_data(self) -> None:
        try:
            rows = model_rows(self.eg.model_ref)
        except Exception as exc:
            self.notify(error_text(exc), severity="error", title="models")
            return
        table = self.query_one("#md-table", DataTable)
        keep = self._selected()
        table.clear()
        self.rows = {r["id"]: r for r in rows}
        for r in rows:
            mark = "▶" if r["id"] == self.eg.model_ref else ("★" if r.get("default") else "")
            if r.get("kind") == "synth" and not r.get("path"):
                installed = Text("on use", style="dim")
            elif r.get("installed"):
                installed = Text("✓", style="green")
            else:
                installed = Text("—", style="dim")
            table.add_row(
                mark,
                cell(r["id"], 40),
                cell(r.get("kind")),
                installed,
                cell(_size(r.get("size"))),
                cell(r.get("trust")),
                key=r["id"],
            )
        ids = [r["id"] for r in rows]
        if keep is not None and keep["id"] in ids:
            table.move_cursor(row=ids.index(keep["id"]))
        n_inst = sum(bool(r.get("installed")) for r in rows)
        table.border_title = f"Models · {n_inst} installed · ▶ in use · ★ default"

    def _selected(self) -> dict[str, Any] | None:
        table = self.query_one("#md-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.rows.get(str(key))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "md-table" and event.row_key.value is not None:
            row = self.rows.get(str(event.row_key.value))
            if row is not None:
                self._info(row)

    @work(thread=True, exclusive=True, group="model-info")
    def _info(self, row: dict[str, Any]) -> None:
        try:
            body = info_renderable(row)
        except Exception as exc:
            body = plain(error_text(exc), style="red")
        self.post_message(InfoReady(row["id"], body))

    def on_info_ready(self, message: InfoReady) -> None:
        self.query_one("#md-info", Static).update(message.renderable)

    def action_use(self) -> None:
        row = self._selected()
        if row is None:
            return
        self.eg.set_model(row["id"])
        self.notify(f"using {row['id']} in the Workbench, Runs and Study", timeout=3)
        self.refresh_data()

    # -- pulling ----------------------------------------------------------------------------------
    def action_pull(self) -> None:
        row = self._selected()
        if row is None:
            return
        if self.pulling is not None:
            self.notify(f"already pulling {self.pulling}", severity="warning")
            return
        if row.get("kind") in ("synth", "local") or row.get("installed"):
            self.notify(f"{row['id']} is already on this machine", timeout=3)
            return
        self.pulling = row["id"]
        try:
            from edge_guard.registry import lookup
            from edge_guard.registry.store import download_path

            target = lookup(row["id"])
            dest = download_path(target.source) if target.source else None
            total = int(row.get("size") or (target.source.size if target.source else 0) or 0)
            self._partial = (dest.with_name(dest.name + ".partial"), total) if dest else None
        except Exception:
            self._partial = None
        self.query_one("#md-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#md-pull-status", Static).update(line(f"pulling {row['id']}…"))
        self._pull(row["id"])

    def _pull(self, model_id: str) -> None:
        """Download in a daemon thread: quitting never waits for a 12 GB transfer (the
        partial file stays, and the next pull resumes it)."""
        threading.Thread(
            target=self._pull_blocking, args=(model_id,), daemon=True, name=f"pull {model_id}"
        ).start()

    def _pull_blocking(self, model_id: str) -> None:
        from edge_guard.registry import pull

        try:
            result = pull(
                model_id, echo=lambda msg: self.post_message(PullEvent(msg)), progress=False
            )
            self.post_message(PullEvent(f"pulled {model_id}: {result.path}", done=True))
        except Exception as exc:
            self.post_message(PullEvent(error_text(exc), done=True, error=True))

    def _poll_partial(self) -> None:
        if self.pulling is None or self._partial is None:
            return
        path, total = self._partial
        try:
            have = path.stat().st_size
        except OSError:
            return
        bar = self.query_one("#md-progress", ProgressBar)
        bar.update(total=total or None, progress=have)

    def on_pull_event(self, message: PullEvent) -> None:
        status = self.query_one("#md-pull-status", Static)
        status.update(cell(message.text, 90))
        if message.done:
            self.pulling = None
            if message.error:
                self.notify(message.text, severity="error", title="pull failed")
            else:
                self.notify(message.text, title="model pulled")
                bar = self.query_one("#md-progress", ProgressBar)
                bar.update(total=1, progress=1)
            self.refresh_data()
