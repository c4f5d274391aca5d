"""Plain `pytest` (the console script, not `python -m pytest`) collects every test module.

`python -m pytest` puts the working directory on sys.path; the `pytest` script does not,
so modules that import the shared helpers (`from tests.runs_helpers import …`) failed
with "No module named 'tests'" until pyproject set `pythonpath`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Every module that imports `tests.<helper>` (the ones that broke under plain `pytest`).
HELPER_IMPORTERS = [
    "tests/test_compare.py",
    "tests/test_quantize.py",
    "tests/test_report.py",
    "tests/test_runs.py",
    "tests/hostile/test_hostile_models.py",
    "tests/tui/test_app.py",
    "tests/tui/test_screens.py",
    "tests/tui/test_snapshots.py",
    "tests/tui/test_workbench.py",
]


def test_helper_importers_are_the_listed_modules() -> None:
    found = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if "from tests." in p.read_text(encoding="utf-8")
        or "import tests." in p.read_text(encoding="utf-8")
    )
    assert found == sorted([*HELPER_IMPORTERS, "tests/test_integrity_pytest.py"])


def test_plain_pytest_collects_modules_that_import_tests_helpers() -> None:
    script = Path(sys.executable).with_name("pytest")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(script), "--collect-only", "-q", "-p", "no:cacheprovider", *HELPER_IMPORTERS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "No module named 'tests'" not in out
    assert proc.returncode == 0, out[-2000:]
    collected = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    assert collected == set(HELPER_IMPORTERS)
