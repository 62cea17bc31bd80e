"""Results -> rich renderables for a person at a terminal (SPEC §5, "Tables").

Pure: returns renderables, never prints. 2-D arrays are tables with row and
column indices; higher-D arrays are labelled 2-D slices (``[i, :, :]``) like
torch prints; per-row blocks are one small table per row, side by side when
they fit. Large arrays are summarised like NumPy (first and last rows and
columns around an ellipsis) with min/max/mean. A number is never cut: a
table wider than the terminal drops whole columns from its middle into one
``…`` column (:class:`MatrixView` decides at render time, from the width it is
given) and a note says how to see every value.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from rich import box
from rich.columns import Columns
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.color import Color
from rich.style import Style
from rich.text import Text

from ..core.options import Layout, Quantity
from ..core.results import Result, chunks
from .names import NamesFirst

# What a character the output stream cannot encode becomes (PYTHONIOENCODING=ascii, a latin-1 terminal):
# the ASCII it stands for, else a backslash escape (a file name's undecodable bytes, held as surrogates,
# become \udcff: shown, never a crash). See ascii_fallback.
ASCII = {"·": "-", "→": "->", "…": "...", "─": "-", "—": "--", "–": "-", "−": "-", "×": "x", "ᵀ": "^T", "‖": "||",
         "²": "^2", "₂": "_2", "⁴": "^4", "⁵": "^5", "±": "+-", "∓": "-+", "≈": "~", "≤": "<=", "≥": ">=", "§": "S",
         "Σ": "sum", "φ": "phi", "δ": "delta"}


def ascii_fallback(error: UnicodeError):
    """A codecs error handler (registered as ``gradcli-ascii``): one character the
    stream's encoding lacks, as its ASCII stand-in or as a backslash escape."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    char = error.object[error.start]
    return ASCII.get(char, char.encode("ascii", "backslashreplace").decode("ascii")), error.start + 1


def degrade_streams(*streams) -> None:
    """Let ``streams`` (standard output and error) write what their encoding lacks
    through :func:`ascii_fallback`, instead of raising UnicodeEncodeError (the ``·``
    of a table's header under PYTHONIOENCODING=ascii, a non-UTF-8 file name under
    strict UTF-8). A stream that cannot be reconfigured is left as it is."""
    import codecs

    try:
        codecs.lookup_error("gradcli-ascii")
    except LookupError:
        codecs.register_error("gradcli-ascii", ascii_fallback)
    for stream in streams:
        try:
            stream.reconfigure(errors="gradcli-ascii")
        except (AttributeError, ValueError, OSError):  # not a TextIOWrapper (a test's buffer), or closed
            pass


EDGE = 3  # items kept at each end of a summarised axis, as NumPy's edgeitems
THRESHOLD = 1000  # arrays with more entries are summarised, as NumPy's threshold
SMALL_OUTPUT = 64  # the function's value is shown when it has at most this many entries
ELLIPSIS = "…"
# Memory to render one entry of a table (--no-summarize): its text, the cell, and
# rich's segments while the table is laid out (measured: ~250 bytes).
TABLE_BYTES_PER_ENTRY = 400
# Quantities whose joint vector over several arguments is shown one argument at a time (a Hessian's joint
# matrix keeps its cross terms whole; -o .npz also holds each argument's own block).
PER_ARGUMENT = (Quantity.GRAD, Quantity.VJP, Quantity.HVP)


class NumberFormat:
    """Fixed-point at ``precision`` digits, or scientific when the magnitudes
    need it (NumPy's rule: largest >= 1e8 or smallest non-zero < 1e-4).
    With ``heatmap``, :meth:`cell` colours each cell on a diverging scale:
    red for positive, blue for negative, white for zero."""

    def __init__(self, array: np.ndarray, precision: int, heatmap: bool = False) -> None:
        stats = Stats.of(array)
        self.precision = precision
        self.scientific = stats.max_abs >= 1e8 or 0 < stats.min_abs_nonzero < 1e-4
        self.heat_scale = stats.max_abs if heatmap else 0.0

    def cell(self, v) -> str | Text:
        text = self(v)
        if not self.heat_scale or not np.isfinite(v):
            return text
        t = max(-1.0, min(1.0, float(v) / self.heat_scale))
        fade = int(round(255 * (1 - abs(t))))
        rgb = (255, fade, fade) if t > 0 else (fade, fade, 255)
        return Text(text, style=Style(color="black", bgcolor=Color.from_rgb(*rgb)))

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


