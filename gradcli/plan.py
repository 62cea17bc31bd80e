"""The plan of a computation, decided once before any work: the layout, the
result's shape and size, and whether it fits ``--max-memory`` (streamed to
``-o J.npy`` or held).

The CLI and the library ask the plan; nothing downstream re-derives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UsageError
from .options import Layout, Quantity
from .problem import Problem

DEFAULT_MAX_MEMORY = 2 * 2**30


@dataclass(frozen=True)
class Plan:
    """``problem``: the view the backend computes on (per-sample, along an axis);
    ``layout``: resolved (never AUTO; FULL for every quantity but jacobian);
    ``shape``/``nbytes``: the result's; ``streamed``: a full Jacobian scattered
    from blocks straight into a memory-mapped file, so only the blocks are held."""

    problem: Problem
    quantity: Quantity
    layout: Layout
    shape: tuple[int, ...]
    nbytes: int
    streamed: bool = False

    @property
    def held_bytes(self) -> int:
        """What the run holds in memory for the result."""
        if self.streamed:
            return math.prod(self.problem.rows.blocks_shape) * self.problem.dtype.itemsize
        return self.nbytes


def make_plan(problem: Problem, quantity: Quantity, layout: Layout = Layout.AUTO, *,
              max_memory: int = DEFAULT_MAX_MEMORY, streaming: bool = False, verify_blocks: bool = True) -> Plan:
    """Resolve the layout and the view, size the result, refuse what would not fit.
    ``verify_blocks``: user code's per-sample blocks are checked first (:mod:`.persample`)."""
    if quantity is Quantity.JACOBIAN and not problem.function.closed_form and not problem.per_sample:
        from .persample import user_view

        problem, layout = user_view(problem, layout, verify_blocks)
    layout = resolve_layout(problem, quantity, layout)
    if layout is Layout.BLOCKS and problem.rows.elementwise:
        problem = problem.along_axis(len(problem.wrt_shape) - 1)
    shape = result_shape(problem, quantity, layout)
    scattered = (quantity is Quantity.JACOBIAN and layout is Layout.FULL and problem.rows is not None
                 and not problem.rows.reduced)
    plan = Plan(problem, quantity, layout, shape, math.prod(shape) * problem.dtype.itemsize,
                streamed=streaming and scattered)
    if plan.held_bytes > max_memory:
        raise UsageError(_too_large(plan, scattered, max_memory))
    return plan


def resolve_layout(problem: Problem, quantity: Quantity, layout: Layout) -> Layout:
    """``auto``: diag for elementwise functions, per-row blocks when the output
    keeps batch rows, else full."""
    if quantity is not Quantity.JACOBIAN:
        return Layout.FULL
    rows = problem.rows
    has_blocks = rows is not None and not rows.reduced
    if layout is Layout.AUTO:
        if has_blocks and rows.elementwise:
            return Layout.DIAG
        return Layout.BLOCKS if has_blocks and rows.rows else Layout.FULL
    if layout in (Layout.BLOCKS, Layout.DIAG) and not has_blocks:
        why = "its output is one number (use --reduction none to keep rows)" if rows is not None else "it has no row structure"
        raise UsageError(f"--layout {layout.value}: {problem.function.name} has no {layout.value} here because {why}; use --layout full")
    if layout is Layout.DIAG and not rows.elementwise:
        raise UsageError(f"--layout diag: {problem.function.name} is not elementwise; use --layout blocks or full")
    if layout is Layout.BLOCKS and rows.elementwise and not rows.in_shape:
        raise UsageError("--layout blocks: a 0-d input has no rows; use --layout diag or full")
    return layout


def result_shape(problem: Problem, quantity: Quantity, layout: Layout) -> tuple[int, ...]:
    if quantity is Quantity.JVP:
        return problem.output_shape
    if quantity is not Quantity.JACOBIAN:
        return problem.wrt_shape
    if layout is Layout.BLOCKS:
        return problem.rows.blocks_shape
    if layout is Layout.DIAG:
        return problem.wrt_shape
    return problem.output_shape + problem.wrt_shape


def _too_large(plan: Plan, scattered: bool, max_memory: int) -> str:
    fits = []
    problem = plan.problem
    if plan.quantity is Quantity.JACOBIAN:
        if scattered:
            blocks = math.prod(problem.rows.blocks_shape) * problem.dtype.itemsize
            if blocks <= max_memory:
                fits.append(f"--layout blocks ({format_bytes(blocks)})")
                fits.append("-o J.npy alone (written in chunks, never held whole)")
        fits.append("`gradcli vjp` or `gradcli jvp` (the size of one argument)")
    if problem.rows is not None and problem.rows.rows and not problem.rows.reduced:
        fits.append("--rows to compute a few rows")
    hint = f"try {' or '.join(fits)}, or raise --max-memory" if fits else "raise --max-memory"
    return (f"--max-memory: the {plan.quantity.value} result {list(plan.shape)} needs {format_bytes(plan.nbytes)}, "
            f"over the limit of {format_bytes(max_memory)}; {hint}")


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError
