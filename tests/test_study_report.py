"""Study charts (text, SVG, PNG) and self-contained HTML/Markdown reports."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edge_guard.errors import EdgeGuardError
from edge_guard.study.analysis import analyze
from edge_guard.study.data import Obs, StudyData
from edge_guard.study.dataset import StudyItem
from edge_guard.study.plots import likert_chart_text, likert_svg, write_likert_plot
from edge_guard.study.report import render_markdown, write_report
from edge_guard.study.summary import format_analysis

COUNTS = {
    "sg": {"1": 2, "2": 14, "3": 73, "4": 12, "5": 0},
    "base": {1: 2, 2: 22, 3: 56, 4: 20, 5: 1},
}


def test_text_chart_bars_are_proportional_to_shares() -> None:
    text = likert_chart_text(COUNTS, width=50)
    lines = text.splitlines()
    assert "█" in lines[0] and "sg" in lines[0] and "base" in lines[0]
    row_sg3 = next(line for line in lines if line.startswith("3 sg"))
    row_base3 = next(line for line in lines if re.match(r"\s+base", line) and "56" in line)
    assert row_sg3.count("█") == round(73 / 101 * 50)
    assert row_base3.count("▒") == round(56 / 101 * 50)
    assert "72.3%" in row_sg3 and "55.4%" in row_base3
    assert likert_chart_text({}) == "(no ratings)"


def test_svg_and_png_plots_are_written(tmp_path: Path) -> None:
    svg = likert_svg(COUNTS)
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    out = write_likert_plot(COUNTS, tmp_path / "chart.svg")
    assert ET.parse(out).getroot().tag.endswith("svg")
    png = write_likert_plot(COUNTS, tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(EdgeGuardError, match=r"use \.svg or \.png"):
        write_likert_plot(COUNTS, tmp_path / "chart.gif")
    assert not list(tmp_path.glob("*.partial"))


def _analysis() -> dict:
    texts = ["<script>alert(1)</script> is | fine", "plain opinion", "another & more"]
    items = [StudyItem(f"i{k}", t, "food") for k, t in enumerate(texts)]
    obs = {
        "gpt-oss-safeguard-20b:mxfp4": {
            "i0": [Obs(0, 3)],
            "i1": [Obs(0, 3)],
            "i2": [Obs(0, None, reason="answer 'x' is not a rating")],
        },
        "gpt-oss-20b:mxfp4": {"i0": [Obs(0, 1)], "i1": [Obs(0, 3)], "i2": [Obs(0, 4)]},
    }
    return analyze(StudyData("demo", list(obs), items, obs, config={"policy": "is_good"}))


def test_html_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    out = write_report(_analysis(), tmp_path / "r.html")
    html = out.read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<svg") == 2  # ours and the seed's, inline
    assert "<?xml" not in html
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert all(r.startswith("#") for r in refs)  # nothing external: only in-SVG references
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # the two inline charts do not clash
    assert "72.3%" in html and "55.4%" in html  # the seed's middle shares beside ours
    assert "answer &#x27;x&#x27; is not a rating" in html  # unparsed listed


def test_markdown_report_embeds_svg_and_escapes_cells(tmp_path: Path) -> None:
    md = render_markdown(_analysis())
    m = re.search(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", md)
    assert m is not None
    assert ET.fromstring(base64.b64decode(m.group(1))).tag.endswith("svg")
    assert "&lt;script&gt;" in md and "is \\| fine" in md
    with pytest.raises(EdgeGuardError, match=r"use \.html or \.md"):
        write_report(_analysis(), tmp_path / "r.pdf")


def test_text_summary_lists_unparsed_and_pair_statistics() -> None:
    text = format_analysis(_analysis())
    assert "Unparsed ratings of gpt-oss-safeguard-20b:mxfp4: 1" in text
    assert "[i2] another & more — answer 'x' is not a rating" in text
    assert "exact agreement      50.0%" in text
    assert "McNemar exact" in text and "Wilcoxon" in text
