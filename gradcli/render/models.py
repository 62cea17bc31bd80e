"""``check`` over one or several arguments (``modelcheck.ModelReport``): a JSON
document (SPEC §5) and rich renderables.

One argument keeps the single-argument document of ``json.report_to_dict``
(``wrt`` a string, ``backends`` and ``top`` at the top level); several give
``wrt`` as a list and ``results``, one object per argument. Probe mode adds
``mode``/``probes``, and over several arguments a ``joint`` object (the joint
probes: their backends, worst probes, notes, ``taylor``) and ``jointly`` on the
arguments whose verdict is theirs; module localisation a ``modules`` list.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..core.options import CheckMode
from .check import REL_NOTE, render_report, result_text, top_table, verdict_text
from .json import _finite_or_none, comparisons_to_list, entries_to_list, report_to_dict
from .names import Name, NamesFirst
from .table import seconds_text

MAX_ROWS = 24  # argument × backend rows shown before the passing ones are summarised
PER_ARGUMENT = ("wrt", "shape", "ok", "backends", "top", "notes")


def model_to_dict(model, *, timing: bool = True) -> dict[str, Any]:
    if len(model.results) == 1:
        doc = report_to_dict(model.results[0], timing=timing)
        doc["ok"] = model.ok
        doc = _insert_after(doc, "quantity", _mode_fields(model))
        if model.results[0].taylor is not None:
            doc["taylor"] = taylor_to_dict(model.results[0].taylor)
        doc["notes"] = doc["notes"] + list(model.notes)
    else:
        first = report_to_dict(model.results[0], timing=timing)
        doc = {"schema": first["schema"], "command": "check", "function": model.function, "params": first["params"],
               "wrt": list(model.wrt), "dtype": model.dtype, "quantity": model.quantity.value, **_mode_fields(model),
               "reference": model.reference.value, "atol": model.atol, "rtol": model.rtol, "ok": model.ok,
               "results": [_argument(r, timing) for r in model.results], "notes": list(model.notes)}
        if model.joint is not None:
            doc["joint"] = joint_to_dict(model.joint, timing)
    if model.modules is not None:
        doc["modules"] = [module_to_dict(m) for m in model.modules]
    if timing:
        doc["seconds"] = round(model.seconds, 6)
    return doc


def _mode_fields(model) -> dict[str, Any]:
    return {"mode": model.mode, **({"probes": model.probes} if model.probes else {})}


def _insert_after(doc: dict, key: str, extra: dict) -> dict:
    out = {}
    for k, v in doc.items():
        out[k] = v
        if k == key:
            out.update(extra)
    return out


def _argument(report, timing: bool) -> dict[str, Any]:
    full = report_to_dict(report, timing=timing)
    doc = {k: full[k] for k in PER_ARGUMENT}
    if report.jointly:  # its verdict is that of the probes over a group of arguments it belongs to
        doc["jointly"] = True
    if report.taylor is not None:
        doc["taylor"] = taylor_to_dict(report.taylor)
    return doc


def joint_to_dict(joint, timing: bool) -> dict[str, Any]:
    """The joint probes over every argument (probe mode, several arguments)."""
    doc = {"arguments": len(joint.names), "ok": joint.ok, "backends": comparisons_to_list(joint.comparisons, timing),
           "top": entries_to_list(_worst(joint)), "notes": list(joint.notes)}
    if joint.taylor is not None:
        doc["taylor"] = taylor_to_dict(joint.taylor)
    return doc


def _worst(joint, top: int = 5) -> list:
    return sorted((e for c in joint.comparisons for e in c.worst), key=lambda e: -e.excess)[:top]


def taylor_to_dict(test) -> dict[str, Any]:
    return {"order": _finite_or_none(test.order), "ok": test.ok,
            "orders": [_finite_or_none(o) for o in test.orders], "wrong": list(test.wrong), "steps": list(test.steps),
            "rounding_floor": test.floor}


def module_to_dict(m) -> dict[str, Any]:
    return {"path": m.path, "class": m.cls, "file": m.file, "line": m.line, "ok": m.ok, "blamed": m.blamed,
            "nonsmooth": m.nonsmooth,
            "value": _finite_or_none(m.value), "reference": _finite_or_none(m.reference),
            "error_estimate": _finite_or_none(m.error_estimate)}


# --- tables ------------------------------------------------------------------------


def _num(x) -> str:
    return "-" if x is None else f"{x:.2e}"


def tolerance_line(model) -> Text:
    if model.mode is CheckMode.PROBE:
        over = "per argument" if len(model.results) == 1 else f"over all {len(model.results)} arguments at once"
        text = (f"probe mode: {model.probes} seeded joint directions (signs u {over}, a cotangent v each); each "
                f"backend's vᵀ J u agrees when |value - reference| <= atol + rtol max(|reference|, ‖vᵀJ‖₂) "
                f"(+ 3× fd's error estimate), atol {model.atol:g}, rtol {model.rtol:g} ({model.tolerance_source})")
    else:
        text = (f"tolerance: |value - reference| <= atol + rtol |reference| (+ 3× fd's error estimate), "
                f"atol {model.atol:g}, rtol {model.rtol:g} "
                f"({model.tolerance_source})")
    return Text(text, style="dim")


def render_model(model, *, timing: bool = True) -> RenderableType:
    if len(model.results) == 1:
        parts: list[RenderableType] = [render_report(model.results[0], timing=timing, mode_line=tolerance_line(model))]
    else:
        parts = [_head(model, timing), tolerance_line(model), Text(), _arguments_table(model, timing)]
        if any(c.skipped is None and c.max_rel is None and c.max_abs > 0 for c in model.backends):
            parts.append(Text(REL_NOTE, style="dim"))
        joint = model.joint
        if joint is not None and joint.ok is False:
            parts += [Text(), Text(f"joint probes over all {len(joint.names)} arguments: worst out of tolerance "
                                   f"(value: the backend's; reference: {model.reference.value}'s)", style="bold"),
                      top_table(_worst(joint))]
        for r in model.results:
            if r.ok is False and r.top:
                parts += [Text(), Text(f"{r.wrt}: worst out of tolerance (value: the backend's; reference: "
                                       f"{r.reference.value}'s)", style="bold"), top_table(r.top)]
        parts += [Text(), verdict_text(model.ok, model.failing)]
        skipped = {(c.name, c.skipped) for c in model.backends if c.skipped}
        parts += [Text(f"skipped {name}: {why}", style="yellow") for name, why in sorted(skipped)]
        unjudged = {(c.name, c.inconclusive) for c in model.backends if c.inconclusive}
        parts += [Text(f"inconclusive {name}: {why}", style="yellow") for name, why in sorted(unjudged)]
        shared = (joint.notes if joint is not None else ()) + tuple(n for r in model.results for n in r.notes)
        parts += [Text(f"note: {n}", style="yellow") for n in dict.fromkeys(shared)]  # (shared ones said once)
    test = model.taylor
    if test is not None and (len(model.results) == 1 or model.joint is not None):
        along = "" if model.joint is None else " along the joint probes"
        parts.append(Text(f"Taylor test{along}: observed order {_order(test.order)} "
                          f"(2 when the derivative is right, 1 when wrong) over probes "
                          f"{', '.join(_order(o) for o in test.orders)}"))
    if model.modules is not None:
        parts += [Text(), _modules(model.modules)]
    parts += [Text(f"note: {n}", style="yellow") for n in model.notes]
    return Group(*parts)


def _order(order) -> str:
    return "-" if order is None else f"{order:.2f}"


def _head(model, timing: bool) -> Text:
    head = Text()
    head.append(f"check {model.function}", style="bold")
    head.append(f" · {model.quantity.value} w.r.t. {len(model.wrt)} arguments · {model.dtype} · mode {model.mode}"
                f" · reference {model.reference.value}")
    if timing:
        head.append(f" ({seconds_text(model.seconds)})", style="dim")
    return head


def _arguments_table(model, timing: bool) -> RenderableType:
    """One row per argument and backend, failing arguments first; the names never cut (:class:`NamesFirst`)."""
    taylor = any(r.taylor is not None for r in model.results) or model.taylor is not None
    # headers on two lines: the numbers are narrower than their names, and the names need the room
    columns = ["argument", "shape", "backend", "result", "max abs\nerr", "max rel\nerr", "worst", "mis-\nmatches",
               "fd error\nest.", *(["taylor\norder"] if taylor else []), *(["time"] if timing else [])]
    ordered = sorted(model.results, key=lambda r: {False: 0, None: 1, True: 2}[r.ok])  # failing first
    rows = [(r, c) for r in ordered for c in (r.backends or (None,))]
    shown = rows[:MAX_ROWS]  # failing arguments first, so a cut drops passing ones
    hidden = {r.wrt for r, _ in rows} - {r.wrt for r, _ in shown}
    joint = model.joint

    def build(cell) -> Table:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for column in columns:
            table.add_column(column, no_wrap=column != "argument",
                             justify="left" if column in ("argument", "backend", "result", "shape") else "right")
        if joint is not None:  # the joint probes first: every argument's verdict starts from them
            order = [_order(joint.taylor.order) if joint.taylor is not None else "-"] if taylor else []
            for c in joint.comparisons:
                _comparison_row(table, f"all {len(joint.names)} (joint probes)", "", c, order, timing)
        for r, c in shown:
            order = [_order(r.taylor.order) if r.taylor is not None else "-"] if taylor else []
            if c is None and r.jointly:  # judged with a group of arguments (all of them, or a half in localisation)
                result = (Text("ok", style="green") if r.ok else Text("MISMATCH", style="bold red") if r.ok is False
                          else Text("-"))
                table.add_row(cell(r.wrt), str(list(r.shape)), "joint", result, "-", "-", "-", "-", "-", *order,
                              *(["-"] if timing else []))
            elif c is None:
                table.add_row(cell(r.wrt), str(list(r.shape)), "-", "-", "-", "-", "-", "-", "-", *order,
                              *(["-"] if timing else []))
            else:
                _comparison_row(table, cell(r.wrt), str(list(r.shape)), c, order, timing)
        if hidden:
            table.add_row(f"… {len(hidden)} more arguments, all ok", "", "", "", "", "", "", "", "",
                          *([""] if taylor else []), *([""] if timing else []))
        return table

    return NamesFirst(build, [r.wrt for r, _ in shown])


def _comparison_row(table: Table, argument, shape: str, c, order: list, timing: bool) -> None:
    if c.skipped is not None:
        table.add_row(argument, shape, c.name, Text("skipped", style="yellow"), "-", "-", "-", "-", "-",
                      *order, *(["-"] if timing else []))
        return
    table.add_row(argument, shape, c.name, result_text(c), _num(c.max_abs), _num(c.max_rel), str(list(c.worst_index)),
                  str(c.mismatches) + (f" (+{c.kink_entries} non-smooth)" if c.kink_entries else ""),
                  _num(c.error_estimate), *order, *([seconds_text(c.seconds)] if timing else []))


def _modules(modules) -> RenderableType:
    blamed = [m for m in modules if m.blamed]
    title = Text("modules checked on their own at the inputs they received (deepest first): "
                 + (f"WRONG: {', '.join(f'{m.path} ({m.cls}, {m.where})' for m in blamed)}" if blamed
                    else "none is wrong on its own"), style="bold red" if blamed else "bold")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("module", "class", "defined at", "result", "autograd vᵀJu", "fd vᵀJu", "fd error est."):
        table.add_column(column, justify="left" if column in ("module", "class", "defined at", "result") else "right",
                         overflow="fold" if column == "defined at" else "ellipsis",
                         no_wrap=column not in ("module", "defined at"))
    shown = [m for m in modules if not m.ok] + [m for m in modules if m.ok][: max(0, 12 - len(blamed))]
    for m in shown:
        result = (Text("WRONG", style="bold red") if m.blamed else
                  Text("non-smooth (a kink: not judged)", style="yellow") if m.nonsmooth else
                  Text("contains a wrong module", style="yellow") if not m.ok else Text("ok", style="green"))
        table.add_row(Name(m.path), m.cls, m.where, result, f"{m.value:.6g}", f"{m.reference:.6g}", _num(m.error_estimate))
    if len(shown) < len(modules):
        table.add_row(f"… {len(modules) - len(shown)} more, all ok", "", "", "", "", "", "")
    return Group(title, table)
