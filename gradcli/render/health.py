"""``gradcli health`` (a :class:`gradcli.health.report.HealthReport`): rich renderables and
the JSON document. Pure functions of the report.

Rows are ordered the same way in both: the flagged ones first (the worst flag
first: nonfinite, exploding, vanishing, dead), then the others in the model's
order (modules in the order their calls returned: children before their
parent). ``top``: at most that many rows of each table (None: every row).
"""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..health.report import FLAG_ORDER, Flag, HealthReport
from .json import SCHEMA, _finite_or_none
from .table import seconds_text

TABLE_TOP = 20  # rows of each table when --top is not given (the JSON then holds every row)
_STYLE = {Flag.NONFINITE: "bold red", Flag.EXPLODING: "red", Flag.VANISHING: "yellow", Flag.DEAD: "magenta"}


def ordered(rows) -> list:
    """Flagged rows first, the worst flag first, then the model's order (a stable sort)."""
    return sorted(rows, key=lambda r: FLAG_ORDER.index(r.flags[0]) if r.flags else len(FLAG_ORDER))


def _cut(rows, top: int | None) -> tuple[list, int]:
    rows = ordered(rows)
    if top is None or top <= 0 or len(rows) <= top:
        return rows, 0
    return rows[:top], len(rows) - top


# --- JSON ------------------------------------------------------------------------------


def health_to_dict(report: HealthReport, *, top: int | None = None, timing: bool = True) -> dict[str, Any]:
    modules, more_modules = _cut(report.modules, top)
    parameters, more_parameters = _cut(report.parameters, top)
    doc: dict[str, Any] = {
        "schema": SCHEMA, "command": "health", "function": report.function, "dtype": report.dtype,
        "wrt": list(report.wrt), "input_shape": list(report.input_shape), "output_shape": list(report.output_shape),
        "output": _finite_or_none(report.output), "cotangent_norm": _finite_or_none(report.cotangent_norm),
        "ok": report.ok, "flags": [f.value for f in report.flags], "fail_on": [f.value for f in report.fail_on],
        "thresholds": {"explode": report.thresholds.explode, "vanish": report.thresholds.vanish,
                       "peer": report.thresholds.peer},
        "lr": report.lr,
        "origin": None if report.origin is None else origin_to_dict(report.origin),
        "modules": [module_to_dict(m) for m in modules],
        "parameters": [parameter_to_dict(p) for p in parameters],
    }
    if more_modules or more_parameters:
        doc["left_out"] = {"modules": more_modules, "parameters": more_parameters}
    doc["notes"] = list(report.notes)
    if timing:
        doc["seconds"] = round(report.seconds, 6)
    return doc


def origin_to_dict(o) -> dict[str, Any]:
    return {"phase": o.phase.value, "module": o.module, "class": o.cls, "call": o.call, "forward_at": o.forward_at,
            "op": o.op, "op_at": o.op_at, "code": o.code, "backward_at": o.backward_at, "detail": o.detail}


def module_to_dict(m) -> dict[str, Any]:
    return {"module": m.name, "class": m.cls, "call": m.call, "calls": m.calls, "forward_at": m.forward_at,
            "output_shape": None if m.output_shape is None else list(m.output_shape),
            "out_grad": _finite_or_none(m.out_grad), "in_grad": _finite_or_none(m.in_grad),
            "gain": _finite_or_none(m.gain), "dead": m.dead, "saturated": m.saturated,
            "finite_output": m.finite_output, "flags": [f.value for f in m.flags], "reasons": list(m.reasons)}


def parameter_to_dict(p) -> dict[str, Any]:
    return {"parameter": p.name, "shape": list(p.shape), "grad_norm": _finite_or_none(p.norm),
            "weight_norm": _finite_or_none(p.weight_norm), "ratio": _finite_or_none(p.ratio),
            "update": _finite_or_none(p.update), "zeros": p.zeros, "nonfinite": p.nonfinite, "frozen": p.frozen,
            "flags": [f.value for f in p.flags], "reasons": list(p.reasons), "aliases": list(p.aliases)}


# --- tables ------------------------------------------------------------------------------


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%" if x in (0.0, 1.0) else f"{100 * x:.1f}%"


def _flags(flags) -> Text:
    text = Text()
    for i, f in enumerate(flags):
        text.append((", " if i else "") + f.value, style=_STYLE[f])
    return text


def render_health(report: HealthReport, *, top: int | None = None, timing: bool = True) -> RenderableType:
    top = TABLE_TOP if top is None else top
    parts: list[RenderableType] = [_head(report, timing)]
    if report.origin is not None:
        parts += [Text(), _origin(report.origin)]
    summary = _summary(report)
    if summary:
        parts += [Text(), *summary]
    parts += [Text(), _modules(report, top), Text(), _parameters(report, top)]
    parts += [Text(f"note: {n}", style="yellow") for n in report.notes]
    parts += [Text(), verdict_text(report)]
    return Group(*parts)


def _head(report: HealthReport, timing: bool) -> Text:
    head = Text()
    head.append(f"health {report.function}", style="bold")
    head.append(f" · one forward and backward · {report.dtype} · input {list(report.input_shape)} -> output "
                f"{list(report.output_shape)}")
    if report.output is not None:
        head.append(f" · loss {_num(report.output)}")
    else:
        head.append(f" · cotangent ‖v‖ {_num(report.cotangent_norm)}")
    wrt = ", ".join(report.wrt) if len(report.wrt) <= 3 else f"{len(report.wrt)} tensors"
    head.append(f" · w.r.t. {wrt}")
    if timing:
        head.append(f" ({seconds_text(report.seconds)})", style="dim")
    return head