class ElidedColumns:
    """Shared by the tables of one output: whether any of them hid columns to
    fit the width, so that one note at the end says so."""

    def __init__(self) -> None:
        self.hidden = False

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.hidden:
            yield Text(f"{ELLIPSIS}: columns hidden to fit the terminal's width; every value is in -o FILE.npy or "
                       "--json (a wider terminal shows more)", style="dim")


class MatrixView:
    """A 2-D table whose columns are chosen when the width is known: whole
    columns are hidden from the middle (one ``…`` column) rather than letting
    rich cut numbers to fit."""

    PAD = 3  # around a cell: rich's padding (0, 1) and the box's one-character column divider

    def __init__(self, m2: np.ndarray, labels: list[str | None], columns: list[int | None], cells: dict,
                 title: str | None, elided: ElidedColumns | None) -> None:
        self.m2, self.labels, self.columns, self.cells = m2, labels, columns, cells
        self.title, self.elided = title, elided
        self.label_width = max((len(label or ELLIPSIS) for label in labels), default=0)
        self._widths: dict[tuple, int] = {}  # natural width by the columns shown: rich measures a table in full

    def _width(self, c: int | None) -> int:
        texts = [ELLIPSIS] if c is None else [str(c), *(_plain(self.cells[r, c]) for r, label in enumerate(self.labels)
                                                        if label is not None)]
        return max(len(t) for t in texts) + self.PAD

    def _fitting(self, console: Console, options: ConsoleOptions) -> list[int | None]:
        """The columns to show: all when the table fits, else as many from each
        end as fit beside an ellipsis column."""
        max_width = options.max_width
        if len(self.columns) <= 1 or self._natural_width(console, options, self.columns) <= max_width:
            return self.columns
        widths = [self._width(c) for c in self.columns]
        used = self.label_width + 1
        budget = max_width - used - self._width(None)
        left, right = [], []
        i, j = 0, len(self.columns) - 1
        while i <= j:
            side = len(left) <= len(right)
            k = i if side else j
            if widths[k] > budget:
                break
            budget -= widths[k]
            if side:
                left.append(self.columns[i])
                i += 1
            else:
                right.insert(0, self.columns[j])
                j -= 1
        if not left:  # not even one column fits: show the first, rich wraps the line
            left, right = self.columns[:1], []
        chosen = [*left, *([None] if i <= j else []), *right]
        return [c for k, c in enumerate(chosen) if c is not None or k == 0 or chosen[k - 1] is not None]

    def _table(self, columns: list[int | None]) -> Table:
        table = Table(title=Text(self.title) if self.title else None, box=box.SIMPLE_HEAD, pad_edge=False,
                      title_justify="left", show_edge=False)
        table.add_column("", style="dim", justify="right")
        for c in columns:
            table.add_column(ELLIPSIS if c is None else str(c), justify="right", header_style="dim")
        for r, label in enumerate(self.labels):
            if label is None:
                table.add_row(ELLIPSIS, *[ELLIPSIS] * len(columns))
                continue
            table.add_row(label, *[ELLIPSIS if c is None else self.cells[r, c] for c in columns])
        return table

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        full = self._natural_width(console, options, self.columns)
        least = self._natural_width(console, options, [self.columns[0], None])
        return Measurement(min(least, full), full).clamp(max_width=options.max_width)

    def _natural_width(self, console: Console, options: ConsoleOptions, columns: list[int | None]) -> int:
        """The table's width with nothing cut (Measurement.get clamps to the width it is given); measured
        once per set of columns (a table is measured by Columns, its Group and itself: each a full pass)."""
        key = tuple(columns)
        if key not in self._widths:
            self._widths[key] = Measurement.get(console, options.update_width(1 << 20), self._table(columns)).maximum
        return self._widths[key]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        columns = self._fitting(console, options)
        if len(columns) < len(self.columns) and self.elided is not None:
            self.elided.hidden = True
        yield self._table(columns)


def _plain(cell) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def matrix_table(m: np.ndarray, fmt: NumberFormat, summarize: bool, title: str | None = None,
                 elided: ElidedColumns | None = None) -> MatrixView:
    """A 1-D or 2-D array as a table with indices (1-D: a single row)."""
    m2 = m.reshape(1, -1) if m.ndim == 1 else m
    cols = shown(m2.shape[1], summarize)
    labels, cells = [], {}
    for r in shown(m2.shape[0], summarize):
        if r is None:
            labels.append(None)  # the summarised rows' ellipsis
            continue
        labels.append("" if m.ndim == 1 else str(r))
        for c in cols:
            if c is not None:
                cells[len(labels) - 1, c] = fmt.cell(m2[r, c])
    return MatrixView(m2, labels, cols, cells, title, elided)


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


def array_view(a: np.ndarray, fmt: NumberFormat, summarize: bool, name: str = "",
               elided: ElidedColumns | None = None) -> RenderableType:
    """Any array: a scalar, a table, or labelled 2-D slices for higher dims."""
    if a.ndim == 0:
        return Text(f"{name} = {fmt(a)}" if name else fmt(a))
    if a.ndim <= 2:
        return matrix_table(a, fmt, summarize, title=name or None, elided=elided)
    parts: list[RenderableType] = []
    for idx in _slices(a.shape[:-2], summarize):
        if idx is None:
            parts.append(Text(ELLIPSIS))
            continue
        label = f"{name}[{', '.join(map(str, idx))}, :, :]"
        parts.append(matrix_table(a[idx], fmt, summarize, title=label, elided=elided))
    return Group(*parts)


def blocks_view(blocks: np.ndarray, rows: tuple[int, ...], fmt: NumberFormat, summarize: bool,
                elided: ElidedColumns | None = None) -> RenderableType:
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
        tables.append(matrix_table(block, fmt, summarize, title=label, elided=elided) if block.ndim <= 2
                      else array_view(block, fmt, summarize, name=label + " ", elided=elided))
    return Columns(tables, padding=(0, 3))


def header(result: Result, timing: bool, times: dict[str, float] | None = None) -> Text:
    """Function, quantity, backend, dtype, shapes, and the time: the compute's, or
    with ``times`` (load, compute, render, total) the whole run's, split when the
    compute is not most of it."""
    text = Text()
    text.append(f"{result.quantity.value}", style="bold")
    text.append(f" of {result.function} w.r.t. {result.wrt}", style="bold")
    text.append(f" · {result.backend.value} · {result.dtype}")
    text.append(f" · input {_shape(result.input_shape)} → output {_shape(result.output_shape)}")
    text.append(f" · {result.layout.value if result.layout is not None else 'value'} {_shape(result.shape)}")
    if timing and times is None:
        text.append(f" · {seconds_text(result.seconds)}", style="dim")
    elif timing:
        split = "" if times["compute"] >= 0.8 * times["total"] else " (" + ", ".join(
            f"{part} {seconds_text(times[part])}" for part in ("load", "compute", "render")) + ")"
        text.append(f" · {seconds_text(times['total'])}{split}", style="dim")
    return text


def reading_guide(result: Result) -> str:
    """One line on how to index the value shown (axis order: output, then input)."""
    wrt = result.wrt
    if result.quantity.value in ("hessian", "hvp"):
        return _second_reading(result)
    if result.layout is Layout.BLOCKS:
        if result.per_sample:
            return f"value[b, k..., j...] = d output[b, k...] / d {wrt}[b, j...]: one block per sample b"
        return f"value[r..., i, j] = d output[row r, feature i] / d {wrt}[row r, feature j]: one block per row r"
    if result.layout is Layout.DIAG:
        return f"value[i...] = d output[i...] / d {wrt}[i...]: the diagonal; every other entry of the Jacobian is 0"
    if result.layout is Layout.FULL:
        return f"value[i..., j...] = d output[i...] / d {wrt}[j...]: output axes first, then {wrt} axes (as torch, JAX)"
    if result.quantity.value == "jvp":
        return f"value = J t: how the output moves when {wrt} moves along the tangent t"
    return f"value = v^T J, shaped like {wrt}: what out.backward(v) accumulates in {wrt}.grad"


