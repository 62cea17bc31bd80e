"""``check`` as rich renderables: a row per backend, then the worst entries."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..core.options import CheckMode
from ..core.results import CheckReport
from .table import seconds_text

# Shown under a table where a max rel err is "-" (core.compare.meaningful_rel).
REL_NOTE = ("max rel err -: no reference entry is above atol (a zero gradient), and a rounding difference divided by "
            "~0 means nothing; the absolute error decides")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def top_table(entries) -> Table:
    """Offending entries (``compare.Entry``): where, both values, by how much; in probe
    mode the index is the probe's number."""
    top = Table(box=box.SIMPLE_HEAD, show_edge=False)
    index = "probe" if all(e.kind == "probe" for e in entries) else "index"
    for column in ("backend", index, "value", "reference", "abs err", "rel err", "fd error est."):
        top.add_column(column, justify="left" if column == "backend" else "right")
    for e in entries:
        top.add_row(e.backend, str(list(e.index)), f"{e.value:.6g}", f"{e.reference:.6g}", _num(e.abs_error),
                    _num(e.rel_error), _num(e.error_estimate))
    return top


def result_text(c) -> Text:
    """A compared backend's cell: ok, MISMATCH, or inconclusive (it ran but could not judge)."""
    if c.ok is None:
        return Text("inconclusive", style="yellow")
    return Text("ok", style="green") if c.ok else Text("MISMATCH", style="bold red")


def verdict_text(ok: bool | None, failing=()) -> Text:
    """The last line: agreement (exit 0), a mismatch (exit 1), or nothing compared (exit 3)."""
    if ok is None:
        return Text("NOTHING COMPARED: every backend other than the reference was skipped or could not judge (exit 3)",
                    style="bold yellow")
    if ok:
        return Text("all backends agree within tolerance", style="green")
    where = f" in {', '.join(failing)}" if failing else ""
    return Text(f"MISMATCH{where}: see the entries above (exit 1)", style="bold red")


def render_report(report: CheckReport, *, timing: bool = True, mode_line: Text | None = None) -> RenderableType:
    head = Text()
    head.append(f"check {report.function}", style="bold")
    head.append(f" · {report.quantity.value} w.r.t. {report.wrt} · {report.dtype} · shape {list(report.shape)}"
                f"{' · mode probe' if report.mode is CheckMode.PROBE else ''} · reference {report.reference.value}")
    if timing:
        head.append(f" ({seconds_text(report.reference_seconds)})", style="dim")
    tolerance = mode_line or Text(f"tolerance: |value - reference| <= atol + rtol |reference| (+ 3× fd's error estimate), "
                                  f"atol {report.atol:g}, "
                                  f"rtol {report.rtol:g} ({report.tolerance_source})", style="dim")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("backend", "result", "max abs err", "max rel err", "worst index", "mismatches", "fd error est.",
                   *(["time"] if timing else [])):
        table.add_column(column, justify="left" if column in ("backend", "result") else "right")
    for c in report.backends:
        if c.skipped is not None:
            table.add_row(c.name, Text("skipped", style="yellow"), "-", "-", "-", "-", "-", *(["-"] if timing else []))
            continue
        result = result_text(c)
        kinks = "non-smooth" if report.mode is CheckMode.PROBE else "on kinks"
        table.add_row(c.name, result, _num(c.max_abs), _num(c.max_rel), str(list(c.worst_index)),
                      str(c.mismatches) + (f" (+{c.kink_entries} {kinks})" if c.kink_entries else ""),
                      _num(c.error_estimate), *([seconds_text(c.seconds)] if timing else []))
    parts: list[RenderableType] = [head, tolerance, Text(), table]
    if any(c.skipped is None and c.max_rel is None and c.max_abs > 0 for c in report.backends):
        parts.append(Text(REL_NOTE, style="dim"))
    if report.top:
        parts += [Text(), Text(f"worst entries out of tolerance (value: the backend's; reference: {report.reference.value}'s)",
                               style="bold")]
        parts.append(top_table(report.top))
    parts += [Text(), verdict_text(report.ok)]
    parts += [Text(f"skipped {c.name}: {c.skipped}", style="yellow") for c in report.backends if c.skipped]
    parts += [Text(f"inconclusive {c.name}: {c.inconclusive}", style="yellow") for c in report.backends if c.inconclusive]
    if report.notes:
        parts += [Text(f"note: {n}", style="yellow") for n in report.notes]
    return Group(*parts)
