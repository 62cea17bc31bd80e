"""``grad --per-sample``: the per-sample result as JSON, a table, or a file."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..compute.per_sample import SampleGrads
from .json import SCHEMA, array_to_json
from .names import count_of
from .table import NumberFormat, array_view


def samples_to_dict(res: SampleGrads, *, timing: bool = True) -> dict[str, Any]:
    """Norms mode: ``value`` is the ``(B,)`` norms. Gradients: ``results`` holds
    one ``{wrt, shape, value}`` per parameter and ``norms`` the ``(B,)`` norms."""
    b = res.input_shape[0]
    doc: dict[str, Any] = {"schema": SCHEMA, "command": "grad", "function": res.function, "per_sample": True,
                           "wrt": list(res.wrt), "backend": "autograd", "dtype": res.dtype,
                           "input_shape": list(res.input_shape), "output_shape": []}
    if res.grads is None:
        doc.update({"quantity": "norms", "shape": [b], "value": array_to_json(res.norms)})
    else:
        doc["results"] = [{"wrt": f"param:{n}", "shape": list(g.shape), "value": array_to_json(g)}
                          for n, g in res.grads.items()]
        doc["norms"] = array_to_json(res.norms)
    doc["top"] = [{"sample": i, "norm": v} for i, v in res.top]
    doc["notes"] = list(res.notes)
    if timing:
        doc["seconds"] = round(res.seconds, 6)
    return doc


def render_samples(res: SampleGrads, *, precision: int = 4, summarize: bool = True, timing: bool = True) -> RenderableType:
    b = res.input_shape[0]
    title = Text()
    title.append(f"per-sample {'gradient norms' if res.grads is None else 'gradients'} of {res.function}", style="bold")
    title.append(f" · autograd · {res.dtype} · {b} samples · w.r.t. {count_of(res.wrt, what='parameters')}")
    if timing:
        title.append(f" · {res.seconds:.3g} s", style="dim")
    parts: list[RenderableType] = [title, Text()]
    if res.grads is not None:
        for name, g in res.grads.items():
            parts += [Text(f"param:{name}  ({b}, {', '.join(map(str, g.shape[1:]))})", style="bold"),
                      array_view(g, NumberFormat(g, precision), summarize), Text()]
    parts += [Text("gradient norm of each sample (over every --wrt)", style="bold"),
              array_view(res.norms, NumberFormat(res.norms, precision), summarize)]
    if res.top:
        top = Table(box=box.SIMPLE_HEAD, show_edge=False, title=f"top {len(res.top)}",
                    title_justify="left")
        top.add_column("sample", justify="right")
        top.add_column("gradient norm", justify="right")
        for i, v in res.top:
            top.add_row(str(i), f"{v:.{precision}g}")
        parts += [Text(), top]
    parts += [Text()] + [Text(f"note: {n}", style="yellow") for n in res.notes]
    return Group(*parts)