def _second_reading(result: Result) -> str:
    wrt = result.wrt
    if result.quantity.value == "hvp":
        return f"value = H t, shaped like {wrt}: how the gradient moves when {wrt} moves along t"
    if result.layout is Layout.BLOCKS:
        return (f"value[r..., (k,) i, j] = d2 output[row r(, k)] / d {wrt}[row r, i] d {wrt}[row r, j] "
                "(times the reduction's weight): one block per row r")
    if result.layout is Layout.DIAG:
        return f"value[i...] = d2 output[i...] / d {wrt}[i...]^2: the diagonal; every other entry is 0"
    if result.layout is Layout.FULL:
        return f"value[o..., i..., j...] = d2 output[o...] / d {wrt}[i...] d {wrt}[j...] (as torch.func.hessian)"
    return "value = the K smallest, then the K largest eigenvalues of the Hessian"


def render_result(result: Result, *, precision: int = 4, summarize: bool = True, explain: bool = False,
                  timing: bool = True, heatmap: bool = False) -> RenderableType:
    """The whole table output of one result: the header, then :func:`render_body`."""
    return Group(header(result, timing), Text(),
                 render_body(result, precision=precision, summarize=summarize, explain=explain, heatmap=heatmap))


def render_body(result: Result, *, precision: int = 4, summarize: bool = True, explain: bool = False,
                heatmap: bool = False) -> RenderableType:
    """Everything below the header: the value, the function's output, statistics and notes."""
    value = result.value
    big = summarize and value.size > THRESHOLD
    fmt = NumberFormat(value, precision, heatmap)
    elided = ElidedColumns()
    named = result.named() if result.quantity in PER_ARGUMENT else {}
    if result.layout is Layout.BLOCKS:
        # blocks: (*rows, *out_block, C); user code's per-sample blocks: (B, *out, *in)
        rows = result.shape[: result.batch_axes]
        view = blocks_view(value, rows, fmt, big, elided)
    elif named:
        view = parts_view(named, precision, summarize, heatmap, elided)
    else:
        view = array_view(value, fmt, big, elided=elided)
    parts: list[RenderableType] = []
    if result.layout is not Layout.BLOCKS:
        view = Group(Text(_value_title(result), style="bold"), view)
    if result.output.size <= SMALL_OUTPUT:
        output = Group(Text(f"output: {result.function}(...)", style="bold"),
                       array_view(result.output, NumberFormat(result.output, precision), False, elided=elided))
        beside = value.ndim <= 2 and result.layout is not Layout.BLOCKS and not named
        parts += [Columns([view, output], padding=(0, 6))] if beside else [view, Text(), output]
    else:
        parts.append(view)
    parts.append(elided)
    if result.spectrum is not None:
        parts += [Text(), spectrum_text(result.spectrum)]
    if big:
        parts.append(Text(_stats(value), style="dim"))
    if result.nonfinite:
        parts.append(Text(f"{result.nonfinite} of {value.size} entries are NaN or infinite "
                          "(from non-finite inputs with --allow-nonfinite, or overflow such as exp of a large input)", style="yellow"))
    if result.error is not None:
        parts.append(Text(f"fd error estimate: max {float(np.max(result.error)):.2e} "
                          f"({result.evaluations} points evaluated)", style="dim"))
    if explain:
        lines = [*result.formulas, "", f"reading: {reading_guide(result)}"]
        lines += [f"structure: {s}" for s in result.structure]
        parts.append(Panel(Text("\n".join(lines)), title=Text(f"{result.function}: formula"), title_align="left",
                           box=box.ROUNDED, expand=False))
    if result.notes:
        parts.append(Text())
        parts += [Text(f"note: {note}", style="yellow") for note in result.notes]
    return Group(*parts)


