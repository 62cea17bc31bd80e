"""Results -> rich renderables for a person at a terminal (SPEC §5, "Tables").

Pure: returns renderables, never prints. 2-D arrays are tables with row and
column indices; higher-D arrays are labelled 2-D slices (``[i, :, :]``) like
torch prints; per-row blocks are one small table per row, side by side when
they fit. Large arrays are summarised like NumPy (first and last rows and
columns around an ellipsis) with min/max/mean.
"""

from __future__ import annotations

import itertools
from typing import Iterator, Sequence

import numpy as np
from rich import box
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..results import Layout, Result

EDGE = 3  # items kept at each end of a summarised axis, as NumPy's edgeitems
THRESHOLD = 1000  # arrays with more entries are summarised, as NumPy's threshold
SMALL_OUTPUT = 64  # the function's value is shown when it has at most this many entries
ELLIPSIS = "…"


class NumberFormat:
    """Fixed-point at ``precision`` digits, or scientific when the magnitudes
    need it (NumPy's rule: largest >= 1e8 or smallest non-zero < 1e-4)."""

    def __init__(self, array: np.ndarray, precision: int) -> None:
        finite = np.abs(array[np.isfinite(array)]) if array.dtype.kind == "f" else np.abs(array)
        nonzero = finite[finite > 0]
        self.precision = precision
        self.scientific = bool(nonzero.size) and (nonzero.max() >= 1e8 or nonzero.min() < 1e-4)

    def __call__(self, v) -> str:
        v = float(v)
        if v == 0:
            return "0" if self.scientific else f"{0:.{self.precision}f}"
        return f"{v:.{self.precision}e}" if self.scientific else f"{v:.{self.precision}f}"


def shown(n: int, summarize: bool) -> list[int | None]:
    """Indices of an axis of length n to show; None marks the ellipsis."""
    if not summarize or n <= 2 * EDGE + 1:
        return list(range(n))
    return [*range(EDGE), None, *range(n - EDGE, n)]


def matrix_table(m: np.ndarray, fmt: NumberFormat, summarize: bool, title: str | None = None) -> Table:
    """A 1-D or 2-D array as a table with indices (1-D: a single row)."""
    m2 = m.reshape(1, -1) if m.ndim == 1 else m
    table = Table(title=Text(title) if title else None, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left",
                  show_edge=False)
    table.add_column("", style="dim", justify="right")
    cols = shown(m2.shape[1], summarize)
    for c in cols:
        table.add_column(ELLIPSIS if c is None else str(c), justify="right", header_style="dim")
    for r in shown(m2.shape[0], summarize):
        if r is None:
            table.add_row(ELLIPSIS, *[ELLIPSIS] * len(cols))
            continue
        label = "" if m.ndim == 1 else str(r)
        table.add_row(label, *[ELLIPSIS if c is None else fmt(m2[r, c]) for c in cols])
    return table


def _slices(shape: Sequence[int], summarize: bool) -> Iterator[tuple[int, ...] | None]:
    """Index tuples over leading axes; None where a summarised run was skipped."""
    axes = [shown(n, summarize) for n in shape]
    last_skipped = False
    for idx in itertools.product(*axes):
        if any(i is None for i in idx):
            if not last_skipped:
                yield None
            last_skipped = True
            continue
        last_skipped = False
        yield idx


def array_view(a: np.ndarray, fmt: NumberFormat, summarize: bool, name: str = "") -> RenderableType:
    """Any array: a scalar, a table, or labelled 2-D slices for higher dims."""
    if a.ndim == 0:
        return Text(f"{name} = {fmt(a)}" if name else fmt(a))
    if a.ndim <= 2:
        return matrix_table(a, fmt, summarize, title=name or None)
    parts: list[RenderableType] = []
    for idx in _slices(a.shape[:-2], summarize):
        if idx is None:
            parts.append(Text(ELLIPSIS))
            continue
        label = f"{name}[{', '.join(map(str, idx))}, :, :]"
        parts.append(matrix_table(a[idx], fmt, summarize, title=label))
    return Group(*parts)


def blocks_view(blocks: np.ndarray, rows: tuple[int, ...], fmt: NumberFormat, summarize: bool) -> RenderableType:
    """One table per batch row, labelled ``row i`` (``row (i, j)`` for several row axes)."""
    flat = blocks.reshape((-1,) + blocks.shape[len(rows):])
    tables: list[RenderableType] = []
    for k in shown(flat.shape[0], summarize and flat.shape[0] > 2 * EDGE + 1):
        if k is None:
            tables.append(Text(f"\n{ELLIPSIS}"))
            continue
        index = np.unravel_index(k, rows)
        label = f"row {index[0]}" if len(rows) == 1 else f"row ({', '.join(str(int(i)) for i in index)})"
        block = flat[k]
        tables.append(matrix_table(block, fmt, summarize, title=label) if block.ndim <= 2
                      else array_view(block, fmt, summarize, name=label + " "))
    return Columns(tables, padding=(0, 3))


def header(result: Result, timing: bool) -> Text:
    text = Text()
    text.append(f"{result.quantity.value}", style="bold")
    text.append(f" of {result.function} w.r.t. {result.wrt}", style="bold")
    text.append(f" · {result.backend.value} · {result.dtype}")
    text.append(f" · input {_shape(result.input_shape)} → output {_shape(result.output_shape)}")
    text.append(f" · {result.layout.value if result.layout is not None else 'value'} {_shape(result.shape)}")
    if timing:
        text.append(f" · {seconds_text(result.seconds)}", style="dim")
    return text


def render_result(result: Result, *, precision: int = 4, summarize: bool = True, explain: bool = False,
                  timing: bool = True) -> RenderableType:
    """The whole table output of one result."""
    value = result.value
    big = summarize and value.size > THRESHOLD
    fmt = NumberFormat(value, precision)
    parts: list[RenderableType] = [header(result, timing), Text()]
    if result.layout is Layout.BLOCKS:
        # blocks: (*rows, *out_block, C); user code's per-sample blocks: (B, *out, *in)
        rows = result.shape[:1] if result.rows is None else result.shape[: len(result.wrt_shape) - 1]
        parts.append(blocks_view(value, rows, fmt, big))
    else:
        parts.append(array_view(value, fmt, big))
    if big:
        parts.append(Text(_stats(value), style="dim"))
    if result.output.size <= SMALL_OUTPUT:
        parts += [Text(), Text(f"output: {result.function}(...)", style="bold")]
        parts.append(array_view(result.output, NumberFormat(result.output, precision), False))
    if result.error is not None:
        parts.append(Text(f"fd error estimate: max {float(np.max(result.error)):.2e} "
                          f"({result.evaluations} points evaluated)", style="dim"))
    if explain:
        parts.append(Panel(Text("\n".join(result.formulas)), title=Text(f"{result.function}: formula"), title_align="left",
                           box=box.ROUNDED, expand=False))
    if result.notes:
        parts.append(Text())
        parts += [Text(f"note: {note}", style="yellow") for note in result.notes]
    return Group(*parts)


def _stats(a: np.ndarray) -> str:
    finite = a[np.isfinite(a)]
    if not finite.size:
        return "every entry is non-finite"
    zeros = float(np.mean(a == 0))
    return (f"{a.size} entries, summarised (--no-summarize shows all): min {finite.min():.4g}  max {finite.max():.4g}  "
            f"mean {finite.mean():.4g}  zeros {zeros:.1%}")


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def seconds_text(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"
