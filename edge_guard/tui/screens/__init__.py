"""The TUI's screens: one module per screen (workbench, results, runs, study, compare, models, tests)."""
