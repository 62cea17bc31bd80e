"""``certify`` as a rich table, a dict for JSON, and JUnit XML (one test case per row)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..core.errors import ExitCode
from .ci import junit_xml
from .table import seconds_text

STYLE = {"ok": ("ok", "green"), "fail": ("FAIL", "bold red"), "skip": ("skip", "yellow")}


def _error(x: float | None) -> str:
    return "-" if x is None else "inf/nan" if not math.isfinite(x) else f"{x:.2e}"


def verdict_line(report) -> Text:
    """The last line: every property ok or skipped (exit 0), failures (exit 1), nothing ran (exit 3)."""
    counts = {s: sum(r.status.value == s for r in report.rows) for s in STYLE}
    tally = f"{counts['ok']} ok, {counts['fail']} failed, {counts['skip']} skipped"
    if report.ok is None:
        return Text(f"NOTHING COULD RUN: every property was skipped ({tally}; exit 3)", style="bold yellow")
    if report.ok:
        return Text(f"certified: {tally}", style="green")
    return Text(f"FAILED: {', '.join(r.property for r in report.failing)} ({tally}; exit 1)", style="bold red")


def render_certify(report, *, timing: bool = True) -> RenderableType:
    """The header, one row per property, then each failure's reproducer, then the verdict.
    Print it with ``soft_wrap=True``: a reproducer stays one line, whatever the width."""
    head = Text()
    head.append(f"certify {report.function}", style="bold")
    head.append(f" · {report.kind} · " + ", ".join(f"{n} {list(s)}" for n, s in report.shapes))
    if timing:
        head.append(f" ({seconds_text(report.seconds)})", style="dim")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, expand=False)
    for column in ("property", "result", "max error", "where", "detail", *(["time"] if timing else [])):
        table.add_column(column, justify="right" if column in ("max error", "time") else "left",
                         overflow="fold", ratio=4 if column == "detail" else None)
    for r in report.rows:
        label, style = STYLE[r.status.value]
        table.add_row(r.property, Text(label, style=style), _error(r.max_error) if r.status.value == "fail" else "",
                      r.where or "", r.detail, *([seconds_text(r.seconds)] if timing else []))
    parts: list[RenderableType] = [head, Text(), table]
    reproducible = [r for r in report.failing if r.reproducer]
    if reproducible:
        parts += [Text(), Text("reproduce (each fails while the bug is there):", style="bold")]
        for r in reproducible:  # one line whatever the width: copied whole from a terminal
            parts.append(Text.assemble((f"{r.property}: ", "bold"), r.reproducer, no_wrap=True, overflow="ignore"))
    parts += [Text(), verdict_line(report)]
    parts += [Text(f"note: {n}", style="yellow") for n in report.notes]
    return Group(*parts)


def certify_to_dict(report, *, timing: bool = True) -> dict[str, Any]:
    """Strict JSON's dict: each row with its property, SPEC §7's title for it, status and detail
    (and, failing, max_error (None for inf/nan), where, reproducer)."""
    from ..certify.registry import PROPERTIES

    titles = {p.name: p.heading for p in PROPERTIES}

    def row(r) -> dict[str, Any]:
        out = {"property": r.property, "title": titles.get(r.family, r.family), "status": r.status.value,
               "detail": r.detail}
        if r.status.value == "fail":
            out.update(max_error=r.max_error if r.max_error is None or math.isfinite(r.max_error) else None,
                       where=r.where, reproducer=r.reproducer)
        if timing:
            out["seconds"] = round(r.seconds, 6)
        return out

    doc = {"function": report.function, "kind": report.kind, "ok": report.ok,
           "exit_code": int(report.exit_code), "arguments": {n: list(s) for n, s in report.shapes},
           "rows": [row(r) for r in report.rows], "notes": list(report.notes)}
    if timing:
        doc["seconds"] = round(report.seconds, 6)
    return doc


@dataclass(frozen=True)
class _Case:
    """A row as the JUnit writer reads an outcome."""

    name: str
    exit_code: ExitCode
    seconds: float
    error: str | None = None
    skipped: str | None = None
    text: str = ""


def certify_junit(report, suite: str = "certify") -> bytes:
    """One ``<testcase>`` per row: a failure carries the detail, where and the reproducer; a skip its reason."""
    cases = []
    for r in report.rows:
        text = "\n".join(part for part in (r.detail, f"where: {r.where}" if r.where else "",
                                           f"max error: {_error(r.max_error)}" if r.max_error is not None else "",
                                           f"reproduce: {r.reproducer}" if r.reproducer else "") if part)
        cases.append(_Case(r.property, ExitCode.MISMATCH if r.status.value == "fail" else ExitCode.OK, r.seconds,
                           skipped=r.detail if r.status.value == "skip" else None, text=text))
    return junit_xml(cases, f"{suite} {report.function}", lambda case: case.text,
                     failure=lambda case: f"{case.name}: {case.text.splitlines()[0]}")