def parts_view(named: dict[str, np.ndarray], precision: int, summarize: bool, heatmap: bool,
               elided: ElidedColumns) -> RenderableType:
    """Several arguments' results (``grad --wrt 'param:*'``): a table of their names, shapes
    and norms, then each one's value, shaped like the argument (as its ``.grad``)."""
    def build(cell) -> Table:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for column in ("argument", "shape", "norm", "max |value|"):
            table.add_column(column, justify="left" if column in ("argument", "shape") else "right",
                             no_wrap=column != "argument")
        for name, a in named.items():
            stats = Stats.of(a)
            table.add_row(cell(name), _shape(a.shape), f"{float(np.linalg.norm(a.reshape(-1))):.{precision}g}",
                          f"{stats.max_abs:.{precision}g}")
        return table

    pieces: list[RenderableType] = [NamesFirst(build, list(named)), Text()]
    for name, a in named.items():
        pieces += [Text(f"{name}  {_shape(a.shape)}", style="bold"),
                   array_view(a, NumberFormat(a, precision, heatmap), summarize and a.size > THRESHOLD, elided=elided),
                   Text()]
    return Group(*pieces)


def spectrum_text(spectrum) -> Text:
    """``hessian --eig K``: the extreme eigenvalues, how they were found, Lanczos's residual."""
    def numbers(values):
        return "  ".join(f"{float(v):.6g}" for v in values)

    text = Text()
    text.append(f"eigenvalues, smallest: {numbers(spectrum.smallest)}\n", style="bold")
    text.append(f"eigenvalues, largest:  {numbers(spectrum.largest)}\n", style="bold")
    text.append(spectrum.method, style="dim")
    if spectrum.residual is not None:
        text.append(f"\nresidual max ||H v - l v|| = {spectrum.residual:.1e} after {spectrum.hvps} hvps", style="dim")
    return text


def _value_title(result: Result) -> str:
    what = {"jacobian": f"d output / d {result.wrt}", "grad": f"d output / d {result.wrt}",
            "vjp": f"v^T J (shaped like {result.wrt})", "jvp": "J t (shaped like the output)",
            "hessian": f"d2 output / d {result.wrt} d {result.wrt}" if result.layout else "eigenvalues",
            "hvp": f"H t (shaped like {result.wrt})"}[result.quantity.value]
    return f"{result.quantity.value}: {what}" + (f" ({result.layout.value})" if result.layout else "")


@dataclass(frozen=True)
class Stats:
    """Summary numbers of an array, gathered a chunk at a time: a huge result
    (a memory-mapped full Jacobian) never gets a temporary of its own size."""

    size: int
    finite: int
    zeros: int
    total: float
    min: float
    max: float
    max_abs: float
    min_abs_nonzero: float

    CHUNK = 1 << 18  # (its temporaries: a few arrays of this many entries)

    @classmethod
    def of(cls, array: np.ndarray) -> "Stats":
        flat = np.asarray(array).reshape(-1)
        finite = zeros = 0
        total, lo, hi, max_abs, min_nz = 0.0, np.inf, -np.inf, 0.0, np.inf
        for part in chunks(flat, cls.CHUNK):
            part = part[np.isfinite(part)] if part.dtype.kind == "f" else part
            if not part.size:
                continue
            magnitude = np.abs(part)
            nonzero = magnitude[magnitude > 0]
            finite += part.size
            zeros += part.size - nonzero.size
            total += float(part.sum(dtype=np.float64))
            lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
            max_abs = max(max_abs, float(magnitude.max()))
            if nonzero.size:
                min_nz = min(min_nz, float(nonzero.min()))
        return cls(flat.size, finite, zeros, total, lo, hi, max_abs, min_nz if np.isfinite(min_nz) else 0.0)


def _stats(a: np.ndarray) -> str:
    stats = Stats.of(a)
    if not stats.finite:
        return "every entry is non-finite"
    return (f"{a.size} entries, summarised (--no-summarize shows all): min {stats.min:.4g}  max {stats.max:.4g}  "
            f"mean {stats.total / stats.finite:.4g}  zeros {stats.zeros / a.size:.1%}")


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def seconds_text(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"