def _origin(o) -> RenderableType:
    phase = {"input": "in the input", "parameters": "in the parameters", "forward": "in the forward",
             "backward": "in the backward"}[o.phase.value]
    lines = [Text(f"NON-FINITE VALUES first appear {phase}", style="bold red")]
    if o.module is not None:
        where = f"{o.module or '(the model itself, outside any submodule)'} ({o.cls}"
        where += f", call {o.call}" if o.call and o.call > 1 else ""
        where += f", forward at {o.forward_at})" if o.forward_at else ")"
        lines.append(Text(f"  module: {where}"))
    if o.op is not None:
        lines.append(Text(f"  op:     {o.op}" + (f" at {o.op_at}" if o.op_at else "")))
    if o.code:
        lines.append(Text(f"          {o.code}", style="bold"))
    if o.backward_at:
        lines.append(Text(f"  its backward (a custom autograd.Function) made it at {o.backward_at}"))
    lines.append(Text(f"  {o.detail}", style="dim"))
    return Group(*lines)


def _summary(report: HealthReport) -> list[Text]:
    """One line per flag raised: how many rows, and where it starts: the first module in
    backward order for a gradient that explodes or vanishes (where it crossed the line),
    the first in forward order for a dead one; a non-finite one has its origin above."""
    lines = []
    for flag in report.flags:
        modules = [m for m in report.modules if flag in m.flags]
        params = [p for p in report.parameters if flag in p.flags]
        counts = ", ".join(f"{n} {what}{'s' if n > 1 else ''}"
                           for n, what in ((len(modules), "module call"), (len(params), "parameter")) if n)
        text = Text()
        text.append(f"{flag.value}: ", style=_STYLE[flag])
        text.append(counts or "see the origin above")
        if flag is Flag.NONFINITE and report.origin is not None:
            text.append("; the origin is above")
        elif modules:
            backward = flag in (Flag.EXPLODING, Flag.VANISHING)
            first = min(modules, key=lambda m: (m.backward_order is None, m.backward_order or 0, -m.order)
                        if backward else m.order)
            text.append(f"; first{' in backward order' if backward else ''}: {first.label}: "
                        f"{first.reasons[first.flags.index(flag)]}")
        elif params:
            text.append(f"; {params[0].name}: {params[0].reasons[params[0].flags.index(flag)]}")
        lines.append(text)
    return lines


def _cut_note(table: Table, more: int, what: str, width: int) -> None:
    if more:
        table.add_row(Text(f"… {more} more {what}{'s' if more > 1 else ''} (--top)"), *[""] * (width - 1))


def _modules(report: HealthReport, top: int) -> RenderableType:
    rows, more = _cut(report.modules, top)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title="modules: gradient gain ‖∂L/∂in‖ / ‖∂L/∂out‖ per call",
                  title_justify="left")
    columns = ("module", "class", "output", "‖∂L/∂out‖", "‖∂L/∂in‖", "gain", "dead", "saturated", "flags")
    for c in columns:
        table.add_column(c, justify="left" if c in ("module", "class", "output", "flags") else "right")
    for m in rows:
        table.add_row(Text(m.label), Text(m.cls), "-" if m.output_shape is None else str(list(m.output_shape)),
                      _num(m.out_grad), _num(m.in_grad), _num(m.gain), _share(m.dead), _share(m.saturated),
                      _flags(m.flags))
    _cut_note(table, more, "module", len(columns))
    return table


def _parameters(report: HealthReport, top: int) -> RenderableType:
    rows, more = _cut(report.parameters, top)
    lr = report.lr is not None
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title="parameters", title_justify="left")
    columns = ("parameter", "shape", "‖grad‖", "‖grad‖/‖w‖", *([f"update (lr {report.lr:g})"] if lr else []),
               "zero", "nonfinite", "flags")
    for c in columns:
        table.add_column(c, justify="left" if c in ("parameter", "shape", "flags") else "right")
    for p in rows:
        name = p.name + (f" (= {', '.join(p.aliases)})" if p.aliases else "")
        grad = "frozen" if p.frozen else _num(p.norm)
        zeros = "-" if p.zeros is None else f"{p.zeros}/{p.size}" if p.zeros else "0"
        table.add_row(Text(name), str(list(p.shape)), grad, _num(p.ratio), *([_num(p.update)] if lr else []), zeros,
                      "-" if p.nonfinite is None else str(p.nonfinite), _flags(p.flags))
    _cut_note(table, more, "parameter", len(columns))
    return table


def verdict_text(report: HealthReport) -> Text:
    """The last line: FAIL when a flag of ``--fail-on`` is raised (exit 1), else ok (exit 0)."""
    failing = [f.value for f in report.flags if f in report.fail_on]
    fail_on = ",".join(f.value for f in report.fail_on) or "none"
    if failing:
        return Text(f"FAIL: {', '.join(failing)} raised, and --fail-on {fail_on} counts it (exit 1)", style="bold red")
    raised = f"; raised but not failing: {', '.join(f.value for f in report.flags)}" if report.flags else ""
    return Text(f"ok: no flag of --fail-on {fail_on} raised (exit 0){raised}", style="green" if not raised else "yellow")
