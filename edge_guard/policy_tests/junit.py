"""JUnit XML of a policy test report (`edge-guard policies test --junit`): one
<testsuite> per report, one <testcase> per case, undetermined counted as a failure;
model text made safe for XML 1.0; written atomically.
"""

from __future__ import annotations

import os
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from edge_guard.policy.versions import FAIL, PASS
from edge_guard.policy_tests.outcomes import TestReport

__all__ = ["junit_xml", "write_junit"]

_XML_BAD = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(s: object) -> str:
    """Text safe for XML 1.0 (control characters from model output become \\xNN)."""
    return _XML_BAD.sub(lambda m: f"\\x{ord(m.group()):02x}", str(s))


def junit_xml(report: TestReport) -> ET.Element:
    """One <testsuite> per report, one <testcase> per case; undetermined = failure."""
    n_fail = report.failed + report.undetermined
    seconds = f"{report.seconds:.3f}"
    root = ET.Element(
        "testsuites",
        name="edge-guard policies test",
        tests=str(report.total),
        failures=str(n_fail),
        errors="0",
        time=seconds,
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name=_x(f"policies.{report.policy.name}"),
        tests=str(report.total),
        failures=str(n_fail),
        errors="0",
        skipped="0",
        time=seconds,
        timestamp=report.test_run.created_at,
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (
        ("policy", report.policy.name),
        ("version", report.version.label),
        ("policy_hash", report.version.hash),
        ("model", report.model_ref),
        ("run", report.run),
        ("undetermined", report.undetermined),
    ):
        ET.SubElement(props, "property", name=k, value=_x(v))
    for o in report.outcomes:
        tc = ET.SubElement(
            suite,
            "testcase",
            classname=_x(f"policies.{report.policy.name}"),
            name=_x(o.case.name),
            time=f"{o.seconds:.3f}",
        )
        if o.outcome == PASS:
            continue
        kind = "WrongAnswer" if o.outcome == FAIL else "Undetermined"
        el = ET.SubElement(tc, "failure", message=_x(o.why()), type=kind)
        el.text = _x(
            f"expected: {o.case.expected}\ngot: {o.got if o.got is not None else '(none)'}\n"
            f"final answer: {o.final!r}\nfinish: {o.finish_reason}\n"
            f"note: {o.case.note}\ntext: {o.case.text}\n"
        )
    return root


def write_junit(report: TestReport, path: str | Path) -> Path:
    """Write the JUnit XML atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = ET.ElementTree(junit_xml(report))
    ET.indent(tree)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            tree.write(fh, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
