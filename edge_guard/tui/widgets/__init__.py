"""Reusable TUI widgets (nav bar, policy editor, verdict panel, charts)."""
