"""What CI reads: a suite's summary table, JUnit XML (as pytest's
``--junitxml`` writes it), and a baseline comparison (table rows and JSON)."""

from __future__ import annotations

import math
import re
import socket
import time
import xml.etree.ElementTree as ET
from io import StringIO
from typing import Any, Callable

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..core.errors import ExitCode
from .table import seconds_text

VERDICT = {ExitCode.OK: ("ok", "green"), ExitCode.MISMATCH: ("FAIL", "bold red"),
           ExitCode.USAGE: ("INVALID (exit 2)", "bold red"), ExitCode.BACKEND: ("COULD NOT RUN (exit 3)", "bold red")}


def plain_text(renderable: RenderableType, width: int = 120, soft_wrap: bool = False) -> str:
    """A renderable as plain text: no colour, a fixed width (JUnit bodies, AssertionError);
    ``soft_wrap``: long text lines (a reproducer) are not broken."""
    out = StringIO()
    Console(file=out, width=width, color_system=None, highlight=False, soft_wrap=soft_wrap).print(renderable)
    return out.getvalue()


def _worst(outcome) -> str:
    if outcome.report is None:
        return "-"
    ran = [c for c in outcome.report.backends if c.skipped is None]
    if not ran:
        return "-"
    worst = max(ran, key=lambda c: c.max_abs if math.isfinite(c.max_abs) else math.inf)
    return f"{worst.max_abs:.2e} ({worst.name})"


def render_summary(outcomes, *, timing: bool = True) -> RenderableType:
    """One row per check: verdict, worst error, time; then the count."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("check", "verdict", "worst abs err", *(["time"] if timing else [])):
        table.add_column(column, justify="right" if column in ("worst abs err", "time") else "left")
    for o in outcomes:
        label, style = VERDICT[o.exit_code]
        table.add_row(o.name, Text(label, style=style), _worst(o), *([seconds_text(o.seconds)] if timing else []))
    failed = sum(o.exit_code == ExitCode.MISMATCH for o in outcomes)
    errors = sum(o.exit_code in (ExitCode.USAGE, ExitCode.BACKEND) for o in outcomes)
    passed = len(outcomes) - failed - errors
    line = Text(f"{passed} passed, {failed} failed" + (f", {errors} errors" if errors else ""),
                style="green" if passed == len(outcomes) else "bold red")
    return Group(table, Text(), line)


# Characters XML 1.0 cannot hold, even escaped: a suite name or your code's error message may carry them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """``text`` with each character XML cannot hold written as ``#xNN`` (pytest's junitxml does the same)."""
    return _NOT_XML.sub(lambda m: f"#x{ord(m.group()):02X}", text)


def junit_xml(outcomes, suite: str, report_text: Callable[[Any], str],
              failure: Callable[[Any], str] = lambda o: f"{o.name}: gradients do not match") -> bytes:
    """JUnit XML in pytest's layout: ``<testsuites><testsuite ...><testcase .../>``; a
    mismatch is a ``<failure>`` (its message ``failure(outcome)``, its text the report), a
    check that could not run an ``<error>``, an outcome with a ``skipped`` reason a ``<skipped>``."""
    failures = sum(o.exit_code == ExitCode.MISMATCH for o in outcomes)
    errors = sum(o.exit_code in (ExitCode.USAGE, ExitCode.BACKEND) for o in outcomes)
    skips = sum(getattr(o, "skipped", None) is not None for o in outcomes)
    total = sum(o.seconds for o in outcomes)
    root = ET.Element("testsuites", name="gradcli")
    suite = _xml_text(suite)
    node = ET.SubElement(root, "testsuite", name=suite, errors=str(errors), failures=str(failures), skipped=str(skips),
                         tests=str(len(outcomes)), time=f"{total:.3f}",
                         timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"), hostname=socket.gethostname())
    for o in outcomes:
        name = _xml_text(o.name)
        case = ET.SubElement(node, "testcase", classname=f"gradcli.{suite}", name=name, time=f"{o.seconds:.3f}")
        if o.exit_code == ExitCode.MISMATCH:
            ET.SubElement(case, "failure", message=_xml_text(failure(o))).text = _xml_text(report_text(o))
        elif getattr(o, "skipped", None) is not None:
            ET.SubElement(case, "skipped", message=_xml_text(o.skipped))
        elif o.error is not None:
            ET.SubElement(case, "error", message=_xml_text(o.error)).text = _xml_text(o.error)
    ET.indent(root)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def render_baseline(comparison) -> RenderableType:
    """The baseline rows: each argument and the output, moved or not."""
    head = Text(f"baseline {comparison.path}", style="bold")
    changed = {k: (comparison.saved_versions.get(k), v) for k, v in comparison.versions.items()
               if comparison.saved_versions.get(k) != v}
    versions = Text("versions: " + (", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()) or "unchanged"),
                    style="dim")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("gradient of", "result", "max change", "tolerance", ""):
        table.add_column(column, justify="right" if column in ("max change", "tolerance") else "left")
    for e in comparison.entries:
        result = Text("MOVED", style="bold red") if e.moved else Text("same", style="green")
        table.add_row(e.name, result, f"{e.max_diff:.2e}", f"{e.tolerance:.2e}", e.detail)
    verdict = Text("gradients match the baseline" if comparison.ok else
                   "gradients MOVED from the baseline: " + ", ".join(e.name for e in comparison.entries if e.moved),
                   style="green" if comparison.ok else "bold red")
    return Group(head, versions, table, verdict)


def baseline_to_dict(comparison) -> dict[str, Any]:
    return {"path": comparison.path, "ok": comparison.ok, "versions": comparison.versions,
            "saved_versions": comparison.saved_versions,
            "entries": [{"name": e.name, "moved": e.moved,
                         "max_change": e.max_diff if math.isfinite(e.max_diff) else None,
                         "tolerance": e.tolerance, **({"detail": e.detail} if e.detail else {})}
                        for e in comparison.entries]}
