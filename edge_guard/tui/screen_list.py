"""The TUI's screens in one list: (mode, title, F-key), in display order (F1 is help).

Textual-free, so the CLI's `tui --screen` choice reads it without importing Textual; the
nav bar's tabs, the app's modes and F-keys, and the palette's "Go to" entries read it too.
"""

from __future__ import annotations

SCREENS: list[tuple[str, str, str]] = [
    ("workbench", "Workbench", "f2"),
    ("results", "Results", "f3"),
    ("runs", "Runs", "f4"),
    ("study", "Study", "f5"),
    ("compare", "Compare", "f6"),
    ("models", "Models", "f7"),
    ("tests", "Tests", "f8"),
    ("review", "Review", "f9"),
]
SCREEN_NAMES: tuple[str, ...] = tuple(mode for mode, _title, _key in SCREENS)
