"""Thin wrapper: `python scripts/bench.py [options]` is `edge-guard bench [options]`.

Example (the Performance table of docs/performance.md): ``python scripts/bench.py --synth mini``.
"""

from __future__ import annotations

import sys

from edge_guard.cli import main

if __name__ == "__main__":
    main(["bench", *sys.argv[1:]], prog_name="edge-guard")
