"""`gradcli functions`: the catalogue as a table, one entry in detail, or a dict."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..catalogue import Function, catalogue
from ..problem.function import lookup


def entry_to_dict(fn: Function, submodules=None) -> dict[str, Any]:
    """``submodules``: ``[(name, class, output shape or None)]`` of your code's module."""
    parameters = fn.parameters() if hasattr(fn, "parameters") else {}
    signature = getattr(fn, "signature", None)
    return {
        **({"parameters": {name: list(shape) for name, shape in parameters.items()}} if parameters else {}),
        **({"submodules": [{"name": n, "class": c, **({"output": o} if o is not None else {})}
                           for n, c, o in submodules]} if submodules else {}),
        **({"signature": signature.text, "mapping": dict(signature.mapping())} if signature else {}),
        "name": fn.name,
        "summary": fn.summary,
        "arrays": [{"option": a.option, "required": a.required, "kind": a.kind.value, "help": a.help} for a in fn.arrays],
        "params": [{"option": p.option, "default": p.default, "help": p.help} for p in fn.params],
        "structure": fn.structure.value,
        "formulas": list(fn.formulas),
        "second_formulas": list(fn.second_formulas),
    }


def catalogue_to_dict(name: str | None = None, function: Function | None = None, submodules=None) -> dict[str, Any]:
    """``function``: ``name`` already looked up (your code, with its ``submodules``)."""
    entries = [function or lookup(name)] if name else list(catalogue().values())
    return {"schema": "gradcli/1", "command": "functions",
            "functions": [entry_to_dict(fn, submodules) for fn in entries]}


def render_catalogue(name: str | None = None, function: Function | None = None, submodules=None) -> RenderableType:
    if name:
        return render_entry(function or lookup(name), submodules)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("function", "arrays", "options (default)", "Jacobian structure"):
        table.add_column(column)
    for fn in catalogue().values():
        arrays = " ".join(a.option + ("" if a.required else "?") for a in fn.arrays)
        params = " ".join(f"{p.option}={p.default}" for p in fn.params) or "-"
        table.add_row(Text(fn.name), Text(arrays), Text(params), fn.structure.value)
    return Group(table, Text("`gradcli functions NAME` shows the formulas; ? marks an optional array.", style="dim"))


def render_entry(fn: Function, submodules=None) -> RenderableType:
    parts: list[RenderableType] = [Text(fn.name, style="bold"), Text(fn.summary), Text()]
    signature = getattr(fn, "signature", None)
    if signature is not None:  # user code: how the options reach its parameters
        mapping = Table(box=box.SIMPLE_HEAD, show_edge=False, title=f"signature {signature.text}",
                        title_justify="left")
        mapping.add_column("option")
        mapping.add_column("parameter")
        for option, parameter in signature.mapping():
            mapping.add_row(Text(option), Text(parameter))
        parts += [mapping, Text()]
    args = Table(box=box.SIMPLE_HEAD, show_edge=False, title="arrays", title_justify="left")
    for column in ("option", "required", "kind", "meaning"):
        args.add_column(column)
    for a in fn.arrays:
        args.add_row(a.option, "yes" if a.required else "no", a.kind.value, Text(a.help))
    parts.append(args)
    if fn.params:
        params = Table(box=box.SIMPLE_HEAD, show_edge=False, title="options", title_justify="left")
        for column in ("option", "default", "meaning"):
            params.add_column(column)
        for p in fn.params:
            params.add_row(p.option, str(p.default), Text(p.help))
        parts.append(params)
    parameters = fn.parameters() if hasattr(fn, "parameters") else {}
    if parameters:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, title="module parameters (--wrt param:NAME)",
                      title_justify="left")
        table.add_column("name")
        table.add_column("shape", justify="right")
        for name, shape in parameters.items():
            table.add_row(Text(name), str(list(shape)))
        parts.append(table)
    if submodules:
        shown = any(o is not None for _, _, o in submodules)
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, title="submodules (--wrt act:NAME: its output)" + (
            "" if shown else "; give -x to see their output shapes"), title_justify="left")
        for column in ("name", "class") + (("output",) if shown else ()):
            table.add_column(column)
        for name, kind, output in submodules:
            table.add_row(Text(name), Text(kind), *((Text(output),) if shown else ()))
        parts.append(table)
    parts += [Text(), Text("formulas", style="bold")]
    parts += [Text(f"  {line}") for line in fn.formulas]
    if fn.second_formulas:
        parts += [Text(), Text("second derivatives (hessian, hvp)", style="bold")]
        parts += [Text(f"  {line}") for line in fn.second_formulas]
    parts += [Text(), Text(f"Jacobian structure: {fn.structure.value}")]
    return Group(*parts)
